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
    "model",
    "dataset",
    "rank",
    "quant",
    "task",
    "language",
    "metric",
    "value",
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


def make_row(identity: dict, **values) -> dict:
    """A result row: identity (run_id, stage, model, ...) plus the measured values; unknown keys are refused."""
    row = {k: None for k in ROW_FIELDS}
    for key, value in {**identity, **values}.items():
        if key not in row:
            raise KeyError(f"{key!r} is not a result column (columns: {', '.join(ROW_FIELDS)})")
        row[key] = value
    if isinstance(row["value"], float) and math.isnan(row["value"]):
        raise ValueError(f"NaN value for {row['task']}/{row['language']}/{row['metric']} of run {row['run_id']}")
    return row


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
    frame = pd.DataFrame(rows, columns=list(ROW_FIELDS))
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
