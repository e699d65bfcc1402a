"""The stage registry (registry/stages.yaml) as objects: the one place that knows the pipeline's stages.

The planner, the dry-run listing, the grid/notebook parameter check, the manifest and the run record all
ask this module; no other code spells a stage's name.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from maple_utils import layout, registry, units
from maple_utils.config import fields as config_fields
from maple_utils.data import reads, sources


def _language_rows(codes) -> dict:
    rows = {r["code"]: r for r in registry.read("languages")["languages"]}
    return {c: rows[c] for c in codes}


# What each kind of registry dependency (`registry:` in stages.yaml) means for a job's config: the entries
# whose hashes enter its fingerprint. A grid-wide job (cfg None) depends on every task.
REGISTRY_DEPENDENCIES = {
    "models": lambda cfg: config_fields.known_models().get(cfg.model, {"model": cfg.model}),
    "datasets": lambda cfg: config_fields.known_datasets()[cfg.dataset],
    "templates": lambda cfg: registry.read("templates")["templates"][cfg.prompt_template],
    "train_languages": lambda cfg: _language_rows(
        cfg.train_languages or config_fields.known_datasets()[cfg.dataset]["languages"]
    ),
    "tasks": lambda cfg: {
        t: config_fields.known_tasks()[t] for t in (cfg.tasks if cfg else config_fields.known_tasks())
    },
    "eval_languages": lambda cfg: _language_rows(cfg.languages),
    "alpaca_eval": lambda cfg: registry.read("tasks")["alpaca_eval"],
    "judge_model": lambda cfg: (
        config_fields.known_models().get(cfg.judge_model, {"model": cfg.judge_model}) if cfg.judge == "local" else {}
    ),
}


def _model_folder(name: str) -> list[Path]:
    from maple_utils.models.resolve import local_folder

    folder = local_folder(name)
    return [folder] if folder else []


# The local files and folders behind each kind of registry dependency: their content revisions enter a job's
# fingerprint beside the entries' hashes, so an edited release file or model folder reruns exactly the jobs
# that read it. Hub data and models are named by their entries (their commits are recorded in the run
# record); embedded ones are built from the code.
CONTENTS = {
    "models": lambda cfg: _model_folder(cfg.model),
    "datasets": lambda cfg: reads.local_files(cfg, reads.instruction_reads(cfg)),
    "tasks": lambda cfg: reads.local_files(cfg, reads.task_file_reads(cfg)) if cfg else [],
    "alpaca_eval": lambda cfg: reads.local_files(cfg, reads.alpaca_eval_reads()),
    "judge_model": lambda cfg: _model_folder(cfg.judge_model) if cfg.judge == "local" else [],
}
# Path parameters the grid decides for a job, with their annotation and description (the notebook comment).
PATH_PARAMETERS = {
    "out_dir": ("str", "grid output folder, relative to the project root"),
    "run_dir": ("str", "this run's folder; empty: <out_dir>/runs/<run_id> (a base model when nothing was trained)"),
}


@dataclass(frozen=True)
class Stage:
    name: str
    unit: units.Unit
    groups: tuple[str, ...]
    paths: tuple[str, ...]
    needs: tuple[str, ...]
    registry: tuple[str, ...]
    resources: dict = field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # glob patterns under its job's folder (layout.output_pattern)

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    @property
    def fields(self) -> list[str]:
        """The config fields this stage reads (its notebook's parameters, with `paths`)."""
        return config_fields.fields_of(self.groups)

    @property
    def outcome_fields(self) -> list[str]:
        """The fields its output depends on: what its fingerprint and an adapter's id hash."""
        return config_fields.outcome_fields(self.fields)

    @property
    def parameters(self) -> list[str]:
        return self.fields + list(self.paths)

    def registry_hashes(self, cfg) -> dict[str, str]:
        """Hashes of the registry entries a job of this stage reads, by dependency kind."""
        return {kind: registry.entry_hash(REGISTRY_DEPENDENCIES[kind](cfg)) for kind in self.registry}

    def content_revisions(self, cfg) -> dict[str, str]:
        """{path: content revision} of the local files and model folders a job of this stage reads (CONTENTS);
        none for a grid-wide job, which reads rows. A read with no local layout is left to the preflight."""
        paths = []
        for kind in self.registry:
            if kind in CONTENTS and cfg is not None:
                try:
                    paths += list(CONTENTS[kind](cfg))
                except sources.MissingDataError:
                    continue
        return reads.revisions(paths)


def _check(entry: dict, known: list[str]) -> None:
    name = entry.get("name", "?")
    where = f"{registry.folder_for('stages') / 'stages.yaml'}: stage {name}"
    if entry.get("unit") not in units.UNITS:
        raise ValueError(f"{where}: unit {entry.get('unit')!r} (allowed: {', '.join(units.UNITS)})")
    for need in entry.get("needs", []):
        if need not in known:
            raise ValueError(f"{where}: needs {need!r}, which is not a stage listed before it")
    for dep in entry.get("registry", []):
        if dep not in REGISTRY_DEPENDENCIES:
            raise ValueError(f"{where}: registry dependency {dep!r} (allowed: {', '.join(REGISTRY_DEPENDENCIES)})")
    for p in entry.get("paths", []):
        if p not in PATH_PARAMETERS:
            raise ValueError(f"{where}: path parameter {p!r} (allowed: {', '.join(PATH_PARAMETERS)})")
    config_fields.fields_of(entry.get("groups", []))  # unknown groups raise
    for spelled in entry.get("outputs", []):
        try:
            layout.output_pattern(spelled)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


@functools.cache
def _load(folder: str) -> tuple[Stage, ...]:
    out: list[Stage] = []
    for entry in registry.read("stages")["stages"]:
        _check(entry, [s.name for s in out])
        out.append(
            Stage(
                name=entry["name"],
                unit=units.UNITS[entry["unit"]],
                groups=tuple(entry.get("groups", [])),
                paths=tuple(entry.get("paths", [])),
                needs=tuple(entry.get("needs", [])),
                registry=tuple(entry.get("registry", [])),
                resources=dict(entry.get("resources", {})),
                outputs=tuple(layout.output_pattern(o) for o in entry.get("outputs", [])),
            )
        )
    return tuple(out)


def all_stages() -> tuple[Stage, ...]:
    """Every stage, in the order they run."""
    return _load(str(registry.folder_for("stages")))


def get(name: str) -> Stage:
    for s in all_stages():
        if s.name == name:
            return s
    raise KeyError(f"unknown stage {name!r} (stages: {', '.join(s.name for s in all_stages())})")


def of_unit(unit: units.Unit) -> list[Stage]:
    return [s for s in all_stages() if s.unit is unit]


def reading(group: str) -> list[str]:
    """Names of the stages that read a config field group (the evaluation rows: those of `evaluation`'s)."""
    return [s.name for s in all_stages() if group in s.groups]
