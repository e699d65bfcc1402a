"""Imported first thing in every kernel the runner starts: the kernel ends as soon as the process that
started it (the runner, or a SLURM job's process) is gone, so a killed runner leaves no kernel writing on.

ipykernel watches its parent too, but a kernel whose parent dies before that watch starts (during the
kernel's own start-up) waits for re-parenting to PID 1, which never comes where a subreaper adopts orphans:
such kernels were seen running on after their runner was killed.
"""

import os
import sys
import threading
import time


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _die_with_parent() -> None:
    """Linux: the kernel gets SIGKILL the moment its parent dies (prctl PR_SET_PDEATHSIG), whatever Python is
    doing: a kernel SIGKILLed runner left while shutting down (its interpreter finalising, where the watch
    thread below no longer runs) outlived it in the full-grid kill test."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


_parent = os.environ.get("JPY_PARENT_PID", "")
if _parent.isdigit():
    _die_with_parent()
    if os.getppid() != int(_parent):
        os._exit(1)  # the parent is already gone (checked after the death signal is set: no gap between)
    threading.Thread(target=_watch, args=(int(_parent),), daemon=True, name="maple-kernel-guard").start()
