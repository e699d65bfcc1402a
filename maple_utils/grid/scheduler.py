"""The scheduler: which job may start, and when. It knows readiness, blocking, skips, attempts and the ETA, and
hands each job to an `Executor`, which runs it somewhere and resolves the job's Future with its manifest entry.

A job runs when the jobs it needs completed and its fingerprint differs from its completion marker's; a
failing job never stops the others (its dependants are marked blocked). A new executor (another cluster
scheduler, a cloud queue) is one module with a class of this protocol plus one entry in runner.EXECUTORS.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from contextlib import contextmanager
from typing import Protocol

from maple_utils import io, layout, results
from maple_utils.config import ConfigError
from maple_utils.grid import manifest
from maple_utils.grid.manifest import COMPLETE, COUNTED, Entry, Status
from maple_utils.grid.planner import Job, Plan


class Executor(Protocol):
    """What runs jobs (local.LocalExecutor, slurm.SlurmExecutor), built as `Executor(plan, workers)`."""

    name: str  # as the progress lines name it: "local", "SLURM"

    @staticmethod
    def default_workers() -> int:
        """--workers when not given."""

    def check(self) -> None:
        """Before any job starts: what the executor needs is there (a cluster answers, tools are installed)."""

    def left_running(self, history: list[Entry]) -> dict[str, tuple[int, dict]]:
        """Attempts a runner before this one started that go on without it: {job id: (attempt, its queued
        event)}, followed again instead of run twice; the others are closed as interrupted."""

    def has_room(self, in_flight: int) -> bool:
        """Whether one more job may start with `in_flight` running."""

    def can_start(self, job: Job) -> bool:
        """Whether this job may start now (a GPU of its own is free, say); a later job may still start."""

    def submit(self, job: Job, attempt: int, timeout: int | None) -> Future:
        """Start (or hold, until flush) one attempt; its Future resolves to the attempt's ending Entry."""

    def flush(self) -> None:
        """Start what submit held (SLURM: one array per stage of the jobs submitted since the last flush)."""

    def adopt(self, job: Job, attempt: int, queued: dict) -> tuple[Future, str]:
        """Follow an attempt that left_running returned: its Future, and the executor's id of it."""

    def finished(self, future: Future) -> None:
        """A Future of this executor resolved: give back what its job held."""

    def again(self, entry: Entry) -> bool:
        """The executor ended this attempt itself (SLURM preempted it, say): submit it again while attempts remain."""

    def interrupt(self) -> bool:
        """The runner was told to stop (Ctrl-C, SIGTERM): end the running attempts now, without waiting for
        them; True when they were ended (their kernels stopped), False when they go on without the runner
        (in SLURM, followed again by the next one)."""

    def close(self) -> None:
        """The grid is over: wait for what is still running and release the workers."""


class Interrupted(Exception):
    """The runner stopped on a signal; `ended`: the attempts it ended (none when they go on in SLURM)."""

    def __init__(self, signum: int, ended: list[str]):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.ended = signum, ended


class Progress:
    """One line per finished job: its place, the counts per outcome so far, and an ETA from the wall times
    of the jobs that ran (per stage, the stage's mean; a stage with none yet, the mean over all)."""

    def __init__(self, jobs: list[Job], workers: int):
        self.total, self.workers = len(jobs), workers
        self.left = Counter(j.stage.name for j in jobs)
        self.walls: dict[str, list[float]] = {}
        self.outcomes: Counter = Counter()

    def line(self, job: Job, what: str, outcome: Status, wall_s: float | None = None) -> str:
        self.left[job.stage.name] -= 1
        self.outcomes[str(outcome)] += 1
        if wall_s is not None:
            self.walls.setdefault(job.stage.name, []).append(wall_s)
        done = sum(self.outcomes.values())
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"[{done:3d}/{self.total}] {job.stage.name:15s} {job.key}  {what}  | {counts}{self.eta()}"

    def eta(self) -> str:
        every = [w for walls in self.walls.values() for w in walls]
        if not every or not sum(self.left.values()):
            return ""
        overall = sum(every) / len(every)
        means = {s: sum(w) / len(w) for s, w in self.walls.items()}
        seconds = sum(n * means.get(s, overall) for s, n in self.left.items()) / self.workers
        return f" | ETA {seconds / 60:.0f} min" if seconds >= 60 else f" | ETA {seconds:.0f} s"


class Scheduler:
    """One grid's jobs through one executor; `run()` returns each job's final status."""

    def __init__(
        self,
        plan: Plan,
        executor: Executor,
        workers: int,
        timeout_of: Callable[[Job], int | None],
        echo=print,
        max_attempts: int = 3,
        only: set[str] | None = None,
        disk_check=None,
    ):
        self.plan, self.executor, self.timeout_of, self.echo = plan, executor, timeout_of, echo
        self.max_attempts, self.only, self.disk_check = max_attempts, only, disk_check
        self.progress = Progress(plan.jobs, workers)
        self.status: dict[str, Status] = {}
        self.tokens: dict[str, str] = {}  # completion tokens of the jobs that are complete
        self.pending = list(plan.jobs)
        self.running: dict[Future, Job] = {}
        self.signalled = 0  # the signal that asked the runner to stop (Ctrl-C: SIGINT), once one has

    def run(self, history: list[Entry]) -> dict[str, Status]:
        self.adoptable = self.executor.left_running(history)
        history = manifest.close_interrupted(self.plan.out, history, keep=self.adoptable)
        self.attempts = Counter(e.job for e in manifest.attempts(history) if e.status is Status.RUNNING)
        self.failures = Counter(e.job for e in history if e.status in COUNTED)
        self.stopped: ConfigError | None = None
        try:
            while self.pending or self.running:
                try:
                    self._start_what_can_start()
                    self.executor.flush()
                    while self.running and not self.signalled:
                        finished = wait(self.running, timeout=0.5, return_when=FIRST_COMPLETED)[0]
                        if finished:
                            self._collect(finished)
                            break
                    if self.signalled:
                        raise Interrupted(self.signalled, self._interrupt())
                except ConfigError as err:  # no room left on disk: start nothing more, let the running finish
                    self._stop(err)
                except OSError as err:  # the runner's own write (manifest, marker, results.parquet) found no room
                    if not io.no_room(err):
                        raise
                    self._stop(ConfigError(f"the runner found {io.no_room(err)}: {self._free_some()}"))
        finally:
            self.executor.close()
        if self.stopped:
            raise self.stopped
        return self.status

    def signal(self, signum: int) -> None:
        """From a signal handler: stop at the next look (within half a second), whatever is running."""
        self.signalled = self.signalled or signum

    def _interrupt(self) -> list[str]:
        """Keep what finished (its line and marker), end the running attempts (recorded `interrupted`), start
        nothing more. Returns the ids of the attempts ended."""
        finished = [f for f in self.running if f.done()]
        if finished:
            self._collect(finished)
        self.pending = []
        if not self.executor.interrupt():  # they go on (SLURM): the next runner follows them
            return []
        name = signal.Signals(self.signalled).name
        for job in self.running.values():
            entry = Entry.of(
                job,
                Status.INTERRUPTED,
                attempt=self.attempts[job.id],
                started=time.time(),
                notebook=str(layout.executed_notebook(job.folder, job.stage.name)),
                error=f"stopped by {name}: the next run starts it again",
            )
            manifest.append(self.plan.out, entry)
            self._say(job, f"interrupted ({name})", Status.INTERRUPTED)
        return [job.id for job in self.running.values()]

    def _stop(self, err: ConfigError) -> None:
        """Start nothing more; the running jobs finish; the run ends with `err` once they have."""
        self.stopped = self.stopped or err
        self.pending = []

    def _free_some(self) -> str:
        return (
            f"the output folder {self.plan.out} is full; every finished job is kept: free some space, then run "
            "the grid again"
        )

    def _ready(self, job: Job) -> bool:
        if job.stage.unit.reads_all_rows:  # after everything else
            return not self.running and all(p.stage.unit.reads_all_rows for p in self.pending)
        return all(d in self.status for d in job.needs)

    def _say(self, job: Job, what: str, outcome: Status, wall_s: float | None = None) -> None:
        self.echo(self.progress.line(job, what, outcome, wall_s))

    def _start_what_can_start(self) -> None:
        startable = [j for j in self.pending if self._ready(j)]
        if not startable and not self.running:  # needs name only earlier jobs of the plan: a bug if reached
            pending = self.pending
            raise RuntimeError(f"no job can start: {[j.id for j in pending]} wait on {[j.needs for j in pending]}")
        for job in startable:
            if not self.executor.has_room(len(self.running)):
                break
            if not self.executor.can_start(job):  # every GPU is busy: a job that needs none may still start
                continue
            self.pending.remove(job)
            self._start(job)

    def _start(self, job: Job) -> None:
        blocked = [d for d in job.needs if self.status[d] not in COMPLETE]
        if blocked and self.only is not None and job.id not in self.only:  # `report`, `retry`: not asked for
            self.status[job.id] = Status.NOT_RETRIED
            return self._say(job, "left as it is", Status.NOT_RETRIED)
        if blocked:
            self.status[job.id] = Status.BLOCKED
            entry = Entry.of(job, Status.BLOCKED, started=time.time(), error=f"upstream not done: {', '.join(blocked)}")
            manifest.append(self.plan.out, entry)
            return self._say(job, "blocked (upstream failed)", Status.BLOCKED)
        if job.stage.unit.reads_all_rows:  # results.parquet is rebuilt here; the report is redone when rows change
            job.inputs = results.digest(results.aggregate(self.plan.out, manifest.not_current(self.plan.out)))
        damaged = job.damaged_output() if job.completion() else None
        if damaged:
            self.echo(f"      {job.stage.name:15s} {job.key}  not complete any more: {damaged}; run again")
        elif job.fingerprint_matches(self.tokens):  # outputs just checked: not hashed a second time
            self.status[job.id] = Status.SKIPPED
            self.tokens[job.id] = job.completion()["token"]
            return self._say(job, "already complete", Status.SKIPPED)
        if job.id in self.adoptable:
            attempt, queued = self.adoptable.pop(job.id)
            future, handle = self.executor.adopt(job, attempt, queued)
            self.running[future] = job
            where = self.executor.name
            self.echo(
                f"      {job.stage.name:15s} {job.key}  still in {where} ({handle}, attempt {attempt}): followed again"
            )
            return None
        if self.only is not None and job.id not in self.only:
            self.status[job.id] = Status.NOT_RETRIED
            return self._say(job, "left as it is", Status.NOT_RETRIED)
        if self.only is None and self.failures[job.id] >= self.max_attempts:
            self.status[job.id] = Status.GAVE_UP
            return self._say(
                job, f"not run ({self.failures[job.id]} attempts failed; `retry` runs it again)", Status.GAVE_UP
            )
        if self.disk_check:
            self.disk_check(job)
        self.attempts[job.id] += 1
        notebook = str(layout.executed_notebook(job.folder, job.stage.name))
        started = Entry.of(job, Status.RUNNING, attempt=self.attempts[job.id], started=time.time(), notebook=notebook)
        manifest.append(self.plan.out, started)
        self.running[self.executor.submit(job, self.attempts[job.id], self.timeout_of(job))] = job
        return None

    def _collect(self, finished) -> None:
        for future in finished:
            job = self.running.pop(future)
            self.executor.finished(future)
            entry: Entry = future.result()
            no_room = entry.status is not Status.DONE and io.says_no_room(entry.error)
            if no_room and str(job.folder) not in entry.error:  # a library's message without the path
                entry = entry.replace(error=f"{entry.error} (writing under {job.folder})")
            if entry.status in COUNTED:
                self.failures[job.id] += 1
            if entry.status is Status.DONE:
                self.tokens[job.id] = job.mark_done(self.tokens)
            manifest.append(self.plan.out, entry)
            if self.executor.again(entry) and self.attempts[job.id] < self.max_attempts:
                why = entry.slurm_state or entry.status
                self.echo(
                    f"      {job.stage.name:15s} {job.key}  {self.executor.name} ended it ({why}): submitted again"
                )
                self.pending.insert(0, job)
                continue
            self.status[job.id] = entry.status
            error = f": {entry.error}" if entry.error else ""
            self._say(job, f"{entry.status} ({entry.wall_s} s){error}", entry.status, entry.wall_s)
            if no_room:
                self._stop(ConfigError(f"{job.id} found no room: {entry.error}: {self._free_some()}"))


@contextmanager
def stop_on_signals(scheduler: Scheduler):
    """Ctrl-C (SIGINT) and SIGTERM ask the scheduler to stop (scheduler.Interrupted ends the run); one is
    enough. Only the main thread can take signals: elsewhere (a runner called from a thread) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    asked = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, lambda signum, _frame: scheduler.signal(signum)) for s in asked}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
