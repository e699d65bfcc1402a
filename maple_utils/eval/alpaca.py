"""AlpacaEval: the evaluation set, model outputs in alpaca_eval's format, and win rates.

Outputs are written as alpaca_eval reads them (`alpaca_eval --model_outputs model_outputs.json`): a JSON
list of {instruction, output, generator, dataset}. Win rate follows alpaca_eval's definition: a judge's
preference per instruction in [1, 2] (1 = reference better, 2 = model better, 1.5 = tie), win rate =
mean(preference - 1) x 100, standard error = SEM x 100 (mission_anchors.md section 5).
"""

from __future__ import annotations

from pathlib import Path

from maple_utils import io, layout, registry, results
from maple_utils.data import instruct, sources
from maple_utils.eval import metrics, scoring


def spec() -> dict:
    """The registry's alpaca_eval entry: reference generator, default budget, where the set lives."""
    return registry.read("tasks")["alpaca_eval"]


def load_eval_set(cfg) -> tuple[list[dict], sources.Origin]:
    """Instructions with the reference model's outputs (AlpacaEval 1: text_davinci_003), and their origin."""
    entry = spec()
    records, origin = sources.load("alpaca_eval", entry, cfg.data_source, cfg.data_root, entry["hub"]["split"],
                                   config="alpaca_eval")
    for i, rec in enumerate(records, start=1):
        missing = [k for k in ("instruction", "output") if not isinstance(rec.get(k), str)]
        if missing:
            raise ValueError(f"{origin.location}: record {i}: missing string field(s) {missing}")
    return (records[:cfg.alpaca_eval_limit] if cfg.alpaca_eval_limit else records), origin


def generate_outputs(model, tokenizer, records: list[dict], generator: str, cfg) -> list[dict]:
    """The model's answer to each instruction, prompted with the template it was finetuned with."""
    prompts = [instruct.format_prompt(cfg.prompt_template, r["instruction"], None) for r in records]
    budget = cfg.alpaca_eval_max_new_tokens or spec()["max_new_tokens"]
    outputs = scoring.generate(model, tokenizer, prompts, max_new_tokens=budget,
                               batch_size=cfg.alpaca_eval_batch_size, stop="\n### ")
    return [{"instruction": r["instruction"], "output": out, "generator": generator,
             "dataset": r.get("dataset", "")} for r, out in zip(records, outputs)]


def win_rate(preferences: list[float]) -> tuple[float, float]:
    """alpaca_eval's win rate and its standard error, both in percent."""
    for p in preferences:
        if not 1.0 <= p <= 2.0:
            raise ValueError(f"preference {p} outside [1, 2] (1 = reference, 2 = model, 1.5 = tie)")
    mean, sem = metrics.mean_stderr([p - 1.0 for p in preferences])
    return mean * 100, sem * 100


def write_outputs(run_dir: str | Path, outputs: list[dict], references: list[dict]) -> Path:
    """model_outputs.json and reference_outputs.json, as alpaca_eval reads them."""
    io.write_json(layout.alpaca_eval_references(run_dir), references)
    return io.write_json(layout.alpaca_eval_outputs(run_dir), outputs)


def output_rows(identity: dict, outputs: list[dict], cfg) -> list[dict]:
    """Rows describing the outputs (count, mean length, empty share) until a judge scores them."""
    lengths = [len(o["output"]) for o in outputs]
    mean_len, se_len = metrics.mean_stderr([float(n) for n in lengths])
    empty, se_empty = metrics.mean_stderr([float(n == 0) for n in lengths])
    common = dict(task="alpaca_eval", language="en", n=len(outputs), split="eval", k_shot=0, scoring="generate",
                  limit=cfg.alpaca_eval_limit, task_version=spec()["version"],
                  registry_hash=registry.entry_hash(spec()))
    return [results.make_row(identity, metric="output_chars", value=mean_len, stderr=se_len, **common),
            results.make_row(identity, metric="empty_output_rate", value=empty, stderr=se_empty, **common)]
