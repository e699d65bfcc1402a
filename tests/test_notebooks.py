"""The notebooks stay thin and their parameters cells are generated from the declarations: checked on
their source, without running them. (nbval runs each at its defaults; tests/test_grid.py through papermill.)"""

import ast
import json
import re

import papermill
import pytest

from conftest import REPO, load_script
from maple_utils import config, stages
from maple_utils.grid import planner
from maple_utils.paths import notebooks_dir

NOTEBOOKS = sorted(notebooks_dir().glob("*.ipynb"))


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _writer():
    return load_script("write_notebook_parameters")


def test_one_notebook_per_stage():
    assert [p.stem for p in NOTEBOOKS] == [s.name for s in stages.all_stages()]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_thin_stripped_and_has_one_parameters_cell(path):
    cells = _cells(path)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert cells[0]["cell_type"] == "markdown" and cells[0]["source"][0].startswith("# ")
    assert "colab-badge.svg" in "".join(cells[0]["source"])
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), "outputs not stripped"
    assert len({c["id"] for c in cells}) == len(cells)  # nbformat 4.5 cell ids
    tagged = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for c in code:
        assert not re.search(r"^\s*(def|class)\s", "".join(c["source"]), re.M), "logic belongs in maple_utils"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_is_what_the_declarations_generate(path):
    cell = next(c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", []))
    assert "".join(cell["source"]) == _writer().parameters_source(path.stem), (
        "run python scripts/write_notebook_parameters.py"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_colab_badge_and_set_up_cell_install_the_revision_they_open(path):
    import subprocess

    writer = _writer()
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = writer.colab_cells(notebook, path.name)
    assert cells and all("".join(cell["source"]) == want for cell, want in cells), (
        "run python scripts/write_notebook_parameters.py"
    )
    setup = "".join(notebook["cells"][1]["source"])
    assert (
        f'MAPLE_REF = "{writer.COLAB_REF}"' in setup
        and f"/blob/{writer.COLAB_REF}/notebooks/{path.name}" in "".join(notebook["cells"][0]["source"])
    )
    assert "--branch v" not in setup and 'drive.mount("/content/drive")' in setup
    # the revision exists in this checkout (a tag the repo lacks would fail the clone on Colab)
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", writer.COLAB_REF], cwd=REPO, capture_output=True)
    assert proc.returncode == 0, f"{writer.COLAB_REF} is not a branch or tag of this repository"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_typed_commented_literals_papermill_reads(path):
    cell = next(c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", []))
    source = "".join(cell["source"])
    tree = ast.parse(source)
    assigns = [n for n in tree.body if isinstance(n, ast.AnnAssign)]
    for node in assigns:
        ast.literal_eval(node.value)  # literals only: derived values would go stale under papermill
    for line in source.splitlines():
        if " = " in line:
            assert "  # " in line and "=" not in line.split("  # ", 1)[1], f"comment missing or with '=': {line}"
    declared = papermill.inspect_notebook(str(path))
    assert list(declared) == [n.target.id for n in assigns] == stages.get(path.stem).parameters
    for name, info in declared.items():
        if name in config.RunConfig.model_fields:
            assert info["help"] == config.RunConfig.model_fields[name].description


def test_the_writer_detects_and_repairs_a_drifted_cell(tmp_path, monkeypatch):
    import shutil

    writer = _writer()
    copy = tmp_path / "notebooks"
    shutil.copytree(notebooks_dir(), copy)
    monkeypatch.setenv("MAPLE_ROOT", str(tmp_path))
    path = copy / "03_evaluate.ipynb"
    notebook = json.loads(path.read_text())
    cell = writer.parameters_cell(notebook)
    cell["source"] = [line.replace('"tiny-llama"', '"tiny-mistral"') for line in cell["source"]]
    path.write_text(json.dumps(notebook))
    assert writer.main(["--check"]) == 1
    assert writer.main([]) == 0 and writer.main(["--check"]) == 0
    assert "".join(writer.parameters_cell(json.loads(path.read_text()))["source"]) == writer.parameters_source(
        "03_evaluate"
    )


def test_defaults_are_the_smoke_grids_first_run():
    first = config.first_run(REPO / "params" / "smoke.yaml")
    for path in NOTEBOOKS:
        declared = papermill.inspect_notebook(str(path))
        for name, info in declared.items():
            if name in config.RunConfig.model_fields:
                assert ast.literal_eval(info["default"]) == getattr(first, name), (path.stem, name)
    run_dir = ast.literal_eval(
        papermill.inspect_notebook(str(notebooks_dir() / "03_evaluate.ipynb"))["run_dir"]["default"]
    )
    assert run_dir == f"runs/notebooks/runs/{config.run_id(first)}"  # 03 evaluates what 02 trains at its defaults


def test_grid_passes_exactly_what_each_notebook_declares(tmp_path):
    plan = planner.plan_grid(REPO / "params" / "smoke.yaml", tmp_path)
    planner.check_notebooks(plan)  # raises on any drift between the stage registry and a notebook
    for job in plan.jobs:
        assert list(job.params) == job.stage.parameters
