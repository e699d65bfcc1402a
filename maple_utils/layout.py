"""The names of every file in a grid's output folder and in a run's folder: declared here and nowhere else.

<out>/
  grid.yaml, grid.json          the grid as given (one that includes another: its effective grid), and as expanded
  manifest.jsonl                one line per job attempt
  results.parquet               every result row, gathered from the runs
  report/                       tables, figures, analysis.html
  data/<data_id>/               a prepared instruction set: train.jsonl, stats.json, problems.jsonl (records
                                dropped as bad), results.jsonl
  runs/<run_id>/                an adapter's (or a base model's) folder:
    config.json                 the full effective config as planned
    run_record.json             one section per stage: the config fields it read, provenance, facts
    results.jsonl               this run's result rows
    train_record.json, adapter/ training's record and the adapter
    checkpoints/step-NNNNNN/    training checkpoints, removed once the adapter is saved
    predictions/<task>-<lang>.jsonl
    alpaca_eval/                model_outputs.json, reference_outputs.json, judgements.jsonl (the judge's cache),
                                annotations.json (the judgements in alpaca_eval's annotation format)
    <stage>.ipynb               each executed notebook, kept on failure too
    .completed/<stage>          a stage's completion marker: its fingerprint
"""

from __future__ import annotations

from pathlib import Path

GRID_FILE = "grid.yaml"
EXPANDED_GRID = "grid.json"
MANIFEST = "manifest.jsonl"
RESULTS_TABLE = "results.parquet"
REPORT_DIR = "report"
DATA_DIR = "data"
RUNS_DIR = "runs"

CONFIG = "config.json"
RUN_RECORD = "run_record.json"
ROWS = "results.jsonl"
TRAIN_RECORD = "train_record.json"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"
PREPARED_DATA = "train.jsonl"
DATA_STATS = "stats.json"
DATA_PROBLEMS = "problems.jsonl"
COMPLETED_DIR = ".completed"


def runs_dir(out: str | Path) -> Path:
    return Path(out) / RUNS_DIR


def data_dir(out: str | Path) -> Path:
    return Path(out) / DATA_DIR


def executed_notebook(folder: str | Path, stage: str) -> Path:
    return Path(folder) / f"{stage}.ipynb"


def completion_marker(folder: str | Path, stage: str) -> Path:
    return Path(folder) / COMPLETED_DIR / stage


PREDICTIONS_DIR = "predictions"


def predictions(run_dir: str | Path, task: str, language: str) -> Path:
    return Path(run_dir) / PREDICTIONS_DIR / f"{task}-{language}.jsonl"


def alpaca_eval_outputs(run_dir: str | Path) -> Path:
    return Path(run_dir) / "alpaca_eval" / "model_outputs.json"


def alpaca_eval_references(run_dir: str | Path) -> Path:
    return Path(run_dir) / "alpaca_eval" / "reference_outputs.json"


def alpaca_eval_judgements(run_dir: str | Path) -> Path:
    return Path(run_dir) / "alpaca_eval" / "judgements.jsonl"


def alpaca_eval_annotations(run_dir: str | Path) -> Path:
    return Path(run_dir) / "alpaca_eval" / "annotations.json"


def row_files(out: str | Path) -> list[Path]:
    """Every results.jsonl of a grid folder: the runs' and the prepared data sets'."""
    out = Path(out)
    return sorted(runs_dir(out).glob(f"*/{ROWS}")) + sorted(data_dir(out).glob(f"*/{ROWS}"))
