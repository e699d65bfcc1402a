"""The grid's command line: `maple` (the console script), or `python -m maple_utils.grid`.

maple run GRID --out DIR [--executor local|slurm] [--workers N] [--timeout S] [--dry-run]
maple status GRID --out DIR
maple retry GRID --out DIR [--executor local|slurm] [--workers N]
maple report GRID --out DIR
maple --version
Each takes `-p key=value` (repeatable: a value on top of the grid file, validated like it and kept in DIR's
grid.yaml) and --grid-changed (GRID differs from the grid that made DIR, and that is meant); run and retry
take `--stage NAME` and `--only field=value,...|RUN_ID`, which run that subset and the inputs it lacks.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from maple_utils import config, layout
from maple_utils.config import ConfigError
from maple_utils.grid import manifest
from maple_utils.grid.manifest import COMPLETE, RETRYABLE, Entry, Status
from maple_utils.grid.planner import Plan, plan_grid, select
from maple_utils.grid.runner import EXECUTORS
from maple_utils.grid.scheduler import Interrupted


def describe(plan: Plan) -> list[str]:
    """The dry-run listing: every stage's jobs, and the task languages that will not be evaluated."""
    from maple_utils import stages

    lines = [
        f"grid {plan.grid.name}: {len(plan.adapters)} adapters, {len(plan.bases)} base models, {len(plan.jobs)} jobs"
    ]
    for stage in stages.all_stages():
        keys = [j.key for j in plan.jobs_of(stage.name)]
        lines += ["", f"{stage.name}: {len(keys)} job(s), one per {stage.unit.title}"]
        lines += [f"  {key}" for key in keys]
    if plan.effective:
        lines += ["", *config.effective_yaml(plan.grid_path, plan.overrides).rstrip().splitlines()]
    if plan.not_evaluated:
        lines += ["", "not evaluated (the task has no data in that language):"]
        pairs = sorted({p for ps in plan.not_evaluated.values() for p in ps})
        by_task: dict[str, list[str]] = {}
        for task, code in pairs:
            by_task.setdefault(task, []).append(code)
        lines += [f"  {task}: {', '.join(codes)}" for task, codes in by_task.items()]
    return lines


def job_states(plan: Plan) -> dict[str, Entry]:
    """Each job's state from the manifest: its latest entry, or pending when it never ran; a completed job
    whose outputs went missing, were cut or changed is `outputs damaged`, naming the file."""
    entries = manifest.latest(manifest.read(plan.out))
    states = {}
    for job in plan.jobs:
        state = entries.get(job.id, Entry.of(job, Status.PENDING))
        damaged = job.damaged_output() if job.completion() else None
        if damaged:
            state = Entry.of(job, Status.DAMAGED, error=damaged, notebook=state.notebook)
        states[job.id] = state
    return states


def status_lines(plan: Plan) -> list[str]:
    """A table of job counts per stage and status, then every job that did not complete with its notebook."""
    import pandas as pd

    from maple_utils import stages

    states = job_states(plan)
    frame = pd.DataFrame([{"stage": j.stage.name, "status": str(states[j.id].status)} for j in plan.jobs])
    table = frame.pivot_table(index="stage", columns="status", aggfunc="size", fill_value=0)
    table = table.reindex([s.name for s in stages.all_stages() if s.name in table.index])
    lines = [f"grid {plan.grid.name} in {plan.out}", "", table.to_markdown()]
    bad = [(j, states[j.id]) for j in plan.jobs if states[j.id].status in (*RETRYABLE, Status.RUNNING)]
    if bad:
        lines += ["", "not complete:"]
        for job, state in bad:
            lines.append(
                f"  {job.id}  {state.status}"
                + (f" (attempt {state.attempt})" if state.attempt is not None else "")
                + (f": {state.error}" if state.error else "")
            )
            if state.notebook:
                lines.append(f"      {state.notebook}")
    return lines


def prog() -> str:
    """How the user called this command (`maple` or `python -m maple_utils.grid`), for the lines it prints."""
    return "maple" if Path(sys.argv[0]).name == "maple" else "python -m maple_utils.grid"


def run(
    grid_path: str,
    out: str,
    dry_run: bool = False,
    timeout: int | None = None,
    workers: int = 1,
    retry: bool = False,
    echo=print,
    executor: str = "local",
    report_only: bool = False,
    grid_changed: bool = False,
    overrides: dict | None = None,
    stages_wanted: list[str] | None = None,
    only_matching: list[str] | None = None,
) -> int:
    """Run (or list) every job of a grid (with `-p` overrides), with retry only the jobs that did not complete,
    with report_only only the analysis (results.parquet and the report, from the rows there are), with
    stages_wanted / only_matching (`--stage`, `--only`) only those jobs and what they need; returns the number
    of jobs that did not complete."""
    plan = plan_grid(grid_path, out, overrides)
    wanted = select(plan, stages_wanted, only_matching)
    if wanted is not None:  # a subset: the other jobs are not part of this run at all
        plan.jobs = [j for j in plan.jobs if j.id in wanted]
    if dry_run:
        for line in describe(plan):
            echo(line)
        return 0
    from maple_utils.grid.preflight import check_folder_grid
    from maple_utils.grid.runner import run_plan

    check_folder_grid(plan, grid_changed, echo)
    only = None
    if report_only:
        only = {j.id for j in plan.jobs if j.stage.unit.reads_all_rows}
    elif retry:
        states = job_states(plan)
        only = {j.id for j in plan.jobs if states[j.id].status in RETRYABLE or j.stage.unit.reads_all_rows}
    status = run_plan(plan, timeout=timeout, echo=echo, workers=workers, only=only, executor=executor)
    failed = [j for j, s in status.items() if s not in (*COMPLETE, Status.NOT_RETRIED)]
    echo(f"\nresults: {plan.out / layout.RESULTS_TABLE}\nreport:  {layout.report_page(plan.out)}")
    if failed:
        same = "".join(f" -p {k}={v}" for k, v in (overrides or {}).items())
        echo(f"{len(failed)} job(s) did not complete: {', '.join(failed)}")
        echo(f"see: {prog()} status {grid_path} --out {out}{same}")
        echo(f"then: {prog()} retry {grid_path} --out {out}{same}")
    return len(failed)


def parser() -> argparse.ArgumentParser:
    import maple_utils

    top = argparse.ArgumentParser(prog=prog(), description="Plan and run a MAPLE grid.")
    top.add_argument("--version", action="version", version=f"MAPLE {maple_utils.__version__}")
    sub = top.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "expand a grid and execute every job that is not complete"),
        ("retry", "execute again only the jobs that failed, crashed, timed out or were blocked"),
        ("status", "a table of jobs per stage and status, and the notebooks of failed jobs"),
        ("report", f"gather the rows there are into {layout.RESULTS_TABLE} and redo the analysis report"),
    ):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("grid", help="grid YAML, e.g. params/smoke.yaml")
        cmd.add_argument("--out", required=True, help="output folder, e.g. runs/smoke")
        cmd.add_argument(
            "-p",
            "--param",
            action="append",
            metavar="KEY=VALUE",
            help="a value on top of the grid file, read as YAML: a config field (fixed; it replaces the axis of "
            "that name), axes.<field>=[...], slurm.<key>, name, evaluate_base_models, base_model_quant; "
            f"validated like the file and kept in the folder's {layout.GRID_FILE}",
        )
        if name in ("run", "retry"):
            cmd.add_argument(
                "--stage",
                action="append",
                metavar="NAME",
                help="only the jobs of this stage (repeatable; comma-separated), with the inputs they lack",
            )
            cmd.add_argument(
                "--only",
                action="append",
                metavar="FIELD=VALUE,...|RUN_ID",
                help="only the jobs whose config has these values (model=tiny-llama,rank=8), or of this run or "
                "data id (repeatable: any of them), with the inputs they lack",
            )
            cmd.add_argument(
                "--timeout",
                type=int,
                default=None,
                help="seconds a notebook cell may run (default: the stage registry's time_min)",
            )
            cmd.add_argument(
                "--workers",
                type=int,
                default=None,
                help="notebooks run at once (default: one per visible GPU, each job on its own GPU; "
                "1 on a CPU); with slurm, each job array's throttle (default 1)",
            )
            cmd.add_argument(
                "--executor",
                choices=tuple(EXECUTORS),
                default="local",
                help="local: notebooks run here; slurm: jobs submitted with sbatch, a job array per stage and wave (grid file's "
                "`slurm:` section: partition, gpus, max_cpus, max_memory_gb, sbatch_args)",
            )
        cmd.add_argument(
            "--grid-changed",
            action="store_true",
            help="the grid file differs from the one that made --out, and that is meant: plan the changed grid "
            f"(the folder's grid files are kept under {layout.GRID_HISTORY}/)",
        )
        if name == "run":
            cmd.add_argument("--dry-run", action="store_true", help="list the jobs and their ids; load nothing")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... --dry-run | head` ends quietly
    try:
        overrides = config.parse_overrides(args.param)
        if args.command == "status":
            from maple_utils.grid.preflight import check_folder_grid

            plan = plan_grid(args.grid, args.out, overrides)
            check_folder_grid(plan, args.grid_changed)
            for line in status_lines(plan):
                print(line)
            return 0
        if args.command == "report":
            failed = run(args.grid, args.out, report_only=True, grid_changed=args.grid_changed, overrides=overrides)
        else:
            if args.workers is not None and args.workers < 1:
                raise ConfigError(f"--workers must be at least 1, got {args.workers}")
            if args.workers is None:  # local: one worker per GPU, each job on its own GPU; one on a CPU
                args.workers = EXECUTORS[args.executor].default_workers()
            failed = run(
                args.grid,
                args.out,
                dry_run=getattr(args, "dry_run", False),
                timeout=args.timeout,
                workers=args.workers,
                retry=args.command == "retry",
                executor=args.executor,
                grid_changed=args.grid_changed,
                overrides=overrides,
                stages_wanted=[s.strip() for v in args.stage or [] for s in v.split(",") if s.strip()],
                only_matching=args.only,
            )
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        stopped(stop, args)
    return 1 if failed else 0


def stopped(stop: Interrupted, args) -> None:
    """The runner stopped on a signal: say what was kept and how to go on, then exit 130 at once (the threads
    that waited on the killed kernels are not waited for)."""
    import os

    how = f"{prog()} {args.command} {args.grid} --out {args.out}" + "".join(f" -p {p}" for p in args.param or [])
    ended = (
        f"{len(stop.ended)} running job(s) stopped and recorded interrupted" if stop.ended else "jobs in SLURM go on"
    )
    print(
        f"\nstopped by {stop}: every finished job is kept; {ended}. To go on: {how}",
        file=sys.stderr,
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
