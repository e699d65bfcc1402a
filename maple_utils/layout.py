"""The names of every file in a grid's output folder and in a run's folder: declared here and nowhere else.

<out>/
  grid.yaml, grid.json          the grid as given (one that includes another: its effective grid), and as expanded
  .grid-history/<time>/         the grid files a `--grid-changed` run replaced
  manifest.jsonl                one line per job attempt
  .runner.lock                  held by the one runner using the folder (its pid and host)
  results.parquet               every result row, gathered from the runs
  report/                       tables, figures, analysis.html
  .slurm/arrays/<stage>-*/      with --executor slurm: each submitted array's script, task list and logs
  data/<data_id>/               a prepared instruction set: train.jsonl, stats.json, problems.jsonl (records
                                dropped as bad), results.jsonl
  runs/<run_id>/                an adapter's (or a base model's) folder:
    config.json                 the full effective config as planned
    run_record.json             one section per stage: the config fields it read, provenance, facts
    results.jsonl               this run's result rows
    train_record.json, adapter/ training's record and the adapter: PEFT's adapter_config.json and
                                adapter_model.safetensors, the tokenizer, maple_config.json (the effective
                                config) and README.md (the model card)
    checkpoints/step-NNNNNN/    training checkpoints, removed once the adapter is saved
    predictions/<task>-<lang>.jsonl
    alpaca_eval/                model_outputs.json, reference_outputs.json, judgements.jsonl (the judge's cache),
                                annotations.json (the judgements in alpaca_eval's annotation format)
    <stage>.ipynb               each executed notebook, kept on failure too (<stage>.running.ipynb while it runs;
                                <stage>.ipynb.partial when its last write was cut)
    .completed/<stage>          a stage's completion marker: its fingerprint, and the size and hash of each of its
                                declared outputs (stages.yaml `outputs:`)
    .slurm/<stage>-attempt-N/   with --executor slurm: one attempt's job.pkl (the job) and entry.json (its outcome)
"""

from __future__ import annotations

from pathlib import Path

GRID_FILE = "grid.yaml"
EXPANDED_GRID = "grid.json"
MANIFEST = "manifest.jsonl"
RUNNER_LOCK = ".runner.lock"
GRID_HISTORY = ".grid-history"  # <UTC time>/grid.yaml, grid.json: a folder's earlier grids (--grid-changed)
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
HELD_OUT_DATA = "held_out.jsonl"  # records kept out of training for the held-out loss (eval_fraction)
TRAINING_CURVES = "training_curves.png"  # in a run folder (02) and in report/ (every run's)
TRACKING_DIR = "tracking"  # in a run folder: what report_to's loggers write (maple_utils/tracking.py)
TRACKING_CSV = "metrics.csv"
TRACKING_TENSORBOARD = "tensorboard"
TRACKING_WANDB = "wandb"
TRACKING_IDS = "ids.json"
TRACKING_MLFLOW = "mlruns"  # in the output folder: the grid's MLflow file store
COMPLETED_DIR = ".completed"
REPORT_PAGE = "analysis.html"
# in adapter/: PEFT's two files (its names), then MAPLE's
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_RUN_CONFIG = "maple_config.json"
MODEL_CARD = "README.md"
ALPACA_EVAL_DIR = "alpaca_eval"
SLURM_DIR = ".slurm"
SLURM_ARRAYS = "arrays"
SLURM_JOB = "job.pkl"
SLURM_ENTRY = "entry.json"
SLURM_TASKS = "tasks.json"
SLURM_SCRIPT = "array.sh"
SLURM_TASK_LOG = "task-{index}.out"  # {index}: the array index (sbatch's %a)


def runs_dir(out: str | Path) -> Path:
    return Path(out) / RUNS_DIR


def data_dir(out: str | Path) -> Path:
    return Path(out) / DATA_DIR


def run_folder(out: str | Path, run_id: str) -> Path:
    return runs_dir(out) / run_id


def data_folder(out: str | Path, data_id: str) -> Path:
    """A prepared instruction set's folder."""
    return data_dir(out) / data_id


def run_records(out: str | Path) -> list[Path]:
    """Every run's run_record.json in a grid folder."""
    return sorted(runs_dir(out).glob(f"*/{RUN_RECORD}"))


def report_page(out: str | Path) -> Path:
    return Path(out) / REPORT_DIR / REPORT_PAGE


def slurm_arrays(out: str | Path) -> Path:
    return Path(out) / SLURM_DIR / SLURM_ARRAYS


def slurm_attempt(folder: str | Path, stage: str, attempt: int) -> Path:
    """One attempt's job spec and finished entry: per stage and attempt, since the stages of one run share its
    folder and two of them (03 and 04) run at once."""
    return Path(folder) / SLURM_DIR / f"{stage}-attempt-{attempt}"


def executed_notebook(folder: str | Path, stage: str) -> Path:
    return Path(folder) / f"{stage}.ipynb"


def running_notebook(folder: str | Path, stage: str) -> Path:
    """Where papermill writes a notebook as it runs (cell by cell); renamed to executed_notebook once whole."""
    return Path(folder) / f"{stage}.running.ipynb"


def cut_notebook(folder: str | Path, stage: str) -> Path:
    """A notebook whose last write was cut (a full disk), kept for what it holds."""
    return Path(folder) / f"{stage}.ipynb.partial"


def completion_marker(folder: str | Path, stage: str) -> Path:
    return Path(folder) / COMPLETED_DIR / stage


PREDICTIONS_DIR = "predictions"


def predictions(run_dir: str | Path, task: str, language: str) -> Path:
    return Path(run_dir) / PREDICTIONS_DIR / f"{task}-{language}.jsonl"


def prediction_files(run_dir: str | Path, task: str) -> dict[str, Path]:
    """{language: its predictions file} of one task in a run folder."""
    folder = Path(run_dir) / PREDICTIONS_DIR
    return {p.stem[len(task) + 1 :]: p for p in sorted(folder.glob(f"{task}-*.jsonl"))}


# in a model given as a folder (transformers' name), which the preflight looks for
MODEL_CONFIG = "config.json"
MODEL_OUTPUTS = "model_outputs.json"  # in alpaca_eval/: alpaca_eval's names
REFERENCE_OUTPUTS = "reference_outputs.json"
JUDGEMENTS = "judgements.jsonl"
ANNOTATIONS = "annotations.json"


def alpaca_eval_outputs(run_dir: str | Path) -> Path:
    return Path(run_dir) / ALPACA_EVAL_DIR / MODEL_OUTPUTS


def alpaca_eval_references(run_dir: str | Path) -> Path:
    return Path(run_dir) / ALPACA_EVAL_DIR / REFERENCE_OUTPUTS


def alpaca_eval_judgements(run_dir: str | Path) -> Path:
    return Path(run_dir) / ALPACA_EVAL_DIR / JUDGEMENTS


def alpaca_eval_annotations(run_dir: str | Path) -> Path:
    return Path(run_dir) / ALPACA_EVAL_DIR / ANNOTATIONS


def output_pattern(spelled: str) -> str:
    """A stage's declared output (stages.yaml `outputs:`) as a glob pattern under its job's folder: names of
    this module's constants joined by "/", "*" for any file, so that each file name stays declared here."""
    parts = []
    for part in spelled.split("/"):
        if part != "*" and not (part.isupper() and isinstance(globals().get(part), str)):
            raise ValueError(f"output {spelled!r}: {part!r} is not a file name of maple_utils/layout.py nor '*'")
        parts.append(part if part == "*" else globals()[part])
    return "/".join(parts)


def row_files(out: str | Path) -> list[Path]:
    """Every results.jsonl of a grid folder: the runs' and the prepared data sets'."""
    out = Path(out)
    return sorted(runs_dir(out).glob(f"*/{ROWS}")) + sorted(data_dir(out).glob(f"*/{ROWS}"))
