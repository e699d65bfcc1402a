"""Evaluate one model (a base, or a base with an adapter) on the tasks and languages of a RunConfig.

Classification tasks pick the choice with the highest log-likelihood; generative tasks decode greedily and
are scored by the task's metrics. Per-item predictions are kept for error analysis and paired tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

from maple_utils import metrics, results, scoring
from maple_utils.tasks import TaskSpec, load_docs, load_task, pick_fewshot


def plan(cfg) -> list[tuple[str, str]]:
    """(task, language) pairs to evaluate: each task on the requested languages it has."""
    pairs = []
    for task in cfg.tasks:
        spec = load_task(task)
        pairs += [(task, code) for code in cfg.languages if code in spec.languages()]
    return pairs


def _score_loglikelihood(model, tokenizer, spec: TaskSpec, prompts: list[str], docs: list[dict], batch_size: int):
    requests = [(p, choice) for p in prompts for choice in spec.choices]
    lls = scoring.loglikelihood(model, tokenizer, requests, batch_size=batch_size)
    k = len(spec.choices)
    items = []
    for i, doc in enumerate(docs):
        scores = [ll for ll, _ in lls[i * k:(i + 1) * k]]
        pred = max(range(k), key=scores.__getitem__)
        gold = spec.label(doc)
        items.append({"prediction": spec.choices[pred].strip(), "reference": spec.choices[gold].strip(),
                      "scores": {"acc": float(pred == gold)}, "loglikelihoods": scores})
    return items


def _score_generation(model, tokenizer, spec: TaskSpec, prompts: list[str], docs: list[dict], code: str,
                      batch_size: int, max_new_tokens: int):
    outputs = scoring.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    items = []
    for doc, out in zip(docs, outputs):
        golds = spec.answers(doc)
        items.append({"prediction": out, "reference": golds,
                      "scores": metrics.score_generation(spec.metrics, out, golds, code)})
    return items


def evaluate_pair(model, tokenizer, cfg, task: str, code: str) -> tuple[list[dict], dict]:
    """Per-item results and the settings used, for one task and language."""
    spec = load_task(task)
    config = spec.config_for(code)
    eval_split, fewshot_split = spec.splits_for(config)
    docs = load_docs(spec, code, eval_split, cfg.data_source, cfg.data_root)
    k = cfg.k_shot.get(task, spec.k_shot)
    if fewshot_split == eval_split:
        # Exemplars drawn from the evaluated split are not scored themselves (MLQA on validation).
        shots = pick_fewshot(docs, k, cfg.seed)
        docs = [d for d in docs if d not in shots]
    else:
        shots = pick_fewshot(load_docs(spec, code, fewshot_split, cfg.data_source, cfg.data_root) if k else [], k, cfg.seed)
    if cfg.limit:
        docs = docs[:cfg.limit]
    prefix = spec.fewshot_prefix(shots)
    prompts = [prefix + spec.render(d) for d in docs]
    if spec.scoring == "loglikelihood":
        items = _score_loglikelihood(model, tokenizer, spec, prompts, docs, cfg.eval_batch_size)
    else:
        max_new = cfg.max_new_tokens or spec.max_new_tokens
        items = _score_generation(model, tokenizer, spec, prompts, docs, code, cfg.eval_batch_size, max_new)
    for i, (item, doc) in enumerate(zip(items, docs)):
        item["id"] = doc.get("id", doc.get("idx", i))
    return items, {"split": eval_split, "k_shot": len(shots), "scoring": spec.scoring, "metrics": spec.metrics}


def evaluate(model, tokenizer, cfg, identity: dict, run_dir: str | Path, progress: bool = True) -> list[dict]:
    """Result rows for every (task, language) of the config; per-item predictions go to run_dir/predictions/."""
    from tqdm import tqdm

    rows = []
    pairs = plan(cfg)
    for task, code in tqdm(pairs, desc="evaluate", disable=not progress, file=sys.stdout, mininterval=1.0):
        items, used = evaluate_pair(model, tokenizer, cfg, task, code)
        results.write_jsonl(Path(run_dir) / "predictions" / f"{task}-{code}.jsonl", items)
        for metric in used["metrics"]:
            value, stderr = metrics.mean_stderr([it["scores"][metric] for it in items])
            rows.append(results.make_row(identity, task=task, language=code, metric=metric, value=value,
                                         stderr=stderr, n=len(items), split=used["split"], k_shot=used["k_shot"],
                                         scoring=used["scoring"], limit=cfg.limit, seed=cfg.seed))
    return rows
