"""Ctrl-C (SIGINT) and SIGTERM stop a local run at once and keep what finished: the finished job's line and
marker, the running attempt recorded interrupted, its kernel gone, nothing queued started. Run on a copy of the
repo whose stage registry holds one probe stage: one job finishes at once, one sleeps until it is stopped."""

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import copy_with_probe_stage
from maple_utils import layout

pytestmark = pytest.mark.slow

PROBE = """
import time
if model == "tiny-llama":
    time.sleep(300)  # a long training step, stopped by the signal
print("probe ok", model, quant)
"""


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    root = copy_with_probe_stage(tmp_path_factory.mktemp("interrupt") / "maple", PROBE)
    grid = {
        "name": "interrupt",
        # four probe jobs, one at a time: the two of tiny-mistral finish, the first of tiny-llama sleeps
        "axes": {"model": ["tiny-mistral", "tiny-llama"], "quant": [16, 4]},
        "fixed": {"dataset": "alpaca", "rank": 4},
        "evaluate_base_models": False,
    }
    (root / "grid.yaml").write_text(yaml.safe_dump(grid))
    return root


def _manifest(out):
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _kernels(runner: int) -> list[int]:
    """The kernels a runner started (their connection files lie in its maple-kernel-<pid>- folder)."""
    return [
        p.pid
        for p in psutil.process_iter(["cmdline"])
        if any(f"maple-kernel-{runner}-" in part for part in (p.info["cmdline"] or []))
    ]


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_run_at_once_and_keeps_what_finished(copy, sent):
    out = copy / f"out-{sent.name}"
    runner = subprocess.Popen(
        [sys.executable, "-m", "maple_utils.grid", "run", "grid.yaml", "--out", str(out)],
        cwd=copy,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # until the first job is done and the sleeping one runs
        entries = _manifest(out)
        if any(e["status"] == "done" for e in entries) and any(
            e["status"] == "running" and "tiny-llama" in e["key"] for e in entries
        ):
            break
        time.sleep(0.2)
    else:
        runner.kill()
        pytest.fail("the probe jobs did not start: " + runner.communicate()[1][-2000:])
    while not _kernels(runner.pid):  # its kernel has started
        time.sleep(0.1)
    kernels = _kernels(runner.pid)
    sent_at = time.time()
    runner.send_signal(sent)
    stdout, stderr = runner.communicate(timeout=30)
    took = time.time() - sent_at
    assert runner.returncode == 130, stdout[-2000:] + stderr[-2000:]
    assert took < 15, took  # not the 300 s the cell would sleep, nor the time a notebook takes to end
    assert "Traceback" not in stderr and f"stopped by {sent.name}" in stderr
    assert f"python -m maple_utils.grid run grid.yaml --out {out}" in stderr  # how to go on
    assert not any(psutil.pid_exists(k) and psutil.Process(k).status() != psutil.STATUS_ZOMBIE for k in kernels)
    assert not list(Path(tempfile.gettempdir()).glob(f"maple-kernel-{runner.pid}-*"))  # its key and sockets

    latest = {}
    for e in _manifest(out):
        latest[e["job"]] = e
    finished = [e for e in latest.values() if "tiny-mistral" in e["key"]]
    (stopped,) = [e for e in latest.values() if "tiny-llama" in e["key"]]
    assert len(finished) == 2 and all(e["status"] == "done" for e in finished)
    for e in finished:  # kept: not run again
        assert layout.completion_marker(out / "runs" / e["key"], "07_probe").exists()
    assert stopped["status"] == "interrupted" and f"stopped by {sent.name}" in stopped["error"]
    assert stopped["attempt"] == 1 and not layout.completion_marker(out / "runs" / stopped["key"], "07_probe").exists()
    assert len(latest) == 3  # tiny-llama at 4 bit, queued, never started

    status = subprocess.run(
        [sys.executable, "-m", "maple_utils.grid", "status", "grid.yaml", "--out", str(out)],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert f"07_probe:{stopped['key']}  interrupted (attempt 1): stopped by {sent.name}" in status.stdout
