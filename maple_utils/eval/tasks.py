"""Evaluation tasks as data: the tasks registry's entries, their documents, and their prompts.

A task's behaviour is its registry entry (prompt, choices, label field, splits, metrics); nothing here
branches on a task's name. Documents come through the one data-source dispatch (maple_utils.data.sources).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from maple_utils import registry
from maple_utils.data import languages as lang_table
from maple_utils.data import sources


@dataclass(frozen=True)
class TaskSpec:
    name: str
    version: int
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
    answer_prefix: str = ""
    eval_items: int | None = None
    max_new_tokens: int | None = None
    stop: list = field(default_factory=list)
    instruction: str | None = None
    fewshot_source: dict = field(default_factory=dict)
    generative: dict = field(default_factory=dict)
    maps: dict = field(default_factory=dict)
    split_overrides: dict = field(default_factory=dict)
    hub: dict = field(default_factory=dict)
    local: dict = field(default_factory=dict)
    embedded_sample: dict = field(default_factory=dict)
    megaverse_draw: int = 1  # which np.random.choice after the seed MEGAVERSE's script for the task keeps

    def languages(self) -> list[str]:
        return lang_table.supporting(self.language_column)

    def config_for(self, code: str) -> str:
        config = lang_table.table()[code].config_for(self.language_column)
        if not config:
            raise ValueError(
                f"task {self.name} has no data for language {code!r} (it has: {', '.join(self.languages())})"
            )
        return config

    def splits_for(self, config: str, override: dict | None = None) -> tuple[str, str]:
        """(evaluated split, exemplars' split) for a config: the run's override (RunConfig.split_overrides),
        else the registry's for that config, else the task's."""
        over = {**self.split_overrides.get(config, {}), **(override or {})}
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
        """The gold continuation, as a few-shot exemplar shows it (the first gold answer, as MEGAVERSE)."""
        if self.scoring == "loglikelihood":
            return self.choices[self.label(doc)]
        return self.answers(doc)[0]

    def prompt_for(self, doc: dict) -> str:
        """What the model continues: the rendered document and, for generation, the text before an answer."""
        return self.render(doc) + (self.answer_prefix if self.scoring == "generate" else "")

    def preamble(self, exemplars: list[dict]) -> str:
        """The text before every item: the task instruction, then the exemplars with their answers, each
        block ended by a blank line."""
        blocks = ([self.instruction] if self.instruction else []) + [
            self.prompt_for(d) + self.target(d) for d in exemplars
        ]
        return "".join(block + "\n\n" for block in blocks)

    def compose(self, exemplars: list[dict], doc: dict, tokenizer=None) -> str:
        """The whole prompt for one item. With a tokenizer: MEGAVERSE's chat form for instruction-tuned
        models (mission_anchors.md 2.1), in the tokenizer's own chat template: the instruction as the
        system turn, each exemplar a user turn and the assistant's answer, then the item's user turn."""
        if tokenizer is None:
            return self.preamble(exemplars) + self.prompt_for(doc)
        turns = []
        for shot in exemplars:
            turns += [
                {"role": "user", "content": self.render(shot)},
                {"role": "assistant", "content": self.target(shot).strip()},
            ]
        turns.append({"role": "user", "content": self.render(doc)})
        return chat_prompt(tokenizer, self.instruction, turns)

    @property
    def entry(self) -> dict:
        """The task's registry entry as written (its hash identifies the task's definition in result rows)."""
        return registry.read("tasks")["tasks"][self.name]

    @property
    def registry_hash(self) -> str:
        return registry.entry_hash(self.entry)


def chat_prompt(tokenizer, system: str | None, turns: list[dict], model: str = "the model") -> str:
    """Turns in the tokenizer's chat template, ready for the assistant's answer. A template without a
    system role (Mistral-Instruct's) gets the system text at the head of the first user turn, as FastChat's
    `mistral` template that MEGAVERSE uses does."""
    from jinja2.exceptions import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"prompt_template 'chat': the tokenizer of {model} has no chat template")
    if not system:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": system}] + turns, tokenize=False, add_generation_prompt=True
        )
    except TemplateError:  # raised by the template itself (raise_exception): it has no system role
        first = {**turns[0], "content": f"{system}\n\n{turns[0]['content']}"}
        return tokenizer.apply_chat_template([first] + turns[1:], tokenize=False, add_generation_prompt=True)


def load_task(name: str) -> TaskSpec:
    tasks = registry.read("tasks")["tasks"]
    if name not in tasks:
        raise KeyError(f"unknown task {name!r} (tasks: {', '.join(tasks)})")
    return TaskSpec(name=name, **tasks[name])


# ---------------------------------------------------------------- documents


def load_docs(
    spec: TaskSpec, code: str, split: str, source: str = "embedded", root: str | None = None
) -> tuple[list[dict], sources.Origin]:
    """A task's documents for one language and split, in the hub schema, and where they came from."""
    return sources.load(spec.name, spec.entry, source, root, split, config=spec.config_for(code), code=code)


def task_reads(
    spec: TaskSpec, code: str, k: int, source: str, root: str | None, override: dict | None = None
) -> list[tuple[str, dict, str, dict]]:
    """What an evaluation of one language with k exemplars reads, as (entry name, entry, split, template
    keys): the evaluated split, and the exemplars' split or source when apart."""
    config = spec.config_for(code)
    eval_split, fewshot_split = spec.splits_for(config, override)
    keys = {"config": config, "code": code}
    reads = [(spec.name, spec.entry, eval_split, keys)]
    if k and spec.fewshot_source:
        fs = spec.fewshot_source
        reads.append((f"{spec.name}-exemplars", fs, _fewshot_source_split(fs, source, root), {"config": fs["config"]}))
    elif k and fewshot_split != eval_split:
        reads.append((spec.name, spec.entry, fewshot_split, keys))
    return reads


def check_data(
    spec: TaskSpec, code: str, source: str, root: str | None, k: int, override: dict | None = None
) -> list[str]:
    """The files or hub ids a task reads for one language, or a MissingDataError naming what is missing."""
    return [
        sources.check_available(name, entry, source, root, split, **keys)
        for name, entry, split, keys in task_reads(spec, code, k, source, root, override)
    ]


def _fewshot_source_split(fs: dict, source: str, root: str | None) -> str:
    """The split of a fewshot_source to read: its own, or locally its declared fallback when the file for its
    own split is absent (SQuAD train is not in ../shared/data; its dev set is)."""
    split = fs["split"]
    if (
        source == "local"
        and "local_fallback_split" in fs
        and not sources.local_path("exemplars", fs, root, split, config=fs["config"]).is_file()
    ):
        return fs["local_fallback_split"]
    return split


def load_fewshot_pool(
    spec: TaskSpec, code: str, split: str, source: str, root: str | None, evaluated: list[dict]
) -> tuple[list[dict], sources.Origin]:
    """The documents exemplars are drawn from: the task's own split, or its `fewshot_source` (XQuAD: English
    SQuAD). A source that shares documents with the evaluated ones loses them (matched by id), and every
    other question on their passages (matched by the `exclude_passages` field)."""
    fs = spec.fewshot_source
    if not fs:
        return load_docs(spec, code, split, source, root)
    pool, origin = sources.load(
        f"{spec.name}-exemplars", fs, source, root, _fewshot_source_split(fs, source, root), config=fs["config"]
    )
    ids = {d.get("id") for d in evaluated}
    field_name = fs.get("exclude_passages")
    passages = {d[field_name] for d in pool if d.get("id") in ids} if field_name else set()
    return [d for d in pool if d.get("id") not in ids and not (field_name and d[field_name] in passages)], origin


FEWSHOT_SAMPLERS = ("random", "megaverse")


def pick_fewshot(docs: list[dict], k: int, seed: int, sampler: str = "random", draw: int = 1) -> list[dict]:
    """The same k exemplars for every test item, drawn with a fixed seed. `random`: Python's
    random.Random(seed).sample. `megaverse`: as MEGAVERSE draws them (MV mega/data/data_utils.py,
    choose_few_shot_examples with few_shot_selection "random": `np.random.choice(len(pool), size=k,
    replace=False)` on numpy's global state, seeded once by `np.random.seed(args.seed)` in main(), seed 42 by
    default), in that order; `draw`: which draw after the seed the task's script keeps (XNLI and XCOPA draw in
    main() and again in eval_cls.evaluate_model, which uses its own: the second)."""
    if k <= 0 or not docs:
        return []
    n = min(k, len(docs))
    if sampler == "random":
        return random.Random(seed).sample(docs, n)
    if sampler != "megaverse":
        raise ValueError(f"fewshot_sampler {sampler!r} is not one of: {', '.join(FEWSHOT_SAMPLERS)}")
    import numpy as np

    state = np.random.RandomState(seed)  # what np.random.seed(seed) makes numpy's global state
    for _ in range(draw):
        picked = state.choice(len(docs), size=n, replace=False).astype(int).tolist()
    return [docs[i] for i in picked]
