"""What the notebooks share: a run's folder and identity, the prepared data, stage records.

Each notebook calls these so that the same stage writes the same files whether it runs interactively,
under papermill or on a cluster node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from maple_utils import config, instruct_data, results
from maple_utils.paths import resolve


@dataclass(frozen=True)
class Run:
    """A run's folder and the identity columns its result rows carry."""

    run_id: str
    run_dir: Path
    stage: str
    cfg: config.RunConfig

    def identity(self) -> dict:
        c = self.cfg
        return {"run_id": self.run_id, "stage": self.stage, "model": c.model, "dataset": c.dataset,
                "rank": c.rank, "quant": c.quant}

    def write_rows(self, rows: list[dict]) -> Path:
        return results.write_rows(self.run_dir, self.stage, rows)

    def record(self, **facts) -> Path:
        return results.write_run_record(self.run_dir, self.stage, self.cfg.model_dump(), **facts)


def open_run(cfg: config.RunConfig, stage: str, out_dir: str, run_dir: str = "", adapter_dir: str | None = None) -> Run:
    """The run folder given by the grid; else the adapter's own run folder; else <out_dir>/runs/<run_id>."""
    if run_dir:
        folder = resolve(run_dir)
    elif adapter_dir:
        folder = resolve(adapter_dir).parent
    else:
        folder = run_folder(cfg, out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "config.json").exists():
        results.atomic_write_json(folder / "config.json", cfg.model_dump())
    return Run(run_id=folder.name, run_dir=folder, stage=stage, cfg=cfg)


def check_adapter(cfg: config.RunConfig, adapter_dir: str) -> str | None:
    """The adapter folder to load, checked before any model loads; None evaluates the base model alone."""
    if not adapter_dir:
        if cfg.dataset is not None:
            raise config.ConfigError(f"adapter_dir is empty but dataset is {cfg.dataset!r}: give the trained "
                                     "adapter's folder, or set dataset = None to evaluate the base model")
        return None
    path = resolve(adapter_dir)
    if not (path / "adapter_config.json").is_file():
        raise config.ConfigError(f"adapter_dir {path} holds no adapter_config.json: run 02_train first")
    return str(path)


def run_folder(cfg: config.RunConfig, out_dir: str | Path) -> Path:
    """<out>/runs/<run_id>: an adapter's (or a base model's) folder in a grid."""
    return resolve(out_dir) / "runs" / config.run_id(cfg)


def data_dir(cfg: config.RunConfig, out_dir: str | Path) -> Path:
    """<out>/data/<data_id>: a prepared instruction set, shared by every run that trains on it."""
    return resolve(out_dir) / "data" / config.data_id(cfg)


def prepared_data(cfg: config.RunConfig, out_dir: str) -> list[dict]:
    """The prepared instruction set of cfg's dataset, made once per grid and reused by every run."""
    folder = data_dir(cfg, out_dir)
    path = folder / "train.jsonl"
    if path.exists():
        return results.read_jsonl(path)
    records = instruct_data.prepare(cfg.dataset, cfg.train_languages, cfg.data_source, cfg.data_root,
                                    cfg.max_train_examples, cfg.seed, cfg.prompt_template)
    folder.mkdir(parents=True, exist_ok=True)
    results.write_jsonl(path, records)
    return records


def write_data_rows(cfg: config.RunConfig, out_dir: str, stats: list[dict]) -> Path:
    """Per-language example counts of a prepared set, as result rows of stage 01_data."""
    identity = {"run_id": config.data_id(cfg), "stage": "01_data", "dataset": cfg.dataset}
    rows = [results.make_row(identity, task="data", language=s["language"], metric="examples",
                             value=float(s["examples"]), n=s["examples"], seed=cfg.seed) for s in stats]
    folder = data_dir(cfg, out_dir)
    results.atomic_write_json(folder / "stats.json", stats)
    return results.write_rows(folder, "01_data", rows)
