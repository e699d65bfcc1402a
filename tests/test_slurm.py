"""The SLURM executor without a cluster. On a real single-node cluster (tests/slurm_local.py) the full-grid
tier (test_full_grid.py, which CI runs) takes the whole smoke grid through it: its rows equal the local
executor's, a job cancelled with scancel while it runs is submitted again and completes, and a runner SIGKILLed
while its jobs are in SLURM is followed by one that adopts them instead of submitting them twice. (A 13-job part
of the grid did the same in the suite: a subset of that test, left out to keep the suite under 15 minutes.)"""

from __future__ import annotations

import os
import sys

from conftest import run_cli


def test_slurm_without_sbatch_says_so_in_one_line(tmp_path):
    env = {"PATH": os.path.dirname(sys.executable)}  # the venv's tools only: no SLURM client
    proc = run_cli("run", "params/smoke.yaml", "--out", str(tmp_path / "out"), "--executor", "slurm", env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: --executor slurm: `sbatch` is not on PATH (install SLURM's client tools, or use --executor local)"
    )
    assert not (tmp_path / "out" / "manifest.jsonl").exists()
