"""The results store: tidy rows, and run records with honest provenance.

A row is one run x stage x task x language x metric. A run record holds one section per stage, written by
that stage alone (under a lock, so stages running side by side never lose each other's sections): the
config fields the stage read, where its code and data came from, and its facts.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import os
import platform
import subprocess
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from maple_utils import io, layout
from maple_utils.paths import PACKAGE_DIR, project_root

ROW_FIELDS = (
    "run_id",
    "stage",
    "kind",
    "model",
    "dataset",
    "rank",
    "quant",
    "task",
    "language",
    "metric",
    "value",
    "unit",
    "n",
    "stderr",
    "split",
    "k_shot",
    "scoring",
    "limit",
    "seed",
    "task_version",
    "registry_hash",
    "exemplars_dropped",
    "truncated",
)
ROW_KEY = ["run_id", "stage", "task", "language", "metric"]
# the integer columns, nullable (a base model has no rank, a data set no quantisation): pandas' Int64
INTEGER_COLUMNS = ("rank", "quant", "n", "k_shot", "limit", "seed", "task_version", "exemplars_dropped", "truncated")
KINDS = ("adapter", "base", "data")  # what a row's run is: a trained adapter, a base model alone, a prepared set

# The unit of every metric a stage writes (docs/results.md): scores are fractions in [0, 1]; win rates are in
# percent, as alpaca_eval and the study's Table 2 print them.
UNITS = {
    "fraction": (
        "acc", "acc_megaverse", "acc_strict", "squad_f1", "squad_em", "squad_f1_megaverse", "squad_em_megaverse",
        "mlqa_f1", "mlqa_em", "mlqa_f1_megaverse", "mlqa_em_megaverse", "rouge1", "rouge2", "rougeL",
        "rouge1_megaverse", "rouge2_megaverse", "rougeL_megaverse", "empty_output_rate", "padding_fraction",
        "unparsed_rate",
    ),
    "percent": ("win_rate", "discrete_win_rate", "trainable_pct"),
    "count": ("examples", "held_out", "steps", "unparsed_judgements"),
    "characters": ("output_chars", "avg_output_chars"),
    "nats per token": ("final_loss", "final_eval_loss"),
    "tokens/s": ("tokens_per_s",),
    "MB": ("peak_memory_mb",),
    "s": ("wall_s",),
}  # fmt: skip
UNIT_OF = {metric: unit for unit, metrics in UNITS.items() for metric in metrics}


def unit_of(metric: str) -> str:
    """A metric's unit; a count for the data stage's dropped_<kind> counts."""
    if metric.startswith("dropped_"):
        return "count"
    if metric not in UNIT_OF:
        raise KeyError(f"metric {metric!r} has no unit: declare it in maple_utils.results.UNITS")
    return UNIT_OF[metric]


def kind_of(row: dict) -> str:
    """adapter (a rank), base (a model without a dataset) or data (a prepared set: a dataset, no rank)."""
    import pandas as pd  # isna: None, NaN and pandas' NA alike

    if not pd.isna(row.get("rank")):
        return "adapter"
    return "base" if pd.isna(row.get("dataset")) else "data"


def make_row(identity: dict, **values) -> dict:
    """A result row: identity (run_id, stage, model, ...) plus the measured values; unknown keys are refused."""
    row = {k: None for k in ROW_FIELDS}
    for key, value in {**identity, **values}.items():
        if key not in row:
            raise KeyError(f"{key!r} is not a result column (columns: {', '.join(ROW_FIELDS)})")
        row[key] = value
    if isinstance(row["value"], float) and math.isnan(row["value"]):
        raise ValueError(f"NaN value for {row['task']}/{row['language']}/{row['metric']} of run {row['run_id']}")
    row["kind"] = row["kind"] or kind_of(row)
    row["unit"] = row["unit"] or unit_of(row["metric"])
    return row


def typed(frame):
    """Rows as typed data: nullable integers for rank, quant, seed and the counts, `kind` and `unit` on every
    row (filled for rows written before they were columns)."""
    import pandas as pd

    frame = frame.reindex(columns=list(ROW_FIELDS))  # a table written before kind and unit were columns
    for column in ("kind", "unit"):
        frame[column] = frame[column].astype(object)
    for column in INTEGER_COLUMNS:
        frame[column] = pd.array(frame[column].astype("Float64").round(), dtype="Int64")
    if len(frame):
        missing = frame["kind"].isna()
        frame.loc[missing, "kind"] = [kind_of(r) for r in frame.loc[missing, ["rank", "dataset"]].to_dict("records")]
        missing = frame["unit"].isna()
        frame.loc[missing, "unit"] = frame.loc[missing, "metric"].map(unit_of)
    frame[["kind", "unit"]] = frame[["kind", "unit"]].astype("str")
    frame["value"] = frame["value"].astype(float)
    frame["stderr"] = frame["stderr"].astype(float)
    return frame


def load(out_dir: str | Path):
    """The result rows of a grid folder as typed data (its results.parquet; docs/results.md lists the columns):
    one row per run x stage x task x language x metric."""
    import pandas as pd

    path = Path(out_dir) / layout.RESULTS_TABLE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no results yet (run the grid, or `maple report` to gather the rows)")
    return typed(pd.read_parquet(path))


def load_predictions(out_dir: str | Path, task: str, lang: str):
    """Every evaluated model's per-item predictions for one task and language, one row per model x item,
    joinable across models on `id` (a string for every task): run_id, kind, model, dataset, rank, quant, id,
    prediction, reference, one column per item score, and what the task's file records beside them."""
    import pandas as pd

    rows = []
    for folder in sorted(layout.runs_dir(out_dir).glob("*")):
        path = layout.predictions(folder, task, lang)
        config_path = folder / layout.CONFIG
        if not path.is_file() or not config_path.is_file():
            continue
        cfg = io.read_json(config_path)
        run = {"run_id": folder.name, "model": cfg["model"], "dataset": cfg["dataset"]}
        run.update(rank=cfg["rank"] if cfg["dataset"] else None, quant=cfg["quant"])
        run["kind"] = kind_of(run)
        for item in io.read_jsonl(path):
            scores = item.pop("scores", {}) or {}
            rows.append({**run, **item, "id": str(item["id"]), **scores})
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise FileNotFoundError(f"no predictions for {task}-{lang} under {layout.runs_dir(out_dir)}")
    for column in ("rank", "quant"):
        frame[column] = pd.array(frame[column].astype("Float64"), dtype="Int64")
    return frame


def write_rows(run_dir: str | Path, stage: str, rows: list[dict]) -> Path:
    """Replace this stage's rows in the run's results.jsonl, keeping the other stages' rows."""
    path = Path(run_dir) / layout.ROWS
    with _locked(path):
        kept = [r for r in io.read_jsonl(path) if r.get("stage") != stage] if path.exists() else []
        for r in rows:
            if r.get("stage") != stage:
                raise ValueError(f"row of stage {r.get('stage')!r} written as stage {stage!r}")
        return io.write_jsonl(path, kept + rows)


def collect(out_dir: str | Path, leave_out=()):
    """All rows of a grid folder (its runs' and prepared data sets'), as a DataFrame, without the rows of the
    (stage, folder name) pairs in `leave_out`; frame.attrs["left_out"] lists those that had rows."""
    import pandas as pd

    leave_out, rows, left = set(leave_out), [], set()
    for path in layout.row_files(out_dir):
        for r in io.read_jsonl(path):
            if (r.get("stage"), path.parent.name) in leave_out:
                left.add((r.get("stage"), path.parent.name))
            else:
                rows.append(r)
    frame = typed(pd.DataFrame(rows, columns=list(ROW_FIELDS)))
    duplicated = frame[frame.duplicated(ROW_KEY, keep=False)]
    if len(duplicated):
        raise ValueError(f"duplicate result rows for keys {ROW_KEY}:\n{duplicated.head()}")
    frame.attrs["left_out"] = sorted(left)
    return frame


def aggregate(out_dir: str | Path, leave_out=()):
    """Rebuild <out>/results.parquet from every run's rows (atomically), without those of `leave_out`
    (collect); returns the rows."""
    frame = collect(out_dir, leave_out)
    io.atomic_write(Path(out_dir) / layout.RESULTS_TABLE, lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def digest(frame) -> str:
    """A short hash of a set of rows: it changes whenever any row does."""
    return hashlib.sha256(frame.to_json(orient="records").encode()).hexdigest()[:16]


# ---------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(
            ["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def code_provenance() -> dict:
    """The code that ran: where maple_utils was imported from, and that checkout's git state."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "maple_utils": str(PACKAGE_DIR),
        "project_root": str(project_root()),
        "git_sha": _git("rev-parse", "HEAD"),
        "dirty": bool(status) if status is not None else None,
    }


def provenance() -> dict:
    """Where and with what a stage ran: code, package versions, hardware, time."""
    from importlib import metadata

    versions = {}
    for pkg in (
        "maple",
        "torch",
        "transformers",
        "peft",
        "bitsandbytes",
        "accelerate",
        "datasets",
        "papermill",
        "pandas",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    hardware = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    import sys

    if "torch" in sys.modules:  # never imported here just to look: analysis runs without torch
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            hardware["gpu"] = torch.cuda.get_device_name(0)
            hardware["gpu_count"] = torch.cuda.device_count()
    return {
        **code_provenance(),
        "versions": versions,
        "hardware": hardware,
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


def model_revision(model, loaded_from: str) -> dict:
    """The model's revision: the hub commit it was loaded at, or a content hash of its local folder."""
    if Path(loaded_from).is_dir():
        return {"location": loaded_from, "revision": io.folder_revision(loaded_from)}
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {"location": loaded_from, "revision": commit}


# ---------------------------------------------------------------- run records


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def write_stage_record(run_dir: str | Path, stage: str, config: dict, **facts) -> Path:
    """This stage's section of <run_dir>/run_record.json: the config fields it read, provenance and facts.
    Other stages' sections are kept as they are."""
    path = Path(run_dir) / layout.RUN_RECORD
    with _locked(path):
        record = io.read_json(path) if path.exists() else {}
        record.setdefault("stages", {})[stage] = {"config": config, **provenance(), **facts}
        return io.write_json(path, record)
