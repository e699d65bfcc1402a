"""Instruction data: Alpaca, Bactrian-X and MultiAlpaca from bundled samples, local release files or the hub;
record validation; language subsets; size matching; prompt templates.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from pathlib import Path

from maple_utils.paths import read_params, resolve
from maple_utils.results import read_jsonl


log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad instruction records; the message lists every problem with its file and row."""


def dataset_spec(name: str) -> dict:
    return read_params("datasets")["datasets"][name]


def format_prompt(template: str, instruction: str, input_text: str | None) -> str:
    t = read_params("templates")["templates"][template]
    if input_text:
        return t["with_input"].format(instruction=instruction, input=input_text)
    return t["no_input"].format(instruction=instruction)


def _read_records(path: Path) -> list[dict]:
    """A release file: one JSON array (.json) or one record per line (.jsonl)."""
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    return read_jsonl(path)


def _source_files(name: str, code: str, source: str, root: str | None) -> Path:
    spec = dataset_spec(name)
    if source == "embedded":
        from maple_utils import tiny

        return tiny.sample_path(name, code, "train")
    path = resolve(root) / spec["local_path"].format(lang=code)
    if not path.is_file():
        raise FileNotFoundError(f"dataset {name}, language {code}: missing local file {path}")
    return path


def _hub_records(name: str, code: str) -> list[dict]:
    from maple_utils import hub

    spec = dataset_spec(name)
    if name == "alpaca":
        return hub.load_rows(spec["hub_id"], split="train")
    if name == "multialpaca":  # per-language files keep the language (mission_anchors.md 8.9)
        return hub.load_rows(spec["hub_id"], data_files=f"{code}.jsonl", split="train")
    return hub.load_rows(spec["hub_id"], code, split="train")


def validate_records(records: list[dict], origin: str) -> list[str]:
    """Every structural problem in the records, as 'origin row N: ...' lines (empty when all are valid).

    An empty instruction or output is not an error: real releases have them (Alpaca has empty outputs), and
    `usable` drops those rows.
    """
    problems = []
    for i, rec in enumerate(records, start=1):
        if not isinstance(rec, dict):
            problems.append(f"{origin} row {i}: not an object")
            continue
        for key in ("instruction", "output"):
            if not isinstance(rec.get(key), str):
                problems.append(f"{origin} row {i}: field {key!r} must be a string, got {rec.get(key)!r:.60}")
        if rec.get("input") is not None and not isinstance(rec["input"], str):
            problems.append(f"{origin} row {i}: field 'input' must be a string or null, got {rec['input']!r:.60}")
    return problems


def load_records(name: str, languages: list[str] | None = None, source: str = "embedded",
                 root: str | None = None) -> list[dict]:
    """Validated records {language, instruction, input, output} of a dataset's languages."""
    spec = dataset_spec(name)
    codes = languages or spec["languages"]
    records, problems = [], []
    for code in codes:
        if source == "hub":
            raw, origin = _hub_records(name, code), f"{spec['hub_id']}[{code}]"
        else:
            path = _source_files(name, code, source, root)
            raw, origin = _read_records(path), str(path)
        if not raw:
            problems.append(f"{origin}: no records for language {code}")
        found = validate_records(raw, origin)
        problems += found
        if found:
            continue
        kept = [r for r in raw if r["instruction"].strip() and r["output"].strip()]
        if len(kept) < len(raw):
            log.warning("%s: dropped %d record(s) with an empty instruction or output", origin, len(raw) - len(kept))
        records += [{"language": code, "instruction": r["instruction"], "input": r.get("input") or "",
                     "output": r["output"]} for r in kept]
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise DataError(f"dataset {name}: {len(problems)} invalid records\n  - " + "\n  - ".join(shown))
    return records


def size_match(records: list[dict], max_examples: int | None, seed: int) -> list[dict]:
    """At most max_examples records, spread evenly over languages, drawn with a fixed seed."""
    if max_examples is None or len(records) <= max_examples:
        return records
    by_lang: dict[str, list[dict]] = {}
    for r in records:
        by_lang.setdefault(r["language"], []).append(r)
    rng = random.Random(seed)
    share, extra = divmod(max_examples, len(by_lang))
    chosen = []
    for i, (code, recs) in enumerate(sorted(by_lang.items())):
        chosen += rng.sample(recs, min(len(recs), share + (1 if i < extra else 0)))
    return chosen


def prepare(name: str, languages: list[str] | None, source: str, root: str | None,
            max_examples: int | None, seed: int, template: str) -> list[dict]:
    """Records with their rendered prompt and response, ready for tokenisation."""
    records = size_match(load_records(name, languages, source, root), max_examples, seed)
    return [{"language": r["language"], "prompt": format_prompt(template, r["instruction"], r["input"]),
             "response": r["output"]} for r in records]


def language_stats(records: list[dict]) -> list[dict]:
    """Per-language count and mean prompt/response length in characters."""
    counts = Counter(r["language"] for r in records)
    rows = []
    for code, n in sorted(counts.items()):
        recs = [r for r in records if r["language"] == code]
        rows.append({"language": code, "examples": n,
                     "mean_prompt_chars": round(sum(len(r["prompt"]) for r in recs) / n, 1),
                     "mean_response_chars": round(sum(len(r["response"]) for r in recs) / n, 1)})
    return rows
