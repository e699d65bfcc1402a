"""Small samples of every task, instruction dataset and the AlpacaEval set, built from the registries.

Each registry entry's `embedded_sample` says which fields a record has and how each is made from the
language's bundled sentences; nothing here knows a task by name. Samples are written in the hub schema,
as <samples>/<entry name>/<config>/<split>.jsonl, and rebuilt when the registries or this code change.
"""

from __future__ import annotations

import random
from pathlib import Path

from maple_utils import registry
from maple_utils.data import languages as lang_table
from maple_utils.embedded.build import build_atomically, content_hash
from maple_utils.embedded.tokenizer import CORPUS, corpus
from maple_utils.io import write_jsonl

SIZES = {"eval": 16, "fewshot": 8, "instruct": 24, "alpaca_eval": 16}
INPUT_SHARE = 0.4  # share of instruction records with an input, as in Bactrian-X (mission_anchors.md 4.3)


def _question(rng: random.Random, sentences: list[str]) -> str:
    return rng.choice(sentences).rstrip(".。।۔") + "?"


def make_record(schema: dict, sentences: list[str], rng: random.Random, ident: str, index: int, config: str) -> dict:
    """One record following an `embedded_sample` schema (kinds are listed in registry/tasks.yaml)."""
    record: dict = {}
    parts: dict[str, list[str]] = {}
    for name, kind in schema.items():
        if kind == "sentence":
            record[name] = rng.choice(sentences)
        elif kind == "question":
            record[name] = _question(rng, sentences)
        elif kind == "numbered":  # a sentence made unique by its number (AlpacaEval's instructions are unique)
            record[name] = f"{index + 1}. {rng.choice(sentences)}"
        elif kind == "passage" or (isinstance(kind, dict) and "passage" in kind):
            n = 3 if kind == "passage" else kind["passage"]
            parts[name] = [rng.choice(sentences) for _ in range(n)]
            record[name] = " ".join(parts[name])
        elif kind == "id":
            record[name] = f"{ident}-{index:04d}"
        elif kind == "index":
            record[name] = index
        elif kind == "link":
            record[name] = f"https://example.invalid/{ident}/{index}"
        elif isinstance(kind, dict) and "constant" in kind:
            value = kind["constant"]
            record[name] = value.format(config=config) if isinstance(value, str) else value
        elif isinstance(kind, dict) and "label" in kind:
            value = rng.randrange(kind["label"]) + kind.get("offset", 0)
            record[name] = str(value) if kind.get("as_text") else value
        elif isinstance(kind, dict) and "one_of" in kind:
            record[name] = rng.choice(kind["one_of"])
        elif isinstance(kind, dict) and "span_of" in kind:
            source = kind["span_of"]
            answer = rng.choice(parts[source])
            record[name] = {"text": [answer], "answer_start": [record[source].index(answer)]}
        else:
            raise ValueError(f"embedded_sample field {name!r}: unknown kind {kind!r}")
    return record


def _write(out: Path, name: str, config: str, split: str, rows: list[dict]) -> None:
    write_jsonl(out / name / config / f"{split}.jsonl", rows)


def _build(out: Path) -> None:
    text = corpus()
    for task, spec in registry.read("tasks")["tasks"].items():
        column = spec["language_column"]
        for code in lang_table.supporting(column):
            config = lang_table.table()[code].config_for(column)
            over = spec.get("split_overrides", {}).get(config, {})
            splits = {over.get("eval_split", spec["eval_split"]): SIZES["eval"]}
            if "fewshot_source" not in spec:
                splits.setdefault(over.get("fewshot_split", spec["fewshot_split"]), SIZES["fewshot"])
            for split, size in splits.items():
                rng = random.Random(f"{task}/{config}/{split}")
                rows = [
                    make_record(spec["embedded_sample"], text[code], rng, f"{task}-{code}", i, config)
                    for i in range(size)
                ]
                _write(out, task, config, split, rows)
        if "fewshot_source" in spec:  # exemplars from another dataset (XQuAD: English SQuAD)
            source, rng = spec["fewshot_source"], random.Random(f"{task}/exemplars")
            rows = [
                make_record(spec["embedded_sample"], text["en"], rng, f"{task}-exemplars", i, source["config"])
                for i in range(SIZES["fewshot"])
            ]
            _write(out, f"{task}-exemplars", source["config"], source["split"], rows)
    for dataset, spec in registry.read("datasets")["datasets"].items():
        # the bundled corpus covers the language table; Bactrian-X's other languages come from files or the hub
        for code in (c for c in spec["languages"] if c in text):
            rng = random.Random(f"{dataset}/{code}")
            rows = []
            for i in range(SIZES["instruct"]):
                rec = make_record(spec["embedded_sample"], text[code], rng, f"{dataset}-{code}", i, code)
                has_input = rng.random() < INPUT_SHARE
                rec["input"] = rng.choice(text[code]) if has_input else spec["missing_input"]
                rows.append(rec)
            _write(out, dataset, code, "train", rows)
    spec = registry.read("tasks")["alpaca_eval"]
    rng = random.Random("alpaca_eval")
    rows = [
        make_record(spec["embedded_sample"], text["en"], rng, "alpaca_eval", i, "alpaca_eval")
        for i in range(SIZES["alpaca_eval"])
    ]
    _write(out, "alpaca_eval", "alpaca_eval", spec["hub"]["split"], rows)


def samples_dir() -> Path:
    folders = [registry.folder_for(n) / f"{n}.yaml" for n in ("tasks", "datasets", "languages")]
    return build_atomically("samples", content_hash(Path(__file__), CORPUS, *folders), _build)


def sample_path(name: str, config: str, split: str) -> Path:
    return samples_dir() / name / config / f"{split}.jsonl"
