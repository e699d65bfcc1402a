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

from maple_utils import config, io, layout, registry, results, stages
from maple_utils.config import ConfigError, RunConfig
from maple_utils.paths import resolve

IDENTITY_GROUP = "model"  # fields an evaluation stage must share with the run it evaluates


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

    def write_rows(self, rows: list[dict]) -> Path:
        return results.write_rows(self.folder, self.stage.name, rows)

    def record(self, **facts) -> Path:
        """This stage's section of the run record: the config fields it read, provenance, facts."""
        used = self.cfg.subset(self.stage.fields) if self.cfg is not None else {}
        identity = {k: v for k, v in self.identity().items() if k != "stage"} if self.cfg else {"run_id": self.run_id}
        return results.write_stage_record(self.folder, self.stage.name, used, identity=identity, **facts)


def job_folder(unit: str, key: str, out_dir: Path) -> Path:
    """Where a job of a stage of this unit writes, by its key (data id, run id or grid name)."""
    if unit == "dataset":
        return layout.data_dir(out_dir) / key
    if unit == "grid":
        return out_dir
    return layout.runs_dir(out_dir) / key


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
    if stage.unit == "grid":
        return StageRun(stage, None, out_dir, job_folder(stage.unit, out_dir.name, out_dir), out_dir.name)
    if stage.unit == "dataset":
        cfg = config.validate_run(own, where)
        key = config.data_id(cfg)
        return StageRun(stage, cfg, out_dir, job_folder(stage.unit, key, out_dir), key)
    run_dir = params.get("run_dir", "")
    if stage.unit == "adapter":
        cfg = config.validate_run(own, where)
        folder = _folder(run_dir, out_dir, where) if run_dir else job_folder(stage.unit, config.run_id(cfg), out_dir)
        stored = _stored_config(folder)
        if stored is not None and stored.subset(stage.outcome_fields) != cfg.subset(stage.outcome_fields):
            diff = {
                f: (getattr(stored, f), getattr(cfg, f))
                for f in stage.outcome_fields
                if getattr(stored, f) != getattr(cfg, f)
            }
            raise ConfigError(
                f"{where}: {folder / layout.CONFIG} was planned with other values {diff} "
                "(stored, given): use another run_dir, or remove that folder"
            )
    else:  # an evaluation of a run: what was trained is in its config.json
        if run_dir:
            folder = _folder(run_dir, out_dir, where)
            stored = _stored_config(folder)
            if stored is None:
                raise ConfigError(
                    f"{where}: run_dir {folder} holds no {layout.CONFIG}: run {' and '.join(stage.needs)} for it first, "
                    "or set run_dir = '' to evaluate the base model alone"
                )
            identity = config.fields_of([IDENTITY_GROUP])
            differ = {f: (own[f], getattr(stored, f)) for f in identity if f in own and own[f] != getattr(stored, f)}
            if differ:
                raise ConfigError(
                    f"{where}: {', '.join(differ)} differ from the run's {layout.CONFIG} "
                    f"({', '.join(f'{k}: given {a!r}, trained {b!r}' for k, (a, b) in differ.items())})"
                )
            cfg = config.validate_run({**stored.model_dump(), **own}, where)
        else:
            cfg = config.validate_run({**own, "dataset": None, "rank": None}, where)
            folder = job_folder(stage.unit, config.run_id(cfg), out_dir)
            stored = _stored_config(folder)
    if stored is None:
        io.write_json(folder / layout.CONFIG, cfg.model_dump())
    run = StageRun(stage, cfg, out_dir, folder, config.run_id(cfg))
    if (
        run.adapter_dir is not None
        and stage.unit == "evaluated_model"
        and not (run.adapter_dir / layout.ADAPTER_CONFIG).is_file()
    ):
        raise ConfigError(
            f"{where}: {run.adapter_dir} holds no {layout.ADAPTER_CONFIG}: run {' and '.join(stage.needs)} for this run first"
        )
    folder.mkdir(parents=True, exist_ok=True)
    return run


# ---------------------------------------------------------------- the prepared instruction set


def prepared_data(run: StageRun) -> list[dict]:
    """The prepared instruction set of the run's dataset, made once per grid and reused by every run."""
    from maple_utils.data import instruct

    path = job_folder("dataset", config.data_id(run.cfg), run.out_dir) / layout.PREPARED_DATA
    if path.exists():
        return io.read_jsonl(path)
    records, _, _ = instruct.prepare(run.cfg)
    io.write_jsonl(path, records)
    return records


def prepare_data(run: StageRun) -> tuple[list[dict], list[dict], list[dict]]:
    """01_data: prepare the set afresh, write it with its per-language counts, every dropped record
    (problems.jsonl: file, row, kind, detail) and result rows of both."""
    from maple_utils.data import instruct

    records, origins, problems = instruct.prepare(run.cfg)
    stats = instruct.language_stats(records)
    dropped = instruct.problem_counts(problems, {o["location"]: o["language"] for o in origins})
    io.write_jsonl(run.folder / layout.PREPARED_DATA, records)
    io.write_json(run.folder / layout.DATA_STATS, stats)
    io.write_jsonl(run.folder / layout.DATA_PROBLEMS, [vars(p) for p in problems])
    entry_hash = registry.entry_hash(config.known_datasets()[run.cfg.dataset])
    identity = {"run_id": run.run_id, "stage": run.stage.name, "dataset": run.cfg.dataset}
    rows = [
        results.make_row(
            identity,
            task="data",
            language=s["language"],
            metric="examples",
            value=float(s["examples"]),
            n=s["examples"],
            seed=run.cfg.data_seed,
            registry_hash=entry_hash,
        )
        for s in stats
    ]
    rows += [
        results.make_row(
            identity,
            task="data",
            language=d["language"],
            metric=f"dropped_{d['kind']}",
            value=float(d["dropped"]),
            n=d["dropped"],
            seed=run.cfg.data_seed,
            registry_hash=entry_hash,
        )
        for d in dropped
    ]
    run.write_rows(rows)
    run.record(data=origins, dropped=dropped)
    return records, stats, dropped
