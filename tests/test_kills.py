"""The grid runner killed with SIGKILL at random points and started again each time, on a part of the smoke
grid (one adapter and its base model: 9 jobs): the final results equal the uninterrupted smoke grid's for the
same runs, and no job that had completed ran again. test_full_grid.py does the same to the whole smoke grid."""

import os
import time

import pytest

from grid_checks import check_resumed, kill_at_random_points, smoke_variant
from maple_utils.grid import planner


@pytest.mark.slow
def test_the_runner_killed_at_random_points_resumes_to_the_uninterrupted_results(smoke_grid, tmp_path):
    local_out, _ = smoke_grid
    grid = smoke_variant(tmp_path, model=["tiny-llama"], rank=[4], quant=[16])
    out = tmp_path / "out"
    assert len(planner.plan_grid(grid, out).jobs) == 9  # the data set, the adapter and the base model
    seed = int(os.environ.get("MAPLE_KILL_SEED", time.time()))
    kills, _ = kill_at_random_points(grid, out, workers=2, seed=seed)
    check_resumed(grid, out, local_out, kills, seed)
