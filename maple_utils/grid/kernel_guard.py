"""Imported first thing in every kernel the runner starts: the kernel ends as soon as the process that
started it (the runner, or a SLURM job's process) is gone, so a killed runner leaves no kernel writing on.

ipykernel watches its parent too, but a kernel whose parent dies before that watch starts (during the
kernel's own start-up) waits for re-parenting to PID 1, which never comes where a subreaper adopts orphans:
such kernels were seen running on after their runner was killed.
"""

import os
import threading
import time


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


_parent = os.environ.get("JPY_PARENT_PID", "")
if _parent.isdigit():
    if os.getppid() != int(_parent):
        os._exit(1)  # the parent is already gone
    threading.Thread(target=_watch, args=(int(_parent),), daemon=True, name="maple-kernel-guard").start()
