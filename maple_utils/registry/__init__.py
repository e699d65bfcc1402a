"""The registries: stages, tasks, languages, datasets, models and templates, as YAML package data.

Each is read once per process. MAPLE_REGISTRY names a folder whose files replace the packaged ones of the
same name (a private task, an edited prompt); the grid passes it on to the notebook kernels. An entry's
hash (`entry_hash`) is part of the fingerprint of every job that uses it, so editing a prompt reruns the
stages that read it and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

import yaml

PACKAGED = Path(__file__).resolve().parent
NAMES = ("stages", "tasks", "languages", "datasets", "models", "templates", "baselines")


def folder_for(name: str) -> Path:
    override = os.environ.get("MAPLE_REGISTRY")
    if override and (Path(override) / f"{name}.yaml").is_file():
        return Path(override)
    return PACKAGED


@functools.cache
def _read(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def read(name: str) -> dict:
    """A registry by name (stages, tasks, ...), parsed once per process."""
    if name not in NAMES:
        raise KeyError(f"unknown registry {name!r} (registries: {', '.join(NAMES)})")
    return _read(str(folder_for(name) / f"{name}.yaml"))


def stable_hash(values, n: int = 8) -> str:
    """Short hash of a canonical JSON dump: the same values give the same hash on any machine."""
    blob = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def entry_hash(entry) -> str:
    return stable_hash(entry, n=12)
