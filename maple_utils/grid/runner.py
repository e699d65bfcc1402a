"""Running a plan: the checks before any job, the output folder, then the scheduler through the chosen executor.

Executors are one table (EXECUTORS), whose keys are the CLI's `--executor` choices: the local one runs the
notebooks here with papermill (grid/local.py), the SLURM one as job arrays (grid/slurm.py). Another is one
module with a class of scheduler.Executor's protocol plus one entry here.
"""

from __future__ import annotations

import os
import shutil
import time

from maple_utils import config, io, layout
from maple_utils.config import ConfigError
from maple_utils.data import sources
from maple_utils.grid import local, manifest, slurm
from maple_utils.grid.lock import runner_lock
from maple_utils.grid.manifest import Status
from maple_utils.grid.planner import Job, Plan, check_notebooks
from maple_utils.grid.scheduler import Executor, Scheduler, stop_on_signals

EXECUTORS: dict[str, type[Executor]] = {"local": local.LocalExecutor, "slurm": slurm.SlurmExecutor}


def prepare_out(plan: Plan) -> None:
    """The output folder, the grid as given and expanded (the grid files of another grid, which
    `--grid-changed` let through, moved under .grid-history/ first), and every run's planned config.json."""
    from maple_utils.grid import preflight

    plan.out.mkdir(parents=True, exist_ok=True)
    kept = plan.out / layout.EXPANDED_GRID
    if kept.is_file() and preflight.check_folder_grid(plan, changed_ok=True, echo=lambda _: None):
        history = plan.out / layout.GRID_HISTORY / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        history.mkdir(parents=True, exist_ok=True)
        for name in (layout.GRID_FILE, layout.EXPANDED_GRID):
            if (plan.out / name).is_file():
                os.replace(plan.out / name, history / name)
    if plan.effective:  # a grid that includes another, or with -p overrides: kept resolved
        io.write_text(plan.out / layout.GRID_FILE, config.effective_yaml(plan.grid_path, plan.overrides))
    else:  # as given, with its comments
        shutil.copyfile(plan.grid_path, plan.out / layout.GRID_FILE)
    io.write_json(plan.out / layout.EXPANDED_GRID, preflight.expanded(plan))
    for cfg in plan.adapters + plan.bases:
        io.write_json(layout.run_folder(plan.out, config.run_id(cfg)) / layout.CONFIG, cfg.model_dump())


def stage_timeout(job: Job, override: int | None) -> int | None:
    """Seconds a cell of this job may run: --timeout, else the stage registry's time_min."""
    if override:
        return override
    minutes = job.stage.resources.get("time_min")
    return int(minutes * 60) if minutes else None


def executor_class(executor: str | type[Executor]) -> type[Executor]:
    """An executor by its --executor name, or a class given as it is."""
    if isinstance(executor, str):
        if executor not in EXECUTORS:
            raise ConfigError(f"--executor {executor!r} is not one of: {', '.join(EXECUTORS)}")
        return EXECUTORS[executor]
    return executor


def preflight_checks(plan: Plan, only: set[str] | None) -> None:
    """Before anything runs: notebooks match their stages, data files exist and parse, hub repos are cached
    when offline, packaged models are installed, local model folders hold what loading needs, the output
    folder takes writes and has room."""
    from maple_utils.grid import preflight

    check_notebooks(plan)
    if any(c.data_source == "hub" for c in plan.adapters + plan.bases):
        try:
            sources.require_hub()
        except sources.MissingDataError as err:
            raise ConfigError(f"{plan.grid_path}: {err}") from None
    if only is None or any(j.cfg is not None for j in plan.jobs if j.id in only):  # a grid-wide job reads rows only
        preflight.check_data(plan.adapters, plan.adapters + plan.bases)
        preflight.check_offline(plan.adapters, plan.adapters + plan.bases)
        preflight.check_packaged_models(plan.adapters + plan.bases)
        preflight.check_model_folders(plan.adapters + plan.bases)
        # the jobs of the stage that reads `judge` (05_judge), those this run may start
        preflight.check_judges(
            [j.cfg for j in plan.jobs if "judge" in j.stage.fields and (only is None or j.id in only)]
        )
    preflight.check_writable(plan.out)
    preflight.check_disk(plan.out, max((_disk_gb(j) for j in plan.jobs), default=0), "the largest job")


def run_plan(
    plan: Plan,
    timeout: int | None = None,
    echo=print,
    workers: int = 1,
    max_attempts: int = 3,
    only: set[str] | None = None,
    executor: str | type[Executor] = "local",
) -> dict[str, Status]:
    """Execute every job that is not complete, up to `workers` at a time (SLURM: each job array's throttle),
    each as soon as the jobs it needs are complete (the once-per-grid analysis after every other job). A job
    that did not complete in `max_attempts` attempts is left alone (gave_up) until `retry`; one its executor
    ended itself (SLURM cancelled or preempted it) is submitted again while attempts remain. `only` restricts
    the run to those job ids (what `retry` passes). Returns each job's status."""
    running = executor_class(executor)(plan, workers)
    running.check()
    preflight_checks(plan, only)
    try:
        with runner_lock(plan.out, echo):
            return _run(plan, running, timeout, echo, workers, max_attempts, only)
    except OSError as err:  # a write of the runner's own (the lock, grid files, configs) on a full disk
        if not io.no_room(err):
            raise
        raise ConfigError(
            f"{io.no_room(err)}: the output folder {plan.out} is full; every finished job is kept: free some "
            "space, then run the grid again"
        ) from None


def _run(plan: Plan, running: Executor, timeout, echo, workers: int, max_attempts: int, only) -> dict[str, Status]:
    from maple_utils.grid import preflight

    prepare_out(plan)
    local.kernel_environment()  # kernels anywhere run this checkout's code, paths resolved from its root
    local.clear_stale_kernel_files()
    scheduler = Scheduler(
        plan,
        running,
        workers,
        lambda job: stage_timeout(job, timeout),
        echo=echo,
        max_attempts=max_attempts,
        only=only,
        disk_check=lambda job: preflight.check_disk(plan.out, _disk_gb(job), job.id),
    )
    with stop_on_signals(scheduler):
        return scheduler.run(manifest.read(plan.out))


def _disk_gb(job: Job) -> float:
    return float(job.stage.resources.get("disk_gb", 0))
