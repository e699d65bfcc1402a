"""The grid runner killed with SIGKILL at random points and started again each time: the final results equal
the uninterrupted smoke grid's for the same runs, and no job that had completed ran again."""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, comparable_rows
from maple_utils.grid import planner, runner

KILLS = 5


def _kernels_of(pid: int) -> list[int]:
    """Kernel processes whose parent was the given runner (ipykernel records it in JPY_PARENT_PID)."""
    found = []
    for proc in os.listdir("/proc"):
        if not proc.isdigit():
            continue
        try:
            with open(f"/proc/{proc}/environ", "rb") as f:
                if f"JPY_PARENT_PID={pid}".encode() in f.read().split(b"\0"):
                    found.append(int(proc))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_the_runner_killed_at_random_points_resumes_to_the_uninterrupted_results(smoke_grid, tmp_path):
    local_out, _ = smoke_grid
    spec = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    spec["axes"].update(model=["tiny-llama"], rank=[4], quant=[16])  # the same runs, so the same run ids
    spec["exclude"] = []
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    seed = int(os.environ.get("MAPLE_KILL_SEED", time.time()))
    rng = random.Random(seed)
    command = [sys.executable, "-m", "maple_utils.grid", "run", str(grid), "--out", str(out), "--workers", "2"]
    kills, killed_pids = [], []
    for _ in range(KILLS):
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delay = rng.uniform(3, 15)  # from planning and preflight to well into the jobs; five such do not finish it
        try:
            proc.wait(timeout=delay)  # it finished before the kill: nothing left to interrupt
            break
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        kills.append(round(delay, 1))
        killed_pids.append(proc.pid)
        time.sleep(3)  # kernel_guard ends an orphaned kernel within half a second
        assert not _kernels_of(proc.pid), f"kernels outlived their runner (seed {seed}, kills {kills})"
    assert len(kills) == KILLS, f"the grid finished before its {KILLS} kills (seed {seed}, kills {kills})"
    final = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, f"seed {seed}, kills {kills}:\n" + final.stdout[-3000:] + final.stderr[-2000:]

    ours, local = comparable_rows(out), comparable_rows(local_out)
    local = local[local["run_id"].isin(set(ours["run_id"]))].reset_index(drop=True)
    assert ours["run_id"].nunique() == 3, f"seed {seed}"  # the data set, the adapter and the base model
    assert not ours.duplicated(["run_id", "stage", "task", "language", "metric"]).any()
    pd.testing.assert_frame_equal(ours, local, check_exact=False, rtol=0, atol=1e-6)
    entries = runner.read_manifest(out)
    done = [e["job"] for e in entries if e.get("status") == "done"]
    assert len(done) == len(set(done)), f"a completed job ran again (seed {seed}, kills {kills})"
    # every one of the 9 jobs is complete (a kill between a job's completion marker and its manifest line
    # leaves it complete without a `done` line: the rerun skips it, which is what must happen)
    plan = planner.plan_grid(grid, out)
    assert len(plan.jobs) == 9 and all(j.completion() for j in plan.jobs), f"seed {seed}, kills {kills}"
    for job in set(done):  # nothing started after a job's completion
        index = max(i for i, e in enumerate(entries) if e.get("job") == job and e.get("status") == "done")
        assert not any(e.get("job") == job and e.get("status") == "running" for e in entries[index + 1:])
    assert not kills or any(e.get("status") == "interrupted" for e in entries), f"seed {seed}, kills {kills}"
    # the killed runners' kernel folders (sockets, connection files with their keys) were cleared
    tmp = Path(tempfile.gettempdir())
    assert not [p for pid in killed_pids for p in tmp.glob(f"{runner.KERNEL_FILES}{pid}-*")]
