"""Loaders on the real release files of ../shared/data, file formats and their errors, instruction data."""

import gzip
import json

import pytest

from maple_utils import config
from maple_utils.data import formats, sources
from maple_utils.data import instruct as instruct_data
from maple_utils.eval import alpaca
from maple_utils.eval.tasks import load_docs, load_task
from maple_utils.io import DataFileError


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
    docs, origin = load_docs(spec, code, split, source="local", root=str(shared_data))
    assert len(docs) == count
    assert origin.source == "local" and origin.revision.startswith("sha256:") and origin.location.startswith(str(shared_data))
    assert spec.render(docs[0])
    if spec.scoring == "loglikelihood":
        assert {spec.label(d) for d in docs} == set(range(len(spec.choices)))
    else:
        assert all(spec.answers(d) for d in docs)


def _release_files(shared_data):
    """(task, language, split) of every release file of ../shared/data that a task's local layout names."""
    from maple_utils.data import languages as lang_table

    found = []
    for task in ("xnli", "xcopa", "belebele", "xquad", "mlqa", "xlsum"):
        spec = load_task(task)
        for code in spec.languages():
            config = lang_table.table()[code].config_for(spec.language_column)
            for split in ("train", "validation", "test"):
                try:
                    path = sources.local_path(task, spec.entry, str(shared_data), split, config=config, code=code)
                except sources.MissingDataError:
                    continue
                if path.is_file():
                    found.append((task, code, split))
    return found


def test_every_release_file_loads_renders_and_scores_its_gold(shared_data):
    """Every file in ../shared/data that a task reads: it loads in the hub schema, every item renders to a
    prompt, and its gold answer scores 1 on every metric of the task."""
    from maple_utils.eval import metrics

    files = _release_files(shared_data)
    by_task = {t: sum(1 for f in files if f[0] == t) for t in ("xnli", "xcopa", "belebele", "xquad", "mlqa")}
    # XTREME's 14 XNLI dev files; XCOPA's 11 languages x val/test + COPA's train/val; Belebele id/th/vi; 12 XQuAD; 7 MLQA dev
    assert by_task == {"xnli": 14, "xcopa": 24, "belebele": 3, "xquad": 12, "mlqa": 7}
    for task, code, split in files:
        spec = load_task(task)
        docs, _ = load_docs(spec, code, split, "local", str(shared_data))
        assert docs and all(spec.render(d) for d in docs), (task, code, split)
        for doc in docs:
            if spec.scoring == "loglikelihood":
                gold = spec.choices[spec.label(doc)].strip()
                parser = spec.generative["parser"]
                assert metrics.classification_scores(parser, gold, gold, [c.strip() for c in spec.choices]) == \
                    {"acc_megaverse": 1.0, "acc_strict": 1.0}, (task, code, split)
            else:
                golds = spec.answers(doc)
                assert metrics.score_generation(spec.metrics, golds[0], golds, code) == \
                    {m: 1.0 for m in spec.metrics}, (task, code, split, doc.get("id"))


def test_xnli_tsv_labels_map_to_hub_ids(shared_data):
    docs, _ = load_docs(load_task("xnli"), "en", "validation", "local", str(shared_data))
    first = (shared_data / "xnli/xtreme_format/dev-en.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert first.endswith("neutral") and docs[0]["label"] == 1


def test_missing_local_split_and_file_are_named(shared_data):
    with pytest.raises(sources.MissingDataError, match="xnli, en: missing local file .*XNLI-1.0/xnli.test.tsv; "
                                                       "the local files have split validation: .*split_overrides"):
        load_docs(load_task("xnli"), "en", "test", "local", str(shared_data))
    with pytest.raises(sources.MissingDataError, match="no local release layout for split 'train' .local files have: test, validation"):
        load_docs(load_task("xnli"), "en", "train", "local", str(shared_data))
    with pytest.raises(sources.MissingDataError, match=r"xquad, xquad\.hi: missing local file .*xquad\.hi\.json"):
        load_docs(load_task("xquad"), "hi", "validation", "local", str(shared_data / "xcopa"))


def test_evaluation_inputs_are_checked_before_any_model_loads(shared_data, tmp_path):
    cfg = config.validate_run({"data_source": "local", "data_root": str(shared_data), "tasks": ["xquad", "belebele"],
                               "languages": ["th", "en"]})
    from maple_utils.eval import evaluate

    with pytest.raises(sources.MissingDataError, match=r"belebele, eng_Latn: missing local file .*eng_Latn\.jsonl"):
        evaluate.check_inputs(cfg)
    ok = config.validate_run({"data_source": "local", "data_root": str(shared_data), "tasks": ["xquad", "belebele"],
                              "languages": ["th"]})
    assert set(evaluate.check_inputs(ok)) == {"xquad-th", "belebele-th"}


def test_a_damaged_task_file_is_named_with_its_row_before_any_model_loads(shared_data, tmp_path):
    """A copy of the data folder whose Thai Belebele file has one bad line: check_inputs names file and line."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(shared_data / "belebele", root / "belebele")
    path = root / "belebele" / "tha_Thai.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[6] = lines[6][:40]  # a line cut short, as a full disk leaves it
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    from maple_utils.eval import evaluate

    cfg = config.validate_run({"data_source": "local", "data_root": str(root), "tasks": ["belebele"], "languages": ["th"]})
    with pytest.raises(DataFileError, match=r"tha_Thai\.jsonl: line 7: not valid JSON"):
        evaluate.check_inputs(cfg)


@pytest.mark.parametrize("content, fmt, needle", [
    (b"", "jsonl", None),  # an empty JSONL file holds no rows
    (b'{"a": 1}\n{"a": 2\n{"a": 3}\n', "jsonl", "line 2: not valid JSON"),
    (b'[{"a": 1}, {"a":', "json", "line 1, column"),
    (b"", "json", "the file is empty"),
    ('{"a": "caf\xe9"}\n'.encode("latin-1"), "jsonl", "line 1: not UTF-8 text"),
    (b'{"a": 1}\n[1, 2]\n', "jsonl", "line 2: expected a JSON object"),
    (b'{"version": "1.1"}', "squad_json", "expected SQuAD layout"),
    (b"a\tb\tmaybe\r\n", "xnli_tsv", "row 1: expected premise<TAB>hypothesis<TAB>label"),
])
def test_damaged_files_are_named_with_their_row(tmp_path, content, fmt, needle):
    path = tmp_path / f"file.{fmt}"
    path.write_bytes(content)
    if needle is None:
        assert formats.read(path, fmt) == []
        return
    with pytest.raises(DataFileError) as err:
        formats.read(path, fmt)
    assert str(path) in str(err.value) and needle in str(err.value), str(err.value)


def test_gzipped_json_arrays_read_like_the_bactrian_x_release(tmp_path):
    path = tmp_path / "de.json.gz"
    path.write_bytes(gzip.compress(json.dumps([{"instruction": "Hallo", "input": "", "id": "alpaca-1",
                                                 "output": "Welt"}]).encode()))
    assert formats.read(path, "json")[0]["id"] == "alpaca-1"
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(DataFileError, match="bad.json.gz: not a readable gzip file"):
        formats.read(tmp_path / "bad.json.gz", "json")


def test_instruction_releases_load_and_validate(shared_data, caplog):
    alpaca_records, origins = instruct_data.load_records("alpaca", None, "local", str(shared_data))
    # the sample has two records with an empty output (rows 2336 and 4659): dropped, and said so
    assert len(alpaca_records) == 4998 and alpaca_records[0]["language"] == "en"
    assert origins[0]["location"].endswith("alpaca/alpaca_5000.json") and origins[0]["revision"]
    assert "dropped 2 record(s)" in caplog.text
    multi, _ = instruct_data.load_records("multialpaca", ["es", "ja", "pt"], "local", str(shared_data))
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
    cfg = config.validate_run({"data_source": "local", "data_root": str(shared_data)})
    records, origin = alpaca.load_eval_set(cfg)
    assert len(records) == 805 and records[0]["generator"] == "text_davinci_003"
    assert origin.location.endswith("text_davinci_003/model_outputs.json")
    limited, _ = alpaca.load_eval_set(cfg.model_copy(update={"alpaca_eval_limit": 5}))
    assert len(limited) == 5


def test_prompt_templates():
    with_input = instruct_data.format_prompt("alpaca", "Translate.", "Hola")
    assert "### Input:\nHola" in with_input and with_input.endswith("### Response:\n")
    assert "### Input" not in instruct_data.format_prompt("alpaca", "Say hi.", "")
    assert instruct_data.format_prompt("bactrian", "Q", None) == "### Input:\nQ\n\n### Output:\n"


def test_exemplars_from_the_evaluated_split_are_not_scored(tiny_built):
    from maple_utils.eval import evaluate
    from maple_utils.eval.tasks import pick_fewshot
    from maple_utils.train import modeling

    cfg = config.validate_run({"tasks": ["mlqa"], "languages": ["de"], "k_shot": {"mlqa": 3}, "max_new_tokens": 2,
                               "fewshot_seed": 7})
    docs, _ = load_docs(load_task("mlqa"), "de", "validation")
    shots = pick_fewshot(docs, 3, cfg.fewshot_seed)
    model, tok = modeling.load_base("tiny-llama", 16), modeling.load_tokenizer("tiny-llama")
    items, used = evaluate.evaluate_pair(model, tok, cfg, "mlqa", "de")
    assert used["k_shot"] == 3 and len(items) == len(docs) - 3
    assert not {s["id"] for s in shots} & {it["id"] for it in items}


def test_a_relative_data_root_means_the_same_folder_from_any_working_directory(shared_data, tmp_path, monkeypatch):
    # Notebooks run with notebooks/ as their working folder; config validation and every loader must
    # read a relative data_root from the project root alike.
    import os

    from maple_utils.paths import project_root

    relative = os.path.relpath(shared_data, project_root())
    monkeypatch.chdir(tmp_path)
    cfg = config.validate_run({"data_source": "local", "data_root": relative, "dataset": "alpaca"})
    assert len(load_docs(load_task("xquad"), "ro", "validation", "local", cfg.data_root)[0]) == 1190
    assert len(instruct_data.load_records("alpaca", None, "local", cfg.data_root)[0]) == 4998
    assert len(alpaca.load_eval_set(cfg)[0]) == 805
