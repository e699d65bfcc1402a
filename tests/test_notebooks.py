"""The notebooks stay thin and parameterised: checked on their source, without running them.
(nbval runs each of them at its defaults; tests/test_grid.py runs them through papermill.)"""

import ast
import json
import re

import papermill
import pytest
import yaml

from maple_utils import config, grid
from maple_utils.paths import NOTEBOOKS_DIR, PARAMS_DIR

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def test_the_five_stages_are_there():
    assert [p.stem for p in NOTEBOOKS] == list(grid.STAGES)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_stripped_and_has_one_parameters_cell(path):
    cells = _cells(path)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# ")
    assert "colab-badge.svg" in "".join(cells[0]["source"])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs not stripped"
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for c in code:
        assert not re.search(r"^\s*(def|class)\s", "".join(c["source"]), re.M), "logic belongs in maple_utils"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_typed_commented_literals(path):
    cell = next(c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"])
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            continue  # `from typing import Optional` for the annotations
        assert isinstance(node, ast.AnnAssign), ast.dump(node)
        ast.literal_eval(node.value)  # literals only: derived values would go stale under papermill
    for line in source.splitlines():
        if ":" in line and "=" in line and not line.startswith("from"):
            assert "  # " in line, f"parameter without a comment: {line}"
    declared = papermill.inspect_notebook(str(path))
    assert len(declared) == sum(isinstance(n, ast.AnnAssign) for n in tree.body)  # papermill parses every one


def _defaults(path) -> dict:
    cell = next(c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {n.target.id: ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.AnnAssign)}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_defaults_validate_and_match_the_smoke_grid(path):
    values = _defaults(path)
    cfg = config.from_namespace(values)
    smoke = yaml.safe_load((PARAMS_DIR / "smoke.yaml").read_text())
    first = {**smoke["fixed"], **{k: v[0] for k, v in smoke["axes"].items()}}
    effective = config.validate_run(first)
    for key, value in values.items():
        if key in config.RunConfig.model_fields and key not in ("dataset", "rank", "quant"):
            assert getattr(cfg, key) == getattr(effective, key), f"{path.stem}: {key} differs from params/smoke.yaml"


def test_grid_passes_exactly_what_each_notebook_declares(tmp_path):
    plan = grid.plan(PARAMS_DIR / "smoke.yaml", tmp_path)
    grid.check_notebooks(plan.jobs)  # raises on any drift between the grid and a notebook
