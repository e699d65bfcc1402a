"""The hot path of evaluation: log-likelihood of continuations and batched greedy generation.

`loglikelihood` keeps lm-eval's contract: for each (context, continuation) request it returns the summed
log-probability of the continuation given the context and whether greedy decoding would have produced it.
torch is imported inside the functions, so the package imports without it.
"""

from __future__ import annotations

from typing import Iterable


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context tokens (with BOS where the tokenizer adds it) and the continuation's tokens, split from the
    joint encoding, as lm-eval does: trailing spaces of the context move to the continuation, so a
    tokenizer that merges a space into the next word sees the same text either way."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer(continuation, add_special_tokens=False)["input_ids"]
    whole = tokenizer(context + continuation)["input_ids"]
    ctx = tokenizer(context)["input_ids"]
    return ctx, whole[len(ctx):]


def loglikelihood(model, tokenizer, requests: Iterable[tuple[str, str]], batch_size: int = 8,
                  max_length: int | None = None) -> list[tuple[float, bool]]:
    """Summed log P(continuation | context) and is-greedy for each request, in the requests' order."""
    import torch

    requests = list(requests)
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    encoded = []
    for i, (context, continuation) in enumerate(requests):
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if not cont:
            raise ValueError(f"request {i}: empty continuation {continuation!r}")
        ids = (ctx + cont)[-(max_length + 1):]  # keep the continuation; drop the context's start if too long
        encoded.append((i, ids, len(cont)))
    # Longest first: batches of similar length waste little padding, and an OOM shows at the first batch.
    encoded.sort(key=lambda e: -len(e[1]))
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start:start + batch_size]
            width = max(len(ids) - 1 for _, ids, _ in batch)
            inputs = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (_, ids, _) in enumerate(batch):  # right padding: positions stay 0..n-1
                inputs[row, :len(ids) - 1] = torch.tensor(ids[:-1])
                mask[row, :len(ids) - 1] = 1
            logits = model(input_ids=inputs.to(device), attention_mask=mask.to(device)).logits
            for row, (i, ids, n_cont) in enumerate(batch):
                n = len(ids) - 1
                target = torch.tensor(ids[-n_cont:], device=logits.device)
                # Only the continuation's positions are normalised: batch x length x vocab in fp32 would be
                # gigabytes for a 7B vocabulary and a long few-shot prompt.
                window = torch.log_softmax(logits[row, n - n_cont:n].float(), dim=-1)
                total = window.gather(1, target[:, None]).sum().item()
                greedy = bool((window.argmax(-1) == target).all())
                results[i] = (total, greedy)
    return results  # type: ignore[return-value]


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 8,
             stop: str = "\n\n", add_special_tokens: bool = True) -> list[str]:
    """Greedy completions, cut at the first `stop`. Left padding, so every prompt ends where decoding starts.
    add_special_tokens=False for prompts that carry their own BOS (a chat template writes it)."""
    import torch

    outputs: list[str | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                add_special_tokens=add_special_tokens)  # BOS as the model expects
                out = model.generate(**{k: v.to(device) for k, v in enc.items()}, max_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
                new = out[:, enc["input_ids"].shape[1]:]
                for i, seq in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                    outputs[i] = seq.split(stop)[0].strip()
    finally:
        tokenizer.padding_side = side
    return outputs  # type: ignore[return-value]
