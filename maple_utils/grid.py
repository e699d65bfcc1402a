"""The grid runner: expand a grid file, then execute the notebooks with papermill in dependency order.

    python -m maple_utils.grid run params/smoke.yaml --out runs/smoke [--dry-run]

One process per notebook execution; each executed notebook is kept in its run folder (on failure too).
A stage is skipped when its completion marker holds the hash of the same parameters, so a rerun after a
crash or an edit redoes only what is missing or changed. Every attempt is appended to manifest.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from maple_utils import config, hub, results
from maple_utils.config import ConfigError
from maple_utils.paths import NOTEBOOKS_DIR, resolve
from maple_utils.pipeline import data_dir, run_folder

STAGES = ("01_data", "02_train", "03_evaluate", "04_alpaca_eval", "05_analysis")
STAGE_FIELDS = {"01_data": config.DATA_FIELDS, "02_train": config.TRAIN_FIELDS,
                "03_evaluate": config.EVAL_FIELDS, "04_alpaca_eval": config.ALPACA_EVAL_FIELDS, "05_analysis": ()}


@dataclass
class Job:
    stage: str
    key: str  # data id, run id, or the grid's name for the analysis
    folder: Path  # where the executed notebook and the completion marker go
    params: dict
    needs: list[str] = field(default_factory=list)
    inputs: str = ""  # a digest of what the stage reads beyond its parameters (the analysis: all rows)

    @property
    def id(self) -> str:
        return f"{self.stage}:{self.key}"

    @property
    def marker(self) -> Path:
        return self.folder / ".completed" / self.stage

    def fingerprint(self) -> str:
        return config.stable_hash({"params": self.params, "inputs": self.inputs}, n=16)

    def is_done(self) -> bool:
        return self.marker.exists() and self.marker.read_text().strip() == self.fingerprint()


@dataclass
class Plan:
    grid: config.GridConfig
    out: Path
    adapters: list[config.RunConfig]
    bases: list[config.RunConfig]
    jobs: list[Job]

    def count(self, stage: str) -> int:
        return sum(j.stage == stage for j in self.jobs)


def expand(grid: config.GridConfig, where: str) -> tuple[list[config.RunConfig], list[config.RunConfig]]:
    """Adapter configs (the axes' cartesian product minus exclusions) and base-model configs."""
    names = list(grid.axes)
    origin = {k: f"fixed.{k}" for k in grid.fixed} | {k: f"axes.{k}" for k in names}
    adapters, seen = [], set()
    for combo in itertools.product(*(grid.axes[n] for n in names)):
        point = dict(zip(names, combo))
        if any(all(point.get(k) == v for k, v in rule.items()) for rule in grid.exclude):
            continue
        cfg = config.validate_run({**grid.fixed, **point}, where, origin)
        if cfg.dataset is None:
            raise ConfigError(f"{where}: every grid point needs a dataset to finetune (got none at {point}); "
                              "base models are evaluated through evaluate_base_models")
        rid = config.run_id(cfg)
        if rid not in seen:
            seen.add(rid)
            adapters.append(cfg)
    bases = []
    if grid.evaluate_base_models:
        models = list(dict.fromkeys(c.model for c in adapters)) or [grid.fixed.get("model", "tiny-llama")]
        for model in models:
            values = {**grid.fixed, "model": model, "dataset": None, "rank": None, "quant": grid.base_model_quant}
            bases.append(config.validate_run(values, where, origin))
    return adapters, bases


def plan(grid_path: str | Path, out: str | Path) -> Plan:
    grid = config.load_grid(grid_path)
    adapters, bases = expand(grid, str(grid_path))
    out = resolve(out)
    jobs: list[Job] = []
    data_jobs: dict[str, Job] = {}
    for cfg in adapters:
        did = config.data_id(cfg)
        if did not in data_jobs:
            data_jobs[did] = Job("01_data", did, data_dir(cfg, out), _params("01_data", cfg, out_dir=str(out)))
    jobs += data_jobs.values()
    eval_needs: dict[str, list[str]] = {}
    for cfg in adapters:
        rid, folder = config.run_id(cfg), run_folder(cfg, out)
        job = Job("02_train", rid, folder, _params("02_train", cfg, out_dir=str(out), run_dir=str(folder)),
                  needs=[f"01_data:{config.data_id(cfg)}"])
        jobs.append(job)
        eval_needs[rid] = [job.id]
    for cfg in adapters + bases:
        rid, folder = config.run_id(cfg), run_folder(cfg, out)
        adapter = str(folder / "adapter") if cfg.dataset else ""
        for stage in ("03_evaluate", "04_alpaca_eval"):
            jobs.append(Job(stage, rid, folder, _params(stage, cfg, out_dir=str(out), run_dir=str(folder),
                                                        adapter_dir=adapter),
                            needs=eval_needs.get(rid, [])))
    # The analysis runs last and on whatever rows exist: one failed run must not cost the whole report.
    jobs.append(Job("05_analysis", grid.name, out, {"out_dir": str(out)}))
    return Plan(grid, out, adapters, bases, jobs)


def _params(stage: str, cfg: config.RunConfig, **paths: str) -> dict:
    """The notebook's parameters: the stage's config fields plus the paths the grid decides."""
    return {**cfg.subset(STAGE_FIELDS[stage]), **paths}


def check_notebooks(jobs: list[Job]) -> None:
    """Every parameter the grid passes must be declared by the notebook, and the reverse (catches drift)."""
    import papermill

    declared = {s: set(papermill.inspect_notebook(str(NOTEBOOKS_DIR / f"{s}.ipynb"))) for s in STAGES}
    for job in jobs:
        passed = set(job.params)
        if passed - declared[job.stage] or declared[job.stage] - passed:
            raise ConfigError(f"notebook {job.stage}.ipynb declares {sorted(declared[job.stage])} but the grid "
                              f"passes {sorted(passed)}: update one of them")


def _append_manifest(out: Path, entry: dict) -> None:
    """One JSON line per attempt; a line is written whole or (after a crash mid-write) ignored by readers."""
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")


def read_manifest(out: Path) -> list[dict]:
    path = out / "manifest.jsonl"
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return entries


def execute(job: Job, out: Path, attempt: int = 1, timeout: int | None = None) -> dict:
    """Run one notebook with papermill; returns the manifest entry (status done, failed or crashed)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    from traitlets.config import Config

    job.folder.mkdir(parents=True, exist_ok=True)  # papermill does not create the output folder
    output = job.folder / f"{job.stage}.ipynb"
    started = time.time()
    entry = {"job": job.id, "stage": job.stage, "key": job.key, "attempt": attempt, "notebook": str(output),
             "started": started}
    # Kernels talk over local IPC sockets in a private folder: no TCP ports to race for when runs start
    # together, and none of ipykernel's warnings about unencrypted TCP.
    sockets = tempfile.mkdtemp(prefix="maple-kernel-")
    kernel_config = Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(sockets, "kernel")}})
    try:
        papermill.execute_notebook(str(NOTEBOOKS_DIR / f"{job.stage}.ipynb"), str(output), parameters=job.params,
                                   kernel_name="python3", cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                                   execution_timeout=timeout, config=kernel_config)
    except PapermillExecutionError as err:
        entry.update(status="failed", error=f"{err.ename}: {err.evalue}", cell=err.cell_index)
    except Exception as err:  # dead kernel (OOM, segfault), timeout, kernel start failure
        entry.update(status="crashed", error=f"{type(err).__name__}: {err}")
    else:
        entry["status"] = "done"
        results.atomic_write_text(job.marker, job.fingerprint() + "\n")
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    entry["wall_s"] = round(time.time() - started, 1)
    _append_manifest(out, entry)
    return entry


def run(grid_path: str, out: str, dry_run: bool = False, timeout: int | None = None, echo=print) -> int:
    """Run (or list) every job of a grid; returns the number of failed jobs."""
    p = plan(grid_path, out)
    if dry_run:
        echo(f"grid {p.grid.name}: {len(p.adapters)} training runs, {len(p.adapters) + len(p.bases)} evaluation runs "
             f"({len(p.adapters)} adapters + {len(p.bases)} base models), {p.count('01_data')} datasets to prepare")
        titles = {"01_data": "datasets to prepare", "02_train": "training runs (adapters)",
                  "03_evaluate": "evaluation runs (03_evaluate, then 04_alpaca_eval)", "05_analysis": "analysis"}
        for stage, title in titles.items():
            keys = [j.key for j in p.jobs if j.stage == stage]
            echo(f"\n{title}: {len(keys)}")
            for key in keys:
                echo(f"  {key}")
        return 0
    check_notebooks(p.jobs)
    if any(c.data_source == "hub" for c in p.adapters + p.bases) and not hub.available():
        raise ConfigError(f"{grid_path}: data_source 'hub' needs the `datasets` package: {hub.INSTALL_HINT}")
    p.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(grid_path, p.out / "grid.yaml")
    results.atomic_write_json(p.out / "grid.json", {"adapters": [c.model_dump() for c in p.adapters],
                                                    "bases": [c.model_dump() for c in p.bases]})
    for cfg in p.adapters + p.bases:  # the full effective config; papermill records only what it passed
        results.atomic_write_json(run_folder(cfg, p.out) / "config.json", cfg.model_dump())
    attempts = Counter(e.get("job") for e in read_manifest(p.out) if e.get("status") != "blocked")
    status: dict[str, str] = {}
    for n, job in enumerate(p.jobs, start=1):
        head = f"[{n:3d}/{len(p.jobs)}] {job.stage:15s} {job.key}"
        if job.stage == "05_analysis":  # results.parquet is rebuilt here; the report is redone when rows change
            job.inputs = results.digest(results.aggregate(p.out))
        blocked = [d for d in job.needs if status.get(d) not in ("done", "skipped")]
        if blocked:
            status[job.id] = "blocked"
            _append_manifest(p.out, {"job": job.id, "stage": job.stage, "key": job.key, "status": "blocked",
                                     "error": f"upstream not done: {', '.join(blocked)}", "started": time.time()})
            echo(f"{head}  blocked (upstream failed)")
            continue
        if job.is_done():
            status[job.id] = "skipped"
            echo(f"{head}  already complete")
            continue
        attempts[job.id] += 1
        entry = execute(job, p.out, attempts[job.id], timeout)
        status[job.id] = entry["status"]
        echo(f"{head}  {entry['status']} ({entry['wall_s']} s)" + (f": {entry['error']}" if entry.get("error") else ""))
    for cfg in p.adapters + p.bases:
        rid = config.run_id(cfg)
        if all(status.get(f"{s}:{rid}") in ("done", "skipped") for s in ("03_evaluate", "04_alpaca_eval")):
            results.atomic_write_text(run_folder(cfg, p.out) / "COMPLETED", "\n")
    failed = [j for j, s in status.items() if s not in ("done", "skipped")]
    echo(f"\nresults: {p.out / 'results.parquet'}\nreport:  {p.out / 'report'}/analysis.html")
    if failed:
        echo(f"{len(failed)} job(s) did not complete (see {p.out / 'manifest.jsonl'}): {', '.join(failed)}")
    return len(failed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maple_utils.grid", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="expand a grid and execute its notebooks")
    run_p.add_argument("grid", help="grid YAML, e.g. params/smoke.yaml")
    run_p.add_argument("--out", required=True, help="output folder, e.g. runs/smoke")
    run_p.add_argument("--dry-run", action="store_true", help="list the runs and their ids; load nothing")
    run_p.add_argument("--timeout", type=int, default=None, help="seconds a notebook cell may run")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... --dry-run | head` ends quietly
    try:
        failed = run(args.grid, args.out, dry_run=args.dry_run, timeout=args.timeout)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
