"""The full-grid tier (`make test-full-grid`, run by CI after the suite; `pytest --full-grid`): what the suite
checks on parts of the smoke grid, done to the whole of it (40 jobs), each against the whole smoke grid run on
one worker without interruption:
- run on two workers (two notebooks at once), the rows are the same;
- the runner SIGKILLed at 5 random points spread over the grid and started again each time, the rows are the
  same and no completed job ran twice;
- through SLURM on a real single-node cluster, with a running job cancelled and the runner SIGKILLed once
  while its jobs are in SLURM, the rows are the same.
Each test is its own xdist scope, so two run at once; the reference run is made once for all of them, beside
them."""

from __future__ import annotations

import fcntl
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from grid_checks import (
    assert_same_rows,
    check_resumed,
    check_slurm_run,
    grid_command,
    kill_at_random_points,
    slurm_run_with_cancel_and_kill,
    smoke_variant,
)
from maple_utils import io
from maple_utils.grid import manifest

pytestmark = [pytest.mark.slow, pytest.mark.full_grid]
JOBS = 40  # the smoke grid: 1 data set, 8 adapters, 10 evaluated models x 3 stages, the analysis


def _spans(out):
    """(start, end) of every attempt that ran a notebook; the end less 0.1 s, since wall_s is rounded to it and a
    worker starts its next job at once."""
    return [
        (e["started"], e["started"] + e["wall_s"] - 0.1) for e in manifest.read(out) if "wall_s" in e and "started" in e
    ]


def _most_at_once(spans) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.fixture(scope="session")
def one_worker_grid(tmp_path_factory, worker_id):
    """The whole smoke grid on one worker, uninterrupted: every test's reference, made once for all xdist workers.
    The first test to ask starts it in the background, beside its own grid (the two cores stay busy); each test
    waits for it only when it compares. Returns a function that waits and gives its output folder."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out, ended = shared / "one_worker", shared / "one_worker.ended"
    proc = None
    with open(shared / "one_worker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "one_worker.started").exists():
            (shared / "one_worker.started").touch()
            with open(shared / "one_worker.log", "w") as log:
                proc = subprocess.Popen(
                    grid_command(smoke_variant(shared), out, "--workers", "1"),
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            # the exit code, for the other xdist worker too
            threading.Thread(target=lambda: io.write_json(ended, {"returncode": proc.wait()}), daemon=True).start()

    def reference() -> Path:
        deadline = time.time() + 3000
        while not ended.exists():
            assert time.time() < deadline, "the one-worker reference run did not end within 50 minutes"
            time.sleep(2)
        log = (shared / "one_worker.log").read_text()
        assert io.read_json(ended)["returncode"] == 0, log[-3000:]
        assert sum(e.get("status") == "done" for e in manifest.read(out)) == JOBS
        assert _most_at_once(_spans(out)) == 1
        return out

    yield reference
    if proc is not None:  # this worker started it: its session does not end before the run does
        reference()


def test_the_whole_smoke_grid_on_two_workers_equals_one_worker(one_worker_grid, tmp_path):
    grid, out = smoke_variant(tmp_path), tmp_path / "out"
    proc = run_cli("run", str(grid), "--out", str(out), "--workers", "2", timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sum(e.get("status") == "done" for e in manifest.read(out)) == JOBS
    assert _most_at_once(_spans(out)) == 2  # two notebooks did run at once
    assert_same_rows(out, one_worker_grid())


def test_the_whole_smoke_grid_killed_at_5_random_points_resumes_to_the_uninterrupted_results(one_worker_grid, tmp_path):
    grid, out = smoke_variant(tmp_path), tmp_path / "out"
    seed = int(os.environ.get("MAPLE_KILL_SEED", time.time()))
    kills, _ = kill_at_random_points(grid, out, workers=2, seed=seed)
    print(f"seed {seed}, kills: {kills}")
    check_resumed(grid, out, one_worker_grid(), kills, seed)


def test_the_whole_smoke_grid_through_slurm_equals_the_local_executor(one_worker_grid, slurm_cluster, tmp_path):
    grid, out = smoke_variant(tmp_path, slurm=True), tmp_path / "out"
    seen = slurm_run_with_cancel_and_kill(grid, out, slurm_cluster)
    check_slurm_run(grid, out, one_worker_grid(), seen)
