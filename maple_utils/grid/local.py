"""The local executor: each job's notebook through papermill on this machine, up to N at once, one GPU per job
that needs one. Kernels import maple_utils from this checkout, resolve relative paths from its root, talk over
private IPC sockets and end with the runner that started them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from maple_utils import io, layout
from maple_utils.grid.manifest import Entry, Status
from maple_utils.grid.planner import Job, import_papermill
from maple_utils.paths import PACKAGE_DIR, notebooks_dir, project_root

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


def _kernel_manager(env: dict | None = None):
    """The kernel manager of the runner's kernels: `env` added to the runner's environment, and shut down
    without the interrupt jupyter_client sends first. A finished notebook's kernel is often still inside the
    handler of its last request when that SIGINT lands, and logs `[IPKernelApp] ERROR | KeyboardInterrupt
    caught in kernel` after a job that succeeded; the shutdown request alone ends it (a hung one is killed)."""
    from jupyter_client.manager import AsyncKernelManager

    class RunnerKernelManager(AsyncKernelManager):
        async def _async_pre_start_kernel(self, **kw):
            if env:
                kw["env"] = {**kw.get("env", os.environ), **env}
            return await super()._async_pre_start_kernel(**kw)

        async def _async_interrupt_kernel(self):
            if not self.shutting_down:  # an interrupt asked for (a cell past its timeout) still goes
                await super()._async_interrupt_kernel()

    return RunnerKernelManager


def kernel_environment() -> None:
    """Kernels run this checkout's code, with relative paths meaning what they meant to the planner."""
    os.environ["MAPLE_ROOT"] = str(project_root())
    source = str(PACKAGE_DIR.parent)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != source]
    os.environ["PYTHONPATH"] = os.pathsep.join([source, *paths])


def execute(job: Job, out: Path, attempt: int = 1, timeout: int | None = None, device: str | None = None) -> Entry:
    """Run one notebook with papermill; returns its manifest entry: done, failed (a cell raised: its index,
    exception name and value), timed_out (a cell ran past `timeout` seconds) or crashed (the kernel died).
    `device`: the GPU its kernel sees (CUDA_VISIBLE_DEVICES), when the runner hands out GPUs."""
    papermill = import_papermill()
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError
    from traitlets.config import Config

    job.folder.mkdir(parents=True, exist_ok=True)  # papermill does not create the output folder
    output = layout.executed_notebook(job.folder, job.stage.name)
    running = layout.running_notebook(job.folder, job.stage.name)  # papermill rewrites it after every cell
    started = time.time()
    entry = Entry.of(job, Status.RUNNING, attempt=attempt, notebook=str(output), started=started, device=device)
    extra = {"kernel_manager_class": _kernel_manager({"CUDA_VISIBLE_DEVICES": device} if device is not None else None)}
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
            str(running),
            parameters=job.params,
            kernel_name="python3",
            cwd=str(notebooks_dir()),
            progress_bar=False,
            execution_timeout=timeout,
            config=kernel_config,
            **extra,
        )
    except PapermillExecutionError as err:
        entry = entry.replace(
            status=Status.FAILED, error=f"{err.ename}: {err.evalue}", cell=err.cell_index, exception=err.ename
        )
    except CellTimeoutError as err:
        error = f"a cell ran past {timeout} s: {str(err).splitlines()[0][:200]}"
        entry = entry.replace(status=Status.TIMED_OUT, error=error, exception="CellTimeoutError")
    except OSError as err:  # papermill's own write of the notebook: a full disk, a folder gone
        entry = entry.replace(status=Status.FAILED, error=io.no_room(err) or f"{type(err).__name__}: {err}")
        entry = entry.replace(exception=type(err).__name__)
    except Exception as err:  # dead kernel (OOM, segfault, kill), kernel start failure
        entry = entry.replace(status=Status.CRASHED, error=f"{type(err).__name__}: {err}", exception=type(err).__name__)
    else:
        entry = entry.replace(status=Status.DONE)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
    return keep_notebook(entry, running, output, job).replace(wall_s=round(time.time() - started, 1))


def keep_notebook(entry: Entry, running: Path, output: Path, job: Job) -> Entry:
    """The executed notebook whole under its name, or absent: one cut by a full disk (not valid JSON) is kept
    as <stage>.ipynb.partial and the attempt is failed, naming it; a whole one replaces the last attempt's."""
    if not running.exists():
        return entry
    try:
        json.loads(running.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cut = layout.cut_notebook(job.folder, job.stage.name)
        os.replace(running, cut)
        why = entry.error or "its notebook's last write was cut"
        return entry.replace(status=Status.FAILED, notebook=str(cut), error=f"{why}; the cut notebook: {cut}")
    os.replace(running, output)
    return entry


class LocalExecutor:
    """Notebooks on this machine: `workers` at once, each GPU job on a GPU of its own."""

    name = "local"

    def __init__(self, plan, workers: int):
        self.out, self.workers = plan.out, workers
        self.devices = DevicePool(visible_gpus())
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.device_of: dict[Future, str | None] = {}
        self.interrupted = False

    @staticmethod
    def default_workers() -> int:
        return len(visible_gpus()) or 1

    def check(self) -> None:
        """Nothing to reach before the grid starts: this machine runs the notebooks."""

    def has_room(self, in_flight: int) -> bool:
        return in_flight < self.workers

    def can_start(self, job: Job) -> bool:
        return self.devices.can_start(job)

    def submit(self, job: Job, attempt: int, timeout: int | None) -> Future:
        device = self.devices.take(job)
        future = self.pool.submit(execute, job, self.out, attempt, timeout, device)
        self.device_of[future] = device
        return future

    def flush(self) -> None:
        """Nothing is held back: each job started when submitted."""

    def left_running(self, history: list[Entry]) -> dict:
        """A local attempt never outlives its runner (its kernel ends with it): none to follow. Attempts that an
        `--executor slurm` run left in SLURM stop the run while SLURM still holds them (both would write one
        folder); those no longer there are closed as interrupted."""
        from maple_utils.grid import slurm

        flying = slurm.in_flight(history)
        if flying:
            slurm.refuse_local(flying)
        return {}

    def adopt(self, job: Job, attempt: int, queued: dict) -> tuple[Future, str]:
        raise RuntimeError("a local executor adopts nothing")

    def finished(self, future: Future) -> None:
        self.devices.give_back(self.device_of.pop(future, None))

    def again(self, entry: Entry) -> bool:
        return False

    def interrupt(self) -> bool:
        """Kill this runner's kernels (and whatever they started) at once, and their socket folders; the
        papermill threads waiting on them are not waited for."""
        import psutil

        kernels = psutil.Process().children(recursive=True)
        for process in kernels:
            try:
                process.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(kernels, timeout=5)
        for folder in Path(tempfile.gettempdir()).glob(f"{KERNEL_FILES}{os.getpid()}-*"):
            shutil.rmtree(folder, ignore_errors=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.interrupted = True
        return True

    def close(self) -> None:
        self.pool.shutdown(wait=not self.interrupted)  # after an interrupt, the threads of killed kernels are left
