"""A real single-node SLURM cluster for the tests (../shared/reference/slurm_local.md): Debian's slurm-wlm
and munge, installed when missing and this user may, started with a private config on their own ports,
and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from system_packages import Unavailable, install

CTLD_PORT, SLURMD_PORT = 6917, 6918  # beside a cluster the machine may already run on 6817/6818
__all__ = ["Unavailable", "start", "stop"]


def ensure_installed() -> None:
    if not all(shutil.which(tool) for tool in ("sbatch", "slurmctld", "slurmd", "munged")):
        install(["slurm-wlm", "munge"], "SLURM")


def _munge_works() -> bool:
    encoded = subprocess.run(["munge", "-n"], capture_output=True)
    return (
        encoded.returncode == 0
        and subprocess.run(["unmunge"], input=encoded.stdout, capture_output=True).returncode == 0
    )


def _start_munge() -> None:
    if _munge_works():
        return
    for folder in ("/etc/munge", "/run/munge", "/var/lib/munge", "/var/log/munge"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    subprocess.run(["runuser", "-u", "munge", "--", "/usr/sbin/munged"], check=True, capture_output=True)
    for _ in range(50):
        if _munge_works():
            return
        time.sleep(0.1)
    raise RuntimeError("munged started but `munge -n | unmunge` does not work")


def start(folder: Path) -> dict[str, str]:
    """Start the cluster with its config, state and logs under `folder`; returns the environment (SLURM_CONF)
    that clients and the grid's jobs use."""
    ensure_installed()
    host = socket.gethostname().split(".")[0]
    for sub in ("state", "spool", "log"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    memory_mb = int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.8)
    conf = folder / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=maple-test",
                f"SlurmctldHost={host}",
                f"SlurmctldPort={CTLD_PORT}",
                f"SlurmdPort={SLURMD_PORT}",
                "AuthType=auth/munge",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={folder}/state",
                f"SlurmdSpoolDir={folder}/spool",
                f"SlurmctldPidFile={folder}/slurmctld.pid",
                f"SlurmdPidFile={folder}/slurmd.pid",
                f"SlurmctldLogFile={folder}/log/slurmctld.log",
                f"SlurmdLogFile={folder}/log/slurmd.log",
                "ReturnToService=2",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "MpiDefault=none",
                "MinJobAge=600",
                f"NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
                f"PartitionName=test Nodes={host} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        ),
        encoding="utf-8",
    )
    env = {"SLURM_CONF": str(conf)}
    _start_munge()
    for daemon in ("slurmctld", "slurmd"):
        proc = subprocess.run([daemon], env={**os.environ, **env}, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{daemon} did not start: {proc.stderr.strip()[-500:]}")
    for _ in range(120):
        info = subprocess.run(["sinfo", "-h", "-o", "%T"], env={**os.environ, **env}, capture_output=True, text=True)
        if info.stdout.strip() == "idle":
            return env
        time.sleep(0.5)
    log = (folder / "log" / "slurmctld.log").read_text(errors="replace")[-800:]
    raise RuntimeError(f"the test cluster's node is not idle after 60 s: {info.stdout!r} {info.stderr!r}\n{log}")


def stop(folder: Path) -> None:
    for name in ("slurmd.pid", "slurmctld.pid"):
        pid_file = folder / name
        if pid_file.is_file():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ProcessLookupError, ValueError):
                pass
