"""Checks before any job of a grid runs: the output folder takes writes and has the disk space the next job
declares, and every local data file the grid will read is there and parses (a damaged file is named with
its row). A failure here costs seconds, not a night of training followed by an evaluation that cannot
read its data."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from maple_utils import registry
from maple_utils.config import ConfigError, RunConfig, known_datasets
from maple_utils.data import formats, sources
from maple_utils.io import DataFileError


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".preflight-"):
            pass
    except OSError as err:
        raise ConfigError(f"output folder {out} is not writable ({err.strerror or err}); "
                          "choose another --out") from None


def local_files(adapters: list[RunConfig], evaluated: list[RunConfig]) -> dict[Path, str]:
    """Every local release file the grid's jobs will read, with its format."""
    from maple_utils.eval.evaluate import k_for, task_languages
    from maple_utils.eval.tasks import data_reads, load_task

    files: dict[Path, str] = {}
    for cfg in adapters:
        if cfg.data_source == "local":
            entry = known_datasets()[cfg.dataset]
            for code in cfg.train_languages or entry["languages"]:
                path, fmt = sources.local_layout(cfg.dataset, entry, cfg.data_root, "train", config=code, lang=code)
                files[path] = fmt
    for cfg in evaluated:
        if cfg.data_source != "local":
            continue
        for task, code in task_languages(cfg)[0]:
            spec = load_task(task)
            for name, entry, split, keys in data_reads(spec, code, k_for(cfg, spec), "local", cfg.data_root,
                                                       cfg.split_overrides.get(task)):
                path, fmt = sources.local_layout(name, entry, cfg.data_root, split, **keys)
                files[path] = fmt
        entry = registry.read("tasks")["alpaca_eval"]
        path, fmt = sources.local_layout("alpaca_eval", entry, cfg.data_root, entry["hub"]["split"], config="alpaca_eval")
        files[path] = fmt
    return files


def check_disk(out: Path, needed_gb: float, what: str) -> None:
    """Free space under `out` covers `needed_gb` (a stage's declared resources.disk_gb), or a ConfigError
    naming the folder, the space found and the need."""
    free = shutil.disk_usage(out).free / 2**30
    if free < needed_gb:
        raise ConfigError(f"output folder {out} has {free:.1f} GB free; {what} declares {needed_gb:g} GB "
                          "(stage registry resources.disk_gb): free some space or choose another --out")


def check_data(adapters: list[RunConfig], evaluated: list[RunConfig]) -> int:
    """Read every local file once; the first missing or damaged one stops the grid, named. Returns the count."""
    try:
        files = local_files(adapters, evaluated)
    except sources.MissingDataError as err:
        raise ConfigError(f"preflight: {err}") from None
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ConfigError(f"preflight: {len(missing)} local data file(s) missing, e.g. {missing[0]}")
    for path, fmt in files.items():
        try:
            formats.read(path, fmt)
        except DataFileError as err:
            raise ConfigError(f"preflight: {err}") from None
    return len(files)
