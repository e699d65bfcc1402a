"""Grid files: fixed values, axes expanded as a cartesian product, exclusions, base-model evaluation."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError

from maple_utils.config.errors import ConfigError, message, suggest
from maple_utils.config.fields import RunConfig
from maple_utils.config.ids import run_id
from maple_utils.config.validate import validate_run


class GridConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    exclude: list[dict[str, Any]] = []
    evaluate_base_models: bool = True
    base_model_quant: Literal[4, 8, 16] = 16
    slurm: dict[str, Any] = {}  # for --executor slurm: maple_utils.grid.slurm.SlurmSettings
    _overridden: dict[str, str] = PrivateAttr(default_factory=dict)  # config field -> "-p key" (named in errors)


class GridYamlError(yaml.YAMLError):
    """A grid file that YAML reads but that would not mean what it says."""


class _GridLoader(yaml.SafeLoader):
    """YAML as a grid file means it: a key given twice is refused (PyYAML keeps the last silently, so a
    second `axes:` would replace the whole grid), aliases are refused (a few lines of nested aliases expand to
    billions of nodes; `include:` shares values between grids), and 2e-4 is the number it looks like (YAML
    1.1 reads a float without a dot as a string)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise GridYamlError(
                f"line {mark.line + 1}: an alias (*name): a grid file takes none; share values with include:"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise GridYamlError(f"line {line}: key {key!r} given twice (first on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep)


_GridLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_GridLoader)  # noqa: S506 (a SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


MERGED_SECTIONS = ("fixed", "axes", "slurm")  # merged key by key with the included grid's; other keys replace


def _inherit(parent: dict, child: dict) -> dict:
    """A grid over the one it includes: fixed, axes and slurm merge key by key (an axis replaces the included
    grid's axis or fixed value of that name, and a fixed value its axis); every other key replaces."""
    merged = {**parent, **{k: v for k, v in child.items() if k not in MERGED_SECTIONS}}
    for section in MERGED_SECTIONS:
        if section in parent or section in child:
            merged[section] = {**(parent.get(section) or {}), **(child.get(section) or {})}
    for own, other in (("axes", "fixed"), ("fixed", "axes")):
        for key in child.get(own) or {}:
            if key not in (child.get(other) or {}):
                merged.get(other, {}).pop(key, None)
    return merged


def resolve_includes(path: str | Path, chain: tuple[Path, ...] = ()) -> tuple[dict, list[Path]]:
    """A grid file's mapping with its `include:` chain resolved (a path relative to the including file), and
    the files it was read from, the included first."""
    path = Path(path)
    if path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path.resolve()))
        raise ConfigError(f"{path}: include cycle: {cycle}")
    data = load_yaml(path)
    parent = data.pop("include", None)
    if parent is None:
        return data, [path]
    if not isinstance(parent, str) or not parent.strip():
        raise ConfigError(
            f"{path}: include should be the path of one grid file (relative to {path.parent}), got {parent!r}"
        )
    included, files = resolve_includes(path.parent / parent, (*chain, path.resolve()))
    return _inherit(included, data), [*files, path]


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """`-p key=value` pairs as {key: value}, the value read as the grid file reads it (8 is a number, [8, 16] a
    list, null None); a key is a config field (a fixed value), `axes.<field>`, `slurm.<key>`, or a top-level
    grid key (name, evaluate_base_models, base_model_quant)."""
    fields = list(RunConfig.model_fields)
    top = [k for k in GridConfig.model_fields if k not in MERGED_SECTIONS + ("exclude",)]
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"-p {pair!r}: give key=value, e.g. -p rank=8 or -p axes.rank=[8,16]")
        section, dot, name = key.partition(".")
        if dot and section in ("fixed", "axes") and name not in fields:
            raise ConfigError(f"-p {key}: {name!r} is not a config field{suggest(name, fields)}")
        if not dot and key not in fields + top or dot and section not in MERGED_SECTIONS:
            raise ConfigError(
                f"-p {key}: not a config field{suggest(key, fields + top)} (a field, axes.<field>, slurm.<key>, "
                f"or one of {', '.join(top)})"
            )
        out[key] = parse_value(text, f"-p {key}")
    return out


def parse_value(text: str, where: str) -> Any:
    """A value given on the command line, read as the grid file reads it (8 a number, [8, 16] a list)."""
    try:
        return yaml.load(text, Loader=_GridLoader) if text.strip() else ""  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: {text!r} is not a YAML value: {err}") from None


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """A resolved grid mapping with `-p` overrides on top, as an including grid would state them: a field
    fixed by `-p` replaces its axis, and the exclude rules are read at that value (a rule naming another value
    of the axis can match nothing and goes; one naming this value keeps its other keys)."""
    data = {**data, **{s: dict(data.get(s) or {}) for s in MERGED_SECTIONS}}
    exclude = [dict(r) for r in data.get("exclude") or []]
    for key, value in overrides.items():
        section, dot, name = key.partition(".")
        if not dot:
            section, name = ("fixed", key) if key in RunConfig.model_fields else (None, key)
        if section is None:
            data[name] = value
            continue
        data[section][name] = value
        other = "axes" if section == "fixed" else "fixed"
        if data[other].pop(name, None) is not None and section == "fixed":
            exclude = [{k: v for k, v in r.items() if k != name} for r in exclude if r.get(name, value) == value]
    data["exclude"] = exclude
    return {k: v for k, v in data.items() if v or k not in (*MERGED_SECTIONS, "exclude")}


def effective_yaml(path: str | Path, overrides: dict[str, Any] | None = None) -> str:
    """The grid a file means once its includes and `-p` overrides are resolved, as YAML that runs alone (what
    --dry-run prints and the output folder keeps)."""
    data, files = resolve_includes(path)
    head = f"# the effective grid of {files[-1]}"
    if len(files) > 1:
        head += ", which includes " + " <- ".join(str(f) for f in reversed(files[:-1]))
    if overrides:
        data = apply_overrides(data, overrides)
        head += ", with " + " ".join(f"-p {k}={json.dumps(v)}" for k, v in overrides.items())
    return head + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


def load_grid(path: str | Path, overrides: dict[str, Any] | None = None) -> GridConfig:
    data, _ = resolve_includes(path)
    if overrides:
        data = apply_overrides(data, overrides)
    try:
        grid = GridConfig.model_validate(data)
    except ValidationError as err:
        where = f"{path} with {' '.join(f'-p {k}' for k in overrides)}" if overrides else str(path)
        raise ConfigError(message(err, where, {}, GridConfig)) from None
    grid._overridden = {k.rpartition(".")[2]: f"-p {k}" for k in overrides or {}}
    fields = list(RunConfig.model_fields)
    for section in ("fixed", "axes"):
        for key in getattr(grid, section):
            if key not in fields:
                raise ConfigError(
                    f"{path}: unknown key '{section}.{key}'{suggest(key, fields)} (allowed keys: {', '.join(fields)})"
                )
    both = sorted(set(grid.fixed) & set(grid.axes))
    if both:
        raise ConfigError(f"{path}: {', '.join(both)} is both in 'fixed' and in 'axes': give it in one of them")
    for key, values in grid.axes.items():
        if not values:
            raise ConfigError(f"{path}: axes.{key} is empty; give at least one value")
    for i, rule in enumerate(grid.exclude):
        if not rule:
            raise ConfigError(f"{path}: exclude[{i}] is empty and would exclude every point")
        for key in rule:
            if key not in grid.axes:
                raise ConfigError(
                    f"{path}: exclude[{i}] names {key!r}, which is not an axis (axes: {', '.join(grid.axes) or 'none'})"
                )
    return grid


def _excluded(point: dict, rule: dict) -> bool:
    return all(point.get(k) == v for k, v in rule.items())


def expand(grid: GridConfig, where: str) -> tuple[list[RunConfig], list[RunConfig]]:
    """Adapter configs (the axes' cartesian product minus exclusions) and base-model configs."""
    names = list(grid.axes)
    origin = {k: f"fixed.{k}" for k in grid.fixed} | {k: f"axes.{k}" for k in names} | grid._overridden
    points = [dict(zip(names, combo)) for combo in itertools.product(*(grid.axes[n] for n in names))]
    kept = [p for p in points if not any(_excluded(p, rule) for rule in grid.exclude)]
    configs = [validate_run({**grid.fixed, **point}, where, origin) for point in kept]  # field errors first
    for i, rule in enumerate(grid.exclude):
        for key, value in rule.items():
            if value not in grid.axes[key]:
                raise ConfigError(
                    f"{where}: exclude[{i}].{key} is {value!r}, which is not a value of axes.{key} "
                    f"({grid.axes[key]}): the rule matches nothing"
                )
        if not any(_excluded(p, rule) for p in points):
            raise ConfigError(f"{where}: exclude[{i}] {rule} matches no point of the axes")
    if not kept:
        raise ConfigError(f"{where}: the exclude rules remove every point of the axes; nothing would be trained")
    adapters, seen = [], set()
    for point, cfg in zip(kept, configs):
        if cfg.dataset is None:
            raise ConfigError(
                f"{where}: every grid point needs a dataset to finetune (got none at {point}); "
                "base models are evaluated through evaluate_base_models"
            )
        rid = run_id(cfg)
        if rid not in seen:
            seen.add(rid)
            adapters.append(cfg)
    bases = []
    if grid.evaluate_base_models:
        for model in dict.fromkeys(c.model for c in adapters):
            values = {**grid.fixed, "model": model, "dataset": None, "rank": None, "quant": grid.base_model_quant}
            bases.append(validate_run(values, where, origin))
    return adapters, bases


def first_run(path: str | Path) -> RunConfig:
    """The first adapter of a grid: the notebooks' defaults are the smoke grid's first run."""
    return expand(load_grid(path), str(path))[0][0]
