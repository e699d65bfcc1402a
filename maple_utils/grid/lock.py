"""One runner per output folder: an exclusive lock on <out>/.runner.lock for the life of a run.

Two runners on one folder would each run every job, mark the other's live attempts interrupted and hand out
different completion tokens, so the next run would redo training and everything after it (and an API judge
would be paid twice). The lock is fcntl's: the system drops it when its process dies, however it dies, so a
lock file left by a killed runner is simply taken over, with a word about whose it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from maple_utils import layout
from maple_utils.config import ConfigError


def _holder(text: str) -> str:
    try:
        held = json.loads(text)
        return f"pid {held['pid']} on {held['host']}, since {held['since']}"
    except (ValueError, KeyError, TypeError):
        return "a runner that left no name"


@contextlib.contextmanager
def runner_lock(out: Path, echo=print):
    """Hold the folder's runner lock, or refuse at once naming the runner that holds it."""
    path = Path(out) / layout.RUNNER_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            raise ConfigError(
                f"{out}: another runner is using this folder ({holder}); wait for it, or stop it, "
                "then run again (python -m maple_utils.grid status shows where it is)"
            ) from None
        left = os.pread(fd, 4096, 0).decode(errors="replace")
        if left.strip():  # the system released it: its runner ended without removing its name
            echo(f"taking over the runner lock of {_holder(left)}, which is no longer running")
        mine = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(mine).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a clean end leaves no name behind
    finally:
        os.close(fd)  # closing the descriptor drops the lock
