import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MAPLE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real release-format files beside the repo (../shared/data); read in place, never copied."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set MAPLE_SHARED_DATA to its location)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_built():
    """Every embedded artefact, built once (or found in the cache): their folders."""
    from maple_utils import registry
    from maple_utils.embedded import models, samples, tokenizer

    built = {"tokenizer": tokenizer.tokenizer_dir(), "samples": samples.samples_dir()}
    for name, entry in registry.read("models")["models"].items():
        if entry.get("embedded"):
            built[name] = models.model_dir(entry["embedded"])
    return built


def load_script(name: str):
    """A script of scripts/ as a module, so tests call its functions instead of reading its text."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# An API key in the environment of the session's smoke grid: no file or output of the run may contain it.
SECRET_MARKER = "sk-maple-test-SECRET-4f1c9e"


@pytest.fixture(scope="session")
def smoke_grid(tmp_path_factory):
    """The smoke grid run once per session as `make demo` runs it (local executor, 2 workers), with an API
    key in its environment: the output folder and the finished process."""
    out = tmp_path_factory.mktemp("smoke")
    proc = run_cli(
        "run", "params/smoke.yaml", "--out", str(out), "--workers", "2", env={"OPENAI_API_KEY": SECRET_MARKER}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM cluster (tests/slurm_local.py) for the session: the environment its clients need."""
    import slurm_local

    folder = tmp_path_factory.mktemp("slurm")
    try:
        env = slurm_local.start(folder)
    except slurm_local.Unavailable as err:
        pytest.skip(str(err))
    yield env
    slurm_local.stop(folder)


# rows that measure the machine rather than the model
TIMINGS = ("tokens_per_s", "peak_memory_mb", "wall_s")


def comparable_rows(out):
    """A grid folder's rows without timings, in a fixed order: two runs of the same jobs give equal frames."""
    import pandas as pd

    frame = pd.read_parquet(Path(out) / "results.parquet")
    frame = frame[~frame["metric"].isin(TIMINGS)]
    return frame.sort_values(["run_id", "stage", "task", "language", "metric"]).reset_index(drop=True)


def run_cli(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "maple_utils.grid", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# `make test` runs the suite on two processes (pytest-xdist). What must share one process is one scope:
# the notebooks (nbval runs them in order on one scratch folder), and the modules that use the session's
# smoke grid (so that it runs once). Every other module is a scope of its own (its module fixtures are
# built once). The smoke scope, the longest, is collected first so that it starts first.
SMOKE_MODULES = ("test_grid.py", "test_kills.py")
FULL_GRID_MODULE = "test_full_grid.py"  # its tests share no fixture but the reference run: each is a scope


def scope_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        return "notebooks"
    if Path(path).name == FULL_GRID_MODULE:
        return nodeid
    return "smoke" if Path(path).name in SMOKE_MODULES else path


# The slower tiers, each selected only by its option and never in the suite: marker -> option
TIERS = {"full_grid": "--full-grid", "real": "--real", "install": "--install"}


def pytest_addoption(parser):
    parser.addoption(
        "--full-grid",
        action="store_true",
        help="run only the full-grid tier (tests marked full_grid: the whole smoke grid killed, on one "
        "and two workers, and through SLURM); `make test-full-grid`, which CI runs after the suite",
    )
    parser.addoption(
        "--install",
        action="store_true",
        help="run only the install tier (tests marked install: pip resolving the README's install in fresh venvs); "
        "`make test-min` runs it beside the fast tier on the minimum versions, and CI runs that",
    )
    parser.addoption(
        "--real",
        action="store_true",
        help="run only the real-model tier (tests marked real: the packaged pretrained models SmolLM2 "
        "and Gemma 3); `make test-real`, which CI runs after the suite",
    )


def tier_of(item) -> str | None:
    return next((marker for marker in TIERS if item.get_closest_marker(marker) is not None), None)


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Scopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return Scopes(config, log)


def pytest_collection_modifyitems(session, config, items):
    """A tier (TIERS) runs alone, with its option, and never in the suite. nbval runs the notebooks at
    their defaults, which write to runs/notebooks: start that scratch folder afresh so that the analysis reads
    only what this session's earlier notebooks wrote. The smoke scope goes first (see SMOKE_MODULES)."""
    chosen = next((marker for marker, option in TIERS.items() if config.getoption(option)), None)
    left_out = [item for item in items if tier_of(item) != chosen]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        dropped = set(map(id, left_out))
        items[:] = [item for item in items if id(item) not in dropped]
    if any(str(item.fspath).endswith(".ipynb") for item in items):
        import shutil

        shutil.rmtree(REPO / "runs" / "notebooks", ignore_errors=True)
    items.sort(key=lambda item: scope_of(item.nodeid) != "smoke")  # stable: otherwise collection order


def stage_notebook(title: str, source: str) -> dict:
    """A notebook for a stage added in a test: a title, the `parameters` cell (empty; the parameters script
    writes it), then one code cell of `source`."""

    def code(cell_id: str, text: str, tags: list[str]) -> dict:
        return {"cell_type": "code", "id": cell_id, "metadata": {"tags": tags} if tags else {}, "outputs": [],
                "execution_count": None, "source": text.splitlines(keepends=True)}  # fmt: skip

    return {
        "cells": [
            {"cell_type": "markdown", "id": "a", "metadata": {}, "source": [title]},
            code("b", "", ["parameters"]),
            code("c", source, []),
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def copy_with_probe_stage(root: Path, probe: str, resources: dict | None = None) -> Path:
    """A copy of the repo under `root` whose stage registry holds one stage, `07_probe` (one job per
    evaluated model, reading `model` and `quant`), running `probe` in its notebook: a test's real kernels
    fail, hang or sleep as it needs, through the real runner."""
    import json
    import shutil

    import yaml

    for part in ("maple_utils", "notebooks", "params", "scripts"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)
    stage = {
        "name": "07_probe",
        "unit": "evaluated_model",
        "groups": ["model"],
        "paths": ["out_dir", "run_dir"],
        "needs": [],
        "registry": [],
        "resources": resources or {},
    }
    (root / "maple_utils" / "registry" / "stages.yaml").write_text(yaml.safe_dump({"stages": [stage]}))
    (root / "notebooks" / "07_probe.ipynb").write_text(json.dumps(stage_notebook("# Probe", probe.strip())))
    subprocess.run([sys.executable, "scripts/write_notebook_parameters.py"], cwd=root, check=True, capture_output=True)
    return root
