"""Hub datasets, the one place that imports the optional `datasets` package.

Real runs with `data_source: hub` read from the Hugging Face hub (or its local cache: HF_HOME,
HF_HUB_OFFLINE=1). Everything else in the project runs without `datasets` installed.
"""

from __future__ import annotations

import importlib.util

INSTALL_HINT = "pip install -e '.[hub]'"


def available() -> bool:
    return importlib.util.find_spec("datasets") is not None


def require() -> None:
    if not available():
        raise ImportError(f"data_source 'hub' needs the `datasets` package: {INSTALL_HINT} "
                          "(or use data_source 'local' with release files under data_root)")


def load_rows(path: str, name: str | None = None, **kwargs) -> list[dict]:
    """All rows of a hub dataset split as plain dicts."""
    require()
    import datasets

    return list(datasets.load_dataset(path, name, **kwargs))
