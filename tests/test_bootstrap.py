import sys

from conftest import load_script


def _bootstrap():
    return load_script("bootstrap")


def test_an_importable_torch_is_kept_without_installing_anything():
    bootstrap = _bootstrap()
    import torch

    assert bootstrap._has_torch(sys.executable)
    assert bootstrap.install_torch(sys.executable) == f"kept the torch that is there ({torch.__version__})"


def test_unresolvable_hosts_are_detected_quickly():
    assert _bootstrap()._resolves("no-such-host.invalid", seconds=3.0) is False


def test_torch_choice_never_pulls_a_cuda_build_onto_a_cpu_machine():
    choice = _bootstrap().torch_choice
    assert choice(True, False, True)[0] == [] and choice(True, True, True)[0] == []  # a user's torch is kept
    assert choice(False, True, True)[0] == ["torch"]  # a GPU machine: PyPI's default (CUDA) build
    args, why = choice(False, False, True)
    assert args == ["torch==2.13.0", "--extra-index-url", "https://download.pytorch.org/whl/cpu"] and "CPU" in why
    assert choice(False, False, False)[0] == ["torch==2.13.0"]  # the CPU wheel, from wherever pip finds it
