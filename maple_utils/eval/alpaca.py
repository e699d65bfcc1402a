"""AlpacaEval: the evaluation set, model outputs in alpaca_eval's format, and win rates.

Outputs are written as alpaca_eval reads them (`alpaca_eval --model_outputs model_outputs.json`): a JSON
list of {instruction, output, generator, dataset}. Win rate follows alpaca_eval's definition: a judge's
preference per instruction in [1, 2] (1 = reference better, 2 = model better, 1.5 = tie), win rate =
mean(preference - 1) x 100, standard error = SEM x 100 (mission_anchors.md section 5); the judging itself
is maple_utils.eval.judges.
"""

from __future__ import annotations

from pathlib import Path

from maple_utils import io, layout, registry, results
from maple_utils.data import instruct, sources
from maple_utils.eval import metrics, scoring
from maple_utils.eval.tasks import chat_prompt


def spec() -> dict:
    """The registry's alpaca_eval entry: reference generator, default budget, where the set lives."""
    return registry.read("tasks")["alpaca_eval"]


def load_eval_set(cfg) -> tuple[list[dict], sources.Origin]:
    """Instructions with the reference model's outputs (AlpacaEval 1: text_davinci_003), and their origin."""
    entry = spec()
    records, origin = sources.load(
        "alpaca_eval", entry, cfg.data_source, cfg.data_root, entry["hub"]["split"], config="alpaca_eval"
    )
    for i, rec in enumerate(records, start=1):
        missing = [k for k in ("instruction", "output") if not isinstance(rec.get(k), str)]
        if missing:
            raise ValueError(f"{origin.location}: record {i}: missing string field(s) {missing}")
    return (records[: cfg.alpaca_eval_limit] if cfg.alpaca_eval_limit else records), origin


def render_prompts(tokenizer, records: list[dict], cfg) -> tuple[list[str], bool]:
    """Each instruction in the run's template, and whether that is the model's own chat template (which
    writes BOS itself)."""
    if instruct.uses_chat_template(cfg.prompt_template):
        return [
            chat_prompt(tokenizer, None, [{"role": "user", "content": r["instruction"]}], cfg.model) for r in records
        ], True
    return [instruct.format_prompt(cfg.prompt_template, r["instruction"], None) for r in records], False


def generate_outputs(model, tokenizer, records: list[dict], generator: str, cfg) -> list[dict]:
    """The model's answer to each instruction, prompted with the template it was finetuned with."""
    prompts, chat = render_prompts(tokenizer, records, cfg)
    budget = cfg.alpaca_eval_max_new_tokens or spec()["max_new_tokens"]
    # EOS ends an answer, and "\n### " a template's next turn (a chat template's BOS is not doubled: scoring.encode)
    outputs = scoring.generate(
        model, tokenizer, prompts, max_new_tokens=budget, batch_size=cfg.alpaca_eval_batch_size, stop="\n### "
    )
    outputs = [out.strip() for out in outputs]
    return [
        {"instruction": r["instruction"], "output": out, "generator": generator, "dataset": r.get("dataset", "")}
        for r, out in zip(records, outputs)
    ]


def write_outputs(run_dir: str | Path, outputs: list[dict], references: list[dict]) -> Path:
    """model_outputs.json and reference_outputs.json, as alpaca_eval reads them."""
    io.write_json(layout.alpaca_eval_references(run_dir), references)
    return io.write_json(layout.alpaca_eval_outputs(run_dir), outputs)


def read_outputs(run_dir: str | Path) -> tuple[list[dict], list[dict]]:
    """The model's outputs and the reference outputs that 04_alpaca_eval wrote; duplicated or missing
    instructions are named with their rows."""
    outputs, references = (
        io.read_json(layout.alpaca_eval_outputs(run_dir)),
        io.read_json(layout.alpaca_eval_references(run_dir)),
    )
    for name, records in (("model_outputs", outputs), ("reference_outputs", references)):
        seen: dict[str, int] = {}
        for i, rec in enumerate(records, start=1):
            if (
                not isinstance(rec, dict)
                or not isinstance(rec.get("instruction"), str)
                or not isinstance(rec.get("output"), str)
            ):
                raise ValueError(f"{name}.json row {i}: expected an object with string instruction and output")
            if rec["instruction"] in seen:
                raise ValueError(f"{name}.json rows {seen[rec['instruction']]} and {i}: the same instruction twice")
            seen[rec["instruction"]] = i
    missing = [o["instruction"][:60] for o in outputs if o["instruction"] not in {r["instruction"] for r in references}]
    if missing:
        raise ValueError(
            f"{layout.MODEL_OUTPUTS}: {len(missing)} instruction(s) have no reference output, e.g. {missing[0]!r}"
        )
    return outputs, references


def judgements_path(run_dir: str | Path) -> Path:
    return layout.alpaca_eval_judgements(run_dir)


def write_annotations(run_dir: str | Path, annotations: list[dict]) -> Path:
    return io.write_json(layout.alpaca_eval_annotations(run_dir), annotations)


def win_rate_rows(identity: dict, scores: dict, cfg) -> list[dict]:
    """Rows of the judged win rate against the reference generator (percent), n and unparsed answers."""
    import math

    common = dict(
        task="alpaca_eval",
        language="en",
        n=scores["n"],
        split="eval",
        k_shot=0,
        # who judged: kind, model and annotator, e.g. judge:api:gpt-4:alpaca_eval_gpt4 (win rates of two judges
        # or two annotators are not comparable)
        scoring=f"judge:{cfg.judge}:{cfg.judge_model}:{cfg.judge_annotator}",
        limit=cfg.alpaca_eval_limit,
        task_version=spec()["version"],
        registry_hash=registry.entry_hash(spec()),
    )
    rows = [
        results.make_row(identity, metric="unparsed_judgements", value=float(scores["unparsed"]), **common),
        results.make_row(identity, metric="avg_output_chars", value=float(scores["avg_length"]), **common),
    ]
    if not math.isnan(scores["win_rate"]):
        rows += [
            results.make_row(
                identity, metric="win_rate", value=scores["win_rate"], stderr=scores["standard_error"], **common
            ),
            results.make_row(identity, metric="discrete_win_rate", value=scores["discrete_win_rate"], **common),
        ]
    return rows


def output_rows(identity: dict, outputs: list[dict], cfg) -> list[dict]:
    """Rows describing the outputs (count, mean length, empty share) until a judge scores them."""
    lengths = [len(o["output"]) for o in outputs]
    mean_len, se_len = metrics.mean_stderr([float(n) for n in lengths])
    empty, se_empty = metrics.mean_stderr([float(n == 0) for n in lengths])
    common = dict(
        task="alpaca_eval",
        language="en",
        n=len(outputs),
        split="eval",
        k_shot=0,
        scoring="generate",
        limit=cfg.alpaca_eval_limit,
        task_version=spec()["version"],
        registry_hash=registry.entry_hash(spec()),
    )
    return [
        results.make_row(identity, metric="output_chars", value=mean_len, stderr=se_len, **common),
        results.make_row(identity, metric="empty_output_rate", value=empty, stderr=se_empty, **common),
    ]


def answer(model, tokenizer, references: list[dict], origin: sources.Origin, run) -> tuple[list[dict], list, dict]:
    """04_alpaca_eval's body: the run's answers to the evaluation set, written with the references in
    alpaca_eval's format; returns the outputs, their rows and the run record's facts."""
    outputs = generate_outputs(model, tokenizer, references, generator=run.run_id, cfg=run.cfg)
    path = write_outputs(run.folder, outputs, references)
    facts = {"prompt_template": run.cfg.prompt_template, "data": origin.as_dict(), "model_outputs": str(path)}
    return outputs, output_rows(run.identity(), outputs, run.cfg), facts
