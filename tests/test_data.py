import json

import pytest

from maple_utils import alpaca_eval, instruct_data
from maple_utils.tasks import load_docs, load_task, local_path


@pytest.mark.parametrize("task, code, split, count", [
    ("xquad", "th", "validation", 1190),
    ("xquad", "zh", "validation", 1190),
    ("mlqa", "hi", "validation", 507),
    ("mlqa", "en", "validation", 1148),
    ("xcopa", "qu", "test", 500),
    ("xcopa", "en", "validation", 100),  # English COPA
    ("xnli", "sw", "validation", 2490),
])
def test_release_files_load_in_hub_schema(shared_data, task, code, split, count):
    spec = load_task(task)
    docs = load_docs(spec, code, split, source="local", root=str(shared_data))
    assert len(docs) == count
    assert spec.render(docs[0])
    if spec.scoring == "loglikelihood":
        assert {spec.label(d) for d in docs} == set(range(len(spec.choices)))
    else:
        assert all(spec.answers(d) for d in docs)


def test_xnli_tsv_labels_map_to_hub_ids(shared_data):
    docs = load_docs(load_task("xnli"), "en", "validation", "local", str(shared_data))
    first = (shared_data / "xnli/xtreme_format/dev-en.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert first.endswith("neutral") and docs[0]["label"] == 1


def test_missing_local_split_is_named(shared_data):
    with pytest.raises(FileNotFoundError, match="no local release layout for split 'test'.*validation"):
        local_path(load_task("xnli"), "en", "test", shared_data)


def test_instruction_releases_load_and_validate(shared_data, caplog):
    alpaca = instruct_data.load_records("alpaca", None, "local", str(shared_data))
    # the sample has two records with an empty output (rows 2336 and 4659): dropped, and said so
    assert len(alpaca) == 4998 and alpaca[0]["language"] == "en"
    assert "dropped 2 record(s)" in caplog.text
    multi = instruct_data.load_records("multialpaca", ["es", "ja", "pt"], "local", str(shared_data))
    assert len(multi) == 9958 + 10191 + 10825 - 1  # one ja record has an empty field
    assert "ja.jsonl: dropped 1 record(s)" in caplog.text
    assert all(isinstance(r["input"], str) for r in multi)  # null inputs become ""
    matched = instruct_data.size_match(multi, 300, seed=1)
    assert len(matched) == 300 and {r["language"] for r in matched} == {"es", "ja", "pt"}
    assert matched == instruct_data.size_match(multi, 300, seed=1)


def test_bad_records_are_all_reported_with_file_and_row(tmp_path):
    folder = tmp_path / "multialpaca" / "multialpaca"
    folder.mkdir(parents=True)
    rows = [{"instruction": "ok", "input": None, "output": "fine"}, {"instruction": "", "output": "x"},
            {"instruction": "x", "input": 3, "output": None}, {"instruction": 5, "output": "x"}]
    (folder / "es.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(instruct_data.DataError) as err:
        instruct_data.load_records("multialpaca", ["es"], "local", str(tmp_path))
    message = str(err.value)
    assert "3 invalid records" in message
    assert "es.jsonl row 4: field 'instruction'" in message
    assert "row 3: field 'output'" in message and "row 3: field 'input'" in message


def test_alpaca_eval_reference_outputs(shared_data):
    records = alpaca_eval.load_eval_set("local", str(shared_data))
    assert len(records) == 805 and records[0]["generator"] == "text_davinci_003"
    assert len(alpaca_eval.load_eval_set("local", str(shared_data), limit=5)) == 5


def test_prompt_templates():
    with_input = instruct_data.format_prompt("alpaca", "Translate.", "Hola")
    assert "### Input:\nHola" in with_input and with_input.endswith("### Response:\n")
    assert "### Input" not in instruct_data.format_prompt("alpaca", "Say hi.", "")
    assert instruct_data.format_prompt("bactrian", "Q", None) == "### Input:\nQ\n\n### Output:\n"



def test_exemplars_from_the_evaluated_split_are_not_scored(tiny_built):
    from maple_utils import config, evaluation, modeling

    cfg = config.validate_run({"tasks": ["mlqa"], "languages": ["de"], "k_shot": {"mlqa": 3}, "max_new_tokens": 2})
    docs = load_docs(load_task("mlqa"), "de", "validation")
    shots = evaluation.pick_fewshot(docs, 3, cfg.seed)
    model, tok = modeling.load_base("tiny-llama", 16), modeling.load_tokenizer("tiny-llama")
    items, used = evaluation.evaluate_pair(model, tok, cfg, "mlqa", "de")
    assert used["k_shot"] == 3 and len(items) == len(docs) - 3
    assert not {s["id"] for s in shots} & {it["id"] for it in items}


def test_a_relative_data_root_means_the_same_folder_from_any_working_directory(shared_data, tmp_path, monkeypatch):
    # Notebooks run with notebooks/ as their working folder; config validation and every loader must
    # read a relative data_root from the repo root alike.
    import os

    from maple_utils import config
    from maple_utils.paths import REPO_ROOT

    relative = os.path.relpath(shared_data, REPO_ROOT)
    monkeypatch.chdir(tmp_path)
    cfg = config.validate_run({"data_source": "local", "data_root": relative, "dataset": "alpaca"})
    assert len(load_docs(load_task("xquad"), "ro", "validation", "local", cfg.data_root)) == 1190
    assert len(instruct_data.load_records("alpaca", None, "local", cfg.data_root)) == 4998
    assert len(alpaca_eval.load_eval_set("local", cfg.data_root)) == 805
