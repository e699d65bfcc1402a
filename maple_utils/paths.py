"""Where things live: the project root that relative paths mean, the notebooks, the build cache.

A relative path (a grid's data_root or model folder, a notebook's out_dir) means the same thing wherever
it is read: relative to the project root. That is MAPLE_ROOT when set (the grid runner sets it for every
notebook kernel it starts), else the checkout this package sits in, else the working folder (a
non-editable install).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def checkout_root() -> Path | None:
    """The git checkout or source tree this package was imported from, if it was (not site-packages)."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir() else None


def project_root() -> Path:
    if os.environ.get("MAPLE_ROOT"):
        return Path(os.environ["MAPLE_ROOT"]).resolve()
    return checkout_root() or Path.cwd().resolve()


def resolve(path: str | Path) -> Path:
    """An absolute path; a relative one is taken from the project root, whatever the working folder."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def cache_dir() -> Path:
    """Cache for built artefacts (the embedded models, tokenizer and samples); MAPLE_CACHE overrides it."""
    return Path(os.environ.get("MAPLE_CACHE", project_root() / ".cache" / "maple"))
