"""JSONL that round-trips any string: readers split at "\n" only, writers escape every other character that
Python's str.splitlines() breaks a line at, in instruction data, predictions, judgements and the manifest."""

import json

from maple_utils import io
from maple_utils.analysis import stats
from maple_utils.data import formats
from maple_utils.eval import judges
from maple_utils.grid import manifest

# every character str.splitlines() breaks at, and the CRLF pair
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


def _texts() -> list[str]:
    return [f"before{b}after" for b in BREAKS]


def test_written_lines_hold_every_line_break_and_read_back_whole(tmp_path):
    rows = [{"id": i, "text": t} for i, t in enumerate(_texts())]
    path = io.write_jsonl(tmp_path / "rows.jsonl", rows)
    assert io.read_jsonl(path) == rows
    assert len(path.read_text(encoding="utf-8").splitlines()) == len(rows)  # even the strictest reader splits right
    io.append_jsonl(tmp_path / "log.jsonl", rows[0])
    for row in rows[1:]:
        io.append_jsonl(tmp_path / "log.jsonl", row)
    assert io.read_appended(tmp_path / "log.jsonl") == rows


def test_a_release_file_with_raw_separators_inside_strings_is_read_as_written(tmp_path):
    """A valid JSONL file from elsewhere may hold U+2028, U+2029 or U+0085 raw inside a string (json.dumps
    with ensure_ascii=False writes them so): each is one record, not a damaged line."""
    raw = ["\x85", "\u2028", "\u2029", "\x0b", "\x1c"]
    records = [{"instruction": f"say{c}this", "input": "", "output": f"ok{c}done"} for c in raw]
    path = tmp_path / "es.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in records), encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # raw, as another tool wrote it
    assert formats.read_json_lines(path) == records
    assert io.read_jsonl(path) == records


def test_predictions_judgements_and_the_manifest_keep_every_line_break(tmp_path):
    items = [{"id": i, "prediction": t, "scores": {"f1": i / 10}} for i, t in enumerate(_texts())]
    io.write_jsonl(tmp_path / "predictions" / "xquad-en.jsonl", items)
    assert stats.item_scores(tmp_path, "xquad", "f1") == {"en": {str(i): i / 10 for i in range(len(items))}}

    cache = judges.Cache(tmp_path / "judgements.jsonl")
    for i, text in enumerate(_texts()):
        cache.add({"key": f"k{i}", "output": text, "choice": 1})
    again = judges.Cache(tmp_path / "judgements.jsonl")  # read back: nothing would be asked (and paid) again
    assert {k: e["output"] for k, e in again.entries.items()} == {f"k{i}": t for i, t in enumerate(_texts())}

    for i, text in enumerate(_texts()):
        manifest.append(tmp_path, {"job": f"03_evaluate:r{i}", "status": "failed", "attempt": 1, "error": text})
    assert [e["error"] for e in manifest.read(tmp_path)] == _texts()
