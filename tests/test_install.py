"""A non-editable `pip install .` works from any folder: the registries are package data."""

import subprocess
import sys
import sysconfig
import venv

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow


def test_a_plain_install_plans_the_smoke_grid_from_another_folder(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    wheel = next(wheels.glob("maple-*.whl"))
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "grid.yaml").write_text((REPO / "params" / "smoke.yaml").read_text())
    # The fresh venv holds only maple; its dependencies come from this interpreter's site-packages, read as a
    # plain path (so the editable install of the checkout there is not visible).
    deps = sysconfig.get_paths()["purelib"]
    proc = subprocess.run(
        [str(python), "-c", "import maple_utils; print(maple_utils.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0 and str(env_dir) in proc.stdout, proc.stdout + proc.stderr
    proc = subprocess.run(
        [str(python), "-m", "maple_utils.grid", "run", "grid.yaml", "--out", "out", "--dry-run"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": deps, "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "02_train: 8 job(s)" in proc.stdout and "03_evaluate: 10 job(s)" in proc.stdout
    assert not (elsewhere / "out").exists()
