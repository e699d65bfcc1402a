"""The hot path of evaluation: log-likelihood of continuations and greedy generation, behind lm-eval's contract.

`loglikelihood(model, tokenizer, requests)` returns, per (context, continuation) pair, the summed
log-probability of the continuation and whether greedy decoding would produce it; `generate(model,
tokenizer, prompts, max_new_tokens, stop)` returns lm-eval's `generate_until` outputs. The tokens are
lm-eval's (HFLM, lm-evaluation-harness 0.4.13): BOS as the tokenizer adds it, the continuation's tokens split
from the joint encoding, contexts truncated from the left. The arithmetic differs, because under the
MEGAVERSE protocol most of it repeats:

- every prompt of a (task, language) starts with the same k exemplars: their tokens (the longest common
  token prefix of the batch of requests) run once, and every row attends to that one key/value cache;
- every choice of an item shares its context: the context runs once, single-token choices are read from
  its last position, longer ones run only their own tokens on top of the context's cache;
- the LM head runs only at positions whose log-probabilities are needed;
- in generation each row stops on its own stop string or EOS and leaves the batch.

Rows are left-padded between the shared prefix and their own tokens, with explicit position ids, so each
token sees exactly the positions and keys it would see alone. torch is imported inside the functions, so
the package imports without it.
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence


# ---------------------------------------------------------------- tokens (lm-eval's rules)

def _starts_with_bos(tokenizer, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)


def encode(tokenizer, text: str) -> list[int]:
    """A prompt's tokens with BOS as the tokenizer adds it, unless the text already starts with BOS (a chat
    template writes it), as lm-eval's `tok_encode`."""
    return tokenizer(text, add_special_tokens=not _starts_with_bos(tokenizer, text))["input_ids"]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context tokens and the continuation's tokens, split from the joint encoding, as lm-eval does:
    trailing spaces of the context move to the continuation, so a tokenizer that merges a space into the
    next word sees the same text either way. An empty context is the BOS token (EOS when there is none)."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        cont = encode(tokenizer, continuation)
        return [prefix], cont[1:] if cont and cont[0] == prefix else cont
    whole = encode(tokenizer, context + continuation)
    ctx = encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def model_max_length(model, tokenizer=None) -> int:
    """The longest sequence the model takes, found where lm-eval looks for it (default 2048)."""
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(model.config, attr, None)
        if value:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if limit and limit < 1_000_000 else 2048


# ---------------------------------------------------------------- the shared-prefix machinery

def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every sequence."""
    first = min(sequences, key=len)
    n = len(first)
    for seq in sequences:
        i = 0
        while i < n and seq[i] == first[i]:
            i += 1
        n = i
    return n


def _cache_argument(model) -> str:
    """transformers 5.24 renamed `past_key_values` to `cache` (the old name warns until 5.40)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


SHARED_MIN = 32  # tokens: requests whose common prefix is shorter are not worth a group of their own


def prefix_groups(sequences: Sequence[Sequence[int]], shared_min: int = SHARED_MIN) -> list[list[int]]:
    """Indices of the sequences, grouped so that each group shares a long token prefix (a (task, language)'s
    exemplars): in token order, a sequence joins its neighbour's group when they share at least
    `shared_min` tokens; sequences that share too little with anyone form one group of their own."""
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    groups, loners, current = [], [], [order[0]] if order else []
    for prev, i in zip(order, order[1:]):
        if common_prefix_length([sequences[prev], sequences[i]]) >= shared_min:
            current.append(i)
            continue
        (groups.append(current) if len(current) > 1 else loners.extend(current))
        current = [i]
    if current:
        (groups.append(current) if len(current) > 1 else loners.extend(current))
    return groups + ([loners] if loners else [])


class _Prefix:
    """The key/value cache of a token prefix shared by every row, computed once and handed to each batch."""

    def __init__(self, model, tokens: list[int]):
        import torch

        self.model, self.length = model, len(tokens)
        self.device = next(model.parameters()).device
        self.cache_argument = _cache_argument(model)
        self.cache = None
        if tokens:
            ids = torch.tensor([tokens], device=self.device)
            self.cache = _cache_of(model(input_ids=ids, use_cache=True, logits_to_keep=1))

    def for_batch(self, rows: int):
        """A cache holding the prefix for `rows` rows, which the next forward pass may extend."""
        if self.cache is None:
            return None
        cache = copy.deepcopy(self.cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return cache

    def forward(self, cache, rows: list[list[int]], past_mask, past_positions, pad: int, keep: int):
        """Run `rows` (each row's new tokens) on top of `cache`, left-padded between what the cache holds
        and the new tokens. past_mask: (batch, cached length) 0/1; past_positions: (batch,) the position of
        each row's last cached real token (-1 when none). Returns the last `keep` positions' logits (fp32),
        the extended cache, the extended mask and each row's last position."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r):] = 1
        positions = past_positions[:, None] + torch.cumsum(mask, dim=1)
        positions = positions.clamp(min=0) * mask  # pads sit at position 0; no real token attends to them
        full_mask = torch.cat([past_mask, mask], dim=1)
        out = self.model(input_ids=ids.to(self.device), attention_mask=full_mask.to(self.device),
                         position_ids=positions.to(self.device), use_cache=True, logits_to_keep=keep,
                         **{self.cache_argument: cache})
        return out.logits.float(), _cache_of(out), full_mask, positions[:, -1]

    def start(self, rows: int):
        """Mask and last positions of `rows` rows holding just the prefix."""
        import torch

        return (torch.ones((rows, self.length), dtype=torch.long),
                torch.full((rows,), self.length - 1, dtype=torch.long))


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return candidate
    return 0


# ---------------------------------------------------------------- log-likelihood

def loglikelihood(model, tokenizer, requests: Iterable[tuple[str, str]], batch_size: int = 8,
                  max_length: int | None = None) -> list[tuple[float, bool]]:
    """Summed log P(continuation | context) and is-greedy for each request, in the requests' order."""
    import torch

    requests = list(requests)
    if not requests:
        return []
    max_length = max_length or model_max_length(model, tokenizer)
    # Each request becomes a stem (the tokens up to and including the context's last one, whose output
    # predicts the continuation's first token) and a tail (the continuation's tokens but the last).
    stems: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (context, continuation) in enumerate(requests):
        ctx, cont = encode_pair(tokenizer, context, continuation)
        if not cont:
            raise ValueError(f"request {i}: the continuation {continuation!r} encodes to no tokens")
        if len(cont) > max_length:
            raise ValueError(f"request {i}: the continuation has {len(cont)} tokens, more than the model's "
                             f"{max_length}")
        inp = (ctx + cont)[-(max_length + 1):][:-1]  # lm-eval's left truncation
        stem = tuple(inp[:len(inp) - len(cont) + 1])
        stems.setdefault(stem, []).append((i, cont))
    pad = _pad_id(tokenizer)
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    all_stems = list(stems)
    with torch.inference_mode():
        for group in prefix_groups(all_stems):
            # longest first: an OOM shows at once, and batches of similar length waste little padding
            keys = sorted((all_stems[g] for g in group), key=len, reverse=True)
            shared = min(common_prefix_length(keys), len(keys[-1]) - 1)
            prefix = _Prefix(model, list(keys[0][:shared]))
            for start in range(0, len(keys), batch_size):
                _score_stems(prefix, keys[start:start + batch_size], stems, shared, pad, results)
    return results  # type: ignore[return-value]


def _score_stems(prefix: _Prefix, batch: list[tuple[int, ...]], stems: dict, shared: int, pad: int,
                 results: list) -> None:
    """Log-likelihoods of every continuation of a batch of stems, written into `results` by request index."""
    import torch

    past_mask, past_pos = prefix.start(len(batch))
    logits, cache, mask, last = prefix.forward(prefix.for_batch(len(batch)), [list(k[shared:]) for k in batch],
                                               past_mask, past_pos, pad, keep=1)
    first = torch.log_softmax(logits[:, -1], dim=-1)
    # Continuations longer than one token run their own tokens on the context's cache.
    longer = [(row, i, cont) for row, key in enumerate(batch) for i, cont in stems[key] if len(cont) > 1]
    tails = None
    if longer:
        index = torch.tensor([row for row, _, _ in longer])
        cache.batch_select_indices(index.to(prefix.device))
        width = max(len(cont) - 1 for _, _, cont in longer)
        tail_logits, _, _, _ = prefix.forward(cache, [cont[:-1] for _, _, cont in longer], mask[index],
                                              last[index], pad, keep=width)
        tails = torch.log_softmax(tail_logits, dim=-1)
    n_longer = 0
    for row, key in enumerate(batch):
        for i, cont in stems[key]:
            if len(cont) == 1:
                window = first[row][None]
            else:
                window = torch.cat([first[row][None], tails[n_longer, tails.shape[1] - (len(cont) - 1):]])
                n_longer += 1
            target = torch.tensor(cont, device=window.device)
            total = window.gather(1, target[:, None]).sum().item()
            results[i] = (total, bool((window.argmax(-1) == target).all()))


# ---------------------------------------------------------------- generation

def _stop_ids(model, tokenizer) -> set[int]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids |= set(configured if isinstance(configured, list) else [configured])
    return ids


def cut_at_stops(text: str, stop: Sequence[str]) -> str:
    """The text before the first occurrence of any stop string (lm-eval's post-processing)."""
    for term in stop:
        if term:
            text = text.split(term)[0]
    return text


def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, stop: str | Sequence[str] = (),
             batch_size: int = 8, max_length: int | None = None) -> list[str]:
    """Greedy completions with lm-eval's `generate_until` semantics: prompts encoded as `encode` does and
    truncated from the left to leave room for max_new_tokens; decoding of a row ends at EOS, at
    max_new_tokens or once its text holds a stop string; the text is cut before the first stop string."""
    import torch

    stop = [stop] if isinstance(stop, str) else list(stop)
    if not prompts:
        return []
    max_length = max_length or model_max_length(model, tokenizer)
    if max_new_tokens >= max_length:
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's {max_length}")
    encoded = [encode(tokenizer, p)[-(max_length - max_new_tokens):] for p in prompts]
    pad, stop_ids = _pad_id(tokenizer), _stop_ids(model, tokenizer)
    outputs: list[str | None] = [None] * len(prompts)
    with torch.inference_mode():
        for group in prefix_groups(encoded):
            order = sorted(group, key=lambda i: -len(encoded[i]))
            shared = min(common_prefix_length([encoded[i] for i in order]), len(encoded[order[-1]]) - 1)
            prefix = _Prefix(model, encoded[order[0]][:shared])
            for start in range(0, len(order), batch_size):
                rows = order[start:start + batch_size]
                tokens = _decode_greedily(prefix, [encoded[i][shared:] for i in rows], max_new_tokens, stop,
                                          tokenizer, stop_ids, pad)
                for i, new in zip(rows, tokens):
                    outputs[i] = cut_at_stops(tokenizer.decode(new, skip_special_tokens=True), stop)
    return outputs  # type: ignore[return-value]


def _decode_greedily(prefix: _Prefix, rows: list[list[int]], max_new_tokens: int, stop: list[str], tokenizer,
                     stop_ids: set[int], pad: int) -> list[list[int]]:
    """The tokens greedy decoding adds to each row (after the prefix), EOS excluded; a row leaves the batch
    at EOS, at max_new_tokens, or once its text holds a stop string."""
    import torch

    generated: list[list[int]] = [[] for _ in rows]
    active = list(range(len(rows)))
    past_mask, past_pos = prefix.start(len(rows))
    cache, step = prefix.for_batch(len(rows)), rows
    while active:
        logits, cache, past_mask, past_pos = prefix.forward(cache, step, past_mask, past_pos, pad, keep=1)
        next_tokens = logits[:, -1].argmax(-1).tolist()
        keep = []
        for slot, (row, token) in enumerate(zip(active, next_tokens)):
            if token in stop_ids:
                continue
            generated[row].append(token)
            if len(generated[row]) >= max_new_tokens:
                continue
            if stop and any(s in tokenizer.decode(generated[row], skip_special_tokens=True) for s in stop if s):
                continue
            keep.append(slot)
        if len(keep) < len(active):
            index = torch.tensor(keep, dtype=torch.long)
            if keep:
                cache.batch_select_indices(index.to(prefix.device))
            past_mask, past_pos = past_mask[index], past_pos[index]
        step = [[next_tokens[slot]] for slot in keep]
        active = [active[slot] for slot in keep]
    return generated
