"""An adapter folder that travels: the base model named as others can load it, and a model card (README.md,
the Hub's metadata first) with the base's licence, the datasets, the training values, the exact loading
snippet (with the BitsAndBytesConfig a 4- or 8-bit adapter was trained on) and, once 03_evaluate has run,
its scores. `huggingface-cli upload <user>/<repo> <run>/adapter .` publishes the folder as it stands.
"""

from __future__ import annotations

import json
from pathlib import Path

from maple_utils import io, layout, registry
from maple_utils.config.fields import HUB_ID
from maple_utils.paths import project_root, resolve

SCORES_START, SCORES_END = "<!-- maple:scores -->", "<!-- /maple:scores -->"  # the section 03 rewrites


def portable_base(model: str) -> str:
    """The base as the adapter names it (adapter_config.json's base_model_name_or_path): a hub id as it is, a
    local folder relative to the project root (the grid's root) when inside it, a registry name as it is
    (MAPLE resolves it: `maple_utils.models.resolve.loadable`); never this machine's cache path."""
    if model in registry.read("models")["models"] or HUB_ID.match(model) and not resolve(model).is_dir():
        return model
    folder = resolve(model).resolve()
    try:
        return str(folder.relative_to(project_root().resolve()))
    except ValueError:
        return str(folder)


def licence_of(model: str) -> str:
    """The base model's licence as the models registry declares it (Hub metadata ids), else `other`."""
    return registry.read("models")["models"].get(model, {}).get("licence") or "other"


def point_config_at_base(adapter_dir: Path, model: str) -> None:
    """adapter_config.json names the portable base (PEFT writes the path it loaded from, a cache folder here)."""
    path = adapter_dir / layout.ADAPTER_CONFIG
    adapter_config = json.loads(path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = portable_base(model)
    path.write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def loading_snippet(cfg) -> str:
    """Python that loads this adapter on its base, quantised as it was trained."""
    base = portable_base(cfg.model)
    lines = [
        "import torch",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
    ]
    where = repr(base)
    if base in registry.read("models")["models"] and not HUB_ID.match(base):  # a MAPLE name: MAPLE finds its folder
        lines.insert(0, "from maple_utils.models.resolve import loadable")
        where = f"loadable({base!r})"
    if cfg.quant == 4:
        lines[-1] += ", BitsAndBytesConfig"
        quant = (
            'quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", '
            "bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16)"
        )
    elif cfg.quant == 8:
        lines[-1] += ", BitsAndBytesConfig"
        quant = "quantization_config=BitsAndBytesConfig(load_in_8bit=True)"
    else:
        quant = "dtype=torch.bfloat16"
    lines += [
        "",
        'adapter = "."  # this folder, or its Hub repo id',
        *(
            ["# bfloat16: the compute type on GPUs that have it (float16 on a T4, float32 on a CPU)"]
            if cfg.quant != 8
            else []
        ),
        f"base = AutoModelForCausalLM.from_pretrained({where}, {quant})",
        "model = PeftModel.from_pretrained(base, adapter).eval()",
        "tokenizer = AutoTokenizer.from_pretrained(adapter)",
    ]
    return "\n".join(lines)


def model_card(cfg, summary: dict) -> str:
    """The adapter's README.md: Hub metadata, what it was trained on and how, how to load it."""
    from maple_utils.data import instruct

    languages = cfg.train_languages or instruct.dataset_spec(cfg.dataset)["languages"]
    hub = (instruct.dataset_spec(cfg.dataset).get("hub") or {}).get("path")
    meta = [
        "---",
        f"base_model: {portable_base(cfg.model)}",
        f"license: {licence_of(cfg.model)}",
        "library_name: peft",
        "pipeline_tag: text-generation",
        "tags: [lora, maple" + (", qlora" if cfg.quant == 4 else "") + "]",
        "language: [" + ", ".join(languages) + "]",
        *([f"datasets: [{hub}]"] if hub else []),
        "---",
    ]
    lines = [
        f"# {cfg.model} + LoRA r{cfg.rank} on {cfg.dataset} ({cfg.quant}-bit base)",
        "",
        "Trained with MAPLE (notebooks/02_train.ipynb). The licence above is the base model's: the adapter is a",
        f"derivative of it, trained on {cfg.dataset}" + (f" ({hub})" if hub else "") + ", under that dataset's terms.",
        "",
        "## Load it",
        "",
        "```python",
        loading_snippet(cfg),
        "```",
        "",
        "## Training",
        "",
        "| setting | value |",
        "|---|---|",
    ]
    for key in (
        "model", "quant", "dataset", "train_languages", "max_train_examples", "eval_fraction", "rank", "lora_alpha",
        "lora_dropout", "target_modules", "learning_rate", "lr_scheduler", "epochs", "max_steps", "batch_size",
        "grad_accum", "max_length", "warmup_ratio", "prompt_template", "seed", "data_seed",
    ):  # fmt: skip
        lines.append(f"| {key} | {getattr(cfg, key)} |")
    for key in ("steps", "examples", "final_loss", "final_eval_loss", "trainable_params", "trainable_pct", "wall_s"):
        if summary.get(key) is not None:
            lines.append(f"| {key} | {summary[key]} |")
    lines += [
        "",
        f"Every value of the run is in `{layout.ADAPTER_RUN_CONFIG}`; the loss curves are in `{layout.TRAIN_RECORD}`.",
        "",
        f"{SCORES_START}\n{SCORES_END}",
    ]
    return "\n".join(meta + lines) + "\n"


def scores_section(rows: list[dict]) -> str:
    """The card's evaluation summary: each task's metrics per language, as 03_evaluate measured them."""
    by_task: dict[tuple[str, str], dict[str, float]] = {}
    for r in rows:
        by_task.setdefault((r["task"], r["metric"]), {})[r["language"]] = r["value"]
    languages = sorted({r["language"] for r in rows})
    limited = any(r.get("limit") for r in rows)
    lines = [
        "## Evaluation (03_evaluate)",
        "",
        "Limited items per task and language: not comparable with the study's numbers." if limited else "",
        "",
        "| task | metric | " + " | ".join(languages) + " |",
        "|---|---|" + "---|" * len(languages),
    ]
    for (task, metric), values in sorted(by_task.items()):
        cells = [f"{values[c]:.3f}" if c in values else "" for c in languages]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_scores(run, rows: list[dict]) -> Path | None:
    """03_evaluate's scores into the adapter's card, between its markers (a rerun replaces them); None for a
    base model, which has no adapter folder."""
    if run.adapter_dir is None or not (run.adapter_dir / layout.MODEL_CARD).is_file():
        return None
    path = run.adapter_dir / layout.MODEL_CARD
    text = path.read_text(encoding="utf-8")
    if SCORES_START not in text:
        text = text.rstrip("\n") + f"\n\n{SCORES_START}\n{SCORES_END}\n"
    head, rest = text.split(SCORES_START, 1)
    tail = rest.split(SCORES_END, 1)[1]
    return io.write_text(path, f"{head}{SCORES_START}\n{scores_section(rows)}\n{SCORES_END}{tail}")
