"""Honest provenance and fingerprints, through papermill: the run record and rows show what a run really
used, a rerun executes exactly the jobs an edit affects, outputs that vanish are redone, and a grid edited
between runs ends with the rows of a clean run on the edited inputs."""

import json
import os
import shutil

import pandas as pd
import pytest
import yaml

from conftest import REPO, comparable_rows, run_cli
from maple_utils import config, layout, registry
from maple_utils.grid import manifest, planner

pytestmark = pytest.mark.slow

GRID = {
    "name": "provenance",
    "fixed": {
        "epochs": 2.0,
        "grad_accum": 2,
        "max_length": 200,
        "batch_size": 2,
        "max_train_examples": 6,
        "languages": ["en", "zh", "sw"],
        "tasks": ["xnli", "xquad"],
        "limit": 2,
        "k_shot": {"xnli": 1, "xquad": 1},
        "split_overrides": {"xnli": {"eval_split": "validation", "fewshot_split": "validation"}},
        "max_new_tokens": 4,
        "alpaca_eval_limit": 2,
        "alpaca_eval_max_new_tokens": 4,
        "data_seed": 3,
        "fewshot_seed": 5,
        "seed": 7,
        "data_source": "local",
    },
    "axes": {"dataset": ["alpaca"], "rank": [4], "quant": [8]},
    "evaluate_base_models": False,
}
# copies of the real release files the grid reads (the tests edit them); XNLI as XTREME's dev files
DATA = (
    "alpaca/alpaca_5000.json",
    "xnli/xtreme_format/dev-en.tsv",
    "xnli/xtreme_format/dev-zh.tsv",
    "xnli/xtreme_format/dev-sw.tsv",
    "xquad/xquad.en.json",
    "xquad/xquad.zh.json",
    "squad/dev-v1.1.json",
    "alpaca_eval/results/text_davinci_003/model_outputs.json",
)


def _executed(out, before: int) -> set[str]:
    return {e["stage"] for e in manifest.read(out)[before:] if e.get("status") == "done"}


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory, shared_data, tiny_built):
    """The grid on copies of the real files and of the tiny Llama's folder (a model given as a folder)."""
    root = tmp_path_factory.mktemp("provenance")
    for part in DATA:
        (root / "data" / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / part, root / "data" / part)
    shutil.copytree(tiny_built["tiny-llama"], root / "tiny-llama")
    grid = json.loads(json.dumps(GRID))
    grid["fixed"]["data_root"] = str(root / "data")
    grid["axes"]["model"] = [str(root / "tiny-llama")]
    grid_file = root / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    out = root / "out"
    proc = run_cli("run", str(grid_file), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cfg = planner.plan_grid(grid_file, out).adapters[0]
    return root, grid_file, out, cfg


def test_run_record_and_rows_show_what_the_run_really_used(grid_run):
    _, _, out, cfg = grid_run
    folder = out / layout.RUNS_DIR / config.run_id(cfg)
    record = json.loads((folder / layout.RUN_RECORD).read_text())
    stages = record["stages"]
    assert set(stages) == {"02_train", "03_evaluate", "04_alpaca_eval", "05_judge"}
    train = stages["02_train"]["config"]
    assert (
        train["epochs"],
        train["grad_accum"],
        train["max_length"],
        train["seed"],
        train["data_seed"],
        train["max_train_examples"],
        train["quant"],
    ) == (2.0, 2, 200, 7, 3, 6, 8)
    assert stages["03_evaluate"]["config"]["languages"] == ["en", "zh", "sw"]
    assert stages["03_evaluate"]["config"]["fewshot_seed"] == 5
    for name, section in stages.items():  # no stage records a field it did not read, refilled with a default
        assert set(section["config"]) <= set(config.RunConfig.model_fields), name
        assert section["identity"]["run_id"] == config.run_id(cfg) and section["identity"]["quant"] == 8
        assert section["git_sha"]
        if name != "05_judge":
            assert section["model"]["revision"].startswith("sha256:")
        assert section["maple_utils"] == str(REPO / "maple_utils")
    assert "epochs" not in stages["03_evaluate"]["config"] and "epochs" not in stages["04_alpaca_eval"]["config"]
    assert stages["04_alpaca_eval"]["prompt_template"] == "alpaca"
    assert {(p["task"], p["language"]) for p in stages["03_evaluate"]["not_evaluated"]} == {("xquad", "sw")}
    train_record = json.loads((folder / layout.TRAIN_RECORD).read_text())
    # every step trains batch_size x grad_accum examples, running on into the next epoch: ceil(2 x 6 / (2 x 2))
    assert train_record["examples"] == 6 and train_record["steps"] == 3
    assert json.loads((folder / layout.CONFIG).read_text()) == cfg.model_dump()
    data_record = json.loads((out / layout.DATA_DIR / config.data_id(cfg) / layout.RUN_RECORD).read_text())
    assert data_record["stages"]["01_data"]["data"][0]["revision"].startswith("sha256:")

    rows = pd.read_parquet(out / layout.RESULTS_TABLE)
    ev = rows[rows["stage"] == "03_evaluate"]
    assert set(zip(ev["task"], ev["language"])) == {
        ("xnli", "en"),
        ("xnli", "zh"),
        ("xnli", "sw"),
        ("xquad", "en"),
        ("xquad", "zh"),
    }
    assert (
        (ev["seed"] == 5).all() and (ev["limit"] == 2).all() and (ev["k_shot"] == 1).all() and (ev["quant"] == 8).all()
    )
    xnli = registry.read("tasks")["tasks"]["xnli"]
    assert set(ev[ev["task"] == "xnli"]["registry_hash"]) == {registry.entry_hash(xnli)}
    tasks = registry.read("tasks")["tasks"]
    assert set(zip(ev["task"], ev["task_version"])) == {(t, tasks[t]["version"]) for t in ("xnli", "xquad")}
    assert (rows[rows["stage"] == "02_train"]["seed"] == 7).all()
    assert (rows[rows["stage"] == "01_data"]["seed"] == 3).all()
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.relative_to(out): oct(p.stat().st_mode & 0o777) for p in out.rglob("*") if p.is_file()}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes  # the adapter's weights too (safetensors: 0600)


def test_nothing_edited_reruns_nothing(grid_run):
    _, grid_file, out, _ = grid_run
    before = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out))
    assert proc.returncode == 0 and proc.stdout.count("already complete") == 6
    assert _executed(out, before) == set()


def test_outputs_that_vanish_or_are_cut_are_redone(grid_run):
    _, grid_file, out, cfg = grid_run
    folder = out / layout.RUNS_DIR / config.run_id(cfg)
    shutil.rmtree(out / layout.REPORT_DIR)
    proc = run_cli("report", str(grid_file), "--out", str(out))
    assert proc.returncode == 0 and layout.report_page(out).is_file(), proc.stdout[-2000:]
    assert f"{out / layout.REPORT_DIR}" in proc.stdout and "not complete any more" in proc.stdout

    predictions = layout.predictions(folder, "xnli", "en")
    kept = predictions.read_text(encoding="utf-8")
    predictions.unlink()
    status = run_cli("status", str(grid_file), "--out", str(out))
    assert f"03_evaluate:{config.run_id(cfg)}  outputs damaged: {predictions} is missing" in status.stdout
    before = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out))
    assert proc.returncode == 0 and _executed(out, before) == {"03_evaluate", "06_analysis"}, proc.stdout[-2000:]
    assert (
        predictions.read_text(encoding="utf-8") == kept
    )  # the same predictions again (the report follows its timings)

    weights = folder / layout.ADAPTER / layout.ADAPTER_WEIGHTS
    size = weights.stat().st_size
    with open(weights, "r+b") as f:  # cut short, as by a full disk: the next test's run redoes training
        f.truncate(size // 2)
    status = run_cli("status", str(grid_file), "--out", str(out))
    assert f"outputs damaged: {weights} is {size // 2:,} bytes, {size:,} when the job completed" in status.stdout


def _edit_inputs(root):
    """A corrected XNLI item, a reworded prompt, a model folder saved again: the registry folder to pass."""
    dev = root / "data/xnli/xtreme_format/dev-en.tsv"
    lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    dev.write_text("".join(lines[:1] + [lines[1].replace("\t", " (corrected)\t", 1)] + lines[2:]), encoding="utf-8")
    edited = root / "registry"
    edited.mkdir()
    text = (registry.PACKAGED / "tasks.yaml").read_text(encoding="utf-8")
    assert "True, False, or Neither?" in text
    (edited / "tasks.yaml").write_text(text.replace("True, False, or Neither?", "True, False or Neither?"))
    generation = root / "tiny-llama" / "generation_config.json"
    generation.write_text(json.dumps({**json.loads(generation.read_text()), "temperature": 0.5}))
    return edited


@pytest.mark.full_grid  # three grid runs (17 jobs, about 3 minutes): the full-grid tier, which CI runs after the suite
def test_a_grid_edited_between_runs_ends_with_the_rows_of_a_clean_run_on_the_edited_inputs(grid_run):
    root, grid_file, out, cfg = grid_run
    edited = _edit_inputs(root)
    env = {"MAPLE_REGISTRY": str(edited)}
    before = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    # the model folder (and, in the suite, the adapter cut above) retrain and re-evaluate; the data set stays
    assert _executed(out, before) == {"02_train", "03_evaluate", "04_alpaca_eval", "05_judge", "06_analysis"}
    rows = pd.read_parquet(out / layout.RESULTS_TABLE)
    xnli = rows[(rows["stage"] == "03_evaluate") & (rows["task"] == "xnli")]
    new_hash = registry.entry_hash(yaml.safe_load((edited / "tasks.yaml").read_text())["tasks"]["xnli"])
    assert set(xnli["registry_hash"]) == {new_hash}
    again = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out), env=env)
    assert proc.returncode == 0 and _executed(out, again) == set()

    clean = root / "clean"
    proc = run_cli("run", str(grid_file), "--out", str(clean), env=env)
    assert proc.returncode == 0, proc.stdout[-3000:]
    pd.testing.assert_frame_equal(comparable_rows(out), comparable_rows(clean))
