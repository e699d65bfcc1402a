"""The grid's command line.

    python -m maple_utils.grid run params/smoke.yaml --out runs/smoke [--dry-run]
"""

from __future__ import annotations

import argparse
import signal
import sys

from maple_utils import layout
from maple_utils.config import ConfigError
from maple_utils.grid.planner import Plan, plan_grid

UNIT_TITLES = {"dataset": "prepared data set", "adapter": "adapter", "evaluated_model": "evaluated model (adapter or base)",
               "grid": "grid"}


def describe(plan: Plan) -> list[str]:
    """The dry-run listing: every stage's jobs, and the task languages that will not be evaluated."""
    from maple_utils import stages

    lines = [f"grid {plan.grid.name}: {len(plan.adapters)} adapters, {len(plan.bases)} base models, "
             f"{len(plan.jobs)} jobs"]
    for stage in stages.all_stages():
        keys = [j.key for j in plan.jobs_of(stage.name)]
        lines += ["", f"{stage.name}: {len(keys)} job(s), one per {UNIT_TITLES[stage.unit]}"]
        lines += [f"  {key}" for key in keys]
    if plan.not_evaluated:
        lines += ["", "not evaluated (the task has no data in that language):"]
        pairs = sorted({p for ps in plan.not_evaluated.values() for p in ps})
        by_task: dict[str, list[str]] = {}
        for task, code in pairs:
            by_task.setdefault(task, []).append(code)
        lines += [f"  {task}: {', '.join(codes)}" for task, codes in by_task.items()]
    return lines


def run(grid_path: str, out: str, dry_run: bool = False, timeout: int | None = None, workers: int = 1,
        echo=print) -> int:
    """Run (or list) every job of a grid; returns the number of jobs that did not complete."""
    plan = plan_grid(grid_path, out)
    if dry_run:
        for line in describe(plan):
            echo(line)
        return 0
    from maple_utils.grid.runner import run_plan

    status = run_plan(plan, timeout=timeout, echo=echo, workers=workers)
    failed = [j for j, s in status.items() if s not in ("done", "skipped")]
    echo(f"\nresults: {plan.out / layout.RESULTS_TABLE}\nreport:  {plan.out / layout.REPORT_DIR}/analysis.html")
    if failed:
        echo(f"{len(failed)} job(s) did not complete (see {plan.out / layout.MANIFEST}): {', '.join(failed)}")
    return len(failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maple_utils.grid", description="Plan and run a MAPLE grid.")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="expand a grid and execute its notebooks")
    run_p.add_argument("grid", help="grid YAML, e.g. params/smoke.yaml")
    run_p.add_argument("--out", required=True, help="output folder, e.g. runs/smoke")
    run_p.add_argument("--dry-run", action="store_true", help="list the jobs and their ids; load nothing")
    run_p.add_argument("--timeout", type=int, default=None, help="seconds a notebook cell may run")
    run_p.add_argument("--workers", type=int, default=1, help="notebooks run at once (CPU: up to the cores)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... --dry-run | head` ends quietly
    try:
        if args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {args.workers}")
        failed = run(args.grid, args.out, dry_run=args.dry_run, timeout=args.timeout, workers=args.workers)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if failed else 0
