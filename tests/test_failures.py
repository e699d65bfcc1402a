"""A grid whose jobs fail in the three ways a long grid meets: a cell raises, the kernel is killed, a cell
hangs. Run on a copy of the repo whose stage registry holds one probe stage, so the failures are real
kernels failing, not simulated ones. And a grid where one run's training fails: everything else completes."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from conftest import copy_with_probe_stage, run_cli
from maple_utils import layout

pytestmark = pytest.mark.slow

PROBE = """
import os, signal, time
if quant == 4 and model == "tiny-llama":
    raise ValueError("a cell that raises")
if quant == 8 and model == "tiny-llama":
    os.kill(os.getpid(), signal.SIGKILL)  # the kernel dies, as under the OOM killer
if quant == 16 and model == "tiny-llama":
    time.sleep(120)  # hangs past its timeout
print("probe ok", model, quant)
"""


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    root = copy_with_probe_stage(tmp_path_factory.mktemp("failures") / "maple", PROBE, {"time_min": 1})
    (root / "grid.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "failures",
                "axes": {"model": ["tiny-llama", "tiny-mistral"], "quant": [4, 8, 16]},
                "fixed": {"dataset": "alpaca", "rank": 4},
                "evaluate_base_models": False,
            }
        )
    )
    return root


def _grid(copy, *args):
    return subprocess.run(
        [sys.executable, "-m", "maple_utils.grid", *args, "grid.yaml", "--out", "out"],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _manifest(copy):
    return [json.loads(line) for line in (copy / "out" / "manifest.jsonl").read_text().splitlines()]


def test_a_raise_a_kill_and_a_hang_are_recorded_and_only_they_are_retried(copy):
    run = _grid(copy, "run", "--workers", "2", "--timeout", "8")
    assert run.returncode == 1, run.stdout + run.stderr
    final = {
        e["key"].split("_")[0] + "_q" + e["key"].split("_q")[1].split("-")[0]: e
        for e in _manifest(copy)
        if e["status"] != "running"
    }
    assert final["tiny-llama_q4"]["status"] == "failed" and final["tiny-llama_q4"]["exception"] == "ValueError"
    # the index in the executed notebook the user opens (papermill adds its injected-parameters cell)
    assert final["tiny-llama_q4"]["cell"] == 3 and "a cell that raises" in final["tiny-llama_q4"]["error"]
    assert final["tiny-llama_q8"]["status"] == "crashed" and final["tiny-llama_q8"]["exception"] == "DeadKernelError"
    assert final["tiny-llama_q16"]["status"] == "timed_out" and "8 s" in final["tiny-llama_q16"]["error"]
    assert all(final[f"tiny-mistral_q{q}"]["status"] == "done" for q in (4, 8, 16))  # every other job completes
    for entry in final.values():
        assert (copy / "out" / "runs" / entry["key"] / "07_probe.ipynb").exists()  # kept, failures included
    assert "then: python -m maple_utils.grid retry" in run.stdout

    status = _grid(copy, "status")
    assert status.returncode == 0
    for word in ("failed (attempt 1)", "crashed (attempt 1)", "timed_out (attempt 1)", "07_probe.ipynb"):
        assert word in status.stdout, status.stdout
    assert "07_probe" in status.stdout.split("not complete:")[0]  # the table per stage

    before = len(_manifest(copy))
    retry = _grid(copy, "retry", "--workers", "2", "--timeout", "8")
    assert retry.returncode == 1
    started = sorted(e["key"].rsplit("-", 1)[0] for e in _manifest(copy)[before:] if e["status"] == "running")
    assert started == ["tiny-llama_alpaca_r4_q16", "tiny-llama_alpaca_r4_q4", "tiny-llama_alpaca_r4_q8"]


def test_a_failing_run_is_isolated_and_kept(tmp_path):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        yaml.safe_dump(
            {
                "name": "isolation",
                "fixed": {
                    "max_steps": 2,
                    "tasks": ["xnli"],
                    "languages": ["en"],
                    "limit": 2,
                    "alpaca_eval_limit": 2,
                    "max_new_tokens": 4,
                    "max_train_examples": 8,
                },
                "axes": {
                    "model": ["tiny-llama"],
                    "dataset": ["alpaca"],
                    "rank": [4],
                    "target_modules": [["q_proj"], ["no_such_proj"]],
                    "quant": [16],
                },
                "evaluate_base_models": False,
            }
        )
    )
    proc = run_cli("run", str(grid_file), "--out", str(tmp_path / "out"))
    assert proc.returncode == 1
    assert "failed" in proc.stdout and "blocked" in proc.stdout
    manifest = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    failed = [m for m in manifest if m["status"] == "failed"]
    assert len(failed) == 1 and "no_such_proj" in failed[0]["error"]
    kept = tmp_path / "out" / "runs" / failed[0]["key"] / "02_train.ipynb"
    assert kept.exists()  # the executed notebook, with papermill's error banner
    frame = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert set(frame[frame["stage"] == "03_evaluate"]["run_id"]) == {
        m["key"] for m in manifest if m["stage"] == "03_evaluate" and m["status"] == "done"
    }
    assert not layout.completion_marker(tmp_path / "out" / "runs" / failed[0]["key"], "02_train").exists()
    # status names the failure, its cell and its notebook; retry runs only the jobs that did not complete
    status = run_cli("status", str(grid_file), "--out", str(tmp_path / "out"))
    assert status.returncode == 0
    assert f"02_train:{failed[0]['key']}  failed (attempt 1)" in status.stdout and str(kept) in status.stdout
    assert "retry" in proc.stdout  # the last lines say what to run next
    before = len(_manifest(tmp_path))
    again = run_cli("retry", str(grid_file), "--out", str(tmp_path / "out"))
    assert again.returncode == 1
    started = [m["job"] for m in _manifest(tmp_path)[before:] if m["status"] == "running"]
    assert started == [failed[0]["job"]]  # the failed job again; the report stays, since no row changed
    assert "failed (attempt 2)" in run_cli("status", str(grid_file), "--out", str(tmp_path / "out")).stdout
