"""The full-grid tier (`make test-full-grid`, run by CI after the suite; `pytest --full-grid`): what the suite
checks on parts of the smoke grid, done to the whole of it (40 jobs), each against the whole smoke grid run on
one worker without interruption:
- run on two workers (two notebooks at once), the rows are the same;
- the runner SIGKILLed at 5 random points spread over the grid and started again each time, the rows are the
  same and no completed job ran twice;
- through SLURM on a real single-node cluster, with a running job cancelled and the runner SIGKILLed once
  while its jobs are in SLURM, the rows are the same.
Each test is its own xdist scope, so two run at once; the reference run is made once for all of them."""

from __future__ import annotations

import fcntl
import os
import subprocess
import time

import pytest

from conftest import REPO
from grid_checks import (assert_same_rows, check_resumed, check_slurm_run, grid_command, kill_at_random_points,
                         slurm_run_with_cancel_and_kill, smoke_variant)
from maple_utils.grid import runner

pytestmark = [pytest.mark.slow, pytest.mark.full_grid]
JOBS = 40  # the smoke grid: 1 data set, 8 adapters, 10 evaluated models x 3 stages, the analysis


def _spans(out):
    """(start, end) of every attempt that ran a notebook."""
    return [(e["started"], e["started"] + e["wall_s"]) for e in runner.read_manifest(out)
            if "wall_s" in e and "started" in e]


def _most_at_once(spans) -> int:
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


@pytest.fixture(scope="session")
def one_worker_grid(tmp_path_factory, worker_id):
    """The whole smoke grid on one worker, uninterrupted: every test's reference. Made once for all xdist
    workers: the first to ask makes it under a file lock, the others wait for it."""
    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out = shared / "one_worker"
    with open(shared / "one_worker.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (shared / "one_worker.ok").exists():
            grid = smoke_variant(shared)
            proc = subprocess.run(grid_command(grid, out, "--workers", "1"), cwd=REPO, capture_output=True, text=True,
                                  timeout=3000)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            assert sum(e.get("status") == "done" for e in runner.read_manifest(out)) == JOBS
            assert _most_at_once(_spans(out)) == 1
            (shared / "one_worker.ok").touch()
    return out


def test_the_whole_smoke_grid_on_two_workers_equals_one_worker(request, tmp_path):
    grid, out = smoke_variant(tmp_path), tmp_path / "out"
    proc = subprocess.run(grid_command(grid, out, "--workers", "2"), cwd=REPO, capture_output=True, text=True,
                          timeout=3000)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sum(e.get("status") == "done" for e in runner.read_manifest(out)) == JOBS
    assert _most_at_once(_spans(out)) == 2  # two notebooks did run at once
    assert_same_rows(out, request.getfixturevalue("one_worker_grid"))


def test_the_whole_smoke_grid_killed_at_5_random_points_resumes_to_the_uninterrupted_results(request, tmp_path):
    grid, out = smoke_variant(tmp_path), tmp_path / "out"
    seed = int(os.environ.get("MAPLE_KILL_SEED", time.time()))
    kills, _ = kill_at_random_points(grid, out, workers=2, seed=seed)
    print(f"seed {seed}, kills: {kills}")
    check_resumed(grid, out, request.getfixturevalue("one_worker_grid"), kills, seed)


def test_the_whole_smoke_grid_through_slurm_equals_the_local_executor(request, slurm_cluster, tmp_path):
    grid, out = smoke_variant(tmp_path, slurm=True), tmp_path / "out"
    seen = slurm_run_with_cancel_and_kill(grid, out, slurm_cluster)
    check_slurm_run(grid, out, request.getfixturevalue("one_worker_grid"), seen)
