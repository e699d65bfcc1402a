"""Files: atomic writes, JSON / JSONL reading that names the file and line of any problem, content hashes.

Every write goes to a temporary file in the destination folder, is flushed to disk and renamed over the
target, so a crash or a full disk leaves either the old file or the new one, never half of one. This
module imports neither git nor torch: everything may use it.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

_UMASK = os.umask(0)
os.umask(_UMASK)


def sha256_file(path: str | Path) -> str:
    """The full sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_revision(folder: str | Path, whole_file_limit: int = 64 << 20) -> str:
    """A content hash of a local model folder: every file's name and bytes; files over the limit (weight
    shards of a 7B model) by their size and first and last 16 MiB, which any re-save changes."""
    folder = Path(folder)
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        size = path.stat().st_size
        with open(path, "rb") as f:
            if size <= whole_file_limit:
                h.update(f.read())
            else:
                h.update(str(size).encode() + f.read(16 << 20))
                f.seek(-(16 << 20), os.SEEK_END)
                h.update(f.read())
    return "sha256:" + h.hexdigest()[:16]


NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space left, over quota, over the file-size limit
# how errors say it when they carry no errno (safetensors' Rust: "No space left on device (os error 28)")
NO_ROOM_TEXT = (
    "[Errno 28]",
    "[Errno 122]",
    "[Errno 27]",
    "os error 28",
    "No space left on device",
    "Disk quota exceeded",
)


def no_room(err: BaseException) -> str | None:
    """For a write that failed for want of room (some libraries, pyarrow's among them, raise without an
    errno): a message naming the path and the errno; None for any other error."""
    if isinstance(err, OSError) and err.errno in NO_ROOM:
        return f"no room to write {err.filename or 'a file'} ({errno.errorcode[err.errno]}: {err.strerror})"
    if any(t in str(err) for t in NO_ROOM_TEXT):
        return f"no room to write: {err}"
    return None


def says_no_room(error: str | None) -> bool:
    """Whether a recorded error (a manifest entry's) is a write that found no room."""
    return bool(error) and (error.startswith("no room to write") or any(t in error for t in NO_ROOM_TEXT))


class DataFileError(ValueError):
    """A file that cannot be read as what it should be; the message names the file and the row."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """write(tmp) into a temporary file beside path, fsync it, then rename it over path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared like any file
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_dir(path: str | Path, write: Callable[[Path], None]) -> Path:
    """write(tmp) into a temporary folder beside path, fsync every file in it, then rename it into place:
    the folder is whole or absent. A folder already at path is replaced; a stale temporary one is cleared."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        write(tmp)
        for file in tmp.rglob("*"):
            if file.is_file():
                os.chmod(file, 0o666 & ~_UMASK)  # safetensors writes 0600: one mode for every file of a run
                with open(file, "rb+") as f:
                    os.fsync(f.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename in folder durable (a crash right after it cannot undo it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data) -> Path:
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


# Characters Python's str.splitlines() breaks a line at, beyond "\n" and "\r", that json.dumps leaves raw
# (it escapes those below U+0020 already): a JSONL line holding one would be two lines to such a reader.
_RAW_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(entry) -> str:
    """One JSONL line: every line-break character of any string inside escaped, so any reader splits it right."""
    text = json.dumps(entry, ensure_ascii=False, default=str)
    for raw, escaped in _RAW_BREAKS.items():  # only inside strings: JSON has no other place for them
        text = text.replace(raw, escaped)
    return text + "\n"


def jsonl_lines(text: str) -> list[str]:
    """A JSONL text's lines: split at "\n" only (a "\r" before it is JSON whitespace). str.splitlines would
    also split at U+2028, U+0085 and others, which a valid line may hold raw inside a string."""
    return text.split("\n")


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    return write_text(path, "".join(json_line(r) for r in rows))


def append_jsonl(path: str | Path, entry: dict) -> None:
    """Append one JSON line and sync it to disk. A last line cut short by a kill or a full disk is ended
    first, so it never swallows the new entry (readers skip the cut line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as f:
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write(json_line(entry).encode())
        f.flush()
        os.fsync(f.fileno())


def read_appended(path: str | Path) -> list[dict]:
    """The entries of an append-only JSONL log (a manifest, a judgement cache); a line cut short by a kill
    is skipped, so the work it recorded is simply done again."""
    path = Path(path)
    if not path.exists():
        return []
    entries = []
    for line in jsonl_lines(path.read_text(encoding="utf-8", errors="replace")):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries


def read_text(path: str | Path) -> str:
    """A UTF-8 text file, or a DataFileError naming the file and the byte offset that is not UTF-8."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataFileError(f"{path}: no such file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise DataFileError(f"{path}: line {line}: not UTF-8 text (byte {err.start}: {err.reason})") from None


def read_json(path: str | Path):
    text = read_text(path)
    if not text.strip():
        raise DataFileError(f"{path}: the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFileError(
            f"{path}: line {err.lineno}, column {err.colno}: not valid JSON ({err.msg}); a truncated or damaged file?"
        ) from None


def read_jsonl(path: str | Path) -> list[dict]:
    """One JSON object per line; blank lines are skipped; a bad line is named by its number."""
    rows = []
    for number, line in enumerate(jsonl_lines(read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise DataFileError(f"{path}: line {number}: not valid JSON ({err.msg}): {line[:80]!r}") from None
    return rows
