import sys

import pytest
import yaml

from maple_utils import config
from maple_utils.config import ConfigError, RunConfig, validate_run

from conftest import REPO, run_cli


def test_defaults_are_valid_and_strict():
    cfg = RunConfig()
    assert cfg.quant in (4, 8, 16)
    with pytest.raises(Exception):
        cfg.rank = 16  # frozen: an effective config cannot drift after its id is taken


@pytest.mark.parametrize("values, needles", [
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
    ({"k_shot": {"xnli": -1}}, ["k_shot for xnli must be >= 0"]),
])
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


def test_run_id_is_stable_short_and_tracks_only_what_the_stage_depends_on():
    cfg = RunConfig()
    rid = config.run_id(cfg)
    # A golden value: the id must not change across machines, sessions or Python versions.
    assert rid == "tiny-llama_multialpaca_r8_q4-" + config.stable_hash(cfg.subset(config.TRAIN_FIELDS))
    assert rid == config.run_id(validate_run({}))
    assert len(rid.rsplit("-", 1)[1]) == 8
    assert config.run_id(validate_run({"rank": 16})) != rid
    assert config.run_id(validate_run({"learning_rate": 1e-4})) != rid
    # evaluation settings do not change the adapter's identity
    assert config.run_id(validate_run({"limit": 2, "languages": ["en"]})) == rid
    base = validate_run({"dataset": None, "rank": None, "quant": 16})
    assert config.run_id(base).startswith("tiny-llama_base_q16-")


def test_stable_hash_ignores_key_order():
    assert config.stable_hash({"a": 1, "b": [1, 2]}) == config.stable_hash({"b": [1, 2], "a": 1})
    assert config.stable_hash({"a": 1}) == "015abd7f"  # sha256 of the canonical JSON, first 8 hex digits


def _grid(tmp_path, **changes):
    grid = yaml.safe_load((REPO / "params" / "smoke.yaml").read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        grid.setdefault(section, {})[field] = value
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


@pytest.mark.parametrize("changes, needles", [
    ({"fixed__rnak": 8}, ["unknown key 'fixed.rnak'", "did you mean 'rank'"]),
    ({"axes__rank": ["eight"]}, ["field 'axes.rank'", "'eight'"]),
    ({"fixed__languages": ["en", "xx"]}, ["field 'fixed.languages'", "unknown language 'xx'"]),
    ({"fixed__tasks": ["xnli", "summarise"]}, ["unknown task 'summarise'", "allowed:"]),
])
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


def test_paper_grid_dry_run_lists_120_training_and_122_evaluation_runs_loading_nothing():
    code = ("import sys; from maple_utils import grid, analysis, languages; "
            "grid.main(['run', 'params/paper.yaml', '--out', 'runs/paper', '--dry-run']); "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    import subprocess

    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "120 training runs, 122 evaluation runs (120 adapters + 2 base models)" in out
    sections = {}
    for block in out.split("\n\n")[1:]:
        head, *ids = block.strip().splitlines()
        sections[head.split(":")[0]] = [i.strip() for i in ids if not i.startswith("HEAVY")]
    train, evaluate = sections["training runs (adapters)"], sections["evaluation runs (03_evaluate, then 04_alpaca_eval)"]
    assert len(train) == len(set(train)) == 120 and len(evaluate) == len(set(evaluate)) == 122
    assert set(train) < set(evaluate) and sum("_base_q16-" in i for i in evaluate) == 2
    assert len(sections["datasets to prepare"]) == 4
    assert "HEAVY []" in out
    assert not (REPO / "runs" / "paper").exists()


def test_paper_grid_declares_every_choice_the_study_leaves_unstated():
    text = (REPO / "params" / "paper.yaml").read_text()
    fixed = yaml.safe_load(text)["fixed"]
    for key in ("lora_alpha", "lora_dropout", "target_modules", "learning_rate", "epochs", "batch_size",
                "max_length", "prompt_template"):
        assert key in fixed
        line = next(line for line in text.splitlines() if line.strip().startswith(f"{key}:"))
        assert "#" in line, f"{key} has no comment giving its evidence"
    assert len(fixed["languages"]) == 41


def test_hub_data_without_the_datasets_package_stops_before_anything_runs(tmp_path):
    from maple_utils import hub

    if hub.available():
        pytest.skip("the `datasets` package is installed here; the paper grid would start for real")
    proc = run_cli("run", "params/paper.yaml", "--out", str(tmp_path / "paper"))
    assert proc.returncode == 2
    assert "needs the `datasets` package: pip install -e '.[hub]'" in proc.stderr
    assert not (tmp_path / "paper").exists()
