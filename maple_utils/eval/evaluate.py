"""Evaluate a model (a base, a base with an adapter, or each of several adapters on one base) on the tasks
and languages of a RunConfig, under the MEGAVERSE protocol of the tasks registry.

Classification tasks pick the choice with the highest log-likelihood (or, with `classification: generate`,
answer greedily and are parsed); generative tasks decode greedily and are scored by the task's metrics.
Per-item predictions are kept for error analysis and paired tests.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from maple_utils import io, results
from maple_utils.data import instruct, sources
from maple_utils.eval import metrics, scoring
from maple_utils.eval.tasks import (
    TaskSpec,
    check_data,
    load_docs,
    load_fewshot_pool,
    load_task,
    pick_fewshot,
    task_reads,
)


def task_languages(cfg) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(task, language) pairs to evaluate, and the requested pairs a task has no data for (listed by the
    dry run and recorded in the run record, never silently dropped)."""
    pairs, lacking = [], []
    for task in cfg.tasks:
        offered = load_task(task).languages()
        for code in cfg.languages_of(task):
            (pairs if code in offered else lacking).append((task, code))
    return pairs, lacking


def k_for(cfg, spec: TaskSpec) -> int:
    return cfg.k_shot.get(spec.name, spec.k_shot)


def check_inputs(cfg) -> dict[str, list[str]]:
    """Every file or hub id the evaluation will read, checked before any model loads: a MissingDataError
    names the task, the language and the path expected; a local file is also read, so that a damaged one
    is named with its row now (DataFileError), not after the model has loaded."""
    found = {}
    for task, code in task_languages(cfg)[0]:
        spec = load_task(task)
        found[f"{task}-{code}"] = check_data(
            spec, code, cfg.data_source, cfg.data_root, k_for(cfg, spec), cfg.split_overrides.get(task)
        )
        if cfg.data_source == "local":
            for name, entry, split, keys in task_reads(
                spec, code, k_for(cfg, spec), "local", cfg.data_root, cfg.split_overrides.get(task)
            ):
                sources.load(name, entry, "local", cfg.data_root, split, **keys)
    return found


def _score_loglikelihood(model, tokenizer, spec: TaskSpec, prompts: list[str], docs: list[dict], batch_size: int):
    requests = [(p, choice) for p in prompts for choice in spec.choices]
    lls = scoring.loglikelihood(model, tokenizer, requests, batch_size=batch_size)
    k = len(spec.choices)
    items = []
    for i, doc in enumerate(docs):
        scores = [ll for ll, _ in lls[i * k : (i + 1) * k]]
        pred = max(range(k), key=scores.__getitem__)
        gold = spec.label(doc)
        items.append(
            {
                "loglikelihoods": scores,
                "prediction": spec.choices[pred].strip(),
                "reference": spec.choices[gold].strip(),
                "scores": {"acc": float(pred == gold)},
            }
        )
    return items


def _score_generation(
    model,
    tokenizer,
    spec: TaskSpec,
    prompts: list[str],
    docs: list[dict],
    code: str,
    batch_size: int,
    max_new_tokens: int,
    stop: list[str],
):
    outputs = scoring.generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, stop=stop, batch_size=batch_size
    )
    items = []
    for doc, out in zip(docs, outputs):
        golds = spec.answers(doc)
        answer = out.strip()  # MEGAVERSE strips its outputs before scoring
        items.append(
            {
                "output": out,
                "prediction": answer,
                "reference": golds,
                "scores": metrics.score_generation(spec.metrics, answer, golds, code),
            }
        )
    return items


def _score_choices_generatively(
    model,
    tokenizer,
    spec: TaskSpec,
    prompts: list[str],
    docs: list[dict],
    batch_size: int,
    max_new_tokens: int,
    stop: list[str],
):
    gen = spec.generative
    outputs = scoring.generate(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, stop=stop, batch_size=batch_size
    )
    items = []
    for doc, out in zip(docs, outputs):
        gold = spec.choices[spec.label(doc)].strip()
        items.append(
            {
                "output": out,
                "prediction": out.strip(),
                "reference": gold,
                "scores": metrics.classification_scores(gen["parser"], out, gold, [c.strip() for c in spec.choices]),
            }
        )
    return items


def fewshot_sampler(cfg) -> str:
    """The run's exemplar draw: its fewshot_sampler, else its protocol's (megaverse: MEGAVERSE's)."""
    return cfg.fewshot_sampler or ("megaverse" if cfg.protocol == "megaverse" else "random")


def stop_strings(cfg, stop: list[str]) -> list[str]:
    """Where generation stops: at the task's stop strings, or nowhere under the megaverse protocol (MEGAVERSE
    passes no stop sequence; its parsers then read the first line, or the whole output for Belebele's letter)."""
    return [] if cfg.protocol == "megaverse" else stop


def scoring_mode(cfg, spec: TaskSpec) -> tuple[str, list[str], int | None]:
    """How a task is scored in a run: (loglikelihood | generate, its metrics, its generation budget)."""
    if spec.scoring == "generate":
        return "generate", spec.metrics, cfg.max_new_tokens or spec.max_new_tokens
    if cfg.classification == "generate":
        return "generate", spec.generative["metrics"], cfg.max_new_tokens or spec.generative["max_new_tokens"]
    return "loglikelihood", spec.metrics, None


def fit_to_context(
    spec: TaskSpec, shots: list[dict], docs: list[dict], tokenizer, budget: int, chat: bool = False
) -> tuple[list[str], list[int], list[bool]]:
    """Each item's prompt within `budget` tokens: exemplars dropped one by one from the end while it is
    longer (MEGAVERSE, mission_anchors.md 2.1); a prompt too long even with none is left whole, and
    scoring truncates it from the left (lm-eval's rule). chat: in the tokenizer's chat template. Returns the
    prompts, the exemplars each kept and whether each is still too long."""
    template = tokenizer if chat else None
    prompts, kept, too_long = [], [], []
    for doc in docs:
        n = len(shots)
        prompt = spec.compose(shots, doc, template)
        while len(scoring.encode(tokenizer, prompt)) > budget and n > 0:
            n -= 1
            prompt = spec.compose(shots[:n], doc, template)
        prompts.append(prompt)
        kept.append(n)
        too_long.append(len(scoring.encode(tokenizer, prompt)) > budget)
    return prompts, kept, too_long


def build_prompts(
    spec: TaskSpec,
    code: str,
    k: int,
    seed: int,
    source: str,
    root: str | None,
    limit: int | None = None,
    split_override: dict | None = None,
    sampler: str = "random",
) -> tuple[list[dict], list[str], dict]:
    """The documents to score for one task and language, their prompts (the same k exemplars before each),
    and the settings used (`used["exemplars"]`: the exemplar documents). split_override: {eval_split,
    fewshot_split} instead of the task's."""
    config = spec.config_for(code)
    eval_split, fewshot_split = spec.splits_for(config, split_override)
    docs, origin = load_docs(spec, code, eval_split, source, root)
    docs = docs[: spec.eval_items] if spec.eval_items else docs
    origins = [origin.as_dict()]
    if fewshot_split == eval_split:
        # Exemplars drawn from the evaluated split are not scored themselves (MLQA on validation).
        shots = pick_fewshot(docs, k, seed, sampler, spec.megaverse_draw)
        docs = [d for d in docs if d not in shots]
    elif k:
        pool, origin = load_fewshot_pool(spec, code, fewshot_split, source, root, docs)
        origins.append(origin.as_dict())
        shots = pick_fewshot(pool, k, seed, sampler, spec.megaverse_draw)
    else:
        shots = []
    if limit:
        docs = docs[:limit]
    preamble = spec.preamble(shots)
    used = {
        "split": eval_split,
        "k_shot": len(shots),
        "scoring": spec.scoring,
        "metrics": spec.metrics,
        "origins": origins,
        "exemplars": shots,
    }
    return docs, [preamble + spec.prompt_for(d) for d in docs], used


def evaluate_pair(model, tokenizer, cfg, task: str, code: str) -> tuple[list[dict], dict]:
    """Per-item results and the settings used, for one task and language."""
    spec = load_task(task)
    docs, _, used = build_prompts(
        spec,
        code,
        k_for(cfg, spec),
        cfg.fewshot_seed,
        cfg.data_source,
        cfg.data_root,
        cfg.limit,
        cfg.split_overrides.get(task),
        fewshot_sampler(cfg),
    )
    shots = used.pop("exemplars")
    mode, used["metrics"], max_new = scoring_mode(cfg, spec)
    used["scoring"] = mode
    room = (
        max_new
        if mode == "generate"
        else max(len(tokenizer(c, add_special_tokens=False)["input_ids"]) for c in spec.choices)
    )
    prompts, kept, too_long = fit_to_context(
        spec,
        shots,
        docs,
        tokenizer,
        scoring.model_max_length(model, tokenizer) - room,
        chat=instruct.uses_chat_template(cfg.prompt_template),
    )
    if mode == "loglikelihood":
        items = _score_loglikelihood(model, tokenizer, spec, prompts, docs, cfg.eval_batch_size)
    elif spec.scoring == "loglikelihood":
        stop = stop_strings(cfg, spec.generative["stop"])
        items = _score_choices_generatively(model, tokenizer, spec, prompts, docs, cfg.eval_batch_size, max_new, stop)
    else:
        stop = stop_strings(cfg, spec.stop)
        items = _score_generation(model, tokenizer, spec, prompts, docs, code, cfg.eval_batch_size, max_new, stop)
    shot_ids = [_doc_id(d, i) for i, d in enumerate(shots)]
    for i, (item, doc, prompt, n, long) in enumerate(zip(items, docs, prompts, kept, too_long)):
        # item id, prompt hash and the exemplars used first, so that paired tests can match items across runs
        items[i] = {
            "id": _doc_id(doc, i),
            "prompt_sha256": hashlib.sha256(prompt.encode()).hexdigest()[:16],
            "exemplars": shot_ids[:n],
            "truncated": long,
            **item,
        }
    used.update(exemplars_dropped=sum(n < len(shots) for n in kept), truncated=sum(too_long))
    return items, used


def _doc_id(doc: dict, index: int):
    return doc.get("id", doc.get("idx", index))


def evaluate(
    model, tokenizer, cfg, identity: dict, run_dir: str | Path, progress: bool = True
) -> tuple[list[dict], dict]:
    """Result rows for every (task, language) of the config, and facts for the run record (the data read,
    the pairs a task lacks); per-item predictions go to run_dir/predictions/."""
    from tqdm import tqdm

    from maple_utils import layout

    rows, data = [], {}
    pairs, lacking = task_languages(cfg)
    for task, code in tqdm(pairs, desc="evaluate", disable=not progress, file=sys.stdout, mininterval=1.0):
        spec = load_task(task)
        items, used = evaluate_pair(model, tokenizer, cfg, task, code)
        io.write_jsonl(layout.predictions(run_dir, task, code), items)
        data[f"{task}-{code}"] = used["origins"]
        for metric in used["metrics"]:
            value, stderr = metrics.mean_stderr([it["scores"][metric] for it in items])
            rows.append(
                results.make_row(
                    identity,
                    task=task,
                    language=code,
                    metric=metric,
                    value=value,
                    stderr=stderr,
                    n=len(items),
                    split=used["split"],
                    k_shot=used["k_shot"],
                    scoring=used["scoring"],
                    limit=cfg.limit,
                    seed=cfg.fewshot_seed,
                    task_version=spec.version,
                    registry_hash=spec.registry_hash,
                    exemplars_dropped=used["exemplars_dropped"],
                    truncated=used["truncated"],
                )
            )
    facts = {
        "data": data,
        "not_evaluated": [
            {"task": t, "language": c, "why": "the task has no data in this language"} for t, c in lacking
        ],
    }
    return rows, facts
