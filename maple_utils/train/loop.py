"""The LoRA training loop: optimiser and schedule, padding-free steps, checkpoints and resume, guards, the
training record and the saved adapter.

A plain loop rather than the HF Trainer: it is short, every step is visible, and it trains the same way on
a CPU with bitsandbytes layers as on a GPU. The loss covers the response and EOS only and is averaged over
every response token of the optimiser step (so gradient accumulation never changes the result), and the
LM head runs only on the positions that carry a target: prompt tokens need no logits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import resource
import shutil
import sys
import time
from pathlib import Path

from maple_utils import layout
from maple_utils.train import batches, checkpoint, varlen


class TrainingError(RuntimeError):
    """Training stopped on a guard (non-finite loss); nothing is saved as an adapter."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch once, right before the LoRA weights are created."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(params: list, cfg, quantised: bool):
    """AdamW, or bitsandbytes' paged 8-bit AdamW (QLoRA's optimiser: its state pages to host memory instead of
    running out of GPU memory on a long batch) for a 4- or 8-bit base on a GPU when `optimizer` is auto."""
    import torch

    name = cfg.optimizer
    if name == "auto":
        name = "paged_adamw_8bit" if quantised and torch.cuda.is_available() else "adamw"
    if name == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate, weight_decay=0.0), name
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0), name


def lr_factor(kind: str, step: int, warmup: int, steps: int) -> float:
    """The learning rate's multiplier at a step: linear warmup, then linear or cosine decay to 0, or flat."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, steps - warmup)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


def make_schedule(optimizer, kind: str, warmup: int, steps: int):
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(kind, s, warmup, steps))


def _micro_batch(examples: list[dict], indices: list[int], packing: str, pad_id: int) -> dict:
    chosen = [examples[i] for i in indices]
    return batches.pack(chosen) if packing == "padding_free" else batches.pad(chosen, pad_id)


def _loss_sum(model, micro: dict, device):
    """Summed cross-entropy over the micro-batch's targets, with logits only where a target is."""
    import torch
    import torch.nn.functional as F

    targets = micro["targets"].to(device)
    keep = (targets != batches.IGNORE).nonzero().squeeze(1)
    inputs = {k: micro[k].to(device) for k in ("input_ids", "position_ids", "attention_mask") if k in micro}
    if "position_ids" in inputs:  # one packed row: the LM head runs on the kept positions only
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits[0]
    else:
        logits = model(**inputs, use_cache=False).logits.reshape(-1, model.config.vocab_size)[keep]
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum") if keep.numel() else torch.zeros(())


def _peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# Dense bf16/fp16 tensor-core peaks in TFLOP/s from NVIDIA's datasheets (sparsity figures halved), for MFU.
PEAK_TFLOPS = {
    "H200": 989,
    "H100 SXM": 989,
    "H100 PCIe": 756,
    "H100": 989,
    "A100": 312,
    "L40S": 362,
    "A10G": 70,
    "A10": 125,
    "L4": 121,
    "V100": 125,
    "T4": 65,
    "RTX 4090": 165,
    "RTX 3090": 71,
}


def mfu(trainable: int, total: int, tokens_per_s: float) -> float | None:
    """Model FLOPs utilisation on a GPU: (6 x trainable + 4 x frozen) FLOPs per token, the forward and the
    activation gradients for every weight and weight gradients only for the trainable ones; None on a CPU
    or an unknown GPU."""
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    if peak is None:
        return None
    return round((6 * trainable + 4 * (total - trainable)) * tokens_per_s / (peak * 1e12), 4)


def data_hash(examples: list[dict]) -> str:
    h = hashlib.sha256()
    for e in examples:
        h.update(json.dumps([e["input_ids"], e["labels"]]).encode())
    return h.hexdigest()[:16]


def _resume_point(root: Path | None, expected: dict):
    """The newest complete checkpoint trained on these data in this order, or None (announced)."""
    if root is None:
        return None
    found = checkpoint.latest(root)
    if found is None:
        return None
    folder, state = found
    differs = [k for k, v in expected.items() if state.get(k) != v]
    if differs:
        print(f"checkpoint {folder} not resumed: its {', '.join(differs)} differ from this run's; training afresh")
        shutil.rmtree(root, ignore_errors=True)
        return None
    return folder, state


def train(
    model,
    tokenizer,
    data: batches.Tokenized,
    cfg,
    checkpoints: str | Path | None = None,
    progress: bool = True,
    held_out: batches.Tokenized | None = None,
    track=None,
) -> dict:
    """Train the model's trainable (LoRA) parameters with cfg's hyperparameters, checkpointing every
    `cfg.checkpoint_every` steps under `checkpoints` and resuming from the newest complete checkpoint there.
    With `held_out` examples, the held-out loss every `cfg.eval_every` steps (ten times a run by default) and
    at the end. `track(resumed_after)` opens the run's tracker (maple_utils.tracking), which gets every
    step's loss, learning rate, gradient norm, tokens/s and memory and each held-out loss.
    Returns the training record: loss curves, throughput and memory facts."""
    import torch
    from tqdm import tqdm

    examples = data.examples
    order = batches.DataOrder(len(examples), cfg.batch_size, cfg.grad_accum, cfg.seed)
    steps = batches.total_steps(len(examples), order.per_step, cfg.epochs, cfg.max_steps)
    warmup = int(cfg.warmup_ratio * steps)
    params = [p for p in model.parameters() if p.requires_grad]
    quantised = any(getattr(p, "quant_state", None) is not None or p.dtype == torch.int8 for p in model.parameters())
    optimizer, optimizer_name = make_optimizer(params, cfg, quantised)
    schedule = make_schedule(optimizer, cfg.lr_scheduler, warmup, steps)
    root = Path(checkpoints) if checkpoints is not None and cfg.checkpoint_every else None
    # what a checkpoint must share with this run to be resumed (packing and recomputation change no result)
    resume_key = {
        "data": data_hash(examples),
        "order": order.describe(),
        "steps": steps,
        "lr_scheduler": cfg.lr_scheduler,
        "optimizer": optimizer_name,
    }
    state, start_step = _start_state(root, resume_key, model, optimizer, schedule)
    every = cfg.eval_every or max(1, steps // 10)
    tracker = track(start_step) if track is not None else None
    device = next(model.parameters()).device
    model.train()
    model.config.use_cache = False  # no KV cache while training
    attention = varlen.padding_free(model) if cfg.packing == "padding_free" else contextlib.nullcontext()
    session_tokens, start = 0, time.perf_counter()
    bar = tqdm(total=steps, initial=start_step, desc="train", disable=not progress, file=sys.stdout, mininterval=1.0)
    with attention, contextlib.ExitStack() as closing:
        if tracker is not None:
            closing.callback(tracker.close)
        for step in range(start_step, steps):
            began = time.perf_counter()
            micro = [_micro_batch(examples, idx, cfg.packing, tokenizer.pad_token_id) for idx in order.step(step)]
            step_loss = _accumulate(model, micro, device, step, state)
            step_tokens = sum(m["tokens"] for m in micro)
            session_tokens += step_tokens
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))  # before clipping
            lr = schedule.get_last_lr()[0]  # the rate this step used
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            point = {"step": step + 1, "loss": step_loss, "lr": lr, "grad_norm": round(grad_norm, 6)}
            point["tokens_per_s"] = round(step_tokens / max(time.perf_counter() - began, 1e-9), 1)
            point["memory_mb"] = round(_peak_memory_mb(), 1)
            state["curve"].append(point)
            evaluate = held_out is not None and ((step + 1) % every == 0 or step + 1 == steps)
            _log(
                point, state, tracker, held_out_loss(model, held_out, cfg, tokenizer.pad_token_id) if evaluate else None
            )
            bar.set_postfix(loss=f"{step_loss:.3f}")
            bar.update()
            if root is not None and (step + 1) % cfg.checkpoint_every == 0 and step + 1 < steps:
                elapsed = state["wall_s"] + time.perf_counter() - start
                saved = {**resume_key, **state, "wall_s": elapsed}
                checkpoint.save(root, step + 1, model, optimizer, schedule, saved, keep=cfg.keep_checkpoints)
    bar.close()
    model.eval()
    return _record(data, cfg, steps, state, session_tokens, time.perf_counter() - start, optimizer_name)


def _start_state(root: Path | None, resume_key: dict, model, optimizer, schedule) -> tuple[dict, int]:
    """The loop's counters and curves, fresh or restored with the weights from the newest matching
    checkpoint; and the step it starts after."""
    fresh = {"curve": [], "eval_curve": [], "tokens": 0, "slots": 0, "supervised": 0, "wall_s": 0.0}
    fresh["resumed_from"] = None
    resume = _resume_point(root, resume_key)
    if resume is None:
        return fresh, 0
    folder, saved = resume
    checkpoint.restore(folder, saved, model, optimizer, schedule)
    state = {k: saved.get(k, v) for k, v in fresh.items()}
    state["resumed_from"] = saved["step"]
    print(f"resumed from {folder} after step {saved['step']} of {resume_key['steps']}")
    return state, saved["step"]


def _log(point: dict, state: dict, tracker, eval_loss: float | None) -> None:
    """A step's point (and its held-out loss) into the tracker, under the names of maple_utils.tracking."""
    logged = {f"train/{'learning_rate' if k == 'lr' else k}": v for k, v in point.items() if k != "step"}
    if eval_loss is not None:
        state["eval_curve"].append({"step": point["step"], "loss": eval_loss})
        logged["eval/loss"] = eval_loss
    if tracker is not None:
        tracker.log(point["step"], logged)


def held_out_loss(model, held_out: batches.Tokenized, cfg, pad_id: int) -> float:
    """The mean loss per response token over the held-out examples, in training's micro-batches, no gradient."""
    import torch

    device = next(model.parameters()).device
    model.eval()
    total, targets = 0.0, 0
    with torch.no_grad():
        for first in range(0, len(held_out.examples), cfg.batch_size):
            indices = list(range(first, min(first + cfg.batch_size, len(held_out.examples))))
            micro = _micro_batch(held_out.examples, indices, cfg.packing, pad_id)
            total += float(_loss_sum(model, micro, device))
            targets += int((micro["targets"] != batches.IGNORE).sum())
    model.train()
    return total / max(1, targets)


def _accumulate(model, micro: list[dict], device, step: int, state: dict) -> float:
    """Gradients of one optimiser step over its micro-batches (the loss a mean over all their targets); returns
    the step's loss and counts its tokens into `state`."""
    import torch

    n_targets = sum(int((m["targets"] != batches.IGNORE).sum()) for m in micro)
    step_loss = 0.0
    for m in micro:
        loss = _loss_sum(model, m, device) / max(1, n_targets)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"nan_loss: loss is {loss.item()} at step {step + 1}; lower learning_rate or use bf16/fp32 compute"
            )
        if loss.requires_grad:
            loss.backward()
        step_loss += loss.item()
        state["tokens"] += m["tokens"]
        state["slots"] += m["slots"]
    state["supervised"] += n_targets
    return step_loss


def _record(data, cfg, steps: int, state: dict, session_tokens: int, session_wall: float, optimizer_name: str) -> dict:
    """The training record: loss curve, throughput and memory facts."""
    examples = data.examples
    tokens_per_s = session_tokens / session_wall if session_wall > 0 else 0.0
    return {
        "steps": steps,
        "examples": len(examples),
        "truncated": data.truncated,
        "dropped": data.dropped,
        "tokens": state["tokens"],
        "supervised_tokens": state["supervised"],
        "padding_fraction": round(1 - state["tokens"] / max(1, state["slots"]), 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "wall_s": round(state["wall_s"] + session_wall, 2),
        "peak_memory_mb": round(_peak_memory_mb(), 1),
        "final_loss": state["curve"][-1]["loss"],
        "resumed_from_step": state["resumed_from"],
        "packing": cfg.packing,
        "optimizer": optimizer_name,
        "lr_scheduler": cfg.lr_scheduler,
        "final_eval_loss": state["eval_curve"][-1]["loss"] if state["eval_curve"] else None,
        "curve": state["curve"],
        "eval_curve": state["eval_curve"],
    }


def save_adapter(
    model, tokenizer, adapter_dir: str | Path, cfg=None, summary: dict | None = None, record: Path | None = None
) -> Path:
    """save_pretrained with the tokenizer, the effective config, the training record and a model card (with the
    base named as others load it: train/card.py), into a temporary folder renamed into place: the adapter
    folder is whole or absent."""
    from maple_utils import io
    from maple_utils.train import card

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if cfg is not None:
            card.point_config_at_base(tmp, cfg.model)
            (tmp / layout.ADAPTER_RUN_CONFIG).write_text(json.dumps(cfg.model_dump(), indent=2, default=str) + "\n")
            (tmp / layout.MODEL_CARD).write_text(card.model_card(cfg, summary or {}), encoding="utf-8")
        if record is not None:
            shutil.copyfile(record, tmp / layout.TRAIN_RECORD)

    return io.atomic_dir(Path(adapter_dir), write)


SUMMARY_METRICS = (
    "final_loss",
    "tokens_per_s",
    "trainable_pct",
    "padding_fraction",
    "peak_memory_mb",
    "wall_s",
    "steps",
    "final_eval_loss",  # with a held-out set only
)


def summarise(record: dict, trainable: int, total: int) -> dict:
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": round(100 * trainable / total, 4),
        "mfu": mfu(trainable, total, record["tokens_per_s"]),
        **record,
    }


def outcome(run, record: dict, trainable: int, total: int, base) -> tuple[list[dict], dict]:
    """02_train's body once the loop is done: train_record.json (the summary and its loss curve), then the
    stage's result rows and its run-record facts (provenance; the training facts live once, in that file)."""
    from maple_utils import io, results
    from maple_utils.models import loading

    summary = summarise(record, trainable, total)
    io.write_json(run.folder / layout.TRAIN_RECORD, summary)
    rows = [
        results.make_row(
            run.identity(),
            task="train",
            language="all",
            metric=m,
            value=float(summary[m]),
            n=record["examples"],
            seed=run.cfg.seed,
        )
        for m in SUMMARY_METRICS
        if summary.get(m) is not None
    ]
    return rows, {"model": loading.revision(run.cfg.model, base), "train_record": layout.TRAIN_RECORD}


def keep_adapter(run, model, tokenizer) -> dict:
    """The adapter, written last and whole with a model card from train_record.json; then the checkpoints go
    (the adapter supersedes them; a kill before this point resumes from them). Returns the summary."""
    from maple_utils import io

    summary = {k: v for k, v in io.read_json(run.folder / layout.TRAIN_RECORD).items() if not k.endswith("curve")}
    save_adapter(model, tokenizer, run.adapter_dir, run.cfg, summary, record=run.folder / layout.TRAIN_RECORD)
    shutil.rmtree(run.checkpoint_dir, ignore_errors=True)
    return summary
