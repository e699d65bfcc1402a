"""A non-editable `pip install .` works from any folder: the registries are package data."""

import json
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

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


def _install_plan(python: Path, *args: str) -> list[str]:
    """The packages `pip install --dry-run --report` would install into a venv, by name."""
    report = python.parent.parent / "plan.json"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted(item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"])


@pytest.mark.install
def test_following_the_readme_a_cpu_machine_resolves_no_cuda_package(tmp_path):
    """README's install on a machine without CUDA: torch's CPU build first, then the project with every extra,
    dependencies resolved for real in a fresh venv: no nvidia-* package (and no second torch) is planned.
    Without the first step, pip would take PyPI's CUDA build through peft, accelerate and bitsandbytes."""
    plain = tmp_path / "plain"
    venv.create(plain, with_pip=True)
    cuda = _install_plan(plain / "bin" / "python", f"{REPO}[tracking]")
    assert "torch" in cuda and any(name.startswith("nvidia-") for name in cuda), cuda  # the hazard is real
    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    # the README's first line; its extra index (PyTorch's CPU wheels) is unreachable here, where that wheel lies on disk
    torch = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "torch==2.13.0"], capture_output=True, text=True, timeout=900
    )
    assert torch.returncode == 0, torch.stderr[-3000:]
    planned = _install_plan(python, f"{REPO}[tracking]")
    assert "maple" in planned and "transformers" in planned and "wandb" in planned
    assert not [name for name in planned if name.startswith("nvidia-") or name in ("torch", "triton")], planned
