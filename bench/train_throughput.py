"""Training throughput: this project's trainer against TRL's SFTTrainer, side by side in one run.

    make bench-setup            # installs bench/requirements.txt (TRL, lm-eval) into .venv
    .venv/bin/python bench/train_throughput.py [--data ../shared/data] [--records 1000] [--repeats 3]   (make bench-train)
    .venv/bin/python bench/train_throughput.py --base smollm2-135m --records 64    # a packaged real model

--base bench (the default) is the random Llama below; --base names a model as a grid does (smollm2-135m,
gemma3-270m: their converted folders, fp32), trained with the same settings.

The same job for every contender: a random Llama (hidden 256, 4 layers, 4 heads, MLP 688, a vocabulary of
8,000 with a Llama-style tokenizer that prepends BOS, trained here on the records' text), the first 1,000
records of ../shared/data/alpaca/alpaca_5000.json (empty outputs left out) in the Alpaca template, the loss on
the response and EOS, LoRA r 8 / alpha 16 / dropout 0.05 on q_proj and v_proj, batch 8, one epoch, AdamW at
2e-4 with linear decay and no warmup, no gradient checkpointing, fp32, max length 1024 (nothing is cut:
TRL's padding-free mode refuses to truncate). Contenders:

  maple             maple_utils.train.loop (padding-free rows, per-example attention)
  trl               TRL's SFTTrainer with its defaults (padded batches), bf16 and gradient checkpointing off
  trl_padding_free  the same with padding_free=True (exact here only because TRL turns the KV cache off)

Each runs in its own process, so its peak resident memory is its own. Trained tokens/s counts the non-pad
tokens of every example trained on, over the training loop's wall time (model loading and tokenisation are
outside it). Each contender runs --repeats times (default 3), interleaved, and its median run is reported.
"untrained loss" is each contender's own objective on every example before any step (eval mode, token-weighted):
the two sides must agree on it. "final loss" is the mean of the last 10 optimiser steps' losses. The maple row also reports
its exactness: the largest logit difference between a padding-free batch of 8 and the same examples one by
one. Results go to bench/results/train_throughput.json and a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = 8000
SHAPE = dict(
    hidden_size=256,
    intermediate_size=688,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=1024,
)
SETTINGS = dict(
    rank=8,
    lora_alpha=16,
    lora_dropout=0.05,
    target_modules=["q_proj", "v_proj"],
    batch_size=8,
    epochs=1.0,
    learning_rate=2e-4,
    warmup_ratio=0.0,
    lr_scheduler="linear",
    max_length=1024,
    max_grad_norm=1.0,
    seed=42,
)
CONTENDERS = ("maple", "trl", "trl_padding_free")
LAST = 10  # steps averaged into the final loss


def records(data: Path, n: int) -> list[dict]:
    """{prompt, response} of the first n Alpaca records with an output, in the Alpaca template."""
    from maple_utils.data.instruct import format_prompt

    raw = json.loads((data / "alpaca" / "alpaca_5000.json").read_text(encoding="utf-8"))[:n]
    return [
        {"prompt": format_prompt("alpaca", r["instruction"], r["input"]), "response": r["output"]}
        for r in raw
        if r["output"].strip()
    ]


def build_model(folder: Path, examples: list[dict]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from maple_utils.embedded.tokenizer import SPECIALS, llama_style_tokenizer

    tok = llama_style_tokenizer(
        [e["prompt"] + e["response"] for e in examples],
        learned_vocab=VOCAB - len(SPECIALS) - 256,
        model_max_length=1024,
    )
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.unk_token_id,
        tie_word_embeddings=False,
        **SHAPE,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_maple(folder: Path, examples: list[dict]) -> dict:
    import torch

    from maple_utils import config
    from maple_utils.models import loading
    from maple_utils.train import batches, loop, modeling, varlen

    cfg = config.validate_run({**SETTINGS, "model": str(folder), "quant": 16, "checkpoint_every": None})
    tok = loading.load_tokenizer(str(folder))
    data = batches.tokenize([{"language": "en", **e} for e in examples], tok, cfg.max_length)
    loop.seed_everything(cfg.seed)
    model = modeling.attach_lora(
        loading.load_base(str(folder), 16), cfg.rank, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules, 16
    )
    model.eval()  # exactness on the untrained adapter, dropout off
    sample = data.examples[:8]
    with torch.no_grad():
        packed = batches.pack(sample)
        with varlen.padding_free(model):
            flat = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        alone = torch.cat([model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in sample])
        with varlen.padding_free(model):  # the objective before any step, on every example, by the loop's loss
            summed = sum(
                float(loop._loss_sum(model, batches.pack(data.examples[i : i + 8]), "cpu"))
                for i in range(0, len(data.examples), 8)
            )
        targets = sum(sum(t != batches.IGNORE for t in e["labels"]) for e in data.examples)
    model.train()
    start = time.perf_counter()
    record = loop.train(model, tok, data, cfg, progress=False)
    wall = time.perf_counter() - start
    losses = [c["loss"] for c in record["curve"]]
    return {
        "tokens": record["tokens"],
        "wall_s": wall,
        "steps": record["steps"],
        "losses": losses,
        "padding_fraction": record["padding_fraction"],
        "max_logit_diff": float((flat - alone).abs().max()),
        "untrained_loss": summed / targets,
    }


def run_trl(folder: Path, examples: list[dict], padding_free: bool) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from maple_utils.models import loading

    tok = loading.load_tokenizer(str(folder))  # the same pad token (<unk>, distinct from EOS)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype="float32")
    dataset = Dataset.from_list([{"prompt": e["prompt"], "completion": e["response"]} for e in examples])
    with tempfile.TemporaryDirectory() as out:
        args = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=SETTINGS["batch_size"],
            num_train_epochs=1,
            learning_rate=SETTINGS["learning_rate"],
            lr_scheduler_type="linear",
            warmup_steps=0,
            max_grad_norm=SETTINGS["max_grad_norm"],
            weight_decay=0.0,
            gradient_checkpointing=False,
            bf16=False,
            fp16=False,
            logging_steps=1,
            max_length=None if padding_free else SETTINGS["max_length"],
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=SETTINGS["seed"],
            dataloader_num_workers=0,
            padding_free=padding_free,
        )
        lora = LoraConfig(
            r=SETTINGS["rank"],
            lora_alpha=SETTINGS["lora_alpha"],
            lora_dropout=SETTINGS["lora_dropout"],
            target_modules=SETTINGS["target_modules"],
            bias="none",
            task_type="CAUSAL_LM",
        )
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=lora)
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
        untrained = _untrained_loss(trainer)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        return {
            "tokens": tokens,
            "wall_s": wall,
            "steps": trainer.state.global_step,
            "losses": losses,
            "untrained_loss": untrained,
        }


def _untrained_loss(trainer) -> float:
    """TRL's objective before any step, on every example: its own collator's batches of 8 (labels, and
    position ids when padding-free), transformers' loss, weighted by each batch's target tokens."""
    import torch

    model, rows = trainer.model, list(trainer.train_dataset)
    model.eval()
    summed, targets = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), 8):
            batch = trainer.data_collator(rows[i : i + 8])
            n = int((batch["labels"][:, 1:] != -100).sum())
            batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids", "labels")}
            summed += float(model(**batch).loss) * n
            targets += n
    model.train()
    return summed / targets


def contender(name: str, folder: Path, data: Path, n: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", os.cpu_count() or 1)))
    examples = records(data, n)
    result = run_maple(folder, examples) if name == "maple" else run_trl(folder, examples, name == "trl_padding_free")
    losses = result.pop("losses")
    return {
        "contender": name,
        **result,
        "tokens_per_s": result["tokens"] / result["wall_s"],
        "final_loss": sum(losses[-LAST:]) / len(losses[-LAST:]),
        "first_loss": losses[0],
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--base", default="bench", help="bench (a random Llama) or a model name, e.g. smollm2-135m")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender; the median is reported")
    parser.add_argument("--only", choices=CONTENDERS, help=argparse.SUPPRESS)  # one contender, in a child process
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/train_throughput[_<base>].json")
    args = parser.parse_args()
    args.out = args.out or ROOT / "bench" / "results" / (
        "train_throughput.json" if args.base == "bench" else f"train_throughput_{args.base}.json"
    )
    if args.only:
        print(json.dumps(contender(args.only, args.model, args.data, args.records)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        if args.base == "bench":
            folder = Path(tmp) / "model"
            build_model(folder, records(args.data, args.records))
        else:
            from maple_utils.models.resolve import resolve_model

            folder = Path(resolve_model(args.base))
        runs: dict[str, list[dict]] = {name: [] for name in CONTENDERS}
        for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits every contender
            for name in CONTENDERS:
                proc = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--only",
                        name,
                        "--model",
                        str(folder),
                        "--data",
                        str(args.data),
                        "--records",
                        str(args.records),
                    ],
                    capture_output=True,
                    text=True,
                )
                if proc.returncode:
                    sys.exit(f"{name} failed:\n{proc.stderr[-4000:]}")
                runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(
                    f"{name} (run {repeat + 1}): {runs[name][-1]['tokens_per_s']:.0f} trained tokens/s", file=sys.stderr
                )
    rows = []
    for results in runs.values():  # the median run by throughput
        ordered = sorted(results, key=lambda r: r["tokens_per_s"])
        rows.append({**ordered[len(ordered) // 2], "tokens_per_s_runs": [round(r["tokens_per_s"], 1) for r in results]})
    by = {r["contender"]: r for r in rows}
    for r in rows:
        r["speedup_vs_maple"] = r["tokens_per_s"] / by["maple"]["tokens_per_s"]
    summary = {
        "maple_vs_trl": by["maple"]["tokens_per_s"] / by["trl"]["tokens_per_s"],
        "maple_vs_trl_padding_free": by["maple"]["tokens_per_s"] / by["trl_padding_free"]["tokens_per_s"],
        "final_loss_vs_trl": by["maple"]["final_loss"] / by["trl"]["final_loss"] - 1,
        "final_loss_vs_trl_padding_free": by["maple"]["final_loss"] / by["trl_padding_free"]["final_loss"] - 1,
        "untrained_loss_diff_vs_trl": abs(by["maple"]["untrained_loss"] - by["trl"]["untrained_loss"]),
        "untrained_loss_diff_vs_trl_padding_free": abs(
            by["maple"]["untrained_loss"] - by["trl_padding_free"]["untrained_loss"]
        ),
    }
    import torch
    import transformers
    import trl

    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:]),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "settings": {
            **SETTINGS,
            **(SHAPE if args.base == "bench" else {}),
            "base": args.base,
            "records": args.records,
            "repeats": args.repeats,
            **({"vocab": VOCAB} if args.base == "bench" else {}),
        },
        "rows": rows,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        "| contender | trained tokens/s | maple's speed-up | untrained loss | final loss | peak RSS (MB) | steps | tokens |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['contender']} | {r['tokens_per_s']:,.0f} | {by['maple']['tokens_per_s'] / r['tokens_per_s']:.2f}x "
            f"| {r['untrained_loss']:.6f} | {r['final_loss']:.4f} | {r['peak_rss_mb']:,.0f} | {r['steps']} | {r['tokens']:,} |"
        )
    print(f"\nmaple exactness: max |logit difference| padding-free vs one by one = {by['maple']['max_logit_diff']:.2e}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
