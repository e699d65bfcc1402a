"""Evaluation tasks as data: params/tasks.yaml entries, their documents, and their prompts.

A task's behaviour is its YAML entry (prompt, choices, label field, splits, metrics); nothing here
branches on a task's name. Documents come from the bundled samples, local release files or the hub.
"""

from __future__ import annotations

import csv
import functools
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from maple_utils import languages as lang_table
from maple_utils.results import read_jsonl
from maple_utils.paths import read_params, resolve

XNLI_LABELS = {"entailment": 0, "neutral": 1, "contradiction": 2}


@dataclass(frozen=True)
class TaskSpec:
    name: str
    hub_id: str
    language_column: str
    eval_split: str
    fewshot_split: str
    k_shot: int
    scoring: str  # "loglikelihood" | "generate"
    prompt: str
    metrics: list
    choices: list | None = None
    label_field: str | None = None
    label_offset: int = 0
    answer_field: str | None = None
    max_new_tokens: int | None = None
    maps: dict = field(default_factory=dict)
    split_overrides: dict = field(default_factory=dict)
    local: dict = field(default_factory=dict)

    def languages(self) -> list[str]:
        return lang_table.supporting(self.language_column)

    def config_for(self, code: str) -> str:
        config = lang_table.table()[code].config_for(self.language_column)
        if not config:
            raise ValueError(f"task {self.name} has no data for language {code!r} (it has: {', '.join(self.languages())})")
        return config

    def splits_for(self, config: str) -> tuple[str, str]:
        over = self.split_overrides.get(config, {})
        return over.get("eval_split", self.eval_split), over.get("fewshot_split", self.fewshot_split)

    # ---- prompts
    def render(self, doc: dict) -> str:
        """The prompt for one document, without its answer."""
        values = dict(doc)
        for name, rule in self.maps.items():
            values[name] = rule["values"][doc[rule["field"]]]
        return self.prompt.format(**values)

    def label(self, doc: dict) -> int:
        return int(doc[self.label_field]) - self.label_offset

    def answers(self, doc: dict) -> list[str]:
        value = doc
        for part in self.answer_field.split("."):
            value = value[part]
        return value if isinstance(value, list) else [value]

    def target(self, doc: dict) -> str:
        """The gold continuation, as a few-shot exemplar shows it."""
        if self.scoring == "loglikelihood":
            return self.choices[self.label(doc)]
        return " " + self.answers(doc)[0]

    def fewshot_prefix(self, exemplars: list[dict]) -> str:
        return "".join(self.render(d) + self.target(d) + "\n\n" for d in exemplars)


@functools.lru_cache(maxsize=None)
def load_task(name: str) -> TaskSpec:
    entry = read_params("tasks")["tasks"][name]
    return TaskSpec(name=name, **entry)


def all_tasks() -> list[str]:
    return list(read_params("tasks")["tasks"])


# ---------------------------------------------------------------- documents

def _read_squad_json(path: Path) -> list[dict]:
    """SQuAD-format release files (XQuAD, MLQA) flattened into the hub schema."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)["data"]
    docs = []
    for article in data:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                docs.append({"id": qa["id"], "context": para["context"], "question": qa["question"],
                             "answers": {"text": [a["text"] for a in qa["answers"]],
                                         "answer_start": [a["answer_start"] for a in qa["answers"]]}})
    return docs


def _read_xnli_tsv(path: Path) -> list[dict]:
    """XTREME's per-language XNLI files: premise, hypothesis, label word; no header; CRLF."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    docs = []
    for i, row in enumerate(rows, start=1):
        if len(row) != 3 or row[2].strip() not in XNLI_LABELS:
            raise ValueError(f"{path}: row {i}: expected premise<TAB>hypothesis<TAB>label with label in "
                             f"{sorted(XNLI_LABELS)}, got {row!r:.120}")
        docs.append({"premise": row[0], "hypothesis": row[1], "label": XNLI_LABELS[row[2].strip()]})
    return docs


LOCAL_READERS = {"jsonl": read_jsonl, "squad_json": _read_squad_json, "xnli_tsv": _read_xnli_tsv}


def local_path(spec: TaskSpec, code: str, split: str, root: str | Path) -> Path:
    config = spec.config_for(code)
    layout = dict(spec.local.get("splits", {}))
    layout.update(spec.local.get("overrides", {}).get(config, {}))
    if split not in layout:
        raise FileNotFoundError(f"task {spec.name}: no local release layout for split {split!r} "
                                f"(local files have: {', '.join(layout) or 'none'})")
    return resolve(root) / layout[split].format(code=code, config=config)


def load_docs(spec: TaskSpec, code: str, split: str, source: str = "embedded", root: str | None = None) -> list[dict]:
    """A task's documents for one language and split, in the hub schema."""
    config = spec.config_for(code)
    if source == "embedded":
        from maple_utils import tiny

        return read_jsonl(tiny.sample_path(spec.name, config, split))
    if source == "local":
        path = local_path(spec, code, split, root)
        if not path.is_file():
            raise FileNotFoundError(f"task {spec.name}, language {code}: missing local file {path}")
        return LOCAL_READERS[spec.local["format"]](path)
    if source == "hub":
        from maple_utils import hub

        hub_id, name = ("aps/super_glue", "copa") if config == "copa" else (spec.hub_id, config)
        return hub.load_rows(hub_id, name, split=split)
    raise ValueError(f"unknown data_source {source!r} (allowed: embedded, local, hub)")


def pick_fewshot(docs: list[dict], k: int, seed: int) -> list[dict]:
    """The same k exemplars for every test item, drawn with a fixed seed (MEGAVERSE protocol)."""
    if k <= 0 or not docs:
        return []
    return random.Random(seed).sample(docs, min(k, len(docs)))
