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


@pytest.mark.parametrize(
    "task, code, split, count",
    [
        ("xquad", "th", "validation", 1190),
        ("xquad", "zh", "validation", 1190),
        ("mlqa", "hi", "validation", 507),
        ("mlqa", "en", "validation", 1148),
        ("xcopa", "qu", "test", 500),
        ("xcopa", "en", "validation", 100),  # English COPA
        ("xnli", "sw", "validation", 2490),
    ],
)
def test_release_files_load_in_hub_schema(shared_data, task, code, split, count):
    spec = load_task(task)
    docs, origin = load_docs(spec, code, split, source="local", root=str(shared_data))
    assert len(docs) == count
    assert (
        origin.source == "local"
        and origin.revision.startswith("sha256:")
        and origin.location.startswith(str(shared_data))
    )
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
                assert metrics.classification_scores(parser, gold, gold, [c.strip() for c in spec.choices]) == {
                    "acc_megaverse": 1.0,
                    "acc_strict": 1.0,
                }, (task, code, split)
            else:
                golds = spec.answers(doc)  # the official forms (MEGAVERSE's need not give a gold full marks)
                official = [m for m in spec.metrics if not m.endswith("_megaverse")]
                assert metrics.score_generation(official, golds[0], golds, code) == {m: 1.0 for m in official}, (
                    task,
                    code,
                    split,
                    doc.get("id"),
                )


def test_xnli_tsv_labels_map_to_hub_ids(shared_data):
    docs, _ = load_docs(load_task("xnli"), "en", "validation", "local", str(shared_data))
    first = (shared_data / "xnli/xtreme_format/dev-en.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert first.endswith("neutral") and docs[0]["label"] == 1


def test_missing_local_split_and_file_are_named(shared_data):
    with pytest.raises(
        sources.MissingDataError,
        match="xnli, en: missing local file .*XNLI-1.0/xnli.test.tsv; "
        "the local files have split validation: .*split_overrides",
    ):
        load_docs(load_task("xnli"), "en", "test", "local", str(shared_data))
    with pytest.raises(
        sources.MissingDataError, match="no local release layout for split 'train' .local files have: test, validation"
    ):
        load_docs(load_task("xnli"), "en", "train", "local", str(shared_data))
    with pytest.raises(sources.MissingDataError, match=r"xquad, xquad\.hi: missing local file .*xquad\.hi\.json"):
        load_docs(load_task("xquad"), "hi", "validation", "local", str(shared_data / "xcopa"))


def test_evaluation_inputs_are_checked_before_any_model_loads(shared_data, tmp_path):
    cfg = config.validate_run(
        {
            "data_source": "local",
            "data_root": str(shared_data),
            "tasks": ["xquad", "belebele"],
            "languages": ["th", "en"],
        }
    )
    from maple_utils.eval import evaluate

    with pytest.raises(sources.MissingDataError, match=r"belebele, eng_Latn: missing local file .*eng_Latn\.jsonl"):
        evaluate.check_inputs(cfg)
    ok = config.validate_run(
        {"data_source": "local", "data_root": str(shared_data), "tasks": ["xquad", "belebele"], "languages": ["th"]}
    )
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

    cfg = config.validate_run(
        {"data_source": "local", "data_root": str(root), "tasks": ["belebele"], "languages": ["th"]}
    )
    with pytest.raises(DataFileError, match=r"tha_Thai\.jsonl: line 7: not valid JSON"):
        evaluate.check_inputs(cfg)


@pytest.mark.parametrize(
    "content, fmt, needle",
    [
        (b"", "jsonl", None),  # an empty JSONL file holds no rows
        (b'{"a": 1}\n{"a": 2\n{"a": 3}\n', "jsonl", "line 2: not valid JSON"),
        (b'[{"a": 1}, {"a":', "json", "line 1, column"),
        (b"", "json", "the file is empty"),
        ('{"a": "caf\xe9"}\n'.encode("latin-1"), "jsonl", "line 1: not UTF-8 text"),
        (b'{"a": 1}\n[1, 2]\n', "jsonl", "line 2: expected a JSON object"),
        (b'{"version": "1.1"}', "squad_json", "expected SQuAD layout"),
        (b"a\tb\tmaybe\r\n", "xnli_tsv", "row 1: expected premise<TAB>hypothesis<TAB>label"),
    ],
)
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
    path.write_bytes(
        gzip.compress(json.dumps([{"instruction": "Hallo", "input": "", "id": "alpaca-1", "output": "Welt"}]).encode())
    )
    assert formats.read(path, "json")[0]["id"] == "alpaca-1"
    (tmp_path / "bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(DataFileError, match="bad.json.gz: not a readable gzip file"):
        formats.read(tmp_path / "bad.json.gz", "json")


def test_instruction_releases_load_and_validate(shared_data, caplog):
    alpaca_records, origins, problems = instruct_data.load_records("alpaca", None, "local", str(shared_data))
    # the sample has two records with an empty output (rows 2336 and 4659): dropped, and said so with the row
    assert len(alpaca_records) == 4998 and alpaca_records[0]["language"] == "en"
    assert origins[0]["location"].endswith("alpaca/alpaca_5000.json") and origins[0]["revision"]
    assert [(p.row, p.kind) for p in problems] == [(2336, "empty_output"), (4659, "empty_output")]
    assert "2 record(s) dropped" in caplog.text and "alpaca_5000.json row 2336: field 'output' is empty" in caplog.text
    multi, origins, problems = instruct_data.load_records("multialpaca", ["es", "ja", "pt"], "local", str(shared_data))
    assert len(multi) + len(problems) == 9958 + 10191 + 10825  # the release's line counts (data README)
    assert {p.kind for p in problems} <= set(instruct_data.PROBLEM_KINDS) and any(
        "ja.jsonl" in str(p) for p in problems
    )
    assert all(isinstance(r["input"], str) for r in multi)  # null inputs become ""
    counts = instruct_data.problem_counts(problems, {o["location"]: o["language"] for o in origins})
    assert sum(c["dropped"] for c in counts) == len(problems) and {c["language"] for c in counts} <= {"es", "ja", "pt"}
    matched = instruct_data.size_match(multi, 300, seed=1)
    assert len(matched) == 300 and {r["language"] for r in matched} == {"es", "ja", "pt"}
    assert matched == instruct_data.size_match(multi, 300, seed=1)


def test_size_matching_gives_a_small_language_all_it_has_and_the_rest_to_the_others():
    records = [{"language": lang, "i": i} for lang, n in (("ar", 3), ("de", 50), ("es", 50)) for i in range(n)]
    matched = instruct_data.size_match(records, 40, seed=0)
    counts = {lang: sum(1 for r in matched if r["language"] == lang) for lang in ("ar", "de", "es")}
    assert counts == {"ar": 3, "de": 18, "es": 19} and len(matched) == 40
    assert len({(r["language"], r["i"]) for r in matched}) == 40  # no record twice


def _write_jsonl(tmp_path, rows, lang="es") -> None:
    folder = tmp_path / "multialpaca" / "multialpaca"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{lang}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))


def test_bad_records_are_dropped_counted_and_all_reported_with_file_and_row(tmp_path, caplog):
    good = {"instruction": "ok", "input": None, "output": "fine"}
    rows = [
        good,
        {"instruction": "", "output": "x"},
        {"instruction": "x", "input": 3, "output": "y"},
        {"instruction": 5, "output": "x"},
        {"instruction": "q", "output": "bad \ufffd bytes"},
        dict(good),
        {"instruction": "two", "output": "kept"},
        {"prompt": "other shape"},
    ]
    _write_jsonl(tmp_path, rows)
    records, _, problems = instruct_data.load_records("multialpaca", ["es"], "local", str(tmp_path))
    assert [r["output"] for r in records] == ["fine", "kept"]
    assert [(p.row, p.kind) for p in problems] == [
        (2, "empty_instruction"),
        (3, "wrong_type"),
        (4, "wrong_type"),
        (5, "undecodable"),
        (6, "duplicate"),
        (8, "missing_field"),
    ]
    assert "6 record(s) dropped" in caplog.text
    for line in (
        "es.jsonl row 3: field 'input' must be a string or null",
        "es.jsonl row 4: field 'instruction' must",
        "row 8: no field 'instruction' (fields: prompt)",
    ):
        assert line in caplog.text


def test_a_file_of_the_wrong_shape_or_empty_fails_naming_it(tmp_path):
    _write_jsonl(tmp_path, [{"prompt": "a", "completion": "b"}, {"text": "c"}])
    _write_jsonl(tmp_path, [], lang="de")
    with pytest.raises(instruct_data.DataError) as err:
        instruct_data.load_records("multialpaca", ["es", "de"], "local", str(tmp_path))
    message = str(err.value)
    assert "2 unusable file(s)" in message and "de.jsonl: no records for language de" in message
    assert (
        "es.jsonl: no record has the instruction shape" in message
        and "es.jsonl row 1: no field 'instruction'" in message
    )


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
    from maple_utils.models import loading

    cfg = config.validate_run(
        {"tasks": ["mlqa"], "languages": ["de"], "k_shot": {"mlqa": 3}, "max_new_tokens": 2, "fewshot_seed": 7}
    )
    docs, _ = load_docs(load_task("mlqa"), "de", "validation")
    shots = pick_fewshot(docs, 3, cfg.fewshot_seed)
    model, tok = loading.load_base("tiny-llama", 16), loading.load_tokenizer("tiny-llama")
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


def test_bactrian_x_release_files_load_in_any_of_its_languages(tmp_path):
    # Bactrian-X's release layout: data/<lang>.json.gz (a JSON array with ids shared across languages), or unpacked
    folder = tmp_path / "bactrian-x" / "data"
    folder.mkdir(parents=True)
    afrikaans = [
        {"instruction": "Gee drie wenke.", "input": "", "output": "1. Eet gesond.", "id": "alpaca-0"},
        {"instruction": "Vertaal.", "input": "Hallo", "output": "Hello", "id": "dolly-3"},
    ]
    (folder / "af.json.gz").write_bytes(gzip.compress(json.dumps(afrikaans).encode()))
    (folder / "sw.json").write_text(
        json.dumps([{"instruction": "Salamu", "input": "", "output": "Habari", "id": "alpaca-0"}]), encoding="utf-8"
    )
    cfg = config.validate_run(
        {
            "dataset": "bactrian-x",
            "train_languages": ["af", "sw"],
            "data_source": "local",
            "data_root": str(tmp_path),
            "rank": 8,
        }
    )
    records, origins, problems = instruct_data.load_records(cfg.dataset, cfg.train_languages, "local", cfg.data_root)
    assert [(r["language"], r["output"]) for r in records] == [
        ("af", "1. Eet gesond."),
        ("af", "Hello"),
        ("sw", "Habari"),
    ]
    assert origins[0]["location"].endswith("af.json.gz") and origins[1]["location"].endswith("sw.json") and not problems
    with pytest.raises(config.ConfigError, match="train_languages \\['xx'\\] are not in bactrian-x .allowed: af, ar"):
        config.validate_run({"dataset": "bactrian-x", "train_languages": ["xx"], "rank": 8})
    assert len(instruct_data.dataset_spec("bactrian-x")["languages"]) == 52


def test_the_data_stage_counts_and_lists_dropped_records(tmp_path):
    from maple_utils import io, layout, runs

    _write_jsonl(
        tmp_path,
        [
            {"instruction": "a", "output": "b"},
            {"instruction": "a", "output": "b"},
            {"instruction": "c", "output": ""},
            {"instruction": "d", "output": "e"},
        ],
    )
    namespace = {
        "dataset": "multialpaca",
        "train_languages": ["es"],
        "max_train_examples": None,
        "data_seed": 1,
        "eval_fraction": 0.0,
        "prompt_template": "alpaca",
        "data_source": "local",
        "data_root": str(tmp_path),
        "out_dir": str(tmp_path / "out"),
    }
    run = runs.open_stage("01_data", namespace)
    records, rows, facts = instruct_data.prepare_set(run)
    run.finish(rows, **facts)
    assert len(records) == 2 and io.read_json(run.folder / layout.DATA_STATS)[0]["examples"] == 2
    assert facts["dropped"] == [
        {"language": "es", "kind": "duplicate", "dropped": 1},
        {"language": "es", "kind": "empty_output", "dropped": 1},
    ]
    listed = io.read_jsonl(run.folder / layout.DATA_PROBLEMS)
    assert [(p["row"], p["kind"]) for p in listed] == [(2, "duplicate"), (3, "empty_output")]
    rows = {(r["metric"], r["language"]): r["value"] for r in io.read_jsonl(run.folder / layout.ROWS)}
    assert rows == {("examples", "es"): 2.0, ("dropped_duplicate", "es"): 1.0, ("dropped_empty_output", "es"): 1.0}
