"""LoRA on a loaded base (models/loading.py loads it): target presets, attach, parameter counts."""

from __future__ import annotations


def lora_targets(target_modules: list[str]) -> list[str] | str:
    """A run's target_modules: its layer names, or the layers of a preset of the models registry."""
    from maple_utils import registry

    presets = registry.read("models").get("lora_target_presets", {})
    if len(target_modules) == 1 and target_modules[0] in presets:
        return presets[target_modules[0]]
    return target_modules


def attach_lora(
    base,
    rank: int,
    alpha: int,
    dropout: float,
    target_modules: list[str],
    quant: int,
    gradient_checkpointing: bool = False,
):
    """A PEFT model with fresh LoRA weights; the base's quantised layers stay frozen."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    checkpointing = {"use_reentrant": False}  # the reentrant variant drops gradients of frozen-input LoRA layers
    if quant < 16:
        base = prepare_model_for_kbit_training(
            base, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=checkpointing
        )
    elif gradient_checkpointing:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        base.enable_input_require_grads()
    targets = lora_targets(target_modules)
    if isinstance(targets, list):
        present = {name.rsplit(".", 1)[-1] for name, _ in base.named_modules()}
        missing = [m for m in targets if m not in present]
        if missing:
            linear = sorted(p for p in present if p.endswith("proj"))
            raise ValueError(
                f"target_modules {missing} are not modules of this model (linear layers present "
                f"include: {', '.join(linear)}; presets: q_v, attention, all_linear)"
            )
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none", task_type="CAUSAL_LM"
    )
    return get_peft_model(base, config)


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit weights count as stored elements x 2."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = 0
    for p in model.parameters():
        n = p.numel()
        total += n * 2 if p.__class__.__name__ == "Params4bit" else n  # two 4-bit values per stored byte
    return trainable, total
