import json
import os

import pytest

from conftest import REPO

from maple_utils import io, results


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
