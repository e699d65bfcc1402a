import json
import os

import pandas as pd
import pytest

from conftest import REPO
from maple_utils import io, layout, results


def test_atomic_write_keeps_the_old_file_when_the_rename_fails(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    io.write_jsonl(path, [{"a": 1}])

    def fail(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        io.write_jsonl(path, [{"a": 2}])
    monkeypatch.undo()
    assert io.read_jsonl(path) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["results.jsonl"]  # no temporary file left


def test_rows_follow_the_schema():
    identity = {"run_id": "r", "stage": "03_evaluate", "model": "m", "dataset": None, "rank": None, "quant": 16}
    row = results.make_row(identity, task="xnli", language="en", metric="acc", value=0.5, n=4)
    assert list(row) == list(results.ROW_FIELDS)
    with pytest.raises(KeyError, match="not a result column"):
        results.make_row(identity, task="xnli", accuracy=0.5)
    with pytest.raises(ValueError, match="NaN value"):
        results.make_row(identity, task="xnli", language="en", metric="acc", value=float("nan"))


def test_stage_rows_are_replaced_not_duplicated(tmp_path):
    identity = {"run_id": "r", "model": "m"}
    train = results.make_row({**identity, "stage": "02_train"}, task="train", metric="final_loss", value=1.0)
    ev = results.make_row({**identity, "stage": "03_evaluate"}, task="xnli", language="en", metric="acc", value=0.5)
    results.write_rows(tmp_path, "02_train", [train])
    results.write_rows(tmp_path, "03_evaluate", [ev])
    results.write_rows(tmp_path, "03_evaluate", [{**ev, "value": 0.75}])
    rows = io.read_jsonl(tmp_path / "results.jsonl")
    assert [(r["stage"], r["value"]) for r in rows] == [("02_train", 1.0), ("03_evaluate", 0.75)]
    with pytest.raises(ValueError, match="written as stage"):
        results.write_rows(tmp_path, "02_train", [ev])


def test_provenance_names_the_commit_versions_and_hardware():
    record = results.provenance()
    assert set(record) == {"maple_utils", "project_root", "git_sha", "dirty", "versions", "hardware", "created_at"}
    assert record["maple_utils"] == str(REPO / "maple_utils")  # the code that ran, not another clone's
    assert record["versions"]["torch"] and record["versions"]["peft"] and record["hardware"]["cpus"]
    json.dumps(record)


FULL_DISK = """
import json, resource, signal, sys
from pathlib import Path
from maple_utils import io

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG, as a full disk does
root = Path(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (2048, resource.RLIM_INFINITY))
outcomes = []
for name, write in [
    ("record", lambda: io.write_json(root / "record.json", {"rows": ["x" * 100] * 100})),
    ("manifest", lambda: io.append_jsonl(root / "manifest.jsonl", {"job": "b", "note": "y" * 5000})),
    ("adapter", lambda: io.atomic_dir(root / "adapter", lambda tmp: (tmp / "w.bin").write_bytes(b"z" * 5000))),
]:
    try:
        write()
        outcomes.append([name, "written"])
    except OSError as err:
        outcomes.append([name, f"errno {err.errno}"])
print(json.dumps(outcomes))
"""


def test_a_disk_that_fills_mid_write_leaves_the_previous_state_readable(tmp_path):
    import subprocess
    import sys

    io.write_json(tmp_path / "record.json", {"rows": ["old"]})
    io.append_jsonl(tmp_path / "manifest.jsonl", {"job": "a", "status": "done"})
    io.atomic_dir(tmp_path / "adapter", lambda tmp: (tmp / "w.bin").write_bytes(b"old"))
    proc = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [
        ["record", "errno 27"],
        ["manifest", "errno 27"],
        ["adapter", "errno 27"],
    ]  # EFBIG: no room
    # every earlier state is whole and readable; no temporary file or folder is left behind
    assert io.read_json(tmp_path / "record.json") == {"rows": ["old"]}
    assert (tmp_path / "adapter" / "w.bin").read_bytes() == b"old"
    assert io.read_appended(tmp_path / "manifest.jsonl") == [{"job": "a", "status": "done"}]  # the cut line skipped
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "manifest.jsonl", "record.json"]
    io.append_jsonl(tmp_path / "manifest.jsonl", {"job": "b", "status": "done"})  # room again: nothing swallowed
    assert [e["job"] for e in io.read_appended(tmp_path / "manifest.jsonl")] == ["a", "b"]


def test_rows_of_a_job_whose_latest_attempt_failed_are_left_out_of_the_report_and_named(tmp_path):
    """A grid judged locally, then switched to `judge: api`, whose judge failed: the local judge's win rates
    must not stand in the report as if they were the API judge's."""
    from maple_utils.analysis import report
    from maple_utils.grid import manifest
    from synthetic_results import synthetic_grid

    frame, _ = synthetic_grid(tmp_path)
    for run, rows in frame.groupby("run_id"):
        results.write_rows(tmp_path / "runs" / run, "03_evaluate", rows.to_dict("records"))
    judged = {"run_id": "r8q4", "stage": "05_judge", "model": "m", "dataset": "d", "rank": 8, "quant": 4}
    results.write_rows(
        tmp_path / "runs" / "r8q4",
        "05_judge",
        [results.make_row(judged, task="alpaca_eval", language="en", metric="win_rate", value=61.0, n=4)],
    )
    job = {"job": "05_judge:r8q4", "stage": "05_judge", "key": "r8q4"}
    manifest.append(tmp_path, {**job, "status": "running", "attempt": 1})
    manifest.append(tmp_path, {**job, "status": "done", "attempt": 1})
    assert "win_rate" in set(report.load(tmp_path)["metric"])  # judged, and current

    manifest.append(tmp_path, {**job, "status": "running", "attempt": 2})  # the grid's judge changed
    manifest.append(tmp_path, {**job, "status": "failed", "attempt": 2, "error": "ApiJudgeError: 401"})
    rows = report.load(tmp_path)
    assert "win_rate" not in set(rows["metric"]) and rows.attrs["left_out"] == [("05_judge", "r8q4")]
    assert "win_rate" not in set(pd.read_parquet(tmp_path / layout.RESULTS_TABLE)["metric"])
    assert len(rows) == len(frame)  # every evaluation row stays
    report.write_report(str(tmp_path), rows)
    page = layout.report_page(tmp_path).read_text(encoding="utf-8")
    assert "Left out: the rows of 05_judge in r8q4, whose latest attempt did not complete" in page


def test_every_metric_a_stage_can_write_has_a_unit():
    """The units table (results.UNITS) covers every metric the tasks registry declares and every training
    fact, so a row never fails for want of a unit after its evaluation has run."""
    from maple_utils import registry
    from maple_utils.train import loop

    def metrics_in(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "metrics" and isinstance(value, list):
                    yield from value
                else:
                    yield from metrics_in(value)
        elif isinstance(node, list):
            for value in node:
                yield from metrics_in(value)

    declared = set(metrics_in(registry.read("tasks"))) | set(loop.SUMMARY_METRICS)
    assert {"acc", "squad_f1_megaverse", "rougeL", "acc_strict", "final_eval_loss"} <= declared
    assert {m: results.unit_of(m) for m in declared}  # raises KeyError naming a metric without a unit
    assert results.kind_of({"rank": float("nan"), "dataset": None}) == "base"
    assert results.kind_of({"rank": None, "dataset": "multialpaca"}) == "data"
