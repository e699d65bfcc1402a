"""Instruction data: Alpaca, Bactrian-X and MultiAlpaca from any source; record validation; language
subsets; size matching; prompt templates.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Problem:
    """One bad record: where it is and what is wrong with it."""

    location: str  # the file (or hub id) read
    row: int  # 1-based record number in that file
    kind: str  # one of PROBLEM_KINDS
    detail: str

    def __str__(self) -> str:
        return f"{self.location} row {self.row}: {self.detail}"


# Structural problems mean the record is not an instruction record at all; when every record of a file has
# one, the file is of the wrong shape and fails. The others are dropped from an otherwise good file.
STRUCTURAL = ("not_an_object", "missing_field", "wrong_type")
PROBLEM_KINDS = STRUCTURAL + ("empty_instruction", "empty_output", "undecodable", "duplicate")


def _undecodable(text: str) -> bool:
    """U+FFFD (what a decoder leaves for bytes it could not read) or a lone surrogate (not encodable)."""
    if "\ufffd" in text:
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _problem(rec) -> tuple[str, str] | None:
    if not isinstance(rec, dict):
        return "not_an_object", f"not an object but a {type(rec).__name__}"
    for key in ("instruction", "output"):
        if key not in rec:
            return "missing_field", f"no field {key!r} (fields: {', '.join(map(str, rec)) or 'none'})"
        if not isinstance(rec[key], str):
            return "wrong_type", f"field {key!r} must be a string, got {rec[key]!r:.60}"
    if rec.get("input") is not None and not isinstance(rec["input"], str):
        return "wrong_type", f"field 'input' must be a string or null, got {rec['input']!r:.60}"
    for key in ("instruction", "output"):
        if not rec[key].strip():
            return f"empty_{key}", f"field {key!r} is empty"
    for key in ("instruction", "input", "output"):
        if isinstance(rec.get(key), str) and _undecodable(rec[key]):
            return "undecodable", f"field {key!r} holds undecodable text (U+FFFD or a lone surrogate)"
    return None


def check_records(records: list, location: str) -> tuple[list[dict], list[Problem]]:
    """The good records of one file, and a Problem for every other one (exact duplicates of an earlier
    record of the same file included)."""
    kept, problems, seen = [], [], set()
    for row, rec in enumerate(records, start=1):
        problem = _problem(rec)
        if problem is None:
            key = (rec["instruction"], rec.get("input") or "", rec["output"])
            if key in seen:
                problem = ("duplicate", "exact duplicate of an earlier record (instruction, input and output)")
            seen.add(key)
        if problem is None:
            kept.append(rec)
        else:
            problems.append(Problem(location, row, *problem))
    return kept, problems


def _shown(problems: list, limit: int = 20) -> str:
    lines = [str(p) for p in problems[:limit]] + (
        [f"... and {len(problems) - limit} more"] if len(problems) > limit else []
    )
    return "\n  - " + "\n  - ".join(lines)


def load_records(
    name: str, languages: list[str] | None = None, source: str = "embedded", root: str | None = None
) -> tuple[list[dict], list[dict], list[Problem]]:
    """Good records {language, instruction, input, output} of a dataset's languages, where they came from,
    and every bad record dropped. A file with no records, or with no record of the instruction shape,
    fails with a DataError naming the file and its first rows."""
    spec = dataset_spec(name)
    records, origins, problems, fatal = [], [], [], []
    for code in languages or spec["languages"]:
        raw, origin = sources.load(name, spec, source, root, "train", config=code, lang=code)
        origins.append({"language": code, **origin.as_dict()})
        if not raw:
            fatal.append(f"{origin.location}: no records for language {code}")
            continue
        kept, found = check_records(raw, origin.location)
        structural = [p for p in found if p.kind in STRUCTURAL]
        if len(structural) == len(raw):
            fatal.append(
                f"{origin.location}: no record has the instruction shape (string 'instruction' and "
                f"'output', optional 'input'); first rows:" + _shown(structural, 3).replace("\n", "\n  ")
            )
            continue
        problems += found
        records += [
            {"language": code, "instruction": r["instruction"], "input": r.get("input") or "", "output": r["output"]}
            for r in kept
        ]
    if fatal:
        raise DataError(f"dataset {name}: {len(fatal)} unusable file(s)" + _shown(fatal))
    if problems:
        log.warning("dataset %s: %d record(s) dropped:%s", name, len(problems), _shown(problems))
    return records, origins, problems


def problem_counts(problems: list[Problem], languages_of: dict[str, str]) -> list[dict]:
    """{language, kind, dropped} per language and kind of problem found."""
    counts = Counter((languages_of.get(p.location, "all"), p.kind) for p in problems)
    return [{"language": lang, "kind": kind, "dropped": n} for (lang, kind), n in sorted(counts.items())]


def size_match(records: list[dict], max_examples: int | None, seed: int) -> list[dict]:
    """At most max_examples records, stratified by language with a fixed seed: every language gets an equal
    share, and what a small language cannot fill goes to the others (so the total is max_examples whenever
    the data have that many)."""
    if max_examples is None or len(records) <= max_examples:
        return records
    by_lang: dict[str, list[dict]] = {}
    for r in records:
        by_lang.setdefault(r["language"], []).append(r)
    quota, remaining = {}, max_examples
    by_size = sorted(by_lang, key=lambda c: (len(by_lang[c]), c))  # small languages first: they cap out
    for i, code in enumerate(by_size):
        quota[code] = min(len(by_lang[code]), remaining // (len(by_size) - i))
        remaining -= quota[code]
    for code in sorted(by_lang):  # the floor divisions' leftovers, one each in code order
        if remaining and quota[code] < len(by_lang[code]):
            quota[code] += 1
            remaining -= 1
    rng = random.Random(seed)
    chosen = []
    for code in sorted(by_lang):
        chosen += rng.sample(by_lang[code], quota[code])
    return chosen


def hold_out(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(held out, the rest): `fraction` of each language's records, at least one where a language has two or
    more, drawn with a seed of its own from the whole dataset, so runs that differ in size matching (or in
    anything else but the data and the seed) hold out the same records."""
    if fraction <= 0:
        return [], records
    by_lang: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_lang.setdefault(r["language"], []).append(i)
    rng = random.Random(f"held-out:{seed}")
    kept_out: set[int] = set()
    for code in sorted(by_lang):
        rows = by_lang[code]
        n = min(len(rows) - 1, max(1, round(fraction * len(rows)))) if len(rows) > 1 else 0
        kept_out |= set(rng.sample(rows, n))
    return [r for i, r in enumerate(records) if i in kept_out], [r for i, r in enumerate(records) if i not in kept_out]


def _rendered(cfg, records: list[dict]) -> list[dict]:
    return [
        {
            "language": r["language"],
            "prompt": format_prompt(cfg.prompt_template, r["instruction"], r["input"]),
            "response": r["output"],
        }
        for r in records
    ]


def prepare(cfg) -> tuple[list[dict], list[dict], list[Problem], list[dict]]:
    """Records with their rendered prompt and response, ready for tokenisation; where they came from; the
    records dropped as bad; and the records held out of training (eval_fraction), rendered the same way."""
    records, origins, problems = load_records(cfg.dataset, cfg.train_languages, cfg.data_source, cfg.data_root)
    held_out, records = hold_out(records, cfg.eval_fraction, cfg.data_seed)
    records = size_match(records, cfg.max_train_examples, cfg.data_seed)
    return _rendered(cfg, records), origins, problems, _rendered(cfg, held_out)


def lengths(records: list[dict]) -> list[dict]:
    """Per-record prompt and response lengths in characters, for the 01 notebook's plot."""
    return [
        {"language": r["language"], "prompt_chars": len(r["prompt"]), "response_chars": len(r["response"])}
        for r in records
    ]


def language_stats(records: list[dict]) -> list[dict]:
    """Per-language count and mean prompt/response length in characters."""
    counts = Counter(r["language"] for r in records)
    rows = []
    for code, n in sorted(counts.items()):
        recs = [r for r in records if r["language"] == code]
        rows.append(
            {
                "language": code,
                "examples": n,
                "mean_prompt_chars": round(sum(len(r["prompt"]) for r in recs) / n, 1),
                "mean_response_chars": round(sum(len(r["response"]) for r in recs) / n, 1),
            }
        )
    return rows


def prepare_set(run) -> tuple[list[dict], list[dict], dict]:
    """01_data's body: prepare the run's set afresh and write it to the run's folder with its per-language
    counts and every dropped record (problems.jsonl: file, row, kind, detail); returns the records, the
    result rows (examples and dropped records per language) and the run record's facts."""
    from maple_utils import config, io, layout, results

    records, origins, problems, held_out = prepare(run.cfg)
    stats = language_stats(records)
    dropped = problem_counts(problems, {o["location"]: o["language"] for o in origins})
    io.write_jsonl(run.folder / layout.PREPARED_DATA, records)
    io.write_jsonl(run.folder / layout.HELD_OUT_DATA, held_out)
    io.write_json(run.folder / layout.DATA_STATS, stats)
    io.write_jsonl(run.folder / layout.DATA_PROBLEMS, [vars(p) for p in problems])
    identity = {"run_id": run.run_id, "stage": run.stage.name, "dataset": run.cfg.dataset}
    common = {"task": "data", "seed": run.cfg.data_seed}
    common["registry_hash"] = registry.entry_hash(config.known_datasets()[run.cfg.dataset])
    counts = [(s["language"], "examples", s["examples"]) for s in stats]
    counts += [(d["language"], f"dropped_{d['kind']}", d["dropped"]) for d in dropped]
    counts += [(s["language"], "held_out", s["examples"]) for s in language_stats(held_out)]
    rows = [
        results.make_row(identity, language=code, metric=metric, value=float(n), n=n, **common)
        for code, metric, n in counts
    ]
    return records, rows, {"data": origins, "dropped": dropped}
