"""Debian packages the tests drive for real (SLURM, Chromium), installed when missing and this user may."""

from __future__ import annotations

import os
import shutil
import subprocess


class Unavailable(Exception):
    """The software cannot be installed here; the tests that need it skip with this reason."""


def install(packages: list[str], what: str) -> None:
    """apt-get install the packages, or Unavailable saying why not."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(f"{what} is not installed and this user cannot install it (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode:
            raise Unavailable(f"`{' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
