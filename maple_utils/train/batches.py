"""Training examples and their batches: prompt-masked tokenisation, the data order, padding-free packing.

The data order is a pure function of (seed, number of examples, step): step s trains on positions
[s * per_step, (s + 1) * per_step) of an endless stream of per-epoch permutations. A resumed run therefore
sees exactly the batches an uninterrupted one would, with nothing to restore but the step.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

IGNORE = -100  # the label of a token the loss skips (prompt tokens, and a sequence's last position)


class TrainingDataError(ValueError):
    """No example can teach anything (every response cut away by max_length)."""


@dataclass(frozen=True)
class Tokenized:
    examples: list[dict]  # {input_ids, labels}
    truncated: int  # examples cut at max_length (kept: they still have response tokens)
    dropped: int  # examples whose prompt alone fills max_length (nothing left to learn)


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def leading_specials(tokenizer) -> list[int]:
    """The special tokens the tokenizer itself puts before a text: BOS for Llama-2, Mistral and Gemma, none
    for SmolLM2 (whose bos_token, <|im_start|>, opens a chat turn and is never added). Evaluation encodes
    text this way (scoring.encode), so training must too."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    marked = tokenizer("a", add_special_tokens=True)["input_ids"]
    starts = [i for i in range(len(marked) - len(plain) + 1) if marked[i : i + len(plain)] == plain]
    return marked[: starts[0]] if starts else []


def tokenize(records: list[dict], tokenizer, max_length: int) -> Tokenized:
    """input_ids = the tokenizer's leading special tokens (BOS, where it adds one) + tokens of (prompt +
    response) + EOS; labels are IGNORE over BOS and the prompt and the token ids over the response and EOS,
    which the model learns to emit.

    Prompt and response are encoded as one text, as the model will read them when it answers: encoding the
    response alone would start it with a word-initial piece (Llama's "▁The" for "The" after a newline) that
    the model never sees at inference. The prompt's tokens are the shared prefix of the prompt's own encoding
    and the joint one (a piece that merges across the boundary is learned as part of the response)."""
    examples, truncated, dropped = [], 0, 0
    lead = leading_specials(tokenizer)
    for r in records:
        # a prompt a chat template wrote starts with BOS's text already (scoring.encode adds none then)
        bos = [] if tokenizer.bos_token and r["prompt"].startswith(tokenizer.bos_token) else lead
        prompt = bos + tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
        ids = bos + tokenizer(r["prompt"] + r["response"], add_special_tokens=False)["input_ids"]
        ids.append(tokenizer.eos_token_id)
        n_prompt = _shared_prefix(prompt, ids)
        labels = [IGNORE] * n_prompt + ids[n_prompt:]
        cut = len(ids) > max_length
        ids, labels = ids[:max_length], labels[:max_length]
        if all(label == IGNORE for label in labels):
            dropped += 1
            continue
        truncated += cut
        examples.append({"input_ids": ids, "labels": labels})
    if not examples:
        raise TrainingDataError(
            f"no example keeps a response token within max_length={max_length}: "
            f"all {len(records)} prompts fill it; raise max_length"
        )
    return Tokenized(examples, truncated, dropped)


def total_steps(n_examples: int, per_step: int, epochs: float, max_steps: int | None) -> int:
    """Optimiser steps: max_steps when given, else enough for `epochs` passes (the last step may be partial
    within an epoch; the stream simply runs on into the next permutation)."""
    if max_steps:
        return max_steps
    return max(1, math.ceil(epochs * n_examples / per_step))


@dataclass(frozen=True)
class DataOrder:
    """Which examples each optimiser step trains on."""

    n_examples: int
    micro_batch: int
    grad_accum: int
    seed: int

    @property
    def per_step(self) -> int:
        return self.micro_batch * self.grad_accum

    def _permutation(self, epoch: int) -> list[int]:
        # string seeds hash deterministically across processes and Python versions (random.seed(str) uses sha512)
        return random.Random(f"maple-order-{self.seed}-{epoch}").sample(range(self.n_examples), self.n_examples)

    def step(self, step: int) -> list[list[int]]:
        """The micro-batches (example indices) of optimiser step `step` (0-based)."""
        start = step * self.per_step
        indices, cache = [], {}
        for position in range(start, start + self.per_step):
            epoch, offset = divmod(position, self.n_examples)
            if epoch not in cache:
                cache[epoch] = self._permutation(epoch)
            indices.append(cache[epoch][offset])
        return [indices[i : i + self.micro_batch] for i in range(0, len(indices), self.micro_batch)]

    def describe(self) -> dict:
        """What fixes the order (a checkpoint resumes only under the same); the step is stored beside it."""
        return {
            "n_examples": self.n_examples,
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "seed": self.seed,
        }


def targets_of(labels: list[int]) -> list[int]:
    """What each position predicts: the next token's label, and nothing at the example's last position (so
    no position ever predicts across the boundary into the next example of a packed batch)."""
    return labels[1:] + [IGNORE]


def pack(batch: list[dict]):
    """One padding-free row: the examples end to end, position ids restarting at 0 for each, and the
    shifted targets. Exact when attention stays within each example (train/varlen.py) and no KV cache runs."""
    import torch

    ids = [t for e in batch for t in e["input_ids"]]
    positions = [p for e in batch for p in range(len(e["input_ids"]))]
    targets = [t for e in batch for t in targets_of(e["labels"])]
    return {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "targets": torch.tensor(targets),
        "tokens": len(ids),
        "slots": len(ids),
    }


def pad(batch: list[dict], pad_id: int):
    """Right-padded rows with an attention mask: the fallback for models without the padding-free path."""
    import torch

    width = max(len(e["input_ids"]) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    targets = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        targets[i, :n] = torch.tensor(targets_of(e["labels"]))
        mask[i, :n] = 1
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "targets": targets.reshape(-1),
        "tokens": int(mask.sum()),
        "slots": mask.numel(),
    }
