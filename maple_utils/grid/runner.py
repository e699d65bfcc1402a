"""Running a plan: one papermill process per notebook, up to N at once, with a manifest of every attempt.

A job runs when the jobs it needs completed and its fingerprint differs from its completion marker's; a
failing job never stops the others (its dependants are marked blocked). Kernels import maple_utils from
this checkout and resolve relative paths from its root (PYTHONPATH and MAPLE_ROOT).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from maple_utils import config, io, layout, results
from maple_utils.config import ConfigError
from maple_utils.data import sources
from maple_utils.grid.planner import Job, Plan, check_notebooks, import_papermill
from maple_utils.paths import PACKAGE_DIR, notebooks_dir, project_root

RETRYABLE = ("failed", "crashed", "timed_out", "blocked", "gave_up", "interrupted")
FAILED = ("failed", "crashed", "timed_out")  # attempts that count towards max_attempts (the job's own doing)
_MANIFEST_LOCK = threading.Lock()


def append_manifest(out: Path, entry: dict) -> None:
    """One JSON line per event (a job started, queued or running in SLURM, ended), one writer at a time. A
    line cut short by a kill or a full disk is ended before the next one, so it never swallows a later entry."""
    with _MANIFEST_LOCK:
        io.append_jsonl(Path(out) / layout.MANIFEST, entry)


def read_manifest(out: Path) -> list[dict]:
    return io.read_appended(Path(out) / layout.MANIFEST)


def close_interrupted(out: Path, history: list[dict], keep=()) -> list[dict]:
    """Attempts whose runner died before they ended (killed, or the machine went down) get an `interrupted`
    entry, so `status` tells them from running ones; they do not count against a job's max_attempts. `keep`:
    jobs whose attempt goes on without the runner (in SLURM), to be followed again instead."""
    ended = []
    for job, entry in latest(e for e in history if "event" not in e).items():
        if entry.get("status") == "running" and job not in keep:
            ended.append(
                {
                    "job": job,
                    "stage": entry.get("stage"),
                    "key": entry.get("key"),
                    "attempt": entry.get("attempt"),
                    "status": "interrupted",
                    "started": entry.get("started"),
                    "notebook": entry.get("notebook"),
                    "error": "the runner stopped before this attempt ended (killed, or the machine went down)",
                }
            )
            append_manifest(out, ended[-1])
    return history + ended


KERNEL_FILES = "maple-kernel-"  # + runner pid: the temporary folder of a kernel's sockets and connection file


def clear_stale_kernel_files() -> list[Path]:
    """Remove the kernel folders of runners that no longer exist (a SIGKILL skips their clean-up)."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{KERNEL_FILES}*"):
        pid = folder.name[len(KERNEL_FILES) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def visible_gpus() -> list[str]:
    """The GPUs this machine lets the runner use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    import subprocess

    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:
        return [d.strip() for d in given.split(",") if d.strip() and d.strip() != "-1"]
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


class DevicePool:
    """One GPU per running job that needs one (its kernel sees only that GPU through CUDA_VISIBLE_DEVICES);
    jobs whose stage needs no GPU, and every job on a machine without GPUs, take none."""

    def __init__(self, gpus: list[str]):
        self.free, self.total = list(gpus), len(gpus)
        self.lock = threading.Lock()

    def needs(self, job: Job) -> bool:
        return self.total > 0 and bool(job.stage.resources.get("gpus"))

    def can_start(self, job: Job) -> bool:
        return not self.needs(job) or bool(self.free)

    def take(self, job: Job) -> str | None:
        if not self.needs(job):
            return None
        with self.lock:
            return self.free.pop(0)

    def give_back(self, device: str | None) -> None:
        if device is not None:
            with self.lock:
                self.free.append(device)


def _kernel_manager(env: dict):
    """A kernel manager whose kernels start with `env` added to the runner's environment."""
    from jupyter_client.manager import AsyncKernelManager

    class EnvKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw):
            kw["env"] = {**kw.get("env", os.environ), **env}
            return await super()._async_pre_start_kernel(**kw)

    return EnvKernelManager


def latest(entries) -> dict[str, dict]:
    """Each job's latest manifest entry."""
    out: dict[str, dict] = {}
    for e in entries:
        out[e.get("job")] = e
    return out


def kernel_environment() -> None:
    """Kernels run this checkout's code, with relative paths meaning what they meant to the planner."""
    os.environ["MAPLE_ROOT"] = str(project_root())
    source = str(PACKAGE_DIR.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != source]
    os.environ["PYTHONPATH"] = os.pathsep.join([source, *paths])


def execute(job: Job, out: Path, attempt: int = 1, timeout: int | None = None, device: str | None = None) -> dict:
    """Run one notebook with papermill; returns the manifest entry: done, failed (a cell raised: its index,
    exception name and value), timed_out (a cell ran past `timeout` seconds) or crashed (the kernel died).
    `device`: the GPU its kernel sees (CUDA_VISIBLE_DEVICES), when the runner hands out GPUs."""
    papermill = import_papermill()
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError
    from traitlets.config import Config

    job.folder.mkdir(parents=True, exist_ok=True)  # papermill does not create the output folder
    output = layout.executed_notebook(job.folder, job.stage.name)
    started = time.time()
    entry = {
        "job": job.id,
        "stage": job.stage.name,
        "key": job.key,
        "attempt": attempt,
        "notebook": str(output),
        "started": started,
        **({"device": device} if device is not None else {}),
    }
    extra = {"kernel_manager_class": _kernel_manager({"CUDA_VISIBLE_DEVICES": device})} if device is not None else {}
    # the kernel ends with its runner (maple_utils/grid/kernel_guard.py)
    extra["extra_arguments"] = ["--IPKernelApp.exec_lines=import maple_utils.grid.kernel_guard"]
    # Kernels talk over local IPC sockets in a private folder: no TCP ports to race for when runs start
    # together, and none of ipykernel's warnings about unencrypted TCP. The connection file (it holds the
    # kernel's key) goes there too, and the folder is named after this runner, so a runner started after a
    # kill clears what the killed one left (clear_stale_kernel_files).
    sockets = tempfile.mkdtemp(prefix=f"{KERNEL_FILES}{os.getpid()}-")
    kernel_config = Config(
        {
            "KernelManager": {
                "transport": "ipc",
                "ip": os.path.join(sockets, "kernel"),
                "connection_file": os.path.join(sockets, "kernel.json"),
            }
        }
    )
    try:
        papermill.execute_notebook(
            str(notebooks_dir() / job.stage.notebook),
            str(output),
            parameters=job.params,
            kernel_name="python3",
            cwd=str(notebooks_dir()),
            progress_bar=False,
            execution_timeout=timeout,
            config=kernel_config,
            **extra,
        )
    except PapermillExecutionError as err:
        entry.update(status="failed", error=f"{err.ename}: {err.evalue}", cell=err.cell_index, exception=err.ename)
    except CellTimeoutError as err:
        entry.update(
            status="timed_out",
            error=f"a cell ran past {timeout} s: {str(err).splitlines()[0][:200]}",
            exception="CellTimeoutError",
        )
    except Exception as err:  # dead kernel (OOM, segfault, kill), kernel start failure
        entry.update(status="crashed", error=f"{type(err).__name__}: {err}", exception=type(err).__name__)
    else:
        entry["status"] = "done"
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    entry["wall_s"] = round(time.time() - started, 1)
    return entry


def prepare_out(plan: Plan) -> None:
    """The output folder, the grid as given and expanded, and every run's planned config.json."""
    plan.out.mkdir(parents=True, exist_ok=True)
    if len(config.resolve_includes(plan.grid_path)[1]) > 1:  # a grid that includes another: kept whole
        io.write_text(plan.out / layout.GRID_FILE, config.effective_yaml(plan.grid_path))
    else:  # as given, with its comments
        shutil.copyfile(plan.grid_path, plan.out / layout.GRID_FILE)
    io.write_json(
        plan.out / layout.EXPANDED_GRID,
        {"adapters": [c.model_dump() for c in plan.adapters], "bases": [c.model_dump() for c in plan.bases]},
    )
    for cfg in plan.adapters + plan.bases:
        job = next(j for j in plan.jobs if j.cfg is cfg and j.stage.unit == "evaluated_model")
        io.write_json(job.folder / layout.CONFIG, cfg.model_dump())


def stage_timeout(job: Job, override: int | None) -> int | None:
    """Seconds a cell of this job may run: --timeout, else the stage registry's time_min."""
    if override:
        return override
    minutes = job.stage.resources.get("time_min")
    return int(minutes * 60) if minutes else None


def run_plan(
    plan: Plan,
    timeout: int | None = None,
    echo=print,
    workers: int = 1,
    max_attempts: int = 3,
    only: set[str] | None = None,
    executor: str = "local",
) -> dict[str, str]:
    """Execute every job that is not complete, up to `workers` notebooks at a time (with `executor="slurm"`,
    in job arrays of `workers` tasks at once), each as soon as the jobs it needs are complete (the once-per-grid analysis
    after every other job). A job that did not complete in `max_attempts` attempts is left alone (gave_up)
    until `retry`; a job SLURM itself ended (cancelled, preempted, node failure) is submitted again while
    attempts remain. `only` restricts the run to those job ids (what `retry` passes). Returns each job's
    status (done, skipped, failed, crashed, timed_out, blocked, gave_up)."""
    from maple_utils.grid import preflight, slurm

    if executor not in ("local", "slurm"):
        raise ConfigError(f"--executor {executor!r} is not one of: local, slurm")
    if executor == "slurm":
        try:
            settings = slurm.SlurmSettings.model_validate(plan.grid.slurm)
        except ValueError as err:
            raise ConfigError(f"{plan.grid_path}: slurm section: {err}") from None
        slurm.check_cluster()
    check_notebooks(plan)
    if any(c.data_source == "hub" for c in plan.adapters + plan.bases):
        try:
            sources.require_hub()
        except sources.MissingDataError as err:
            raise ConfigError(f"{plan.grid_path}: {err}") from None
    if only is None or any(j.stage.unit != "grid" for j in plan.jobs if j.id in only):
        preflight.check_data(plan.adapters, plan.adapters + plan.bases)  # `report` reads no data files
        preflight.check_offline(plan.adapters, plan.adapters + plan.bases)
        preflight.check_packaged_models(plan.adapters + plan.bases)
    preflight.check_writable(plan.out)
    preflight.check_disk(plan.out, max((_disk_gb(j) for j in plan.jobs), default=0), "the largest job")
    prepare_out(plan)
    kernel_environment()
    clear_stale_kernel_files()
    history = read_manifest(plan.out)
    adoptable = slurm.in_flight(history)  # attempts a killed runner left in SLURM: followed, not run twice
    if adoptable and executor == "local":  # none is still in SLURM (or it refuses): they are closed as interrupted
        slurm.refuse_local(adoptable)
        adoptable = {}
    history = close_interrupted(plan.out, history, keep=adoptable)
    attempts = Counter(e.get("job") for e in history if e.get("status") == "running" and "event" not in e)
    failures = Counter(e.get("job") for e in history if e.get("status") in FAILED)
    devices = DevicePool(visible_gpus() if executor == "local" else [])
    status: dict[str, str] = {}
    tokens: dict[str, str] = {}  # completion tokens of the jobs that are complete
    pending = list(plan.jobs)
    running: dict = {}
    progress = Progress(plan.jobs, workers)
    stopped: ConfigError | None = None
    tracker = (
        slurm.Tracker(plan.out, settings, workers, lambda e: append_manifest(plan.out, e))
        if executor == "slurm"
        else None
    )

    def report(job: Job, what: str, outcome: str, wall_s: float | None = None) -> None:
        echo(progress.line(job, what, outcome, wall_s))

    def ready(job: Job) -> bool:
        if job.stage.unit == "grid":  # it reads every row: after everything else
            return not running and all(p.stage.unit == "grid" for p in pending)
        return all(d in status for d in job.needs)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        while pending or running:
            startable = [j for j in pending if ready(j)]
            if not startable and not running:  # needs name only earlier jobs of the plan: a bug if reached
                raise RuntimeError(f"no job can start: {[j.id for j in pending]} wait on {[j.needs for j in pending]}")
            wave: list[tuple[Job, int]] = []  # with SLURM: submitted together, one array per stage
            for job in startable:
                if executor == "local" and len(running) >= workers:  # SLURM throttles each array itself
                    break
                if not devices.can_start(job):  # every GPU is busy: a job that needs none may still start
                    continue
                pending.remove(job)
                blocked = [d for d in job.needs if status[d] not in ("done", "skipped")]
                if blocked:
                    status[job.id] = "blocked"
                    append_manifest(
                        plan.out,
                        {
                            "job": job.id,
                            "stage": job.stage.name,
                            "key": job.key,
                            "status": "blocked",
                            "started": time.time(),
                            "error": f"upstream not done: {', '.join(blocked)}",
                        },
                    )
                    report(job, "blocked (upstream failed)", "blocked")
                    continue
                if job.stage.unit == "grid":  # results.parquet is rebuilt here; the report is redone when rows change
                    job.inputs = results.digest(results.aggregate(plan.out))
                if job.is_done(tokens):
                    status[job.id] = "skipped"
                    tokens[job.id] = job.completion()["token"]
                    report(job, "already complete", "skipped")
                    continue
                if job.id in adoptable:
                    attempt, queued = adoptable.pop(job.id)
                    running[tracker.adopt(job, attempt, queued)] = job
                    echo(
                        f"      {job.stage.name:15s} {job.key}  still in SLURM ({queued['slurm_job_id']}, attempt "
                        f"{attempt}): followed again"
                    )
                    continue
                if (only is not None and job.id not in only) or (only is None and failures[job.id] >= max_attempts):
                    status[job.id] = "gave_up" if only is None else "not retried"
                    report(
                        job,
                        f"not run ({failures[job.id]} attempts failed; `retry` runs it again)"
                        if only is None
                        else "left as it is",
                        status[job.id],
                    )
                    continue
                try:
                    preflight.check_disk(plan.out, _disk_gb(job), job.id)
                except ConfigError as err:  # start nothing more; let the running jobs finish
                    stopped, pending = err, []
                    break
                attempts[job.id] += 1
                append_manifest(
                    plan.out,
                    {
                        "job": job.id,
                        "stage": job.stage.name,
                        "key": job.key,
                        "status": "running",
                        "attempt": attempts[job.id],
                        "started": time.time(),
                        "notebook": str(layout.executed_notebook(job.folder, job.stage.name)),
                    },
                )
                if executor == "slurm":
                    wave.append((job, attempts[job.id]))
                    continue
                device = devices.take(job)
                future = pool.submit(execute, job, plan.out, attempts[job.id], stage_timeout(job, timeout), device)
                future.device = device
                running[future] = job
            if wave:
                running.update(tracker.submit(wave, lambda job: stage_timeout(job, timeout)))
            if not running:
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                devices.give_back(getattr(future, "device", None))
                entry = future.result()
                if entry["status"] in FAILED:
                    failures[job.id] += 1
                if entry["status"] == "done":
                    tokens[job.id] = job.mark_done(tokens)
                append_manifest(plan.out, entry)
                if entry.get("slurm_state") in slurm.RESUBMIT and attempts[job.id] < max_attempts:
                    echo(
                        f"      {job.stage.name:15s} {job.key}  SLURM ended it ({entry['slurm_state']}): submitted again"
                    )
                    pending.insert(0, job)
                    continue
                status[job.id] = entry["status"]
                report(
                    job,
                    f"{entry['status']} ({entry['wall_s']} s)" + (f": {entry['error']}" if entry.get("error") else ""),
                    entry["status"],
                    entry["wall_s"],
                )
    if stopped:
        raise stopped
    return status


def _disk_gb(job: Job) -> float:
    return float(job.stage.resources.get("disk_gb", 0))


class Progress:
    """One line per finished job: its place, the counts per outcome so far, and an ETA from the wall times
    of the jobs that ran (per stage, the stage's mean; a stage with none yet, the mean over all)."""

    def __init__(self, jobs: list[Job], workers: int):
        self.total, self.workers = len(jobs), workers
        self.left = Counter(j.stage.name for j in jobs)
        self.walls: dict[str, list[float]] = {}
        self.outcomes: Counter = Counter()

    def line(self, job: Job, what: str, outcome: str, wall_s: float | None) -> str:
        self.left[job.stage.name] -= 1
        self.outcomes[outcome] += 1
        if wall_s is not None:
            self.walls.setdefault(job.stage.name, []).append(wall_s)
        done = sum(self.outcomes.values())
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items()))
        return f"[{done:3d}/{self.total}] {job.stage.name:15s} {job.key}  {what}  | {counts}{self.eta()}"

    def eta(self) -> str:
        every = [w for walls in self.walls.values() for w in walls]
        if not every or not sum(self.left.values()):
            return ""
        overall = sum(every) / len(every)
        seconds = (
            sum(
                n * (sum(self.walls[s]) / len(self.walls[s]) if s in self.walls else overall)
                for s, n in self.left.items()
            )
            / self.workers
        )
        return f" | ETA {seconds / 60:.0f} min" if seconds >= 60 else f" | ETA {seconds:.0f} s"
