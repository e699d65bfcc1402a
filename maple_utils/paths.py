"""Where things live: the repo's params, the cache for the embedded default, run folders."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
PARAMS_DIR = REPO_ROOT / "params"
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
PACKAGE_DATA = Path(__file__).resolve().parent / "data"


def resolve(path: str | Path) -> Path:
    """Relative paths are taken from the repo root, whatever the working folder (notebooks run in notebooks/)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def cache_dir() -> Path:
    """Cache for built artefacts (tiny models, tokenizer, bundled samples); MAPLE_CACHE overrides it."""
    return Path(os.environ.get("MAPLE_CACHE", REPO_ROOT / ".cache" / "maple"))


@functools.lru_cache(maxsize=None)
def read_params(name: str) -> dict:
    """A YAML file of params/ by stem, parsed once per process."""
    with open(PARAMS_DIR / f"{name}.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)
