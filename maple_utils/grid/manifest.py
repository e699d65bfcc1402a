"""The manifest (<out>/manifest.jsonl): one line per event of a job attempt, appended, never rewritten.

An attempt writes `running` when it starts and one end (done, failed, crashed, timed_out); a job that does not
run writes why (skipped lines are not written: the completion marker says so; blocked, gave_up are). With
SLURM, `queued` and `running` event lines (event "slurm") follow an attempt through the queue. A runner that
died leaves a `running` without an end, which the next runner closes as `interrupted`.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from maple_utils import io, layout


class Status(str, Enum):
    """Every state a job can be in; the manifest and `status` show the values."""

    PENDING = "pending"  # never ran (shown by `status`, never written)
    QUEUED = "queued"  # submitted to SLURM, waiting there (an event line)
    RUNNING = "running"  # an attempt started
    DONE = "done"
    SKIPPED = "skipped"  # already complete with this fingerprint: not run again
    FAILED = "failed"  # a cell raised
    CRASHED = "crashed"  # the kernel died (OOM, segfault, kill), or SLURM ended the task
    TIMED_OUT = "timed_out"  # a cell ran past the stage's time
    BLOCKED = "blocked"  # a job it needs did not complete
    GAVE_UP = "gave_up"  # its attempts are spent; `retry` runs it again
    INTERRUPTED = "interrupted"  # the runner stopped before the attempt ended
    NOT_RETRIED = "not retried"  # `retry` left it as it is
    DAMAGED = "outputs damaged"  # completed, but an output it left is missing, cut or changed (shown, never written)

    __str__ = str.__str__  # the value, as JSON and f-strings show it
    __format__ = str.__format__


RETRYABLE = (
    Status.FAILED,
    Status.CRASHED,
    Status.TIMED_OUT,
    Status.BLOCKED,
    Status.GAVE_UP,
    Status.INTERRUPTED,
    Status.DAMAGED,
)
COUNTED = (Status.FAILED, Status.CRASHED, Status.TIMED_OUT)  # attempts that count towards max_attempts
COMPLETE = (Status.DONE, Status.SKIPPED)  # what a dependant may start after
SLURM_EVENT = "slurm"


@dataclass(eq=False)
class Entry(Mapping):
    """One manifest line. Read as attributes in code; a read-only mapping of its set fields (its JSON line)
    for tools and tests that read the manifest as records."""

    job: str | None
    status: Status
    stage: str | None = None
    key: str | None = None
    attempt: int | None = None
    started: float | None = None
    notebook: str | None = None
    error: str | None = None
    exception: str | None = None
    cell: int | None = None
    wall_s: float | None = None
    device: str | None = None
    event: str | None = None  # "slurm": a SLURM event of an attempt, not its start or end
    slurm_job_id: str | None = None
    slurm_state: str | None = None
    slurm_output: str | None = None

    def __post_init__(self):
        self.status = Status(self.status)

    @classmethod
    def of(cls, job, status: Status, **fields) -> Entry:
        """An entry about a planned job (its id, stage and key)."""
        return cls(job=job.id, status=status, stage=job.stage.name, key=job.key, **fields)

    @classmethod
    def from_json(cls, line: dict) -> Entry:
        return cls(**{k: v for k, v in line.items() if k in _FIELDS})

    def to_json(self) -> dict:
        return {k: (v.value if isinstance(v, Status) else v) for k, v in vars(self).items() if v is not None}

    def replace(self, **changes) -> Entry:
        return dataclasses.replace(self, **changes)

    @property
    def is_event(self) -> bool:
        return self.event is not None

    def __getitem__(self, name: str):
        value = vars(self).get(name) if name in _FIELDS else None
        if value is None:
            raise KeyError(name)
        return value.value if isinstance(value, Status) else value

    def __iter__(self):
        return iter(self.to_json())

    def __len__(self) -> int:
        return len(self.to_json())

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and self.to_json() == dict(other)


_FIELDS = frozenset(f.name for f in dataclasses.fields(Entry))
_LOCK = threading.Lock()


def append(out: Path, entry: Entry | Mapping) -> None:
    """One JSON line per event, one writer at a time (a mapping is checked as an Entry first). A line cut short
    by a kill or a full disk is ended before the next one, so it never swallows a later entry."""
    line = (entry if isinstance(entry, Entry) else Entry.from_json(dict(entry))).to_json()
    with _LOCK:
        io.append_jsonl(Path(out) / layout.MANIFEST, line)


def read(out: Path) -> list[Entry]:
    """Every whole line of the manifest, in order (a line being written, or cut, is left out)."""
    return [Entry.from_json(line) for line in io.read_appended(Path(out) / layout.MANIFEST) if "status" in line]


def latest(entries: Iterable[Entry]) -> dict[str, Entry]:
    """Each job's latest entry."""
    return {e.job: e for e in entries}


def attempts(entries: Iterable[Entry]) -> list[Entry]:
    """The lines about attempts and jobs, without SLURM's queue events."""
    return [e for e in entries if not e.is_event]


def close_interrupted(out: Path, history: list[Entry], keep=()) -> list[Entry]:
    """Attempts whose runner died before they ended (killed, or the machine went down) get an `interrupted`
    entry, so `status` tells them from running ones; they do not count against a job's max_attempts. `keep`:
    jobs whose attempt goes on without the runner (in SLURM), to be followed again instead."""
    ended = []
    for job, entry in latest(attempts(history)).items():
        if entry.status is Status.RUNNING and job not in keep:
            ended.append(
                Entry(
                    job=job,
                    stage=entry.stage,
                    key=entry.key,
                    attempt=entry.attempt,
                    status=Status.INTERRUPTED,
                    started=entry.started,
                    notebook=entry.notebook,
                    error="the runner stopped before this attempt ended (killed, or the machine went down)",
                )
            )
            append(out, ended[-1])
    return history + ended


def not_current(out: Path) -> dict[tuple[str, str], Entry]:
    """{(stage, key): its latest entry} of the jobs whose latest attempt did not complete (failed, crashed,
    blocked, interrupted, ...). Rows their folders still hold came from an earlier attempt, under an earlier
    config (a local judge's win rates after `judge: api` failed): the analysis leaves them out and says so."""
    ends = latest(attempts(read(out)))
    return {(e.stage, e.key): e for e in ends.values() if e.status is not Status.DONE and e.stage and e.key}
