"""Release file formats, read into records in the hub's schema. Every error names the file and the row.

Formats (named by the registries' `local.format`):
  json        one JSON array of records (Alpaca, AlpacaEval, Bactrian-X); `.gz` is read transparently
  jsonl       one record per line (XCOPA, COPA, MultiAlpaca, Belebele, XL-Sum); `.gz` too
  squad_json  SQuAD v1.1 layout (XQuAD, MLQA, SQuAD): data > paragraphs > qas, flattened per question
  xnli_tsv    XTREME's per-language XNLI files: premise, hypothesis, label word; no header; CRLF
  xnli_release_tsv  XNLI-1.0's xnli.{dev,test}.tsv: every language in one file, with a header
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path

from maple_utils.io import DataFileError, jsonl_lines, read_json, read_jsonl, read_text

XNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


def _gunzipped(path: Path) -> Path | str:
    """The text of a .gz file (decoded here so that errors still name the file), else the path."""
    if path.suffix != ".gz":
        return path
    try:
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataFileError(f"{path}: not a readable gzip file of UTF-8 text ({err})") from None


def read_json_array(path: Path) -> list[dict]:
    text = _gunzipped(path)
    data = read_json(path) if isinstance(text, Path) else _loads(path, text)
    if not isinstance(data, list):
        raise DataFileError(f"{path}: expected a JSON array of records, got a {type(data).__name__}")
    return _objects(path, data, "record")


def _loads(path: Path, text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataFileError(f"{path}: line {err.lineno}: not valid JSON ({err.msg})") from None


def read_json_lines(path: Path) -> list[dict]:
    text = _gunzipped(path)
    if isinstance(text, Path):
        rows = read_jsonl(path)
    else:
        rows = []
        for number, line in enumerate(jsonl_lines(text), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DataFileError(f"{path}: line {number}: not valid JSON ({err.msg})") from None
    return _objects(path, rows, "line")


def _objects(path: Path, rows: list, what: str) -> list[dict]:
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataFileError(f"{path}: {what} {i}: expected a JSON object, got {type(row).__name__}")
    return rows


def read_squad(path: Path) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataFileError(f"{path}: expected SQuAD layout {{'data': [articles]}}")
    docs = []
    for a, article in enumerate(data["data"], start=1):
        try:
            for para in article["paragraphs"]:
                for qa in para["qas"]:
                    docs.append(
                        {
                            "id": qa["id"],
                            "context": para["context"],
                            "question": qa["question"],
                            "answers": {
                                "text": [x["text"] for x in qa["answers"]],
                                "answer_start": [x["answer_start"] for x in qa["answers"]],
                            },
                        }
                    )
        except (KeyError, TypeError) as err:
            raise DataFileError(
                f"{path}: article {a}: missing SQuAD field {err} "
                "(expected paragraphs > context, qas > id, question, answers)"
            ) from None
    return docs


def read_xnli_tsv(path: Path) -> list[dict]:
    rows = list(csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    docs = []
    for i, row in enumerate(rows, start=1):
        if len(row) != 3 or row[2].strip() not in XNLI_LABELS:
            raise DataFileError(
                f"{path}: row {i}: expected premise<TAB>hypothesis<TAB>label with label in "
                f"{sorted(XNLI_LABELS)}, got {row!r:.120}"
            )
        docs.append({"premise": row[0], "hypothesis": row[1], "label": XNLI_LABELS[row[2].strip()]})
    if not docs:
        raise DataFileError(f"{path}: the file is empty")
    return docs


def read_xnli_release(path: Path, language: str) -> list[dict]:
    """XNLI-1.0's xnli.dev.tsv / xnli.test.tsv: all 15 languages in one file with a header; one language's
    rows, in the file's order."""
    rows = list(csv.DictReader(io.StringIO(read_text(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE))
    needed = {"language", "gold_label", "sentence1", "sentence2"}
    if not rows or not needed <= set(rows[0]):
        raise DataFileError(f"{path}: expected XNLI-1.0's header with columns {sorted(needed)}")
    docs = []
    for i, row in enumerate(rows, start=2):
        if row["language"] != language:
            continue
        if row["gold_label"] not in XNLI_LABELS:
            raise DataFileError(
                f"{path}: row {i}: gold_label {row['gold_label']!r} is not one of {sorted(XNLI_LABELS)}"
            )
        docs.append(
            {"premise": row["sentence1"], "hypothesis": row["sentence2"], "label": XNLI_LABELS[row["gold_label"]]}
        )
    if not docs:
        raise DataFileError(f"{path}: no rows for language {language!r}")
    return docs


READERS = {
    "json": read_json_array,
    "jsonl": read_json_lines,
    "squad_json": read_squad,
    "xnli_tsv": read_xnli_tsv,
    "xnli_release_tsv": read_xnli_release,
}


def read(path: str | Path, fmt: str, keys: dict | None = None) -> list[dict]:
    """A release file's records in the hub schema. keys: the entry's template keys (config, code); a file
    that holds every language is filtered to `config`."""
    if fmt not in READERS:
        raise ValueError(f"unknown file format {fmt!r} (formats: {', '.join(READERS)})")
    if fmt == "xnli_release_tsv":
        return read_xnli_release(Path(path), (keys or {})["config"])
    return READERS[fmt](Path(path))
