"""Loading a model for any stage: its tokenizer, the base at the requested quantisation, a trained adapter on
it, and where the weights came from.

4-bit = QLoRA NF4 with double quantisation, 8-bit = LLM.int8, 16-bit = bf16 on GPUs that have it, fp16 on
those that do not (T4), fp32 on the CPU (mission_anchors.md 4.6; ecosystem_reliability_anchors.md B4).
bitsandbytes runs the 4- and 8-bit layers on the CPU too, so every path is exercised here. Training
(train/modeling.py) attaches LoRA to what this loads; evaluation and the local judge use it as it is.
"""

from __future__ import annotations

from pathlib import Path

from maple_utils import layout
from maple_utils.models.resolve import loadable, resolve_model


def compute_dtype():
    """bf16 where the GPU supports it, fp16 on older GPUs, fp32 on the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(model: str):
    """The model's tokenizer, with a pad token distinct from EOS so EOS stays in the training labels."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(loadable(model), trust_remote_code=False)
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        if tok.unk_token is not None and tok.unk_token_id != tok.eos_token_id:
            tok.pad_token = tok.unk_token  # Llama-2 and Mistral: <unk> pads without resizing embeddings
        else:
            raise ValueError(
                f"tokenizer of {model} has no pad or unk token distinct from EOS; "
                "add one and resize the embeddings before finetuning"
            )
    tok.padding_side = "right"  # training; generation switches to left
    return tok


def quantization_config(quant: int):
    from transformers import BitsAndBytesConfig

    if quant == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(),
        )
    if quant == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant == 16:
        return None
    raise ValueError(f"quant must be one of 4, 8, 16, got {quant!r}")


def load_base(model: str, quant: int):
    """The base causal LM, quantised as asked, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    # safetensors only (a pickled checkpoint can run code when loaded) and no code from the model's repo
    kwargs = {"dtype": compute_dtype(), "use_safetensors": True, "trust_remote_code": False}
    qconfig = quantization_config(quant)
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
    if torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}
    where = loadable(model)
    try:
        base = AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except OSError as err:
        if Path(where).is_dir():
            raise OSError(f"could not load model {model!r} from the folder {where}: {err}") from err
        raise OSError(
            f"could not load model {model!r}: {err}. Offline? Set HF_HUB_OFFLINE=1 only with the "
            "model in the cache (HF_HOME), or pass a local folder."
        ) from err
    base.eval()
    return base


def check_adapter(adapter_dir: str | Path) -> Path:
    """An adapter folder that holds safetensors weights; a pickled adapter_model.bin is refused, since
    loading a pickle can run code."""
    folder = Path(adapter_dir)
    if not (folder / layout.ADAPTER_WEIGHTS).is_file():
        found = sorted(p.name for p in folder.glob("adapter_model.*")) if folder.is_dir() else []
        raise ValueError(
            f"adapter {folder}: no {layout.ADAPTER_WEIGHTS} (found: {', '.join(found) or 'nothing'}); "
            "only safetensors adapters are loaded"
        )
    return folder


def load_adapted(model: str, quant: int, adapter_dir: str | None):
    """Base model with a trained adapter loaded the plain PEFT way, or the base alone when no adapter."""
    if adapter_dir:
        check_adapter(adapter_dir)
    base = load_base(model, quant)
    if not adapter_dir:
        return base
    from peft import PeftModel

    adapted = PeftModel.from_pretrained(base, adapter_dir)
    adapted.eval()
    return adapted


def revision(model_name: str, model) -> dict:
    """Where the weights came from and their revision (hub commit, or a content hash of the folder)."""
    from maple_utils.results import model_revision

    return model_revision(getattr(model, "base_model", model), resolve_model(model_name))
