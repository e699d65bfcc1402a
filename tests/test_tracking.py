"""Experiment tracking (report_to): a tiny training through the grid, read back with each library's own reader.

TensorBoard's EventAccumulator reads the event files, `mlflow.search_runs` and the client read the local file
store, and the wandb offline run is read record by record with wandb's own protobuf schema. Nothing leaves the
machine: wandb runs offline and mlflow writes under the output folder.
"""

import csv
import glob
import json
import os
import struct

import pytest

from conftest import run_cli
from maple_utils import config, layout, tracking
from maple_utils.data import instruct

BACKENDS = "[csv,tensorboard,wandb,mlflow]"


def test_size_matched_runs_hold_out_the_same_records_and_never_train_on_them():
    small = config.validate_run({"max_train_examples": 8, "eval_fraction": 0.25})
    large = config.validate_run({"max_train_examples": 40, "eval_fraction": 0.25})
    train_small, _, _, held_small = instruct.prepare(small)
    train_large, _, _, held_large = instruct.prepare(large)
    assert held_small == held_large and held_small
    shown = {(r["prompt"], r["response"]) for r in held_small}
    assert not shown & {(r["prompt"], r["response"]) for r in train_small + train_large}
    everything, _, _, none_held = instruct.prepare(config.validate_run({"max_train_examples": None}))
    assert none_held == []
    by_lang = {code: sum(r["language"] == code for r in everything) for code in {r["language"] for r in everything}}
    held_by_lang = {code: sum(r["language"] == code for r in held_small) for code in by_lang}
    assert held_by_lang == {code: max(1, round(0.25 * n)) for code, n in by_lang.items()}


def test_a_field_added_later_keeps_every_run_id_at_its_default():
    cfg = config.validate_run({"max_train_examples": 32})
    assert config.run_id(cfg) == config.run_id(config.validate_run({"max_train_examples": 32, "eval_fraction": 0.0}))
    assert config.run_id(cfg) != config.run_id(config.validate_run({"max_train_examples": 32, "eval_fraction": 0.1}))
    assert config.data_id(cfg) != config.data_id(config.validate_run({"max_train_examples": 32, "eval_fraction": 0.1}))


def _csv_rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [(int(r["step"]), r["name"], float(r["value"])) for r in csv.DictReader(f)]


def test_a_resumed_training_keeps_the_logged_steps_up_to_its_checkpoint(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = config.validate_run({"report_to": ["csv", "tensorboard"]})
    run_folder = tmp_path / "runs" / "r"
    with tracking.tracking(cfg, run_folder, tmp_path, "r", "train") as tracker:
        for step in range(1, 6):  # a first attempt, killed after step 5; its checkpoint was at step 3
            tracker.log(step, {"train/loss": 10.0 - step})
    with tracking.tracking(cfg, run_folder, tmp_path, "r", "train", keep_through=3) as tracker:
        for step in range(4, 7):
            tracker.log(step, {"train/loss": 100.0 - step})
    rows = _csv_rows(run_folder / layout.TRACKING_DIR / layout.TRACKING_CSV)
    assert rows == [(1, "train/loss", 9.0), (2, "train/loss", 8.0), (3, "train/loss", 7.0)] + [
        (s, "train/loss", 100.0 - s) for s in (4, 5, 6)
    ]
    events = EventAccumulator(str(run_folder / layout.TRACKING_DIR / layout.TRACKING_TENSORBOARD))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (1, 9.0), (2, 8.0), (3, 7.0), (4, 96.0), (5, 95.0), (6, 94.0)
    ]  # fmt: skip


def wandb_history(run_dir) -> list[dict]:
    """The history records of every wandb offline run under run_dir, oldest run first: the .wandb file is a
    LevelDB-style log (a 7-byte header, 32 KiB blocks of records each with a 7-byte header) of wandb's
    protobuf Records."""
    from wandb.proto import wandb_internal_pb2

    history = []
    for path in sorted(glob.glob(os.path.join(run_dir, "**", "offline-run-*", "run-*.wandb"), recursive=True)):
        data = open(path, "rb").read()
        assert data[:4] == b":W&B"
        pos, pending = 7, b""
        while pos + 7 <= len(data):
            left = 32768 - pos % 32768
            if left < 7:
                pos += left
                continue
            _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if length == 0 and kind == 0:  # a block's zero padding
                pos += left
                continue
            pending += data[pos + 7 : pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # a whole record, or the last piece of one
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                pending = b""
                if record.WhichOneof("record_type") == "history":
                    items = record.history.item  # "train/loss" is kept as the nested key (train, loss)
                    history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items})
    return history


@pytest.mark.slow
def test_a_tiny_training_is_tracked_by_tensorboard_mlflow_wandb_and_csv_and_its_curves_are_in_the_report(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tracked"
    proc = run_cli(
        "run", "params/smoke.yaml", "--out", str(out), "-p", f"report_to={BACKENDS}", "-p", "eval_fraction=0.25",
        "-p", "eval_every=2", "-p", "rank=8", "-p", "tasks=[xcopa]", "-p", "languages=[en]",
        "--stage", "03_evaluate", "--only", "model=tiny-llama,dataset=multialpaca",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [json.loads(line) for line in (out / layout.MANIFEST).read_text().splitlines()]
    assert sorted({(e["stage"], e["status"]) for e in runs}) == [
        ("01_data", "done"), ("01_data", "running"), ("02_train", "done"), ("02_train", "running"),
        ("03_evaluate", "done"), ("03_evaluate", "running"),
    ]  # fmt: skip
    (run_id,) = {e["key"] for e in runs if e["stage"] == "02_train"}
    kept = (out / layout.GRID_FILE).read_text()  # the effective grid, with the overrides, is the folder's
    assert kept.startswith("# the effective grid of params/smoke.yaml, with -p report_to=") and "  rank: 8\n" in kept
    again = run_cli("status", "params/smoke.yaml", "--out", str(out))
    assert again.returncode == 2 and "was made by another grid than params/smoke.yaml" in again.stderr
    folder = layout.run_folder(out, run_id)
    record = json.loads((folder / layout.TRAIN_RECORD).read_text())
    losses = [(p["step"], p["loss"]) for p in record["curve"]]
    held_out = [(p["step"], p["loss"]) for p in record["eval_curve"]]
    assert [s for s, _ in losses] == [1, 2, 3, 4] and [s for s, _ in held_out] == [2, 4]
    assert record["final_eval_loss"] == held_out[-1][1]
    acc = next(json.loads(line)["value"] for line in (folder / layout.ROWS).read_text().splitlines() if '"acc"' in line)
    score = ("scores/xcopa/en/acc", 4, acc)  # logged at the last training step

    tracked = folder / layout.TRACKING_DIR
    rows = _csv_rows(tracked / layout.TRACKING_CSV)
    assert [(s, v) for s, n, v in rows if n == "train/loss"] == losses
    assert [(s, v) for s, n, v in rows if n == "eval/loss"] == held_out
    assert (score[1], score[0], score[2]) in rows
    assert {n for _, n, _ in rows} >= {
        "train/learning_rate",
        "train/grad_norm",
        "train/tokens_per_s",
        "train/memory_mb",
    }

    events = EventAccumulator(str(tracked / layout.TRACKING_TENSORBOARD))
    events.Reload()
    close = pytest.approx  # TensorBoard keeps float32
    assert [(e.step, close(e.value, rel=1e-6)) for e in events.Scalars("train/loss")] == losses
    assert [(e.step, close(e.value, rel=1e-6)) for e in events.Scalars("eval/loss")] == held_out
    assert [(e.step, close(e.value)) for e in events.Scalars(score[0])] == [(4, score[2])]

    import mlflow
    from mlflow.tracking import MlflowClient

    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    store = (out / layout.TRACKING_MLFLOW).as_uri()
    mlflow.set_tracking_uri(store)
    found = mlflow.search_runs(experiment_names=[out.name])
    assert list(found["tags.maple.run_id"]) == [run_id] and list(found["params.rank"]) == ["8"]
    assert found["status"].tolist() == ["FINISHED"] and found[f"metrics.{score[0]}"].tolist() == [score[2]]
    client = MlflowClient(tracking_uri=store)
    history = {
        name: [(m.step, m.value) for m in client.get_metric_history(found["run_id"][0], name)]
        for name in ("train/loss", "eval/loss", "train/grad_norm")
    }
    assert history["train/loss"] == losses and history["eval/loss"] == held_out
    assert [s for s, _ in history["train/grad_norm"]] == [1, 2, 3, 4]

    logged = wandb_history(tracked / layout.TRACKING_WANDB)
    assert [(h["_step"], h["train/loss"]) for h in logged if "train/loss" in h] == losses
    assert [(h["_step"], h["eval/loss"]) for h in logged if "eval/loss" in h] == held_out
    assert [(h["_step"], h[score[0]]) for h in logged if score[0] in h] == [(4, score[2])]

    report = run_cli("report", "params/smoke.yaml", "--out", str(out), *sum((["-p", p] for p in (
        f"report_to={BACKENDS}", "eval_fraction=0.25", "eval_every=2", "rank=8", "tasks=[xcopa]", "languages=[en]"
    )), []))  # fmt: skip
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    drawn = json.loads((out / layout.REPORT_DIR / "figures.json").read_text())
    curves = next(f for f in drawn if f["title"] == "Training and held-out loss per run")
    assert curves["xlabels"] == ["optimiser step"] and curves["ylabels"] == ["loss (nats per response token)"]
    assert (out / layout.REPORT_DIR / layout.TRAINING_CURVES).stat().st_size > 5000
    assert "Training and held-out loss per run" in layout.report_page(out).read_text()
