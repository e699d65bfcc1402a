"""Edits a researcher makes to the inputs of a finished grid: a release file corrected, a model folder saved
again. Each reruns exactly the jobs that read it and what depends on them (planned here, without papermill:
tests/test_reruns.py runs the notebooks); a model folder that cannot be loaded stops the grid before any kernel."""

import json
import shutil

import pytest
import yaml

from conftest import run_cli
from maple_utils.grid import planner

DATA = (
    "alpaca/alpaca_5000.json",
    "xcopa/copa_en/val-en.jsonl",
    "xcopa/copa_en/train-en.jsonl",
    "alpaca_eval/results/text_davinci_003/model_outputs.json",
)


@pytest.fixture()
def local_grid(tmp_path, shared_data, tiny_built):
    """A grid on copies of real release files and of the tiny Llama's folder, which the test may edit."""
    root = tmp_path / "data"
    for part in DATA:
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / part, root / part)
    model = tmp_path / "tiny-llama-folder"
    shutil.copytree(tiny_built["tiny-llama"], model)
    grid = {
        "name": "edits",
        "fixed": {
            "max_steps": 1,
            "tasks": ["xcopa"],
            "languages": ["en"],
            "limit": 2,
            "alpaca_eval_limit": 2,
            "max_train_examples": 8,
            "data_source": "local",
            "data_root": str(root),
            "judge": "local",
            "judge_model": str(model),
        },
        "axes": {"model": [str(model)], "dataset": ["alpaca"], "rank": [4], "quant": [16]},
        "evaluate_base_models": True,
    }
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(grid))
    return grid_file, tmp_path / "out", root, model


def _run_as_the_scheduler_would(grid_file, out) -> set[str]:
    """Plan the grid and complete every job that is not complete, in stage order, as the scheduler does
    (a redone job's fresh token makes its dependants redo too); the ids of the jobs redone."""
    plan = planner.plan_grid(grid_file, out)
    tokens, redone = {}, set()
    for job in plan.jobs:
        if job.is_done(tokens):
            tokens[job.id] = job.completion()["token"]
        else:
            job.folder.mkdir(parents=True, exist_ok=True)
            tokens[job.id] = job.mark_done(tokens)
            redone.add(job.id.split(":")[0] + (":base" if "_base_" in job.key else ""))
    return redone


def _append_to_last_record(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[-1])
    record["premise"] += " (corrected)"
    lines[-1] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_an_edited_release_file_or_model_folder_reruns_exactly_the_jobs_that_read_it(local_grid):
    grid_file, out, root, model = local_grid
    everything = _run_as_the_scheduler_would(grid_file, out)
    assert len(everything) == 9  # 01, 02, 03-05 of the adapter and of the base, 06
    assert _run_as_the_scheduler_would(grid_file, out) == set()

    # the same bytes, written again: a new mtime, the same content, nothing to redo
    task_file = root / "xcopa/copa_en/val-en.jsonl"
    task_file.write_bytes(task_file.read_bytes())
    assert _run_as_the_scheduler_would(grid_file, out) == set()

    _append_to_last_record(task_file)  # a corrected evaluation item: both evaluations, nothing else
    assert _run_as_the_scheduler_would(grid_file, out) == {"03_evaluate", "03_evaluate:base"}

    exemplars = root / "xcopa/copa_en/train-en.jsonl"  # the few-shot pool is read by the evaluation too
    _append_to_last_record(exemplars)
    assert _run_as_the_scheduler_would(grid_file, out) == {"03_evaluate", "03_evaluate:base"}

    references = root / "alpaca_eval/results/text_davinci_003/model_outputs.json"
    items = json.loads(references.read_text(encoding="utf-8"))
    items[0]["output"] += " "
    references.write_text(json.dumps(items), encoding="utf-8")
    assert _run_as_the_scheduler_would(grid_file, out) == {
        "04_alpaca_eval",
        "04_alpaca_eval:base",
        "05_judge",
        "05_judge:base",
    }

    instructions = root / "alpaca/alpaca_5000.json"
    records = json.loads(instructions.read_text(encoding="utf-8"))
    records[0]["output"] += " (corrected)"
    instructions.write_text(json.dumps(records), encoding="utf-8")
    # the data set is prepared again, so the adapter is retrained and evaluated again; the base model stays
    assert _run_as_the_scheduler_would(grid_file, out) == {
        "01_data",
        "02_train",
        "03_evaluate",
        "04_alpaca_eval",
        "05_judge",
    }

    generation = json.loads((model / "generation_config.json").read_text())
    (model / "generation_config.json").write_text(json.dumps({**generation, "temperature": 0.5}))
    # the model folder is also the local judge: every stage that loads it, for the adapter and the base
    assert _run_as_the_scheduler_would(grid_file, out) == {
        "02_train",
        "03_evaluate",
        "03_evaluate:base",
        "04_alpaca_eval",
        "04_alpaca_eval:base",
        "05_judge",
        "05_judge:base",
    }
    assert _run_as_the_scheduler_would(grid_file, out) == set()


def test_an_edited_task_prompt_reruns_only_the_evaluations(local_grid, tmp_path, monkeypatch):
    from maple_utils import registry

    grid_file, out, _, _ = local_grid
    _run_as_the_scheduler_would(grid_file, out)
    text = (registry.PACKAGED / "tasks.yaml").read_text(encoding="utf-8")
    assert text.count("Help me pick the more plausible option:") == 1
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "tasks.yaml").write_text(text.replace("more plausible option:", "likelier option:"))
    monkeypatch.setenv("MAPLE_REGISTRY", str(tmp_path / "registry"))
    # and the analysis, which reads every task's entry (its tables name them)
    assert _run_as_the_scheduler_would(grid_file, out) == {"03_evaluate", "03_evaluate:base", "06_analysis"}


def _mark(grid_file, out, stage: str):
    """Complete the first job of a stage again (its marker records the outputs there now)."""
    plan = planner.plan_grid(grid_file, out)
    tokens = {j.id: j.completion()["token"] for j in plan.jobs}
    job = plan.jobs_of(stage)[0]
    job.mark_done(tokens)
    return job


def test_outputs_that_went_missing_or_were_cut_are_redone_with_what_depends_on_them(local_grid):
    grid_file, out, _, _ = local_grid
    _run_as_the_scheduler_would(grid_file, out)  # completes every job; no outputs exist yet
    plan = planner.plan_grid(grid_file, out)
    adapter = plan.jobs_of("02_train")[0].folder / "adapter" / "adapter_model.safetensors"
    adapter.parent.mkdir(parents=True)
    adapter.write_bytes(b"\0" * 4096)
    train = _mark(grid_file, out, "02_train")
    assert json.loads(train.marker.read_text())["outputs"]["adapter/adapter_model.safetensors"][0] == 4096
    _run_as_the_scheduler_would(grid_file, out)  # its dependants follow its new token
    assert train.damaged_output() is None and _run_as_the_scheduler_would(grid_file, out) == set()

    with open(adapter, "r+b") as f:  # cut short, as by a full disk
        f.truncate(1000)
    assert train.damaged_output() == f"{adapter} is 1,000 bytes, 4,096 when the job completed"
    assert _run_as_the_scheduler_would(grid_file, out) == {"02_train", "03_evaluate", "04_alpaca_eval", "05_judge"}

    predictions = plan.jobs_of("03_evaluate")[0].folder / "predictions" / "xcopa-en.jsonl"
    predictions.parent.mkdir(parents=True)
    predictions.write_text('{"id": 1}\n')
    evaluate = _mark(grid_file, out, "03_evaluate")
    predictions.write_text('{"id": 2}\n')  # the same size, another hash
    assert evaluate.damaged_output() == f"{predictions} has changed since the job completed"
    predictions.unlink()
    assert evaluate.damaged_output() == f"{predictions} is missing"
    assert _run_as_the_scheduler_would(grid_file, out) == {"03_evaluate"}  # the adapter's; nothing follows it


@pytest.mark.parametrize(
    "damage, named",
    [
        (lambda m: (m / "tokenizer.json").unlink(), "no tokenizer (one of tokenizer.json"),
        (
            lambda m: (m / "model.safetensors").rename(m / "model-q4_k_m.gguf"),
            "no weights as safetensors (it holds model-q4_k_m.gguf",
        ),
        (lambda m: (m / "model.safetensors").rename(m / "pytorch_model.bin"), "it holds pytorch_model.bin"),
        (lambda m: (m / "config.json").unlink(), "no config.json"),
    ],
    ids=["no-tokenizer", "gguf-only", "bin-only", "no-config"],
)
def test_a_model_folder_that_cannot_be_loaded_stops_the_grid_before_any_kernel(local_grid, damage, named):
    grid_file, out, _, model = local_grid
    damage(model)
    proc = run_cli("run", str(grid_file), "--out", str(out))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"preflight: model folder {model} has" in proc.stderr and named in proc.stderr
    assert not out.exists()  # nothing ran, nothing was written


def test_a_folder_refuses_another_grid_unless_told_the_change_is_meant(local_grid):
    from maple_utils import layout
    from maple_utils.grid import runner

    grid_file, out, _, _ = local_grid
    runner.prepare_out(planner.plan_grid(grid_file, out))  # what a run writes before its first job
    made = {p.relative_to(out) for p in out.rglob("*")}
    other = grid_file.with_name("other.yaml")
    grid = yaml.safe_load(grid_file.read_text())
    grid["axes"]["rank"] = [4, 8]
    grid["fixed"]["limit"] = 3
    other.write_text(yaml.safe_dump(grid))
    for command in ("status", "retry", "report", "run"):
        proc = run_cli(command, str(other), "--out", str(out))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"output folder {out} was made by another grid than {other}" in proc.stderr
        assert "only in the grid file: tiny-llama-folder_alpaca_r8_q16-" in proc.stderr
        assert "limit: 2 -> 3" in proc.stderr and "--grid-changed" in proc.stderr
        assert {p.relative_to(out) for p in out.rglob("*")} == made  # nothing written
    proc = run_cli("status", str(other), "--out", str(out), "--grid-changed")
    assert proc.returncode == 0 and "limit: 2 -> 3" in proc.stdout and "pending" in proc.stdout
    assert run_cli("status", str(grid_file), "--out", str(out)).returncode == 0  # its own grid, as before

    kept = (out / layout.GRID_FILE).read_text()
    proc = run_cli("report", str(other), "--out", str(out), "--grid-changed")
    assert "the grid differs from the one that made" in proc.stdout and "limit: 2 -> 3" in proc.stdout
    # nothing was evaluated yet, so the analysis has no rows to report; no job was run or marked blocked
    assert proc.returncode == 1 and "no evaluation rows" in proc.stdout and "blocked" not in proc.stdout
    assert yaml.safe_load((out / layout.GRID_FILE).read_text())["axes"]["rank"] == [4, 8]
    (history,) = (out / layout.GRID_HISTORY).iterdir()
    assert (history / layout.GRID_FILE).read_text() == kept  # the folder's earlier grid, kept
    assert run_cli("status", str(other), "--out", str(out)).returncode == 0  # the folder's grid now
    assert run_cli("status", str(grid_file), "--out", str(out)).returncode == 2
