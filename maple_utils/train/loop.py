"""The LoRA training loop: prompt-masked tokenisation, batches, optimiser, guards, the training record.

A plain loop rather than the HF Trainer: it is short, its every step is visible, and it trains the same
way on a CPU with bitsandbytes layers as on a GPU. The loss covers the response and EOS only.
"""

from __future__ import annotations

import math
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path


class TrainingError(RuntimeError):
    """Training stopped on a guard (non-finite loss, empty data); nothing is saved as an adapter."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch once, right before the LoRA weights are created."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def tokenize(records: list[dict], tokenizer, max_length: int) -> list[dict]:
    """input_ids = prompt + response + EOS; labels mask the prompt (-100) and keep the response and EOS."""
    examples = []
    for r in records:
        prompt = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        response = tokenizer(r["response"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if tokenizer.bos_token_id is not None:
            prompt = [tokenizer.bos_token_id] + prompt
        ids = (prompt + response)[:max_length]
        labels = ([-100] * len(prompt) + response)[:max_length]
        if any(label != -100 for label in labels):  # a prompt longer than max_length teaches nothing
            examples.append({"input_ids": ids, "labels": labels})
    if not examples:
        raise TrainingError(f"no example keeps a response within max_length={max_length}")
    return examples


def collate(batch: list[dict], pad_id: int):
    """Right-padded tensors; padding is masked from attention and loss."""
    import torch

    width = max(len(e["input_ids"]) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return ids, mask, labels


def total_steps(n_examples: int, batch_size: int, grad_accum: int, epochs: float, max_steps: int | None) -> int:
    if max_steps:
        return max_steps
    return max(1, math.ceil(epochs * math.ceil(n_examples / (batch_size * grad_accum))))


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train(model, tokenizer, examples: list[dict], cfg, progress: bool = True) -> dict:
    """Train the model's trainable (LoRA) parameters with cfg's hyperparameters; returns the loss curve
    and throughput facts."""
    import torch
    from tqdm import tqdm

    learning_rate, batch_size, grad_accum = cfg.learning_rate, cfg.batch_size, cfg.grad_accum
    epochs, max_steps, warmup_ratio, max_grad_norm, seed = (cfg.epochs, cfg.max_steps, cfg.warmup_ratio,
                                                            cfg.max_grad_norm, cfg.seed)

    steps = total_steps(len(examples), batch_size, grad_accum, epochs, max_steps)
    warmup = int(warmup_ratio * steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (steps - s) / max(1, steps - warmup)))
    rng = random.Random(seed)
    order: list[int] = []
    device = next(model.parameters()).device
    model.train()
    model.config.use_cache = False  # no KV cache while training
    curve, tokens, padded, supervised = [], 0, 0, 0
    start = time.perf_counter()
    bar = tqdm(total=steps, desc="train", disable=not progress, file=sys.stdout, mininterval=1.0)
    for step in range(steps):
        loss_sum = 0.0
        for _ in range(grad_accum):
            if len(order) < batch_size:
                order += rng.sample(range(len(examples)), len(examples))
            batch = [examples[order.pop()] for _ in range(batch_size)]
            ids, mask, labels = collate(batch, tokenizer.pad_token_id)
            loss = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss
            if not torch.isfinite(loss):
                raise TrainingError(f"nan_loss: loss is {loss.item()} at step {step + 1}; lower learning_rate "
                                    "or use bf16/fp32 compute")
            (loss / grad_accum).backward()
            loss_sum += loss.item() / grad_accum
            tokens += int(mask.sum())
            padded += mask.numel()
            supervised += int((labels != -100).sum())
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        curve.append({"step": step + 1, "loss": loss_sum, "lr": schedule.get_last_lr()[0]})
        bar.set_postfix(loss=f"{loss_sum:.3f}")
        bar.update()
    bar.close()
    wall = time.perf_counter() - start
    model.eval()
    return {"steps": steps, "examples": len(examples), "tokens": tokens, "supervised_tokens": supervised,
            "padding_fraction": round(1 - tokens / max(1, padded), 4), "tokens_per_s": round(tokens / wall, 1),
            "wall_s": round(wall, 2), "peak_memory_mb": round(_peak_memory_mb(), 1),
            "final_loss": curve[-1]["loss"], "curve": curve}


def save_adapter(model, tokenizer, adapter_dir: str | Path) -> Path:
    """save_pretrained into a temporary folder, then rename: the adapter folder is whole or absent."""
    adapter_dir = Path(adapter_dir)
    tmp = adapter_dir.with_name(f".{adapter_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    os.replace(tmp, adapter_dir)
    return adapter_dir


SUMMARY_METRICS = ("final_loss", "tokens_per_s", "trainable_pct", "peak_memory_mb", "wall_s", "steps")


def report(run, record: dict, trainable: int, total: int, model_revision: dict) -> dict:
    """Write train_record.json, the stage's result rows and its run-record section; returns the summary."""
    from maple_utils import io, layout, results

    summary = {"trainable_params": trainable, "total_params": total,
               "trainable_pct": round(100 * trainable / total, 4), **record}
    io.write_json(run.folder / layout.TRAIN_RECORD, summary)
    rows = [results.make_row(run.identity(), task="train", language="all", metric=m, value=float(summary[m]),
                             n=record["examples"], seed=run.cfg.seed) for m in SUMMARY_METRICS]
    run.write_rows(rows)
    # provenance here; the training facts live once, in train_record.json
    run.record(model=model_revision, train_record=layout.TRAIN_RECORD)
    return {k: v for k, v in summary.items() if k != "curve"}
