"""Cached, atomic builds of the embedded artefacts, keyed by the content of what they are built from.

Each artefact lives in `<cache>/<name>-<hash>/`, where the hash covers the code that builds it and the
data it is built from; a change to either builds a new artefact, with no version to bump by hand. A build
runs in a temporary folder that is renamed into place, so a crash never leaves a half-built artefact.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from maple_utils.paths import cache_dir

HERE = Path(__file__).resolve().parent


def content_hash(*parts: str | Path, n: int = 12) -> str:
    """Hash of files' bytes (by path) and of strings, in order."""
    h = hashlib.sha256()
    for part in parts:
        h.update(Path(part).read_bytes() if isinstance(part, Path) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:n]


def built_folder(name: str, key: str) -> Path | None:
    """The artefact's folder when its build is complete, else None."""
    target = cache_dir() / f"{name}-{key}"
    return target if (target / COMPLETE).exists() else None


COMPLETE = ".complete"  # written last into a finished build


def build_atomically(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """Run build(tmp) and rename tmp to <cache>/<name>-<key>; skip when that folder is complete already."""
    target = cache_dir() / f"{name}-{key}"
    marker = target / COMPLETE
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # one builder at a time (a model conversion costs a minute): the others wait, then find it built. The
    # lock file goes when the build ends; one who opens it anew meanwhile builds again, which the atomic
    # rename below tolerates: the lock saves work, it is not what keeps the cache whole.
    lock_path = target.parent / f".{target.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if marker.exists():
                return target
            return _build(target, marker, key, build)
        finally:
            lock_path.unlink(missing_ok=True)


def _build(target: Path, marker: Path, key: str, build: Callable[[Path], None]) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / COMPLETE).write_text(key + "\n")
        if marker.exists():  # another process finished it meanwhile: keep theirs, which may be in use
            return target
        if target.exists():  # an incomplete leftover from a crash
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not marker.exists():  # lost a race only if someone else finished it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
