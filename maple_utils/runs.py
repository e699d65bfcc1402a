"""What a notebook knows about the job it runs: its stage, its config, its folder, its records.

`open_stage(name, globals())` is the notebooks' second cell. It validates the notebook's parameters (the
fields its stage reads, named by the stage registry), finds the folder the job writes to and the run's
effective config, and refuses a mismatch before any model loads:
- data and training stages build the config from their own fields (they read every field that
  identifies their output);
- evaluation stages read the run's config.json (what was trained), check the identity fields they
  declare (model, quant) against it, and apply their own fields (tasks, languages, ...) on top: a field
  a notebook does not declare is never refilled with a default.
Each stage writes its own section of run_record.json: the fields it read, provenance and its facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maple_utils import config, io, layout, results, stages, units
from maple_utils.config import ConfigError, RunConfig
from maple_utils.paths import resolve
from maple_utils.units import ConfigSource

SHARED_WITH_RUN = "model"  # the field group an evaluation stage must share with the run it evaluates


@dataclass(frozen=True)
class StageRun:
    """One job of a stage: its effective config and the folder it writes to."""

    stage: stages.Stage
    cfg: RunConfig | None  # None for a stage that runs once per grid
    out_dir: Path
    folder: Path
    run_id: str

    def identity(self) -> dict:
        c = self.cfg
        return {
            "run_id": self.run_id,
            "stage": self.stage.name,
            "model": c.model,
            "dataset": c.dataset,
            "rank": c.rank,
            "quant": c.quant,
        }

    @property
    def adapter_dir(self) -> Path | None:
        """The adapter an evaluation loads; None for a base model evaluated alone."""
        return self.folder / layout.ADAPTER if self.cfg is not None and self.cfg.dataset else None

    @property
    def checkpoint_dir(self) -> Path:
        """Where training checkpoints go while the adapter is being trained."""
        return self.folder / layout.CHECKPOINTS

    def finish(self, rows: list[dict], **facts) -> Path:
        """The end of a stage that makes rows: its result rows (results.jsonl), then its section of the run
        record (the config fields it read, provenance, facts); returns the run record's path."""
        results.write_rows(self.folder, self.stage.name, rows)
        used = self.cfg.subset(self.stage.fields) if self.cfg is not None else {}
        identity = {k: v for k, v in self.identity().items() if k != "stage"} if self.cfg else {"run_id": self.run_id}
        return results.write_stage_record(self.folder, self.stage.name, used, identity=identity, **facts)


def _parameters(stage: stages.Stage, namespace: dict) -> dict:
    missing = [p for p in stage.parameters if p not in namespace]
    if missing:
        raise ConfigError(
            f"notebook {stage.notebook} lacks parameter(s) {missing} that stage {stage.name} reads "
            "(regenerate its parameters cell: python scripts/write_notebook_parameters.py)"
        )
    return {p: namespace[p] for p in stage.parameters}


def _stored_config(folder: Path) -> RunConfig | None:
    path = folder / layout.CONFIG
    if not path.exists():
        return None
    return config.validate_run(io.read_json(path), str(path))


def _folder(run_dir: str, out_dir: Path, where: str) -> Path:
    """The run folder as given, made absolute and free of '..' and symlinks (so rows never name '..' as
    their run), which must lie inside <out_dir>/runs: a notebook parameter cannot make a run write
    anywhere else."""
    folder = resolve(run_dir).resolve()
    runs_root = layout.runs_dir(out_dir).resolve()
    if runs_root not in folder.parents:
        raise ConfigError(
            f"{where}: run_dir {run_dir!r} is {folder}, outside {runs_root} (allowed: a folder "
            f"inside <out_dir>/{layout.RUNS_DIR}, e.g. '' for the run's own, or set out_dir to "
            "the grid's output folder)"
        )
    return folder


def open_stage(name: str, namespace: dict) -> StageRun:
    """The job a notebook's parameters describe, validated before anything heavy is loaded."""
    stage = stages.get(name)
    params = _parameters(stage, namespace)
    where = f"{stage.notebook} parameters"
    own = {f: params[f] for f in stage.fields}
    out_dir = resolve(params["out_dir"]).resolve()
    unit = stage.unit
    if unit.config_source is ConfigSource.NONE:
        key = unit.key(None, out_dir.name)
        return StageRun(stage, None, out_dir, unit.folder(out_dir, key), key)
    run_dir = params.get("run_dir", "")
    folder = _folder(run_dir, out_dir, where) if run_dir else None
    if unit.config_source is ConfigSource.OWN:
        cfg = config.validate_run(own, where)
    else:
        cfg = _trained_config(stage, own, folder, where)
    key = unit.key(cfg, out_dir.name)
    if key is None:
        raise ConfigError(f"{where}: dataset is None, but stage {name} makes one job per {unit.title}")
    folder = folder or unit.folder(out_dir, key)
    if unit.run_folder:
        _keep_config(stage, cfg, folder, where)
    run = StageRun(stage, cfg, out_dir, folder, key)
    if unit.config_source is ConfigSource.TRAINED and run.adapter_dir is not None:
        if not (run.adapter_dir / layout.ADAPTER_CONFIG).is_file():
            raise ConfigError(
                f"{where}: {run.adapter_dir} holds no {layout.ADAPTER_CONFIG}: "
                f"run {' and '.join(stage.needs)} for this run first"
            )
    folder.mkdir(parents=True, exist_ok=True)
    return run


def _trained_config(stage: stages.Stage, own: dict, folder: Path | None, where: str) -> RunConfig:
    """An evaluation's config: what was trained (the run's config.json), its own fields on top; with no
    run folder, a base model's, evaluated alone."""
    if folder is None:
        return config.validate_run({**own, "dataset": None, "rank": None}, where)
    stored = _stored_config(folder)
    if stored is None:
        raise ConfigError(
            f"{where}: run_dir {folder} holds no {layout.CONFIG}: run {' and '.join(stage.needs)} for it first, "
            "or set run_dir = '' to evaluate the base model alone"
        )
    identity = config.fields_of([SHARED_WITH_RUN])
    differ = {f: (own[f], getattr(stored, f)) for f in identity if f in own and own[f] != getattr(stored, f)}
    if differ:
        raise ConfigError(
            f"{where}: {', '.join(differ)} differ from the run's {layout.CONFIG} "
            f"({', '.join(f'{k}: given {a!r}, trained {b!r}' for k, (a, b) in differ.items())})"
        )
    return config.validate_run({**stored.model_dump(), **own}, where)


def _keep_config(stage: stages.Stage, cfg: RunConfig, folder: Path, where: str) -> None:
    """A run folder keeps the config it was planned with: written when absent; a stage whose own fields make
    the run refuses a folder planned with other values."""
    stored = _stored_config(folder)
    if stored is None:
        io.write_json(folder / layout.CONFIG, cfg.model_dump())
        return
    if stage.unit.config_source is ConfigSource.OWN:
        differ = {f: (getattr(stored, f), getattr(cfg, f)) for f in stage.outcome_fields}
        differ = {f: pair for f, pair in differ.items() if pair[0] != pair[1]}
        if differ:
            raise ConfigError(
                f"{where}: {folder / layout.CONFIG} was planned with other values {differ} "
                "(stored, given): use another run_dir, or remove that folder"
            )


# ---------------------------------------------------------------- the prepared instruction set


def training_set(run: StageRun) -> tuple[list[dict], list[dict]]:
    """The prepared instruction set of the run's dataset (01_data's) and the records it holds out for the
    held-out loss (eval_fraction), made here once per grid when absent and reused by every run trained on it."""
    from maple_utils.data import instruct

    data = units.DATASET  # 01_data's unit: its key and folder, as the planner makes them
    folder = data.folder(run.out_dir, data.key(run.cfg, run.out_dir.name))
    train, held_out = folder / layout.PREPARED_DATA, folder / layout.HELD_OUT_DATA
    if train.exists() and (held_out.exists() or not run.cfg.eval_fraction):
        return io.read_jsonl(train), io.read_jsonl(held_out) if held_out.exists() else []
    records, _, _, kept_out = instruct.prepare(run.cfg)
    io.write_jsonl(train, records)
    io.write_jsonl(held_out, kept_out)
    return records, kept_out
