"""A training run in its own process, for the kill-and-resume test: tiny Llama on a fixed set of prompts,
checkpointing every 2 steps. With --kill-after-checkpoints N the process sends itself SIGKILL in the middle
of the first step after its N-th checkpoint, as a preempted or OOM-killed job would die."""

from __future__ import annotations

import argparse
import json
import os
import signal

RECORDS = [
    {
        "language": "en",
        "prompt": f"### Instruction:\nCount to {i}\n\n### Response:\n",
        "response": " ".join(str(j) for j in range(i % 7 + 1)),
    }
    for i in range(24)
]
SETTINGS = {
    "quant": 16,
    "rank": 4,
    "lora_dropout": 0.1,
    "max_steps": 8,
    "batch_size": 3,
    "grad_accum": 2,
    "learning_rate": 5e-3,
    "checkpoint_every": 2,
    "keep_checkpoints": 3,
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.25,
}


def build():
    from maple_utils import config
    from maple_utils.models import loading
    from maple_utils.train import batches, loop, modeling

    cfg = config.validate_run(SETTINGS)
    tok = loading.load_tokenizer("tiny-llama")
    loop.seed_everything(cfg.seed)
    model = modeling.attach_lora(
        loading.load_base("tiny-llama", 16), cfg.rank, cfg.lora_alpha, cfg.lora_dropout, ["q_v"], 16
    )
    return cfg, tok, model, batches.tokenize(RECORDS, tok, 64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints")
    parser.add_argument("--kill-after-checkpoints", type=int, default=0)
    parser.add_argument("--record")
    args = parser.parse_args()
    from maple_utils.train import checkpoint, loop

    if args.kill_after_checkpoints:
        save, saved, calls = checkpoint.save, [], []

        def counting_save(*a, **k):
            saved.append(save(*a, **k))
            return saved[-1]

        loss_sum = loop._loss_sum

        def dying_loss_sum(*a, **k):
            if len(saved) >= args.kill_after_checkpoints:
                calls.append(1)
                if len(calls) == 2:  # the second micro-batch of the step after the checkpoint
                    os.kill(os.getpid(), signal.SIGKILL)
            return loss_sum(*a, **k)

        checkpoint.save, loop._loss_sum = counting_save, dying_loss_sum
    cfg, tok, model, data = build()
    record = loop.train(model, tok, data, cfg, checkpoints=args.checkpoints, progress=False)
    if args.record:
        with open(args.record, "w") as f:
            json.dump(record, f)


if __name__ == "__main__":
    main()
