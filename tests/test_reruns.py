"""Honest provenance and fingerprints, through papermill: the run record and rows show what a run really
used, and a rerun executes exactly the jobs an edit affects."""

import json

import pandas as pd
import pytest
import yaml

from conftest import REPO, run_cli
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
        "max_new_tokens": 4,
        "alpaca_eval_limit": 2,
        "alpaca_eval_max_new_tokens": 4,
        "data_seed": 3,
        "fewshot_seed": 5,
        "seed": 7,
    },
    "axes": {"model": ["tiny-llama"], "dataset": ["alpaca"], "rank": [4], "quant": [8]},
    "evaluate_base_models": False,
}


def _executed(out, before: int) -> set[str]:
    return {e["stage"] for e in manifest.read(out)[before:] if e.get("status") == "done"}


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("provenance")
    grid_file = root / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(GRID))
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


def test_nothing_edited_reruns_nothing(grid_run):
    _, grid_file, out, _ = grid_run
    before = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out))
    assert proc.returncode == 0 and proc.stdout.count("already complete") == 6
    assert _executed(out, before) == set()


def test_an_edited_prompt_reruns_the_evaluation_and_nothing_upstream(grid_run):
    root, grid_file, out, cfg = grid_run
    edited = root / "registry"
    edited.mkdir()
    text = (registry.PACKAGED / "tasks.yaml").read_text(encoding="utf-8")
    assert "True, False, or Neither?" in text
    (edited / "tasks.yaml").write_text(text.replace("True, False, or Neither?", "True, False or Neither?"))
    before = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out), env={"MAPLE_REGISTRY": str(edited)})
    assert proc.returncode == 0, proc.stdout[-3000:]
    # the evaluation reruns; the report follows because its rows changed; data, training, AlpacaEval and its judge stay
    assert _executed(out, before) == {"03_evaluate", "06_analysis"}
    new_hash = registry.entry_hash(yaml.safe_load((edited / "tasks.yaml").read_text())["tasks"]["xnli"])
    rows = pd.read_parquet(out / layout.RESULTS_TABLE)
    xnli = rows[(rows["stage"] == "03_evaluate") & (rows["task"] == "xnli")]
    assert set(xnli["registry_hash"]) == {new_hash}
    predictions = out / layout.RUNS_DIR / config.run_id(cfg) / "predictions" / "xnli-en.jsonl"
    assert predictions.exists()
    again = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out), env={"MAPLE_REGISTRY": str(edited)})
    assert proc.returncode == 0 and _executed(out, again) == set()


def test_a_retrained_adapter_reruns_its_evaluations(grid_run):
    _, grid_file, out, cfg = grid_run
    marker = layout.completion_marker(out / layout.RUNS_DIR / config.run_id(cfg), "02_train")
    marker.unlink()  # as if the adapter had been trained again
    before = len(manifest.read(out))
    proc = run_cli("run", str(grid_file), "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert _executed(out, before) == {"02_train", "03_evaluate", "04_alpaca_eval", "05_judge", "06_analysis"}
