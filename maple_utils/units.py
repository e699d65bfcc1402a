"""What one job of a stage is (`unit:` in registry/stages.yaml): one table entry per unit.

Each entry says how a job of the unit is keyed, where it writes, which of a plan's configs it runs for,
where its notebook's config comes from, and what the dry run calls it. The planner, the notebook side
(runs.open_stage), the scheduler, the CLI and the ids read these entries; none of them branches on a unit's
name. A new unit is one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from maple_utils import layout


class ConfigSource(str, Enum):
    """Where the notebook of a job gets the config it runs under."""

    NONE = "none"  # a grid-wide job: no run config
    OWN = "own"  # its own fields identify its output (data, training)
    TRAINED = "trained"  # the run's config.json (what was trained), its own fields on top (evaluation)


def _data_key(cfg, grid_name: str) -> str | None:
    from maple_utils import config

    return config.data_id(cfg) if cfg.dataset else None


def _adapter_key(cfg, grid_name: str) -> str | None:
    from maple_utils import config

    return config.run_id(cfg) if cfg.dataset else None


def _run_key(cfg, grid_name: str) -> str:
    from maple_utils import config

    return config.run_id(cfg)


def _grid_key(cfg, grid_name: str) -> str:
    return grid_name


def _grid_folder(out: Path, key: str) -> Path:
    return Path(out)


# Which of a plan's configs a unit runs for (named functions, not lambdas: a job is pickled for SLURM)
def _adapters(adapters: list, bases: list) -> list:
    return adapters


def _adapters_and_bases(adapters: list, bases: list) -> list:
    return adapters + bases


def _once(adapters: list, bases: list) -> list:
    return [None]


@dataclass(frozen=True)
class Unit:
    name: str
    title: str  # what one job is, as the dry run says it ("one job per <title>")
    key: Callable  # (config or None, grid name) -> the job's key; None: no job for that config
    folder: Callable[[Path, str], Path]  # (output folder, key) -> where the job writes
    configs: Callable[[list, list], list]  # (the plan's adapters, its base models) -> a config per candidate job
    config_source: ConfigSource
    run_folder: bool = False  # its folder is a run's, which keeps the run's config.json
    reads_all_rows: bool = False  # runs after every other job, and again whenever the rows change


DATASET = Unit(
    "dataset",
    "prepared data set",
    _data_key,
    layout.data_folder,
    _adapters,
    ConfigSource.OWN,
)
ADAPTER = Unit(
    "adapter",
    "adapter",
    _adapter_key,
    layout.run_folder,
    _adapters,
    ConfigSource.OWN,
    run_folder=True,
)
EVALUATED_MODEL = Unit(
    "evaluated_model",
    "evaluated model (adapter or base)",
    _run_key,
    layout.run_folder,
    _adapters_and_bases,
    ConfigSource.TRAINED,
    run_folder=True,
)
GRID = Unit(
    "grid",
    "grid",
    _grid_key,
    _grid_folder,
    _once,
    ConfigSource.NONE,
    reads_all_rows=True,
)

UNITS: dict[str, Unit] = {u.name: u for u in (DATASET, ADAPTER, EVALUATED_MODEL, GRID)}
