"""Headless Chromium for the report tests: Debian's `chromium`, installed when missing and this user may."""

from __future__ import annotations

import shutil
import subprocess

from system_packages import Unavailable, install

__all__ = ["Unavailable", "executable", "page_facts", "run"]


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


# What a page shows once loaded: its images (and how many loaded), its tables' row counts, its title and the
# legend under Table 1 (the paragraph right after a table), read back from the DOM Chromium dumps
CHECK = """<script>
window.addEventListener('load', () => {
  const images = [...document.images];
  const tables = [...document.querySelectorAll('table')];
  document.body.setAttribute('data-check', JSON.stringify({
    images: images.length, loaded: images.filter(i => i.complete && i.naturalWidth > 0).length,
    tables: tables.length, rows: tables.map(t => t.rows.length), title: document.title,
    legend: (document.querySelector('table + p.legend') || {}).textContent || ''}));
});
</script>"""


def page_facts(page) -> dict:
    """Open a copy of an HTML page in headless Chromium with CHECK added; what it found."""
    import json
    import re
    from pathlib import Path

    page = Path(page)
    checked = page.with_name(f"checked-{page.name}")
    checked.write_text(page.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    try:
        proc = run("--virtual-time-budget=5000", "--dump-dom", checked.as_uri())
    finally:
        checked.unlink()
    found = re.search(r'data-check="([^"]+)"', proc.stdout)
    if not found:
        raise AssertionError(proc.stdout[-2000:] + proc.stderr[-2000:])
    return json.loads(found.group(1).replace("&quot;", '"'))
