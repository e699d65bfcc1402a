"""Headless Chromium for the report tests: Debian's `chromium`, installed when missing and this user may."""

from __future__ import annotations

import os
import shutil
import subprocess


class Unavailable(Exception):
    """Chromium cannot be installed here; the tests that need it skip with this reason."""


def executable() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable("Chromium is not installed and this user cannot install it (needs root and apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode:
            raise Unavailable(f"`{' '.join(args)}` failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    return shutil.which("chromium")


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Chromium headless, as root in a container allows it (no sandbox, no GPU)."""
    return subprocess.run([executable(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--disable-dev-shm-usage", *args], capture_output=True, text=True, timeout=timeout)
