import re

import tomllib
import yaml

from conftest import REPO


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ]", spec, maxsplit=1)[0].lower()


def test_environment_yml_and_pyproject_list_the_same_dependencies():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = set(project["dependencies"]) | set(extras["dev"]) | set(extras["tracking"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {p for p in pip if not p.startswith("-e")}
    assert listed == wanted  # same names and the same lower bounds
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert any(_name(d) == "pytorch" for d in conda)


def test_torch_is_left_to_the_bootstrap():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "torch" not in {_name(d) for d in project["dependencies"]}  # never pulls a CUDA build on a CPU box


def test_the_minimum_versions_ci_installs_are_the_declared_lower_bounds():
    """.ci/minimum.txt (what `make test-min` installs and runs the fast tier on) pins exactly the lower bounds
    pyproject.toml declares, and environment.yml's for torch, and the bootstrap's CPU torch is that version."""
    from packaging.version import Version

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    bounds = {_name(d): d.split(">=", 1)[1] for d in project["dependencies"] if ">=" in d}
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    bounds["torch"] = next(
        d.split(">=")[1] for d in env["dependencies"] if isinstance(d, str) and d.startswith("pytorch>=")
    )
    lines = [x for x in (REPO / ".ci" / "minimum.txt").read_text().splitlines() if x and not x.startswith("#")]
    pins = dict(line.split("==") for line in lines)
    assert set(pins) == {"torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets"}
    assert all(Version(pins[name]) == Version(bounds[name]) for name in pins), (pins, bounds)
    from conftest import load_script

    assert load_script("bootstrap").CPU_TORCH == f"torch=={pins['torch']}"
