"""AlpacaEval: the evaluation set, model outputs in alpaca_eval's format, and win rates.

Outputs are written as alpaca_eval reads them (`alpaca_eval --model_outputs model_outputs.json`): a JSON
list of {instruction, output, generator, dataset}. Win rate follows alpaca_eval's definition: a judge's
preference per instruction in [1, 2] (1 = reference better, 2 = model better, 1.5 = tie), win rate =
mean(preference - 1) x 100, standard error = SEM x 100 (mission_anchors.md section 5).
"""

from __future__ import annotations

import json
from pathlib import Path

from maple_utils import instruct_data, metrics, results, scoring
from maple_utils.paths import resolve

LOCAL_REFERENCE = "alpaca_eval/results/text_davinci_003/model_outputs.json"  # AlpacaEval 1 reference outputs


def load_eval_set(source: str = "embedded", root: str | None = None, limit: int | None = None) -> list[dict]:
    """Instructions with the reference model's outputs (AlpacaEval 1: text_davinci_003)."""
    if source == "embedded":
        from maple_utils import tiny

        records = results.read_jsonl(tiny.sample_path("alpaca_eval", "alpaca_eval", "eval"))
    elif source == "local":
        path = resolve(root) / LOCAL_REFERENCE
        if not path.is_file():
            raise FileNotFoundError(f"alpaca_eval: missing local reference outputs {path}")
        records = json.loads(path.read_text(encoding="utf-8"))
    elif source == "hub":
        from maple_utils import hub

        records = hub.load_rows("tatsu-lab/alpaca_eval", "alpaca_eval", split="eval", trust_remote_code=True)
    else:
        raise ValueError(f"unknown data_source {source!r} (allowed: embedded, local, hub)")
    for i, rec in enumerate(records, start=1):
        missing = [k for k in ("instruction", "output") if not isinstance(rec.get(k), str)]
        if missing:
            raise ValueError(f"alpaca_eval record {i}: missing string field(s) {missing}")
    return records[:limit] if limit else records


def generate_outputs(model, tokenizer, records: list[dict], generator: str, template: str,
                     max_new_tokens: int, batch_size: int) -> list[dict]:
    """The model's answer to each instruction, prompted with its finetuning template."""
    prompts = [instruct_data.format_prompt(template, r["instruction"], None) for r in records]
    outputs = scoring.generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               stop="\n### ")
    return [{"instruction": r["instruction"], "output": out, "generator": generator,
             "dataset": r.get("dataset", "")} for r, out in zip(records, outputs)]


def win_rate(preferences: list[float]) -> tuple[float, float]:
    """alpaca_eval's win rate and its standard error, both in percent."""
    for p in preferences:
        if not 1.0 <= p <= 2.0:
            raise ValueError(f"preference {p} outside [1, 2] (1 = reference, 2 = model, 1.5 = tie)")
    mean, sem = metrics.mean_stderr([p - 1.0 for p in preferences])
    return mean * 100, sem * 100


def default_max_new_tokens() -> int:
    from maple_utils.paths import read_params

    return read_params("tasks")["alpaca_eval"]["max_new_tokens"]


def write_outputs(run_dir: str | Path, outputs: list[dict], references: list[dict]) -> Path:
    """<run_dir>/alpaca_eval/model_outputs.json and reference_outputs.json, as alpaca_eval reads them."""
    folder = Path(run_dir) / "alpaca_eval"
    results.atomic_write_json(folder / "reference_outputs.json", references)
    return results.atomic_write_json(folder / "model_outputs.json", outputs)


def output_rows(identity: dict, outputs: list[dict], cfg) -> list[dict]:
    """Rows describing the outputs (count, mean length, empty share) until a judge scores them."""
    lengths = [len(o["output"]) for o in outputs]
    mean_len, se_len = metrics.mean_stderr([float(n) for n in lengths])
    empty, se_empty = metrics.mean_stderr([float(n == 0) for n in lengths])
    common = dict(task="alpaca_eval", language="en", n=len(outputs), split="eval", k_shot=0, scoring="generate",
                  limit=cfg.alpaca_eval_limit, seed=cfg.seed)
    return [results.make_row(identity, metric="output_chars", value=mean_len, stderr=se_len, **common),
            results.make_row(identity, metric="empty_output_rate", value=empty, stderr=se_empty, **common)]
