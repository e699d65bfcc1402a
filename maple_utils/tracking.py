"""Experiment tracking: what a run logs while it trains and once it is evaluated, through the libraries
researchers already read (`report_to`: csv, tensorboard, wandb, mlflow), each imported only when asked for
(`pip install maple[tracking]` installs the three libraries). Nothing leaves the machine unless the user says so:

  csv          <run>/tracking/metrics.csv      step,name,value rows, one per value, appended as they come
  tensorboard  <run>/tracking/tensorboard/     torch's SummaryWriter event files (`tensorboard --logdir runs/x/runs`)
  wandb        <run>/tracking/wandb/           an offline run unless WANDB_MODE says otherwise (`wandb sync` uploads)
  mlflow       <out_dir>/mlruns                a local file store, one experiment per grid, unless
                                               MLFLOW_TRACKING_URI names another store or a server

Names: train/loss, train/learning_rate, train/grad_norm, train/tokens_per_s, train/memory_mb per optimiser
step; eval/loss (the held-out loss, `eval_fraction`) every `eval_every` steps; scores/<task>/<language>/<metric>
once 03_evaluate has the run's rows, at the last training step. A run's wandb and mlflow ids are kept in
<run>/tracking/ids.json, so a resumed training and the evaluation log to the same tracked run.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io as text_io
import json
import os
import time
import uuid
from pathlib import Path

from maple_utils import io, layout

BACKENDS = ("csv", "tensorboard", "wandb", "mlflow")
SCORES = "scores/"  # the prefix of final evaluation scores: logged again (replaced) when 03 reruns


def metric_names(rows: list[dict]) -> dict[str, float]:
    """Result rows as tracked scores: scores/<task>/<language>/<metric> -> value."""
    return {f"{SCORES}{r['task']}/{r['language']}/{r['metric']}": float(r["value"]) for r in rows}


class _Csv:
    """metrics.csv in the run's tracking folder: long rows (step, name, value, time). A fresh training
    starts it afresh, a resumed one keeps the rows up to its step, scores replace earlier scores."""

    def __init__(self, folder: Path, keep_through: int | None, phase: str):
        self.path = folder / layout.TRACKING_CSV
        rows = []
        if self.path.is_file():
            with open(self.path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        if phase == "train":
            rows = [r for r in rows if keep_through is not None and int(r["step"]) <= keep_through]
        else:
            rows = [r for r in rows if not r["name"].startswith(SCORES)]
        self._write(rows)
        self.file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.writer = csv.writer(self.file)

    def _write(self, rows: list[dict]) -> None:
        buffer = text_io.StringIO()
        writer = csv.DictWriter(buffer, ["step", "name", "value", "time"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        io.write_text(self.path, buffer.getvalue())

    def log(self, step: int, metrics: dict[str, float]) -> None:
        now = round(time.time(), 3)
        self.writer.writerows([step, k, repr(float(v)), now] for k, v in metrics.items())
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class _TensorBoard:
    def __init__(self, folder: Path, keep_through: int | None, phase: str):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # a resumed training: events after its checkpoint's step (a killed attempt's) are dropped on reading
        purge = keep_through + 1 if phase == "train" and keep_through else None
        self.writer = SummaryWriter(str(folder / layout.TRACKING_TENSORBOARD), purge_step=purge)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, folder: Path, ids: dict, project: str, name: str, params: dict):
        import wandb

        ids.setdefault("wandb", uuid.uuid4().hex[:8])
        self.run = wandb.init(
            project=project,
            name=name,
            id=ids["wandb"],
            dir=str(folder),  # wandb writes its layout.TRACKING_WANDB folder there
            config=params,
            resume="allow",
            mode=os.environ.get("WANDB_MODE", "offline"),  # offline unless the user asked for more
            settings=wandb.Settings(console="off", quiet=True, silent=True, disable_git=True),
            reinit="create_new",
        )

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class _Mlflow:
    def __init__(self, folder: Path, ids: dict, out_dir: Path, project: str, name: str, params: dict):
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 keeps the file store in maintenance mode behind this opt-in; it is the store that takes
            # the writes of several jobs of a grid at once (a SQLite file serialises them)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (out_dir / layout.TRACKING_MLFLOW).resolve().as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(project)
        experiment_id = experiment.experiment_id if experiment else _create_experiment(self.client, project)
        if ids.get("mlflow"):
            self.run_id = ids["mlflow"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=name, tags={"maple.run_id": name})
            self.run_id = ids["mlflow"] = run.info.run_id
            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def _create_experiment(client, name: str) -> str:
    """The grid's experiment, made once: a second job that made it meanwhile is read back."""
    try:
        return client.create_experiment(name)
    except Exception:  # another job of the grid created it first (RESOURCE_ALREADY_EXISTS)
        return client.get_experiment_by_name(name).experiment_id


class Tracker:
    """One run's loggers, as `report_to` lists them; `log(step, metrics)` reaches every one."""

    def __init__(self, backends: list):
        self.backends = backends

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for backend in self.backends:
            backend.log(step, metrics)

    def close(self) -> None:
        for backend in self.backends:
            backend.close()


def params_of(cfg) -> dict:
    """What a tracked run records as its parameters: the fields of the run's config."""
    return {
        k: v if isinstance(v, (int, float, str, bool)) or v is None else json.dumps(v) for k, v in dict(cfg).items()
    }


def open_tracker(
    cfg, run_folder: Path, out_dir: Path, name: str, phase: str, keep_through: int | None = None
) -> Tracker:
    """The run's tracker for `phase` (train: a fresh training, or one resumed after step `keep_through`;
    evaluate: the final scores, into the run's tracked run)."""
    folder = Path(run_folder) / layout.TRACKING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    ids_path = folder / layout.TRACKING_IDS
    ids = io.read_json(ids_path) if ids_path.is_file() else {}
    if phase == "train" and not keep_through:
        ids = {}  # a fresh training is a new tracked run
    project, params = Path(out_dir).name, params_of(cfg)
    backends = []
    for kind in cfg.report_to:
        if kind == "csv":
            backends.append(_Csv(folder, keep_through, phase))
        elif kind == "tensorboard":
            backends.append(_TensorBoard(folder, keep_through, phase))
        elif kind == "wandb":
            backends.append(_Wandb(folder, ids, project, name, params))
        elif kind == "mlflow":
            backends.append(_Mlflow(folder, ids, Path(out_dir), project, name, params))
    io.write_json(ids_path, ids)
    return Tracker(backends)


@contextlib.contextmanager
def tracking(cfg, run_folder: Path, out_dir: Path, name: str, phase: str, keep_through: int | None = None):
    tracker = open_tracker(cfg, run_folder, out_dir, name, phase, keep_through)
    try:
        yield tracker
    finally:
        tracker.close()


def for_training(run):
    """What loop.train's `track` takes: opens the run's tracked run, fresh or resumed after a step."""
    return functools.partial(open_tracker, run.cfg, run.folder, run.out_dir, run.run_id, "train")


def log_scores(run, rows: list[dict]) -> int:
    """03_evaluate's last step: the run's scores into its tracked run, at its last training step (0 for a base
    model). Returns the number of values logged."""
    if not run.cfg.report_to:
        return 0
    record = run.folder / layout.TRAIN_RECORD
    step = int(io.read_json(record).get("steps", 0)) if record.is_file() else 0
    scores = metric_names(rows)
    with tracking(run.cfg, run.folder, run.out_dir, run.run_id, "evaluate") as tracker:
        tracker.log(step, scores)
    return len(scores)
