"""One data-source dispatch for every dataset, task and the AlpacaEval set: embedded, local or hub.

A registry entry says where its data lives under each source:
  local: {format, path}                  or {format, splits: {split: path}, overrides: {config: {split: path}}}
  hub:   {path, name?, data_files?, split?, overrides: {config: {path, name}}}
Paths and hub arguments are templates over {lang}, {code}, {config}, {split}. Embedded data are the
samples built by maple_utils.embedded under <samples>/<entry name>/<config>/<split>.jsonl.
Every load returns the records and where they came from (with a revision: a content hash of the file
read, or the hub commit), which the run record keeps.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from maple_utils import io
from maple_utils.data import formats
from maple_utils.paths import resolve

SOURCES = ("embedded", "local", "hub")
HUB_INSTALL_HINT = "pip install datasets"


class MissingDataError(FileNotFoundError):
    """A task, language or dataset with no data where the config says to read it."""


@dataclass(frozen=True)
class Origin:
    source: str
    location: str  # a file path or a hub id
    revision: str | None  # sha256 of the file read, or the hub dataset's commit

    def as_dict(self) -> dict:
        return {"source": self.source, "location": self.location, "revision": self.revision}


@functools.lru_cache(maxsize=256)
def _file_sha(path: str, size: int, mtime: float) -> str:
    return "sha256:" + io.sha256_file(path)[:16]


def file_revision(path: Path) -> str:
    st = path.stat()
    return _file_sha(str(path), st.st_size, st.st_mtime)


@functools.lru_cache(maxsize=64)
def _folder_sha(folder: str, listing: tuple) -> str:
    return io.folder_revision(folder)


def revision(path: Path) -> str:
    """The content revision of a local file or folder (a model's), hashed once per process for each (path,
    size, mtime) of it and of every file in it: `status` and the planner ask for the same ones many times."""
    path = Path(path)
    if not path.is_dir():
        return file_revision(path)
    listing = tuple(
        (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    )
    return _folder_sha(str(path), listing)


def local_layout(name: str, entry: dict, root: str | None, split: str, **keys) -> tuple[Path, str]:
    """Where a local release file should be, and its format. An entry may list several release layouts
    (`local: {layouts: [...]}`, e.g. XNLI's original 15-language files and XTREME's per-language ones): the
    first whose file is there wins, else the first that has the split names the file expected."""
    local = entry.get("local") or {}
    candidates = []
    for layout in local.get("layouts", [local]):
        if "path" in layout:
            template = layout["path"]
        else:
            splits = dict(layout.get("splits", {}))
            splits.update(layout.get("overrides", {}).get(keys.get("config"), {}))
            if split not in splits:
                continue
            template = splits[split]
        candidates.append((resolve(root or ".") / template.format(split=split, **keys), layout["format"]))
    if not candidates:
        known = sorted({s for layout in local.get("layouts", [local]) for s in layout.get("splits", {})})
        raise MissingDataError(
            f"{name}: no local release layout for split {split!r} (local files have: {', '.join(known) or 'none'})"
        )
    return next((c for c in candidates if c[0].is_file()), candidates[0])


def local_path(name: str, entry: dict, root: str | None, split: str, **keys) -> Path:
    return local_layout(name, entry, root, split, **keys)[0]


def local_file(name: str, entry: dict, root: str | None, split: str, **keys) -> Path:
    """The local release file, or a MissingDataError naming what was expected where."""
    path = local_path(name, entry, root, split, **keys)
    if not path.is_file():
        found = [
            s for s in ("train", "validation", "test") if s != split and _split_present(name, entry, root, s, keys)
        ]
        hint = (
            f"; the local files have split {', '.join(found)}: a run evaluates it with split_overrides" if found else ""
        )
        raise MissingDataError(f"{name}, {keys.get('config')}: missing local file {path}{hint}")
    return path


def _split_present(name: str, entry: dict, root: str | None, split: str, keys: dict) -> bool:
    try:
        return local_path(name, entry, root, split, **keys).is_file()
    except MissingDataError:
        return False


def hub_available() -> bool:
    return importlib.util.find_spec("datasets") is not None


def require_hub() -> None:
    if not hub_available():
        raise MissingDataError(
            f"data_source 'hub' needs the `datasets` package: {HUB_INSTALL_HINT} "
            "(or use data_source 'local' with release files under data_root)"
        )


def hub_arguments(entry: dict, split: str, **keys) -> dict:
    hub = dict(entry.get("hub") or {})
    hub.update(hub.pop("overrides", {}).get(keys.get("config"), {}))
    args = {k: str(v).format(split=split, **keys) for k, v in hub.items()}
    args.setdefault("split", split)
    return args


@functools.cache  # one question per dataset and process, not one per split and language
def _hub_revision(path: str) -> str | None:
    if os.environ.get("HF_HUB_OFFLINE"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(path, timeout=10).sha
    except Exception:  # offline, gated or renamed: the rows still carry the hub id
        return None


def load(
    name: str, entry: dict, source: str, root: str | None, split: str, config: str, **keys
) -> tuple[list[dict], Origin]:
    """Records of one entry (a task, a dataset, the AlpacaEval set) for one config and split."""
    keys = {"config": config, **keys}
    if source == "embedded":
        from maple_utils.embedded import samples

        path = samples.sample_path(name, config, split)
        if not path.is_file():
            raise MissingDataError(f"{name}: no embedded sample for {config!r}, split {split!r} ({path})")
        return formats.read(path, "jsonl"), Origin("embedded", str(path), file_revision(path))
    if source == "local":
        path = local_file(name, entry, root, split, **keys)
        fmt = local_layout(name, entry, root, split, **keys)[1]
        return formats.read(path, fmt, keys), Origin("local", str(path), file_revision(path))
    if source == "hub":
        require_hub()
        import datasets

        args = hub_arguments(entry, split, **keys)
        path = args.pop("path")
        rows = [dict(r) for r in datasets.load_dataset(path, **args)]
        return rows, Origin("hub", f"{path}:{args.get('name') or args.get('data_files') or ''}", _hub_revision(path))
    raise ValueError(f"unknown data_source {source!r} (allowed: {', '.join(SOURCES)})")


def check_available(name: str, entry: dict, source: str, root: str | None, split: str, config: str, **keys) -> str:
    """Where the data will be read from, or a MissingDataError naming it, without reading it."""
    keys = {"config": config, **keys}
    if source == "local":
        return str(local_file(name, entry, root, split, **keys))
    if source == "hub":
        require_hub()
        return hub_arguments(entry, split, **keys)["path"]
    return "embedded"
