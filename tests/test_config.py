import sys

import pytest
import yaml
from pydantic import ValidationError

from conftest import REPO, run_cli
from maple_utils import config
from maple_utils.config import ConfigError, RunConfig, validate_run


def test_defaults_are_valid_and_strict():
    cfg = RunConfig()
    assert cfg.quant in (4, 8, 16)
    with pytest.raises(ValidationError):
        cfg.rank = 16  # frozen: an effective config cannot drift after its id is taken


@pytest.mark.parametrize(
    "values, needles",
    [
        ({"rnak": 8}, ["unknown key 'rnak'", "did you mean 'rank'"]),
        ({"rank": "eight"}, ["field 'rank'", "'eight'", "int"]),
        ({"rank": "8"}, ["field 'rank'", "'8'"]),  # papermill's -p can stringify; strict typing refuses it
        ({"quant": 3}, ["field 'quant'", "4", "8", "16"]),
        ({"languages": ["en", "xx"]}, ["unknown language 'xx'", "allowed:", "en"]),
        ({"languages": ["ejn"]}, ["did you mean 'en'"]),
        ({"tasks": ["xnil"]}, ["unknown task 'xnil'", "did you mean 'xnli'"]),
        ({"dataset": "multi-alpaca"}, ["unknown dataset 'multi-alpaca'", "did you mean 'multialpaca'"]),
        ({"model": "tiny-lama"}, ["unknown model 'tiny-lama'", "did you mean 'tiny-llama'"]),
        ({"target_modules": ("q_proj",)}, ["field 'target_modules'"]),  # tuples are not lists
        ({"tasks": ["xquad"], "languages": ["sw"]}, ["task xquad has none of languages ['sw']"]),
        ({"train_languages": ["en"]}, ["train_languages ['en'] are not in multialpaca"]),
        ({"data_source": "local", "data_root": "/nonexistent"}, ["data_root", "/nonexistent"]),
        ({"k_shot": {"xnli": -1}}, ["k_shot for xnli must be between 0 and 32, got -1"]),
        ({"k_shot": {"xnli": 1000}}, ["k_shot for xnli must be between 0 and 32, got 1000"]),
        ({"tasks": []}, ["field 'tasks'", "at least 1"]),
        ({"tasks": ["xnli", "xnli"]}, ["name a task twice"]),
        ({"languages": []}, ["field 'languages'", "at least 1"]),
        ({"train_languages": []}, ["empty list selects nothing"]),
        ({"target_modules": []}, ["field 'target_modules'", "at least 1"]),
        ({"target_modules": [""]}, ["empty name"]),
        ({"max_steps": -5}, ["field 'max_steps'", "greater than or equal to 1"]),
        ({"max_steps": 0}, ["field 'max_steps'"]),
        ({"learning_rate": 5.0}, ["field 'learning_rate'", "less than or equal to 1"]),
        (
            {"task_languages": {"belebele": ["id"]}},
            ["task_languages.belebele: ['id'] are not in languages ['en', 'zh']"],
        ),
        ({"task_languages": {"xnil": ["en"]}}, ["unknown task 'xnil'"]),
        ({"tasks": ["xnli"], "task_languages": {"xcopa": ["en"]}}, ["task_languages.xcopa: xcopa is not one of tasks"]),
        ({"task_languages": {"xnli": []}}, ["task_languages.xnli is empty"]),
    ],
)
def test_bad_values_name_the_field_and_what_is_allowed(values, needles):
    with pytest.raises(ConfigError) as err:
        validate_run(values, "test.yaml")
    message = str(err.value)
    assert message.startswith("test.yaml: invalid configuration")
    for needle in needles:
        assert needle in message, message


def test_hub_ids_and_local_folders_are_accepted_as_models(tmp_path):
    assert validate_run({"model": "Qwen/Qwen2-0.5B"}).model == "Qwen/Qwen2-0.5B"
    assert validate_run({"model": str(tmp_path)}).model == str(tmp_path)


def test_run_ids_are_pinned():
    # Literal ids: a change to the id scheme, to the fields it hashes or to their values renames every adapter,
    # so it must show here, never silently.
    assert config.run_id(RunConfig()) == "tiny-llama_multialpaca_r8_q4-3acc2b19"
    assert (
        config.run_id(
            validate_run({"model": "tiny-mistral", "dataset": "alpaca", "rank": 64, "quant": 16, "epochs": 3.0})
        )
        == "tiny-mistral_alpaca_r64_q16-1008ac9e"
    )
    assert config.run_id(validate_run({"dataset": None, "rank": None, "quant": 16})) == "tiny-llama_base_q16-fe0a6e5a"


def test_run_id_tracks_only_what_training_depends_on():
    rid = config.run_id(RunConfig())
    # how training runs (checkpoints, packing, recomputation) is not what it learns: same id
    assert (
        config.run_id(
            validate_run(
                {"checkpoint_every": 5, "keep_checkpoints": 1, "packing": "padded", "gradient_checkpointing": True}
            )
        )
        == rid
    )
    assert config.run_id(validate_run({"lr_scheduler": "cosine"})) != rid
    assert len(rid.rsplit("-", 1)[1]) == 8
    assert config.run_id(validate_run({"rank": 16})) != rid
    assert config.run_id(validate_run({"learning_rate": 1e-4})) != rid
    assert config.run_id(validate_run({"data_seed": 1})) != rid and config.run_id(validate_run({"seed": 1})) != rid
    # evaluation settings do not change the adapter's identity
    assert (
        config.run_id(
            validate_run({"limit": 2, "languages": ["en"], "fewshot_seed": 3, "alpaca_eval_max_new_tokens": 9})
        )
        == rid
    )


def test_stable_hash_ignores_key_order():
    from maple_utils.registry import stable_hash

    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) == "015abd7f"  # sha256 of the canonical JSON, first 8 hex digits


def test_a_relative_model_folder_is_read_from_the_project_root(tmp_path, monkeypatch):
    from maple_utils.models.resolve import resolve_model
    from maple_utils.paths import project_root

    folder = project_root() / ".cache" / "test-local-model"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        monkeypatch.chdir(tmp_path)  # notebooks run in notebooks/; the grid anywhere
        cfg = validate_run({"model": ".cache/test-local-model"})
        assert resolve_model(cfg.model) == str(folder)  # a folder, not a hub id to wait for
        with pytest.raises(ConfigError, match="read from the project root"):
            validate_run({"model": "no-such-folder"})
    finally:
        folder.rmdir()


def _grid(tmp_path, **changes):
    grid = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if section == "exclude":
            grid["exclude"] = grid["exclude"] if int(field) else []
            grid["exclude"].append(value)
        else:
            grid.setdefault(section, {})[field] = value
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.parametrize(
    "changes, needles",
    [
        ({"fixed__rnak": 8}, ["unknown key 'fixed.rnak'", "did you mean 'rank'"]),
        ({"axes__rank": ["eight"]}, ["field 'axes.rank'", "'eight'"]),
        ({"fixed__languages": ["en", "xx"]}, ["field 'fixed.languages'", "unknown language 'xx'"]),
        ({"fixed__tasks": ["xnli", "summarise"]}, ["unknown task 'summarise'", "allowed:"]),
        ({"fixed__tasks": []}, ["field 'fixed.tasks'", "at least 1"]),
        ({"fixed__rank": 8}, ["rank is both in 'fixed' and in 'axes'"]),
        ({"exclude__0": {"rank": 32}}, ["exclude[0].rank is 32, which is not a value of axes.rank", "matches nothing"]),
        (
            {"exclude__0": {"quant": 4}, "exclude__1": {"quant": 8}, "exclude__2": {"quant": 16}},
            ["the exclude rules remove every point"],
        ),
    ],
)
def test_bad_grid_files_exit_nonzero_with_a_short_message(tmp_path, changes, needles):
    path = _grid(tmp_path, **changes)
    proc = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_grid_typo_at_top_level(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("name: g\naxis: {rank: [8]}\n")
    proc = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert proc.returncode == 2 and "unknown key 'axis'" in proc.stderr and "did you mean 'axes'" in proc.stderr


def test_missing_grid_file_and_bad_yaml(tmp_path):
    proc = run_cli("run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path), "--dry-run")
    assert proc.returncode == 2 and "no such grid file" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    proc = run_cli("run", str(bad), "--out", str(tmp_path), "--dry-run")
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr and "Traceback" not in proc.stderr


def test_paper_grid_plan_has_120_adapters_and_122_evaluated_models_loading_nothing():
    code = (
        "import sys, json; from maple_utils.grid import planner, cli; "
        "p = planner.plan_grid('params/paper.yaml', 'runs/paper'); cli.describe(p); "
        "print(json.dumps({s: [j.key for j in p.jobs if j.stage.name == s] for s in "
        "('01_data', '02_train', '03_evaluate', '04_alpaca_eval', '05_judge', '06_analysis')})); "
        "print(json.dumps([m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'datasets') if m in sys.modules]))"
    )
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    jobs, heavy = (json.loads(line) for line in proc.stdout.splitlines()[-2:])
    assert heavy == []  # planning imports no torch, transformers, peft, bitsandbytes or datasets
    train, evaluate = jobs["02_train"], jobs["03_evaluate"]
    assert len(train) == len(set(train)) == 120 and len(evaluate) == len(set(evaluate)) == 122
    assert set(train) < set(evaluate) and sum("_base_q16-" in i for i in evaluate) == 2
    assert jobs["04_alpaca_eval"] == evaluate and len(jobs["01_data"]) == 4 and jobs["06_analysis"] == ["paper"]
    assert jobs["05_judge"] == evaluate
    assert not (REPO / "runs" / "paper").exists()


def test_languages_a_task_lacks_are_listed_by_the_dry_run(tmp_path):
    path = _grid(tmp_path, fixed__languages=["en", "ja"], fixed__tasks=["xnli", "xquad"])
    from maple_utils.grid import cli, planner

    plan = planner.plan_grid(path, tmp_path / "out")
    assert set(plan.not_evaluated.values().__iter__().__next__()) == {("xnli", "ja"), ("xquad", "ja")}
    lines = cli.describe(plan)
    assert "  xnli: ja" in lines and "  xquad: ja" in lines


def test_task_languages_narrow_one_task_and_leave_the_others(tmp_path):
    path = _grid(
        tmp_path,
        fixed__languages=["en", "id", "sw"],
        fixed__tasks=["xcopa", "belebele"],
        fixed__task_languages={"belebele": ["id"]},
    )
    from maple_utils.eval.evaluate import task_languages
    from maple_utils.grid import planner

    plan = planner.plan_grid(path, tmp_path / "out")
    assert not any(plan.not_evaluated.values())  # belebele-en and -sw are not asked for, so not missing
    for cfg in plan.adapters + plan.bases:
        assert task_languages(cfg)[0] == [("xcopa", "en"), ("xcopa", "id"), ("xcopa", "sw"), ("belebele", "id")]


def test_the_mini_grid_plans_six_adapters_and_two_base_models_from_the_local_files(tmp_path):
    if not (REPO.parent / "shared" / "data").is_dir():
        pytest.skip("../shared/data is absent")
    from maple_utils.grid import planner

    plan = planner.plan_grid(REPO / "params" / "mini.yaml", tmp_path / "out")
    assert len(plan.adapters) == 6 and len(plan.bases) == 2
    assert {(c.model, c.dataset, c.rank, c.quant) for c in plan.adapters if c.model == "smollm2-135m"} >= {
        ("smollm2-135m", "multialpaca", r, q) for r in (8, 64) for q in (4, 16)
    }
    text = (REPO / "params" / "mini.yaml").read_text()
    for key in ("learning_rate", "max_steps", "languages", "limit", "k_shot"):
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
        assert "#" in line or key == "languages", f"{key} has no comment giving its evidence"


def test_paper_grid_declares_every_choice_the_study_leaves_unstated():
    text = (REPO / "params" / "paper.yaml").read_text()
    fixed = yaml.safe_load(text)["fixed"]
    for key in (
        "lora_alpha",
        "lora_dropout",
        "target_modules",
        "learning_rate",
        "epochs",
        "batch_size",
        "max_length",
        "prompt_template",
    ):
        assert key in fixed
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
        assert "#" in line, f"{key} has no comment giving its evidence"
    assert len(fixed["languages"]) == 41


def test_a_notebook_run_dir_cannot_write_outside_the_output_folder(tmp_path):
    from maple_utils import runs

    out = tmp_path / "out"
    (out / "runs").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "runs" / "link").symlink_to(tmp_path / "elsewhere")
    params = {**RunConfig().model_dump(), "out_dir": str(out)}
    for run_dir in (
        str(tmp_path / "elsewhere"),
        str(out / "runs" / "x" / ".." / ".."),
        str(out / "runs"),
        str(out / "runs" / "link"),
    ):
        with pytest.raises(ConfigError, match="run_dir .* outside .*runs \\(allowed: a folder inside <out_dir>/runs"):
            runs.open_stage("02_train", {**params, "run_dir": run_dir})
    assert not any((tmp_path / "elsewhere").iterdir()) and not (out / "config.json").exists()
    inside = runs.open_stage("02_train", {**params, "run_dir": str(out / "runs" / "mine" / "x" / "..")})
    assert inside.folder == (out / "runs" / "mine").resolve()


def test_the_colab_config_is_one_paper_run_sized_for_a_t4():
    from maple_utils.grid import planner

    plan = planner.plan_grid(REPO / "params" / "colab_t4.yaml", "runs/colab_t4")
    paper = planner.plan_grid(REPO / "params" / "paper.yaml", "runs/paper")
    (run,) = plan.adapters
    assert (run.model, run.dataset, run.rank, run.quant) == ("meta-llama/Llama-2-7b-hf", "multialpaca", 8, 4)
    assert run.gradient_checkpointing and run.batch_size * run.grad_accum == 128 and run.checkpoint_every
    # the paper grid's run of the same axes, but for the micro-batch that fits a T4 (the same 128 per step)
    twin = next(c for c in paper.adapters if (c.model, c.dataset, c.rank, c.quant) == (run.model, run.dataset, 8, 4))
    from maple_utils.config.ids import train_fields

    differ = {f for f in train_fields() if getattr(run, f) != getattr(twin, f)}
    assert differ == {"batch_size", "grad_accum"}
    assert not (REPO / "runs" / "colab_t4").exists()


def test_offline_a_grid_whose_hub_models_and_data_are_not_cached_stops_before_any_job(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "run", "params/paper.yaml", "--out", str(out), env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    )
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    message = proc.stderr
    assert "offline (HF_HUB_OFFLINE is set)" in message and str(tmp_path / "hf") in message
    for repo in (
        "model meta-llama/Llama-2-7b-hf",
        "model mistralai/Mistral-7B-v0.1",
        "dataset MBZUAI/Bactrian-X",
        "dataset DAMO-NLP-MT/multialpaca",
        "dataset facebook/belebele",
    ):
        assert repo in message
    assert not (out / "manifest.jsonl").exists() and "Traceback" not in message


def test_offline_a_grid_whose_repos_are_all_cached_passes_the_check(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from maple_utils.grid import planner, preflight

    plan = planner.plan_grid(REPO / "params" / "paper.yaml", tmp_path / "out")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repos = preflight.hub_repos(plan.adapters, plan.adapters + plan.bases)
    for kind, repo in repos:  # the cache's own layout: <kind>s--<org>--<name>/snapshots/<revision>/
        (tmp_path / "hub" / f"{kind}s--{repo.replace('/', '--')}" / "snapshots" / "abc").mkdir(parents=True)
    assert preflight.check_offline(plan.adapters, plan.adapters + plan.bases) == len(repos) > 10
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert preflight.check_offline(plan.adapters, plan.adapters + plan.bases) == 0  # online: nothing to check


def test_a_grid_file_with_python_tags_is_refused_not_executed(tmp_path):
    marker = tmp_path / "ran"
    grid = tmp_path / "evil.yaml"
    grid.write_text(f"name: !!python/object/apply:os.system ['touch {marker}']\nfixed: {{}}\naxes: {{}}\n")
    proc = run_cli("run", str(grid), "--out", str(tmp_path / "out"), "--dry-run")
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()  # safe_load: no tag constructs a Python object


def test_a_grid_file_includes_another_and_states_only_what_differs(tmp_path):
    """A chain of includes: fixed and axes merge key by key (an axis replaces the included fixed value of its
    name), other keys replace, paths are relative to the including file; the effective grid is printed by the
    dry run and kept in the output folder, where it plans alone to the same configs."""
    from maple_utils.grid import cli, planner, runner

    (tmp_path / "base").mkdir()
    base = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    base["fixed"]["learning_rate"] = 1.0e-3
    (tmp_path / "base" / "smoke.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "middle.yaml").write_text("include: base/smoke.yaml\nname: middle\nfixed: {max_length: 96}\n")
    (tmp_path / "top.yaml").write_text(
        "include: middle.yaml\nname: top\nfixed: {rank: 16, lora_alpha: 8}\n"
        "axes: {learning_rate: [2.0e-4, 5.0e-4], quant: [4]}\nexclude: []\n"
    )
    plan = planner.plan_grid(tmp_path / "top.yaml", tmp_path / "out")
    assert plan.grid.name == "top" and plan.grid.exclude == [] and "rank" not in plan.grid.axes
    assert {(c.learning_rate, c.rank, c.quant, c.max_length, c.lora_alpha) for c in plan.adapters} == {
        (lr, 16, 4, 96, 8) for lr in (2.0e-4, 5.0e-4)
    }
    assert {c.dataset for c in plan.adapters} == set(base["axes"]["dataset"])  # the included axis, untouched
    lines = cli.describe(plan)
    start = lines.index(
        f"# the effective grid of {tmp_path / 'top.yaml'}, which includes {tmp_path / 'middle.yaml'} "
        f"<- {tmp_path / 'base' / 'smoke.yaml'}"
    )
    assert yaml.safe_load("\n".join(lines[start:]).split("\n\n")[0])["fixed"]["max_length"] == 96
    runner.prepare_out(plan)
    kept = planner.plan_grid(plan.out / "grid.yaml", tmp_path / "out")
    assert [c.model_dump() for c in kept.adapters + kept.bases] == [c.model_dump() for c in plan.adapters + plan.bases]


@pytest.mark.parametrize(
    "files, needles",
    [
        (
            {"a.yaml": "include: b.yaml\nname: a\n", "b.yaml": "include: a.yaml\nname: b\n"},
            ["include cycle", "a.yaml -> ", "b.yaml -> "],
        ),
        ({"a.yaml": "include: a.yaml\nname: a\n"}, ["include cycle"]),
        ({"a.yaml": "include: nowhere.yaml\nname: a\n"}, ["nowhere.yaml: no such grid file"]),
        ({"a.yaml": "include: [b.yaml, c.yaml]\nname: a\n"}, ["include should be the path of one grid file"]),
    ],
)
def test_bad_includes_are_refused_naming_the_files(tmp_path, files, needles):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = run_cli("run", str(tmp_path / "a.yaml"), "--out", str(tmp_path / "out"), "--dry-run")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_the_colab_grid_is_the_paper_grid_with_its_t4_differences():
    """params/colab_t4.yaml includes paper.yaml and states only values that differ from it; its one adapter is
    the paper grid's fixed values with those differences, the values the standalone file had before."""
    paper = yaml.safe_load((REPO / "params" / "paper.yaml").read_text())
    colab = yaml.safe_load((REPO / "params" / "colab_t4.yaml").read_text())
    assert colab["include"] == "paper.yaml"
    assert not {k for k, v in colab["fixed"].items() if paper["fixed"].get(k) == v}  # nothing repeated
    adapters, bases = config.expand(config.load_grid(REPO / "params" / "colab_t4.yaml"), "colab_t4")
    assert bases == [] and len(adapters) == 1
    point = {k: v[0] for k, v in colab["axes"].items()}
    assert adapters[0] == validate_run({**paper["fixed"], **colab["fixed"], **point}, "expected")
    got = adapters[0]
    assert (
        got.model,
        got.quant,
        got.rank,
        got.batch_size,
        got.grad_accum,
        got.max_length,
        got.eval_batch_size,
        got.checkpoint_every,
        got.learning_rate,
        got.limit,
        len(got.languages),
    ) == ("meta-llama/Llama-2-7b-hf", 4, 8, 2, 64, 768, 8, 10, 3.0e-4, None, 41)


def test_a_grid_file_means_what_it_says_in_yaml(tmp_path):
    """Duplicate keys and aliases are refused (PyYAML keeps the last key silently, and nested aliases expand
    to billions of nodes); 2e-4 is a number; .inf and .nan are refused by field name."""
    import time

    def load(text: str):
        path = tmp_path / "grid.yaml"
        path.write_text("name: t\n" + text)
        return config.expand(config.load_grid(path), str(path))

    with pytest.raises(ConfigError, match=r"line 4: key 'axes' given twice \(first on line 2\)"):
        load("axes: {model: [tiny-llama]}\nfixed: {rank: 4}\naxes: {model: [tiny-mistral]}\n")
    with pytest.raises(ConfigError, match=r"line 4: key 'rank' given twice \(first on line 3\)"):
        load("fixed:\n  rank: 4\n  rank: 8\naxes: {model: [tiny-llama]}\n")
    bomb = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 10))
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"line 3: an alias \(\*name\): a grid file takes none"):
        load("l0: &l0 [x]\n" + bomb)
    assert time.perf_counter() - started < 5  # refused as read, never expanded (9^9 nodes)
    adapters, _ = load("fixed: {learning_rate: 2e-4, max_steps: 1}\naxes: {model: [tiny-llama]}\n")
    assert adapters[0].learning_rate == 2e-4
    for field, value in (("max_grad_norm", ".inf"), ("learning_rate", ".nan"), ("lora_dropout", "-.inf")):
        with pytest.raises(ConfigError, match=rf"field 'fixed.{field}': Input should be a finite number"):
            load(f"fixed: {{{field}: {value}}}\naxes: {{model: [tiny-llama]}}\n")
    with pytest.raises(ConfigError) as long_value:
        load("fixed: {rank: [" + ", ".join(map(str, range(100_000))) + "]}\naxes: {model: [tiny-llama]}\n")
    assert len(str(long_value.value)) < 400  # a bounded sample of the value, not all of it


def test_an_output_folder_inside_the_sources_is_refused_before_anything_is_written():
    notebooks = sorted((REPO / "notebooks").iterdir())
    before = {p: p.read_bytes() for p in notebooks}
    for out, says in (
        ("notebooks", "is the source folder"),
        ("maple_utils/registry", "lies inside the source folder"),
        (".", "is the checkout itself"),
    ):
        proc = run_cli("run", "params/smoke.yaml", "--out", out)
        assert proc.returncode != 0 and says in proc.stderr and "choose one outside the sources" in proc.stderr
    assert sorted((REPO / "notebooks").iterdir()) == notebooks
    assert {p: p.read_bytes() for p in notebooks} == before
    assert not (REPO / "manifest.jsonl").exists() and not (REPO / "maple_utils" / "registry" / "grid.yaml").exists()
