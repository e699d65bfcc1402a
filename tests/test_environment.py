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
