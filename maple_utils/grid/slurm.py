"""The SLURM executor: each job an `sbatch` submission, made as soon as its inputs are complete.

Inside the allocation `python -m maple_utils.grid.slurm_job` runs the same papermill execution as the local
executor and leaves its manifest entry in the job's folder. The runner's thread for the job follows it with
`squeue` and, once it has left the queue, `scontrol show job` (which works without SLURM's accounting
database, unlike `sacct`); the SLURM job id and state go into the manifest. A job SLURM ended itself
(cancelled, preempted, node failure, out of memory, time limit) leaves no entry and is recorded with
SLURM's state; the runner submits it again while attempts remain. `--workers` is the most jobs in SLURM
at once (the array throttle of a submission made per job).
"""

from __future__ import annotations

import math
import pickle
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from maple_utils import io
from maple_utils.config import ConfigError

# SLURM job states after which a job is gone for good, and those that are no fault of the job
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "OUT_OF_MEMORY", "REVOKED", "SPECIAL_EXIT"}
RESUBMIT = {"CANCELLED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"}


class SlurmSettings(BaseModel):
    """The grid file's `slurm:` section: what every submission asks for beyond the stage registry's needs."""
    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    gpus: bool = True               # ask for the stage's GPUs (--gpus-per-task); false on CPU-only clusters
    max_cpus: int | None = None     # caps on the stage registry's cpus and memory_gb, for small nodes
    max_memory_gb: float | None = None
    poll_s: float = 2.0             # how often squeue is asked about a job
    sbatch_args: list[str] = []     # passed as they are, e.g. ["--account=nlp", "--qos=normal"]


def _run(args: list[str], what: str, timeout: float = 30) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"--executor slurm: {what} did not answer within {timeout:.0f} s") from None
    if proc.returncode:
        raise ConfigError(f"--executor slurm: {what} failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    return proc.stdout


def check_cluster() -> None:
    """sbatch is installed and the controller answers, or one line that says which is not so."""
    for tool in ("sbatch", "squeue", "scontrol"):
        if shutil.which(tool) is None:
            raise ConfigError(f"--executor slurm: `{tool}` is not on PATH (install SLURM's client tools, or use "
                              "--executor local)")
    _run(["sinfo", "-h", "-o", "%P %a"], "the cluster (sinfo)", timeout=15)


def requests(job, settings: SlurmSettings, timeout_s: int | None) -> list[str]:
    """sbatch options for a job: CPUs, memory, GPUs and time from the stage registry, capped by the grid."""
    res = job.stage.resources
    cpus = res.get("cpus", 1)
    memory = res.get("memory_gb", 4)
    cpus = min(cpus, settings.max_cpus) if settings.max_cpus else cpus
    memory = min(memory, settings.max_memory_gb) if settings.max_memory_gb else memory
    options = [f"--cpus-per-task={cpus}", f"--mem={max(1, int(memory * 1024))}M"]
    if settings.gpus and res.get("gpus"):
        options.append(f"--gpus-per-task={res['gpus']}")
    if timeout_s:  # the notebook's own limit plus room to start a kernel and write the entry
        options.append(f"--time={math.ceil(timeout_s / 60) + 5}")
    if settings.partition:
        options.append(f"--partition={settings.partition}")
    return options + list(settings.sbatch_args)


def job_state(slurm_id: str) -> tuple[str, str]:
    """(state, reason): from squeue while the job is queued or running, then from scontrol."""
    queued = subprocess.run(["squeue", "-h", "-j", slurm_id, "-o", "%T|%r"], capture_output=True, text=True)
    if queued.returncode == 0 and queued.stdout.strip():
        state, _, reason = queued.stdout.strip().partition("|")
        return state, reason
    shown = subprocess.run(["scontrol", "show", "job", slurm_id, "-o"], capture_output=True, text=True)
    fields = dict(part.split("=", 1) for part in shown.stdout.split() if "=" in part)
    return fields.get("JobState", "UNKNOWN"), fields.get("Reason", "")


def execute(job, out: Path, attempt: int, timeout: int | None, settings: SlurmSettings, record) -> dict:
    """Submit one job and follow it to its end; returns its manifest entry, with the SLURM id and state.
    `record(entry)` appends a line to the manifest (queued, then running once SLURM starts it)."""
    # per stage and attempt: the stages of one run share its folder, and two of them (03 and 04) run at once
    folder = job.folder / ".slurm" / f"{job.stage.name}-attempt-{attempt}"
    folder.mkdir(parents=True, exist_ok=True)
    spec, result = folder / "job.pkl", folder / "entry.json"
    result.unlink(missing_ok=True)
    spec.write_bytes(pickle.dumps((job, str(out), attempt, timeout)))
    script = folder / "job.sh"
    script.write_text("#!/bin/bash\n" + " ".join(shlex.quote(a) for a in (
        sys.executable, "-m", "maple_utils.grid.slurm_job", str(spec), str(result))) + "\n", encoding="utf-8")
    started = time.time()
    slurm_id = _run(["sbatch", "--parsable", f"--job-name=maple-{job.stage.name}", f"--output={folder}/slurm-%j.out",
                     *requests(job, settings, timeout), str(script)], "sbatch").strip().split(";")[0]
    base = {"job": job.id, "stage": job.stage.name, "key": job.key, "attempt": attempt, "slurm_job_id": slurm_id}
    record({**base, "status": "queued", "event": "slurm", "started": started})
    state, reason, announced = "PENDING", "", False
    while state not in ENDED:
        time.sleep(settings.poll_s)
        state, reason = job_state(slurm_id)
        if state == "RUNNING" and not announced:
            record({**base, "status": "running", "event": "slurm", "slurm_state": state, "started": time.time()})
            announced = True
        if state == "UNKNOWN":  # purged from the controller's memory: the entry file tells what happened
            break
    if result.is_file():
        entry = io.read_json(result)
    else:
        status = "timed_out" if state in ("TIMEOUT", "DEADLINE") else "crashed"
        entry = {"job": job.id, "stage": job.stage.name, "key": job.key, "attempt": attempt, "status": status,
                 "error": f"SLURM ended the job: {state}" + (f" ({reason})" if reason and reason != "None" else ""),
                 "exception": f"Slurm{state.title().replace('_', '')}", "started": started,
                 "notebook": str(folder / f"slurm-{slurm_id}.out")}
    entry.update(slurm_job_id=slurm_id, slurm_state=state, wall_s=round(time.time() - started, 1))
    return entry
