"""The results store: tidy rows, run records with provenance, atomic writes.

A row is one run x stage x task x language x metric. Every write goes to a temporary file in the
destination folder and is renamed into place, so a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from maple_utils.paths import REPO_ROOT

ROW_FIELDS = ("run_id", "stage", "model", "dataset", "rank", "quant", "task", "language", "metric", "value",
              "n", "stderr", "split", "k_shot", "scoring", "limit", "seed")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """write(tmp) into a temporary file beside path, flush it to disk, then rename it over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


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
    path = Path(run_dir) / "results.jsonl"
    kept = [r for r in read_jsonl(path) if r.get("stage") != stage] if path.exists() else []
    for r in rows:
        if r.get("stage") != stage:
            raise ValueError(f"row of stage {r.get('stage')!r} written as stage {stage!r}")
    return write_jsonl(path, kept + rows)


def collect(out_dir: str | Path):
    """All rows under <out>/runs/*/results.jsonl and <out>/data/*/results.jsonl, as a DataFrame."""
    import pandas as pd

    out_dir = Path(out_dir)
    rows = []
    for path in sorted(out_dir.glob("runs/*/results.jsonl")) + sorted(out_dir.glob("data/*/results.jsonl")):
        rows += read_jsonl(path)
    frame = pd.DataFrame(rows, columns=list(ROW_FIELDS))
    keys = ["run_id", "stage", "task", "language", "metric"]
    duplicated = frame[frame.duplicated(keys, keep=False)]
    if len(duplicated):
        raise ValueError(f"duplicate result rows for keys {keys}:\n{duplicated.head()}")
    return frame


def aggregate(out_dir: str | Path):
    """Rebuild <out>/results.parquet from every run's rows (atomically); returns the rows."""
    frame = collect(out_dir)
    atomic_write(Path(out_dir) / "results.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
    return frame


def digest(frame) -> str:
    """A short hash of a set of rows: it changes whenever any row does."""
    import hashlib

    return hashlib.sha256(frame.to_json(orient="records").encode()).hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """Where and with what a run was made: git state, package versions, hardware, time."""
    from importlib import metadata

    versions = {}
    for pkg in ("maple", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "papermill", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    hardware = {"machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
                "python": platform.python_version()}
    try:
        import torch

        if torch.cuda.is_available():
            hardware["gpu"] = torch.cuda.get_device_name(0)
            hardware["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": _git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None,
            "versions": versions, "hardware": hardware, "created_at": datetime.now(timezone.utc).isoformat()}


def write_run_record(run_dir: str | Path, stage: str, config: dict, **facts) -> Path:
    """<run_dir>/run_record.json: the effective config plus, per stage, provenance and facts."""
    path = Path(run_dir) / "run_record.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"stages": {}}
    record["config"] = config
    record["stages"][stage] = {**provenance(), **facts}
    return atomic_write_json(path, record)
