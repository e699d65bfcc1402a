"""The SLURM executor on a real single-node cluster (tests/slurm_local.py), on a part of the smoke grid (one
model, two adapters and its base model: 13 jobs): the rows equal the local executor's for those runs, a job
cancelled with scancel while it runs is submitted again and completes, and a runner SIGKILLed while its jobs
are in SLURM is followed by one that adopts them instead of submitting them twice. test_full_grid.py does the
same to the whole smoke grid."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import run_cli
from grid_checks import check_slurm_run, slurm_run_with_cancel_and_kill, smoke_variant


@pytest.mark.slow
def test_a_part_of_the_smoke_grid_through_slurm_survives_a_cancel_and_a_killed_runner(
    slurm_cluster, smoke_grid, tmp_path
):
    local_out, _ = smoke_grid
    grid = smoke_variant(tmp_path, slurm=True, model=["tiny-llama"], rank=[4], quant=[4, 16])
    out = tmp_path / "out"
    seen = slurm_run_with_cancel_and_kill(grid, out, slurm_cluster)
    check_slurm_run(grid, out, local_out, seen)


def test_slurm_without_sbatch_says_so_in_one_line(tmp_path):
    env = {"PATH": os.path.dirname(sys.executable)}  # the venv's tools only: no SLURM client
    proc = run_cli("run", "params/smoke.yaml", "--out", str(tmp_path / "out"), "--executor", "slurm", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --executor slurm: `sbatch` is not on PATH (install SLURM's client tools, or use --executor local)"
    )
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
