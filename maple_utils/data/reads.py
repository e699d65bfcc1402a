"""What a run's jobs read, per config: the registry entry, split and template keys of every instruction file,
task file and the AlpacaEval set, and for local data the files themselves. The preflight checks these files
before any job; the planner puts their content revisions into the fingerprints of the jobs that read them, so
an edited file reruns exactly those jobs."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from maple_utils import registry
from maple_utils.config import RunConfig, known_datasets
from maple_utils.data import sources

Read = tuple[str, dict, str, dict]  # (entry name, entry, split, template keys)


def instruction_reads(cfg: RunConfig) -> list[Read]:
    """The instruction data an adapter trains on: one read per training language."""
    entry = known_datasets()[cfg.dataset]
    return [(cfg.dataset, entry, "train", {"config": c, "lang": c}) for c in cfg.train_languages or entry["languages"]]


def task_file_reads(cfg: RunConfig) -> list[Read]:
    """What 03_evaluate reads for one evaluated model: each task language's split and its exemplars' source."""
    from maple_utils.eval.evaluate import k_for, task_languages
    from maple_utils.eval.tasks import load_task, task_reads

    reads = []
    for task, code in task_languages(cfg)[0]:
        spec = load_task(task)
        reads += task_reads(spec, code, k_for(cfg, spec), cfg.data_source, cfg.data_root, cfg.split_overrides.get(task))
    return reads


def alpaca_eval_reads() -> list[Read]:
    entry = registry.read("tasks")["alpaca_eval"]
    return [("alpaca_eval", entry, entry["hub"]["split"], {"config": "alpaca_eval"})]


def local_files(cfg: RunConfig, reads: Iterable[Read]) -> dict[Path, str]:
    """{path: format} of the local files behind `reads`; none unless the config reads local data. A read
    with no local layout raises sources.MissingDataError."""
    if cfg.data_source != "local":
        return {}
    files = {}
    for name, entry, split, keys in reads:
        path, fmt = sources.local_layout(name, entry, cfg.data_root, split, **keys)
        files[path] = fmt
    return files


def revisions(paths: Iterable[Path]) -> dict[str, str]:
    """{path: content revision} (sources.revision); a path that is not there is "missing" (the preflight
    names it before any job runs)."""
    return {str(p): sources.revision(p) if p.exists() else "missing" for p in paths}
