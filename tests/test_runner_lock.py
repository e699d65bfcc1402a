"""One runner per output folder: a second is refused at once, naming the first; a dead one's lock is taken over."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO, run_cli
from maple_utils import layout
from maple_utils.config import ConfigError
from maple_utils.grid import manifest
from maple_utils.grid.lock import runner_lock

HOLD = "import sys, time\nfrom maple_utils.grid.lock import runner_lock\nwith runner_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n"


def test_a_held_lock_refuses_a_second_runner_and_a_dead_holders_lock_is_taken_over(tmp_path):
    said = []
    with runner_lock(tmp_path, said.append):
        with pytest.raises(
            ConfigError, match=rf"another runner is using this folder \(pid {os.getpid()} on {socket.gethostname()}"
        ):
            with runner_lock(tmp_path):
                pass
    assert said == [] and (tmp_path / layout.RUNNER_LOCK).read_text() == ""  # a clean end leaves no name

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ConfigError, match=f"pid {holder.pid} on"):
        with runner_lock(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    with runner_lock(tmp_path, said.append):
        assert said == [f"taking over the runner lock of pid {holder.pid} on {socket.gethostname()}, since "
                        + said[0].split(", since ")[1]]  # fmt: skip
        assert "no longer running" in said[0]


def test_a_second_grid_runner_on_the_same_folder_is_refused_and_runs_nothing(tmp_path):
    out = tmp_path / "out"
    first = subprocess.Popen(
        [sys.executable, "-m", "maple_utils.grid", "run", "params/smoke.yaml", "--out", str(out)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not manifest.read(out):
            time.sleep(0.2)
        assert manifest.read(out), "the first runner started no job"
        started = time.perf_counter()
        second = run_cli("run", "params/smoke.yaml", "--out", str(out), timeout=120)
        assert time.perf_counter() - started < 60
        assert second.returncode != 0
        assert f"another runner is using this folder (pid {first.pid} on {socket.gethostname()}" in second.stderr
        assert "/40]" not in second.stdout  # it started no job and wrote no progress
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
