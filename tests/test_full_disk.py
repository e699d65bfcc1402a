"""A disk that fills while a grid runs, for real: the output folder on a tmpfs too small for the grid, with the
stage registry's up-front disk check out of the way. The runner stops starting jobs, records the job that found
no room `failed` with the path and errno, exits with a message (never a traceback), and every file it leaves is
whole: no cut notebook under its name, no empty figure."""

import json
import subprocess

import pytest
import yaml

from conftest import REPO, run_cli
from maple_utils import io, layout

pytestmark = pytest.mark.slow

GRID = {
    "name": "full-disk",
    "fixed": {
        "max_steps": 2,
        "tasks": ["xnli"],
        "languages": ["en"],
        "limit": 2,
        "alpaca_eval_limit": 2,
        "max_new_tokens": 4,
        "max_train_examples": 8,
    },
    "axes": {"model": ["tiny-llama"], "dataset": ["alpaca"], "rank": [4], "quant": [16]},
    "evaluate_base_models": False,
}


@pytest.fixture()
def small_disk(tmp_path):
    """A 150 KiB tmpfs: room for the data stage and its notebook, not for an adapter."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=150k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_disk_that_fills_mid_grid_stops_it_with_a_message_and_leaves_whole_files(tmp_path, small_disk):
    stages = yaml.safe_load((REPO / "maple_utils" / "registry" / "stages.yaml").read_text())
    for stage in stages["stages"]:
        stage["resources"]["disk_gb"] = 0  # the up-front check out of the way
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "stages.yaml").write_text(yaml.safe_dump(stages))
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
    out = small_disk / "out"
    proc = run_cli("run", str(grid_file), "--out", str(out), env={"MAPLE_REGISTRY": str(tmp_path / "registry")})
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "found no room" in proc.stderr and f"the output folder {out} is full" in proc.stderr

    entries = [json.loads(line) for line in (out / layout.MANIFEST).read_text().splitlines() if line.strip()]
    failed = [e for e in entries if e["status"] == "failed"]
    assert failed and all(io.says_no_room(e["error"]) for e in failed), failed
    assert all(str(out) in e["error"] for e in failed)  # where it found no room
    started = [e["job"] for e in entries if e["status"] == "running"]
    assert len(started) < 6  # it stopped starting jobs
    for notebook in out.rglob("*.ipynb"):  # whole, or kept as .partial
        json.loads(notebook.read_text(encoding="utf-8"))
    assert not [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.suffix in (".png", ".pdf")]
    assert not [p for p in out.rglob("*.tmp")]  # no temporary file left behind


def test_a_notebook_whose_last_write_was_cut_is_kept_apart_and_its_attempt_failed(tmp_path):
    """papermill rewrites the executed notebook after every cell; one cut by a full disk (16,384 bytes of
    JSON) must not stand under the notebook's name as if it were whole."""
    from maple_utils import stages
    from maple_utils.grid import local
    from maple_utils.grid.manifest import Entry, Status
    from maple_utils.grid.planner import Job

    job = Job(stages.get("03_evaluate"), "run-a", tmp_path, {})
    entry = Entry.of(job, Status.DONE, attempt=1)
    running, output = (
        layout.running_notebook(tmp_path, "03_evaluate"),
        layout.executed_notebook(tmp_path, "03_evaluate"),
    )
    output.write_text('{"cells": [], "previous": "attempt"}')
    running.write_text('{"cells": [{"source": "cut sho')
    kept = local.keep_notebook(entry, running, output, job)
    cut = layout.cut_notebook(tmp_path, "03_evaluate")
    assert kept.status is Status.FAILED and kept.notebook == str(cut) and str(cut) in kept.error
    assert cut.read_text().startswith('{"cells": [{"source"') and not running.exists()
    assert json.loads(output.read_text())["previous"] == "attempt"  # the last whole one stays

    running.write_text('{"cells": []}')  # a whole one replaces it
    assert local.keep_notebook(entry, running, output, job).status is Status.DONE
    assert json.loads(output.read_text()) == {"cells": []} and not running.exists()
