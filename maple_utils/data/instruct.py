"""Instruction data: Alpaca, Bactrian-X and MultiAlpaca from any source; record validation; language
subsets; size matching; prompt templates.
"""

from __future__ import annotations

import logging
import random
from collections import Counter

from maple_utils import registry
from maple_utils.data import sources

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad instruction records; the message lists every problem with its file and row."""


def dataset_spec(name: str) -> dict:
    return registry.read("datasets")["datasets"][name]


def template(name: str) -> dict:
    return registry.read("templates")["templates"][name]


def uses_chat_template(name: str) -> bool:
    """Whether a template means the model's own chat template (instruction-tuned baselines)."""
    return bool(template(name).get("chat_template", False))


def format_prompt(template_name: str, instruction: str, input_text: str | None) -> str:
    t = template(template_name)
    if input_text:
        return t["with_input"].format(instruction=instruction, input=input_text)
    return t["no_input"].format(instruction=instruction)


def validate_records(records: list[dict], origin: str) -> list[str]:
    """Every structural problem in the records, as 'origin row N: ...' lines (empty when all are valid).

    An empty instruction or output is not an error: real releases have them (Alpaca has empty outputs), and
    `load_records` drops those rows.
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
                 root: str | None = None) -> tuple[list[dict], list[dict]]:
    """Validated records {language, instruction, input, output} of a dataset's languages, and their origins."""
    spec = dataset_spec(name)
    records, problems, origins = [], [], []
    for code in languages or spec["languages"]:
        raw, origin = sources.load(name, spec, source, root, "train", config=code, lang=code)
        origins.append({"language": code, **origin.as_dict()})
        if not raw:
            problems.append(f"{origin.location}: no records for language {code}")
        found = validate_records(raw, origin.location)
        problems += found
        if found:
            continue
        kept = [r for r in raw if r["instruction"].strip() and r["output"].strip()]
        if len(kept) < len(raw):
            log.warning("%s: dropped %d record(s) with an empty instruction or output", origin.location,
                        len(raw) - len(kept))
        records += [{"language": code, "instruction": r["instruction"], "input": r.get("input") or "",
                     "output": r["output"]} for r in kept]
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise DataError(f"dataset {name}: {len(problems)} invalid records\n  - " + "\n  - ".join(shown))
    return records, origins


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


def prepare(cfg) -> tuple[list[dict], list[dict]]:
    """Records with their rendered prompt and response, ready for tokenisation; and where they came from."""
    records, origins = load_records(cfg.dataset, cfg.train_languages, cfg.data_source, cfg.data_root)
    records = size_match(records, cfg.max_train_examples, cfg.data_seed)
    prepared = [{"language": r["language"], "prompt": format_prompt(cfg.prompt_template, r["instruction"], r["input"]),
                 "response": r["output"]} for r in records]
    return prepared, origins


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
