"""Typed, validated configs for a run and for a grid.

One flat `RunConfig` holds every knob; its field names are the notebooks' parameter names and the YAML
keys, so no mapping layer exists. Each stage is identified by a hash of the fields it depends on, so a
training run keeps its id when only evaluation settings change. Bad input raises `ConfigError` naming the
field, the value and what is allowed (with a did-you-mean) before anything heavy is imported.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maple_utils import languages as lang_table
from maple_utils.paths import read_params, resolve

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ConfigError(ValueError):
    """Invalid user input; the message is meant to be shown as is, without a traceback."""


def known_models() -> dict:
    return read_params("models")["models"]


def known_datasets() -> dict:
    return read_params("datasets")["datasets"]


def known_tasks() -> dict:
    return read_params("tasks")["tasks"]


def suggest(value: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _one_of(field: str, value: Any, allowed: list[str]) -> str:
    shown = ", ".join(allowed) if len(allowed) <= 45 else ", ".join(allowed[:45]) + ", ..."
    return f"unknown {field} {value!r}{suggest(value, allowed)} (allowed: {shown})"


class RunConfig(BaseModel):
    """Everything one run of the grid depends on. Defaults are the embedded smoke values."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    # what is finetuned
    model: str = "tiny-llama"
    dataset: str | None = "multialpaca"  # None: the base model evaluated alone
    rank: int | None = Field(default=8, ge=1, le=1024)
    quant: Literal[4, 8, 16] = 4
    # LoRA
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    # training
    learning_rate: float = Field(default=3e-4, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=256, ge=16)
    warmup_ratio: float = Field(default=0.03, ge=0.0, le=1.0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    prompt_template: Literal["alpaca", "bactrian"] = "alpaca"
    seed: int = 42
    # data
    data_source: Literal["embedded", "local", "hub"] = "embedded"
    data_root: str | None = None  # folder of release files when data_source is "local"
    train_languages: list[str] | None = None  # None: all languages of the dataset
    max_train_examples: int | None = Field(default=None, ge=1)
    # evaluation
    tasks: list[str] = ["xnli", "xcopa", "belebele", "xquad", "mlqa", "xlsum"]
    languages: list[str] = ["en", "zh"]
    limit: int | None = Field(default=None, ge=1)  # items per task and language; rows flagged as not comparable
    k_shot: dict[str, int] = {}  # per-task overrides of params/tasks.yaml
    max_new_tokens: int | None = Field(default=None, ge=1)  # overrides each task's own
    eval_batch_size: int = Field(default=8, ge=1)
    alpaca_eval_limit: int | None = Field(default=None, ge=1)

    @field_validator("model")
    @classmethod
    def _model_known(cls, v: str) -> str:
        if v in known_models() or HUB_ID.match(v) or Path(v).is_dir():
            return v
        raise ValueError(_one_of("model", v, list(known_models())) + ", a hub id 'org/name' or a local folder")

    @field_validator("dataset")
    @classmethod
    def _dataset_known(cls, v: str | None) -> str | None:
        if v is not None and v not in known_datasets():
            raise ValueError(_one_of("dataset", v, list(known_datasets())))
        return v

    @field_validator("tasks")
    @classmethod
    def _tasks_known(cls, v: list[str]) -> list[str]:
        for t in v:
            if t not in known_tasks():
                raise ValueError(_one_of("task", t, list(known_tasks())))
        return v

    @field_validator("languages", "train_languages")
    @classmethod
    def _languages_known(cls, v: list[str] | None) -> list[str] | None:
        for code in v or []:
            if code not in lang_table.table():
                raise ValueError(_one_of("language", code, lang_table.codes()))
        return v

    @field_validator("k_shot")
    @classmethod
    def _k_shot_tasks(cls, v: dict[str, int]) -> dict[str, int]:
        for task, k in v.items():
            if task not in known_tasks():
                raise ValueError(_one_of("task", task, list(known_tasks())))
            if k < 0:
                raise ValueError(f"k_shot for {task} must be >= 0, got {k}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> "RunConfig":
        if self.dataset is not None and self.rank is None:
            raise ValueError("rank is required when a dataset is finetuned (allowed: an integer 1..1024)")
        if self.dataset is not None and self.train_languages:
            offered = known_datasets()[self.dataset]["languages"]
            missing = [c for c in self.train_languages if c not in offered]
            if missing:
                raise ValueError(f"train_languages {missing} are not in {self.dataset} (allowed: {', '.join(offered)})")
        if self.data_source == "local" and not (self.data_root and resolve(self.data_root).is_dir()):
            raise ValueError(f"data_source 'local' needs data_root to be a folder of release files "
                             f"(got {self.data_root!r}), e.g. '../shared/data'")
        for task in self.tasks:
            column = known_tasks()[task]["language_column"]
            if not set(self.languages) & set(lang_table.supporting(column)):
                raise ValueError(
                    f"task {task} has none of languages {self.languages} "
                    f"(it has: {', '.join(lang_table.supporting(column))})"
                )
        return self

    def subset(self, fields: tuple[str, ...]) -> dict:
        return {f: getattr(self, f) for f in fields}


# Which fields each stage depends on: a stage's id is the hash of these, so a change elsewhere never
# invalidates its output (changing an evaluation setting keeps the trained adapter).
DATA_FIELDS = (
    "dataset", "data_source", "data_root", "train_languages", "max_train_examples", "seed", "prompt_template",
)
TRAIN_FIELDS = DATA_FIELDS + (
    "model", "rank", "quant", "lora_alpha", "lora_dropout", "target_modules", "learning_rate", "epochs",
    "max_steps", "batch_size", "grad_accum", "max_length", "warmup_ratio", "max_grad_norm",
)
EVAL_FIELDS = (
    "model", "dataset", "rank", "quant", "tasks", "languages", "limit", "k_shot", "max_new_tokens", "eval_batch_size", "seed",
    "data_source", "data_root", "prompt_template",
)
ALPACA_EVAL_FIELDS = (
    "model", "dataset", "rank", "quant", "alpaca_eval_limit", "max_new_tokens", "eval_batch_size", "seed", "data_source",
    "data_root", "prompt_template",
)
BASE_FIELDS = ("model", "quant")


def stable_hash(values: dict, n: int = 8) -> str:
    """Short hash of a canonical JSON dump: the same values give the same id on any machine."""
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def model_short(model: str) -> str:
    entry = known_models().get(model, {})
    if entry.get("short"):
        return entry["short"]
    return re.sub(r"[^a-z0-9.-]+", "-", Path(model).name.lower()).strip("-") or "model"


def data_id(cfg: RunConfig) -> str:
    return f"{cfg.dataset}-{stable_hash(cfg.subset(DATA_FIELDS))}"


def run_id(cfg: RunConfig) -> str:
    """Id of an adapter (training run), or of a base model evaluated alone when dataset is None."""
    if cfg.dataset is None:
        return f"{model_short(cfg.model)}_base_q{cfg.quant}-{stable_hash(cfg.subset(BASE_FIELDS))}"
    slug = f"{model_short(cfg.model)}_{cfg.dataset}_r{cfg.rank}_q{cfg.quant}"
    return f"{slug}-{stable_hash(cfg.subset(TRAIN_FIELDS))}"


def _describe(error: dict, origin: dict[str, str], model: type[BaseModel]) -> str:
    """One pydantic error as a line naming the field (as the user wrote it), the value and what is allowed."""
    loc = [str(p) for p in error["loc"]]
    fields = list(model.model_fields)
    if error["type"] == "extra_forbidden":
        return f"unknown key {loc[0]!r}{suggest(loc[0], fields)} (allowed keys: {', '.join(fields)})"
    msg = error["msg"].removeprefix("Value error, ")
    if not loc:  # a check across fields
        return msg
    where = origin.get(loc[0], loc[0]) + "".join(f"[{p}]" for p in loc[1:])
    if error["type"] == "value_error":  # our own validators already say what is allowed
        return f"field {where!r}: {msg}"
    expected = ""
    if error["type"].endswith("_type") and loc[0] in model.model_fields:
        annotation = str(model.model_fields[loc[0]].annotation)
        expected = " (expected " + re.sub(r"typing\.|<class '|'>", "", annotation) + ")"
    return f"field {where!r}: {msg}{expected}; got {error.get('input')!r}"


def validate_run(values: dict, where: str = "config", origin: dict[str, str] | None = None) -> RunConfig:
    """A RunConfig from plain values, or a ConfigError that names every bad field."""
    try:
        return RunConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(_report(err, where, origin or {}, RunConfig)) from None


def _report(err: ValidationError, where: str, origin: dict[str, str], model: type[BaseModel]) -> str:
    lines = list(dict.fromkeys(_describe(e, origin, model) for e in err.errors()))
    return f"{where}: invalid configuration\n  - " + "\n  - ".join(lines)


def from_namespace(namespace: dict, where: str = "notebook parameters") -> RunConfig:
    """Validate the RunConfig fields a notebook's parameters cell defined (others keep their defaults)."""
    return validate_run({k: namespace[k] for k in RunConfig.model_fields if k in namespace}, where)


class GridConfig(BaseModel):
    """A grid: fixed values, axes to expand (cartesian product), exclusions, and base-model evaluation."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    exclude: list[dict[str, Any]] = []
    evaluate_base_models: bool = True
    base_model_quant: Literal[4, 8, 16] = 16


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_grid(path: str | Path) -> GridConfig:
    data = load_yaml(path)
    try:
        grid = GridConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_report(err, str(path), {}, GridConfig)) from None
    fields = list(RunConfig.model_fields)
    for section in ("fixed", "axes"):
        for key in getattr(grid, section):
            if key not in fields:
                raise ConfigError(f"{path}: unknown key '{section}.{key}'{suggest(key, fields)} "
                                  f"(allowed keys: {', '.join(fields)})")
    for i, rule in enumerate(grid.exclude):
        for key in rule:
            if key not in grid.axes:
                raise ConfigError(f"{path}: exclude[{i}] names {key!r}, which is not an axis "
                                  f"(axes: {', '.join(grid.axes)})")
    for key, values in grid.axes.items():
        if not values:
            raise ConfigError(f"{path}: axes.{key} is empty; give at least one value")
    return grid
