"""What the kill and SLURM tests do to a grid, for a part of the smoke grid in the suite (test_kills.py) and
for the whole of it in the full-grid tier (test_full_grid.py): kill the runner at random
points and start it again; run through SLURM while a job is cancelled and the runner is killed once; then
check that the rows equal a reference run's and that no completed job ran twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import yaml

from conftest import REPO, comparable_rows, run_cli
from maple_utils.grid import local, manifest, planner

KILLS = 5


def smoke_variant(folder: Path, slurm: bool = False, **axes) -> Path:
    """params/smoke.yaml with some axes narrowed (the same runs, so the same run ids), written to folder; with
    `slurm`, the section a CPU-only node of a few cores needs (no GPU requests, each job on one core)."""
    spec = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    if axes:
        spec["axes"].update(axes)
        spec["exclude"] = []
    if slurm:
        spec["slurm"] = {"gpus": False, "max_cpus": 1, "max_memory_gb": 4, "poll_s": 0.5}
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def grid_command(grid: Path, out: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "maple_utils.grid", "run", str(grid), "--out", str(out), *args]


def _done_count(out: Path) -> int:
    return sum(1 for e in manifest.read(out) if e.get("status") == "done")


def kernels_of(pid: int) -> list[int]:
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


def kill_at_random_points(
    grid: Path, out: Path, workers: int, seed: int
) -> tuple[list[dict], subprocess.CompletedProcess]:
    """Start the runner, SIGKILL it at a random point, start it again, KILLS times; then let it finish.

    The points are drawn over the grid's whole length: each kill comes once the manifest holds a random number
    of completed jobs (distinct, rising, from none to all but the last two), plus a random 0-6 s, so kills land
    in planning, in kernel start-up, mid-cell and between jobs. Returns each kill (jobs done, target, runner
    pid) and the finishing run. Every kill is checked for kernels that outlive their runner."""
    rng = random.Random(seed)
    total = len(planner.plan_grid(grid, out).jobs)
    targets = sorted(rng.sample(range(total - 2), KILLS))
    command = grid_command(grid, out, "--workers", str(workers))
    kills = []
    for target in targets:
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = None
        while proc.poll() is None:
            if deadline is None and _done_count(out) >= target:
                deadline = time.time() + rng.uniform(0, 6)
            if deadline is not None and time.time() >= deadline:
                break
            time.sleep(0.1)
        assert proc.poll() is None, f"the grid finished before kill {len(kills) + 1} (seed {seed}, kills {kills})"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills.append({"done": _done_count(out), "target": target, "pid": proc.pid})
        time.sleep(3)  # kernel_guard ends an orphaned kernel within half a second
        assert not kernels_of(proc.pid), f"kernels outlived their runner (seed {seed}, kills {kills})"
    final = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert final.returncode == 0, f"seed {seed}, kills {kills}:\n" + final.stdout[-3000:] + final.stderr[-2000:]
    return kills, final


def check_resumed(grid: Path, out: Path, reference: Path, kills: list[dict], seed: int) -> None:
    """After the kills: every job complete, its rows equal the reference's, no completed job ran again, the cut-off
    attempts marked interrupted, and the killed runners' kernel folders gone."""
    assert_same_rows(out, reference)
    entries = manifest.read(out)
    done = [e["job"] for e in entries if e.get("status") == "done"]
    assert len(done) == len(set(done)), f"a completed job ran again (seed {seed}, kills {kills})"
    # a kill between a job's completion marker and its manifest line leaves it complete without a `done` line:
    # the rerun skips it, which is what must happen
    plan = planner.plan_grid(grid, out)
    assert all(j.completion() for j in plan.jobs), f"seed {seed}, kills {kills}"
    for job in set(done):  # nothing started after a job's completion
        index = max(i for i, e in enumerate(entries) if e.get("job") == job and e.get("status") == "done")
        assert not any(e.get("job") == job and e.get("status") == "running" for e in entries[index + 1 :])
    assert any(e.get("status") == "interrupted" for e in entries), f"seed {seed}, kills {kills}"
    tmp = Path(tempfile.gettempdir())
    assert not [p for kill in kills for p in tmp.glob(f"{local.KERNEL_FILES}{kill['pid']}-*")]


def assert_same_rows(out: Path, reference: Path) -> None:
    """The rows of `out` equal the reference's rows of the same runs, timings aside, with no duplicates."""
    ours, theirs = comparable_rows(out), comparable_rows(reference)
    theirs = theirs[theirs["run_id"].isin(set(ours["run_id"]))].reset_index(drop=True)
    assert not ours.duplicated(["run_id", "stage", "task", "language", "metric"]).any()
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=0, atol=1e-6)


def slurm_run_with_cancel_and_kill(grid: Path, out: Path, env: dict, workers: int = 2) -> dict:
    """Run the grid through SLURM; scancel the first 02_train task SLURM reports running, and SIGKILL the runner
    once a 03_evaluate task runs in SLURM; check that a local run of the folder then refuses to start; start the
    runner again and let it finish. Returns the cancelled
    and the orphaned tasks' events and both runners' output."""
    env = {**os.environ, **env}
    command = grid_command(grid, out, "--executor", "slurm", "--workers", str(workers))
    first = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(first.stdout), daemon=True)
    reader.start()
    cancelled = orphaned = None
    deadline = time.time() + 1200
    while first.poll() is None and time.time() < deadline and orphaned is None:
        events = manifest.read(out)  # a line being written is skipped
        ended = {(e["job"], e.get("attempt")) for e in events if "wall_s" in e}
        running = [
            e
            for e in events
            if e.get("event") == "slurm" and e.get("status") == "running" and (e["job"], e["attempt"]) not in ended
        ]
        if cancelled is None:
            training = [e for e in running if e["stage"] == "02_train"]
            if training:
                time.sleep(1.0)  # let it get into its notebook
                subprocess.run(["scancel", training[0]["slurm_job_id"]], env=env, check=True)
                cancelled = training[0]
        else:
            evaluating = [e for e in running if e["stage"] == "03_evaluate" and "base" not in e["key"]]
            if evaluating:
                first.kill()  # SIGKILL: its tasks in SLURM go on without it
                orphaned = evaluating[-1]
        time.sleep(0.3)
    first.wait()
    reader.join(timeout=5)
    assert cancelled and orphaned, "".join(lines)[-3000:]
    local = subprocess.run(grid_command(grid, out), cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert local.returncode == 2 and "still in SLURM from an `--executor slurm` run" in local.stderr, local.stderr
    second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, env=env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"cancelled": cancelled, "orphaned": orphaned, "first": "".join(lines), "second": second.stdout}


def check_slurm_run(grid: Path, out: Path, reference: Path, seen: dict) -> None:
    """The rows equal the reference's; the cancelled task was recorded with SLURM's state and completed when
    submitted again; the task the killed runner left in SLURM was followed, not submitted again; every other
    job ran once; `status` shows nothing incomplete."""
    assert_same_rows(out, reference)
    entries = manifest.read(out)
    job = seen["cancelled"]["job"]
    ends = [e for e in entries if e["job"] == job and "wall_s" in e]
    assert [e["slurm_state"] for e in ends] == ["CANCELLED", "COMPLETED"], ends
    assert ends[0]["status"] == "crashed" and "SLURM ended the job: CANCELLED" in ends[0]["error"]
    assert ends[1]["status"] == "done" and ends[1]["slurm_job_id"] != ends[0]["slurm_job_id"]
    assert "SLURM ended it (CANCELLED): submitted again" in seen["first"]
    orphan = seen["orphaned"]
    assert f"{orphan['key']}  still in SLURM ({orphan['slurm_job_id']}, attempt 1): followed again" in seen["second"]
    ends = [e for e in entries if e["job"] == orphan["job"] and "wall_s" in e]
    assert [(e["status"], e["slurm_job_id"]) for e in ends] == [("done", orphan["slurm_job_id"])], ends
    assert not any(e.get("status") == "interrupted" and e["job"] == orphan["job"] for e in entries)
    done = [e["job"] for e in entries if e.get("status") == "done"]
    assert len(done) == len(set(done)) and all(j.completion() for j in planner.plan_grid(grid, out).jobs)
    status = run_cli("status", str(grid), "--out", str(out))
    assert status.returncode == 0 and "not complete" not in status.stdout
