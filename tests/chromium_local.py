"""Headless Chromium for the report tests: Debian's `chromium`, installed when missing and this user may."""

from __future__ import annotations

import shutil
import subprocess

from system_packages import Unavailable, install

__all__ = ["Unavailable", "executable", "run"]


def executable() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    install(["chromium"], "Chromium")
    return shutil.which("chromium")


def run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Chromium headless, as root in a container allows it (no sandbox, no GPU)."""
    return subprocess.run(
        [
            executable(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--disable-dev-shm-usage",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
