"""The SLURM executor: the jobs that become ready together are submitted as one job array per stage (a
wave), with `--workers N` as each array's throttle (`%N`), as soon as their inputs are complete.

Inside the allocation `python -m maple_utils.grid.slurm_job` runs the same papermill execution as the local
executor and leaves its manifest entry in the job's attempt folder. One tracker thread follows every task
with one `squeue` call per poll and, once tasks have left the queue, one `scontrol show job` per array (which
works without SLURM's accounting database, unlike `sacct`); the SLURM id and state go into the manifest. A
task SLURM ended itself (cancelled, preempted, node failure, out of memory, time limit) leaves no entry and is
recorded with SLURM's state; the runner submits it again while attempts remain. SLURM jobs outlive the
runner: a runner started again adopts the tasks still in SLURM (or finished since) instead of submitting
them twice.
"""

from __future__ import annotations

import math
import pickle
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from maple_utils import io, layout
from maple_utils.config import ConfigError
from maple_utils.grid import manifest
from maple_utils.grid.manifest import SLURM_EVENT, Entry, Status

# SLURM job states after which a job is gone for good, and those that are no fault of the job
ENDED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "PREEMPTED",
    "NODE_FAIL",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
    "SPECIAL_EXIT",
}
RESUBMIT = {"CANCELLED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL"}


class SlurmSettings(BaseModel):
    """The grid file's `slurm:` section: what every submission asks for beyond the stage registry's needs."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    gpus: bool = True  # ask for the stage's GPUs (--gpus-per-task); false on CPU-only clusters
    max_cpus: int | None = None  # caps on the stage registry's cpus and memory_gb, for small nodes
    max_memory_gb: float | None = None
    poll_s: float = 2.0  # how often squeue is asked about the tasks in flight
    sbatch_args: list[str] = []  # passed as they are, e.g. ["--account=nlp", "--qos=normal"]


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
            raise ConfigError(
                f"--executor slurm: `{tool}` is not on PATH (install SLURM's client tools, or use --executor local)"
            )
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


def attempt_folder(job, attempt: int) -> Path:
    return layout.slurm_attempt(job.folder, job.stage.name, attempt)


@dataclass
class Task:
    """One array task in flight: the job it runs, and what the runner knows of it."""

    job: object
    attempt: int
    slurm_id: str  # ARRAY_TASK, as squeue and scancel take it
    started: float
    output: str  # SLURM's log of the task (the notebook when there is none)
    future: Future = field(default_factory=Future)
    announced: bool = False  # its `running` event is in the manifest
    state: str = "PENDING"
    reason: str = ""

    def entry(self, status: Status, **fields) -> Entry:
        return Entry.of(self.job, status, attempt=self.attempt, slurm_job_id=self.slurm_id, **fields)


class Tracker:
    """Submits waves as job arrays and follows every task in flight from one thread, resolving each task's
    Future with its manifest entry. `record(entry)` appends a line to the manifest (queued, then running)."""

    def __init__(self, out: Path, settings: SlurmSettings, throttle: int, record):
        self.out, self.settings, self.throttle, self.record = Path(out), settings, throttle, record
        self.tasks: dict[str, Task] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def submit(self, wave: list[tuple[object, int, int | None, Future]]) -> None:
        """One array per stage of the wave [(job, attempt, timeout, the Future its entry resolves)]."""
        by_stage: dict[str, list] = {}
        for member in wave:
            by_stage.setdefault(member[0].stage.name, []).append(member)
        for stage, members in by_stage.items():
            self._submit_array(stage, members)

    def _submit_array(self, stage: str, members: list) -> None:
        timeout = members[0][2]  # one stage, one time limit
        arrays = layout.slurm_arrays(self.out)  # one folder per submitted array: script, task list, logs
        arrays.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f"{stage}-", dir=arrays))
        specs = []
        for job, attempt, _, _ in members:
            own = attempt_folder(job, attempt)
            own.mkdir(parents=True, exist_ok=True)
            (own / layout.SLURM_ENTRY).unlink(missing_ok=True)
            (own / layout.SLURM_JOB).write_bytes(pickle.dumps((job, str(self.out), attempt, timeout)))
            specs.append([str(own / layout.SLURM_JOB), str(own / layout.SLURM_ENTRY)])
        io.write_json(folder / layout.SLURM_TASKS, specs)
        script = folder / layout.SLURM_SCRIPT
        script.write_text(
            "#!/bin/bash\nexec "
            + " ".join(
                shlex.quote(a)
                for a in (sys.executable, "-m", "maple_utils.grid.slurm_job", str(folder / layout.SLURM_TASKS))
            )
            + ' "$SLURM_ARRAY_TASK_ID"\n',
            encoding="utf-8",
        )
        throttle = f"%{self.throttle}" if self.throttle else ""
        array_id = (
            _run(
                [
                    "sbatch",
                    "--parsable",
                    f"--job-name=maple-{stage}",
                    f"--array=0-{len(members) - 1}{throttle}",
                    f"--output={folder / layout.SLURM_TASK_LOG.format(index='%a')}",
                    *requests(members[0][0], self.settings, timeout),
                    str(script),
                ],
                "sbatch",
            )
            .strip()
            .split(";")[0]
        )
        started = time.time()
        for index, (job, attempt, _, future) in enumerate(members):
            log = str(folder / layout.SLURM_TASK_LOG.format(index=index))
            task = Task(job, attempt, f"{array_id}_{index}", started, log, future=future)
            self.record(task.entry(Status.QUEUED, event=SLURM_EVENT, started=started, slurm_output=task.output))
            self._follow(task)

    def adopt(self, job, attempt: int, queued: dict) -> Future:
        """Follow a task a runner before this one submitted (its `queued` event)."""
        task = Task(
            job,
            attempt,
            queued["slurm_job_id"],
            queued.get("started", time.time()),
            queued.get("slurm_output", ""),
            announced=queued.get("announced", False),
        )
        return self._follow(task)

    def _follow(self, task: Task) -> Future:
        with self.lock:
            self.tasks[task.slurm_id] = task
            if self.thread is None:  # one poller for the runner's life; it idles while nothing is in flight
                self.thread = threading.Thread(target=self._poll, name="slurm-tracker", daemon=True)
                self.thread.start()
        return task.future

    def _poll(self) -> None:
        while True:
            time.sleep(self.settings.poll_s)
            with self.lock:
                tasks = list(self.tasks.values())
            if not tasks:
                continue
            try:
                self._update(tasks)
            except Exception as err:  # a controller that does not answer now may answer at the next poll
                print(f"      slurm: could not read the queue ({type(err).__name__}: {err}); trying again", flush=True)

    def _update(self, tasks: list[Task]) -> None:
        states = _queue([t.slurm_id for t in tasks])
        shown: dict[str, dict] = {}
        for task in tasks:
            if task.slurm_id not in states:  # left the queue (or never listed): its final state
                array = task.slurm_id.split("_")[0]
                if array not in shown:
                    shown[array] = _shown_tasks(array)
                states[task.slurm_id] = shown[array].get(task.slurm_id, ("UNKNOWN", ""))
            task.state, task.reason = states[task.slurm_id]
            if task.state == "RUNNING" and not task.announced:
                self.record(task.entry(Status.RUNNING, event=SLURM_EVENT, slurm_state=task.state, started=time.time()))
                task.announced = True
            if task.state in ENDED or task.state == "UNKNOWN":  # UNKNOWN: purged; its entry file tells
                with self.lock:
                    self.tasks.pop(task.slurm_id, None)
                task.future.set_result(self._entry(task))

    def _entry(self, task: Task) -> Entry:
        result = attempt_folder(task.job, task.attempt) / layout.SLURM_ENTRY
        if result.is_file():
            entry = Entry.from_json(io.read_json(result))
        else:
            state, reason = task.state, task.reason
            entry = task.entry(
                Status.TIMED_OUT if state in ("TIMEOUT", "DEADLINE") else Status.CRASHED,
                error=f"SLURM ended the job: {state}" + (f" ({reason})" if reason and reason != "None" else ""),
                exception=f"Slurm{state.title().replace('_', '')}",
                started=task.started,
                notebook=task.output,
            )
        wall_s = round(time.time() - task.started, 1)
        return entry.replace(slurm_job_id=task.slurm_id, slurm_state=task.state, wall_s=wall_s)


def _queue(slurm_ids: list[str]) -> dict[str, tuple[str, str]]:
    """The tasks of these tasks' arrays that are still queued or running: {ARRAY_TASK: (state, reason)}."""
    arrays = sorted({i.split("_")[0] for i in slurm_ids})
    queued = subprocess.run(
        ["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i|%T|%r"], capture_output=True, text=True, timeout=60
    )
    if queued.returncode and "Invalid job id" not in queued.stderr:  # every array already purged: none queued
        raise RuntimeError(queued.stderr.strip()[:200])
    states = {}
    for line in queued.stdout.splitlines():
        slurm_id, state, reason = (line.strip().split("|") + ["", ""])[:3]
        states[slurm_id] = (state, reason)
    return states


def _shown_tasks(array: str) -> dict[str, tuple[str, str]]:
    """Every task of an array that the controller still remembers: {ARRAY_TASK: (state, reason)}."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", array], capture_output=True, text=True, timeout=60)
    found = {}
    for line in shown.stdout.splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields.get("ArrayTaskId", "").isdigit():
            found[f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"] = (
                fields.get("JobState", "UNKNOWN"),
                fields.get("Reason", ""),
            )
    return found


def in_flight(history: list[dict]) -> dict[str, tuple[int, dict]]:
    """Jobs whose latest attempt went to SLURM and has no end in the manifest (the runner stopped while it was
    in SLURM): {job id: (attempt, its queued event, marked announced when SLURM had started it)}."""
    open_attempts: dict[str, int] = {}
    submitted: dict[tuple[str, int], dict] = {}
    for e in history:
        key = (e.get("job"), e.get("attempt"))
        if e.get("event") == SLURM_EVENT:
            if e.get("status") == Status.QUEUED:
                submitted[key] = dict(e)
            elif e.get("status") == Status.RUNNING and key in submitted:
                submitted[key]["announced"] = True
        elif e.get("status") == Status.RUNNING:
            open_attempts[e["job"]] = e.get("attempt")
        elif "job" in e:
            open_attempts.pop(e["job"], None)
    return {
        job: (attempt, submitted[(job, attempt)])
        for job, attempt in open_attempts.items()
        if (job, attempt) in submitted
    }


def refuse_local(flying: dict[str, tuple[int, dict]]) -> None:
    """A local run must not start jobs that an earlier `--executor slurm` run left queued or running in SLURM
    (both would write the same folder). Where SLURM's tools are missing, nothing can still be there."""
    if shutil.which("squeue") is None:
        return
    ids = [queued["slurm_job_id"] for _, queued in flying.values()]
    try:
        alive = sorted(set(ids) & set(_queue(ids)))
    except (RuntimeError, subprocess.TimeoutExpired) as err:
        raise ConfigError(
            f"jobs of this grid may still be in SLURM ({', '.join(ids[:5])}), and squeue did not say: {err}"
        ) from None
    if alive:
        raise ConfigError(
            f"{len(alive)} job(s) of this grid are still in SLURM from an `--executor slurm` run "
            f"({', '.join(alive[:5])}{', ...' if len(alive) > 5 else ''}): run with --executor slurm "
            "to follow them, or scancel them first"
        )


class SlurmExecutor:
    """Jobs as SLURM array tasks: what becomes ready together goes in one array per stage, `--workers` its
    throttle; attempts outlive the runner and are adopted by the next one."""

    name = "SLURM"

    def __init__(self, plan, workers: int):
        try:
            self.settings = SlurmSettings.model_validate(plan.grid.slurm)
        except ValueError as err:
            raise ConfigError(f"{plan.grid_path}: slurm section: {err}") from None
        self.tracker = Tracker(plan.out, self.settings, workers, lambda e: manifest.append(plan.out, e))
        self.held: list[tuple[object, int, int | None, Future]] = []

    @staticmethod
    def default_workers() -> int:
        return 1

    def check(self) -> None:
        check_cluster()

    def left_running(self, history: list[Entry]) -> dict:
        return in_flight(history)

    def has_room(self, in_flight: int) -> bool:
        return True  # each array throttles itself (%N)

    def can_start(self, job) -> bool:
        return True

    def submit(self, job, attempt: int, timeout: int | None) -> Future:
        future: Future = Future()
        self.held.append((job, attempt, timeout, future))
        return future

    def flush(self) -> None:
        if self.held:
            wave, self.held = self.held, []
            self.tracker.submit(wave)

    def adopt(self, job, attempt: int, queued: dict) -> tuple[Future, str]:
        return self.tracker.adopt(job, attempt, queued), queued["slurm_job_id"]

    def finished(self, future: Future) -> None:
        pass

    def again(self, entry: Entry) -> bool:
        return entry.slurm_state in RESUBMIT

    def interrupt(self) -> bool:
        return False  # the tasks go on in SLURM; the next runner follows them (left_running)

    def close(self) -> None:
        pass
