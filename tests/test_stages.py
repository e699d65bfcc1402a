"""The stage registry is the one place that knows the stages: a new stage is one entry plus one notebook."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, stage_notebook
from maple_utils import stages
from maple_utils.config import fields

EXTRA = {
    "name": "07_extra",
    "unit": "evaluated_model",
    "groups": ["model"],
    "paths": ["out_dir", "run_dir"],
    "needs": ["04_alpaca_eval"],
    "registry": ["models"],
    "resources": {"gpus": 0, "cpus": 1, "memory_gb": 2, "time_min": 10, "disk_gb": 1},
}


def test_stage_fields_derive_from_field_groups():
    assert stages.get("01_data").fields == fields.fields_of(["data", "sources"])
    train = stages.get("02_train").fields
    assert "seed" in train and "data_seed" in train and "fewshot_seed" not in train
    evaluate = stages.get("03_evaluate").fields
    assert "max_new_tokens" in evaluate and "alpaca_eval_max_new_tokens" not in evaluate
    assert "epochs" not in evaluate  # evaluation never re-declares (and so never refills) training fields
    for group, names in fields.groups().items():
        assert names and all(fields.RunConfig.model_fields[n].description for n in names), group


def test_unknown_units_groups_and_needs_are_refused(tmp_path, monkeypatch):
    entries = yaml.safe_load((REPO / "maple_utils" / "registry" / "stages.yaml").read_text())
    bad = dict(EXTRA, needs=["99_nothing"])
    (tmp_path / "stages.yaml").write_text(yaml.safe_dump({"stages": entries["stages"] + [bad]}))
    monkeypatch.setenv("MAPLE_REGISTRY", str(tmp_path))
    with pytest.raises(ValueError, match="07_extra: needs '99_nothing'"):
        stages.all_stages()


def test_a_new_stage_is_one_registry_entry_and_one_notebook(tmp_path):
    copy = tmp_path / "maple"
    for part in ("maple_utils", "notebooks", "params", "scripts"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", copy)
    registry_file = copy / "maple_utils" / "registry" / "stages.yaml"
    entries = yaml.safe_load(registry_file.read_text())
    entries["stages"].insert(len(entries["stages"]) - 1, EXTRA)  # before the analysis, which runs last
    registry_file.write_text(yaml.safe_dump(entries, sort_keys=False))
    notebook = stage_notebook(
        "# 07 · Extra",
        "import os\nimport maple_utils\nprint('CODE', maple_utils.__file__)\nprint('DEVICE', os.environ.get('CUDA_VISIBLE_DEVICES'))\nimport sys\nprint('GUARD', 'maple_utils.grid.kernel_guard' in sys.modules)",
    )
    (copy / "notebooks" / "07_extra.ipynb").write_text(json.dumps(notebook))

    # the copy's own root and code: a runner run in this process earlier set MAPLE_ROOT and PYTHONPATH to the checkout
    env = {k: v for k, v in os.environ.items() if k not in ("MAPLE_ROOT", "PYTHONPATH")}

    def python(code: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=copy, capture_output=True, text=True, timeout=300, env=env
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    python(
        "import runpy, sys; sys.argv = ['w']; runpy.run_path('scripts/write_notebook_parameters.py', run_name='__main__')"
    )
    out = python(
        "import json; from maple_utils.grid import cli, planner; import maple_utils\n"
        f"assert maple_utils.__file__.startswith({str(copy)!r})\n"
        "p = planner.plan_grid('params/smoke.yaml', 'runs/x'); planner.check_notebooks(p)\n"
        "print(json.dumps([[j.stage.name, j.key, j.needs] for j in p.jobs]))\n"
        "print(json.dumps(cli.describe(p)))"
    )
    jobs, listing = (json.loads(line) for line in out.splitlines()[-2:])
    extra = [j for j in jobs if j[0] == "07_extra"]
    assert len(extra) == 10  # one per evaluated model: 8 adapters and 2 base models
    assert all(needs == [f"04_alpaca_eval:{key}"] for _, key, needs in extra)
    assert [j[0] for j in jobs].index("07_extra") < [j[0] for j in jobs].index("06_analysis")
    assert any(line.startswith("07_extra: 10 job(s)") for line in listing)
    declared = python(
        "import papermill, json; print(json.dumps(list(papermill.inspect_notebook('notebooks/07_extra.ipynb'))))"
    )
    assert json.loads(declared) == ["model", "quant", "out_dir", "run_dir"]
    # The new stage's notebook runs through the runner, and its kernel runs the copy's code, not the
    # checkout's that the shared venv has installed; a GPU the runner hands out is the only one it sees.
    out = python(
        "from maple_utils.grid import local, planner\n"
        "p = planner.plan_grid('params/smoke.yaml', 'runs/x')\n"
        "local.kernel_environment()\n"
        "print(local.execute(p.jobs_of('07_extra')[0], p.out, device='3')['status'])"
    )
    assert out.strip().endswith("done")
    executed = next((copy / "runs" / "x" / "runs").glob("*/07_extra.ipynb")).read_text()
    assert f"CODE {copy / 'maple_utils' / '__init__.py'}" in executed and "DEVICE 3" in executed
    assert "GUARD True" in executed  # the kernel watches its runner (maple_utils/grid/kernel_guard.py)


def test_a_disk_without_room_for_the_largest_job_stops_the_grid_before_any_job(tmp_path):
    """The stage registry declares each job's disk need; a need the output disk cannot meet is named with
    the folder and the space found, and nothing runs (the CLI exits 2)."""
    from conftest import run_cli

    stages = yaml.safe_load((REPO / "maple_utils" / "registry" / "stages.yaml").read_text())
    for stage in stages["stages"]:
        if stage["name"] == "02_train":
            stage["resources"]["disk_gb"] = 10**7  # ten petabytes
    edited = tmp_path / "registry"
    edited.mkdir()
    (edited / "stages.yaml").write_text(yaml.safe_dump(stages))
    out = tmp_path / "out"
    proc = run_cli("run", str(REPO / "params" / "smoke.yaml"), "--out", str(out), env={"MAPLE_REGISTRY": str(edited)})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = " ".join(proc.stderr.split())
    assert f"output folder {out} has " in message
    assert " GB free; the largest job declares 1e+07 GB (stage registry resources.disk_gb)" in message
    assert not (out / "manifest.jsonl").exists() or "running" not in (out / "manifest.jsonl").read_text()


def test_every_job_of_a_plan_survives_pickling_as_the_slurm_executor_sends_it(tmp_path):
    """A SLURM array task gets its job as a pickle: a stage's unit (keys, folders, configs) must pickle too."""
    import pickle

    from maple_utils.grid import planner

    plan = planner.plan_grid(REPO / "params" / "smoke.yaml", tmp_path)
    for job in plan.jobs:
        copy = pickle.loads(pickle.dumps(job))
        assert (copy.id, copy.folder, copy.params, copy.stage.unit) == (job.id, job.folder, job.params, job.stage.unit)
    assert {j.stage.unit.name for j in plan.jobs} == {"dataset", "adapter", "evaluated_model", "grid"}
