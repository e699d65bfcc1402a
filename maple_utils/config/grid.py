"""Grid files: fixed values, axes expanded as a cartesian product, exclusions, base-model evaluation."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

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


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
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


def effective_yaml(path: str | Path) -> str:
    """The grid a file means once its includes are resolved, as YAML that runs alone (what --dry-run prints
    and the output folder keeps)."""
    data, files = resolve_includes(path)
    head = f"# the effective grid of {files[-1]}"
    if len(files) > 1:
        head += ", which includes " + " <- ".join(str(f) for f in reversed(files[:-1]))
    return head + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)


def load_grid(path: str | Path) -> GridConfig:
    data, _ = resolve_includes(path)
    try:
        grid = GridConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(message(err, str(path), {}, GridConfig)) from None
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
    origin = {k: f"fixed.{k}" for k in grid.fixed} | {k: f"axes.{k}" for k in names}
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
