"""The hot path of evaluation: log-likelihood of continuations and greedy generation, behind lm-eval's contract.

`loglikelihood(model, tokenizer, requests)` returns, per (context, continuation) pair, the summed
log-probability of the continuation and whether greedy decoding would produce it; `generate(model,
tokenizer, prompts, max_new_tokens, stop)` returns lm-eval's `generate_until` outputs. The tokens are
lm-eval's (HFLM, lm-evaluation-harness 0.4.13): BOS as the tokenizer adds it, the continuation's tokens split
from the joint encoding, contexts truncated from the left. The arithmetic differs, because under the
MEGAVERSE protocol most of it repeats:

- a prefix tree over the requests (`plan_prefixes`): the k exemplars every prompt of a (task, language)
  starts with, and an XQuAD passage asked several questions, run once; each batch starts its rows from
  copies of their prefixes' key/value caches, so rows of different prefixes share a batch;
- every choice of an item shares its context: the context runs once, single-token choices are read from
  its last position, longer ones run only their own tokens on top of the context's cache;
- the LM head runs only at positions whose log-probabilities are needed;
- in generation each row stops on its own stop string or EOS and leaves the batch, and the cache grows in
  place instead of being copied at every step.

Rows are left-padded between their cached prefix and their own tokens, with explicit position ids and
explicit attention masks, one per kind of attention layer, so each token sees exactly the positions and keys
it would see alone: a sliding-window layer (Mistral's 4,096 tokens, Gemma 3's 512 in 15 of 18 layers) counts
its window in positions, not in cache slots, and every cache layer keeps all its keys. (transformers' own
sliding layers trim by slot and its masks count slots, which padding makes differ from positions: batched
Gemma 3 prompts beyond the window were off by up to 86 nats in issue 18's probe, 7.7 on the real-model
tier's Belebele prompts.) An empty context gives every request one stem: the
continuations still run batch_size rows at a time, within a budget of logits. torch is imported inside the functions, so
the package imports without it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

# ---------------------------------------------------------------- tokens (lm-eval's rules)


def _starts_with_bos(tokenizer, text: str) -> bool:
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)


def encode(tokenizer, text: str) -> list[int]:
    """A prompt's tokens with BOS as the tokenizer adds it, unless the text already starts with BOS (a chat
    template writes it), as lm-eval's `tok_encode`."""
    return tokenizer(text, add_special_tokens=not _starts_with_bos(tokenizer, text))["input_ids"]


def encode_pair(
    tokenizer, context: str, continuation: str, contexts: dict | None = None
) -> tuple[list[int], list[int]]:
    """Context tokens and the continuation's tokens, split from the joint encoding, as lm-eval does:
    trailing spaces of the context move to the continuation, so a tokenizer that merges a space into the
    next word sees the same text either way. An empty context is the BOS token (EOS when there is none).
    contexts: a memo of context encodings, so the choices of one item encode their context once."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        cont = encode(tokenizer, continuation)
        return [prefix], cont[1:] if cont and cont[0] == prefix else cont
    whole = encode(tokenizer, context + continuation)
    memo = contexts if contexts is not None else {}
    if context not in memo:
        memo[context] = encode(tokenizer, context)
    ctx = memo[context]
    return ctx, whole[len(ctx) :]


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


NODE_MIN_SAVING = 256  # tokens of computation a shared prefix must save to be computed on its own


@dataclass
class _Node:
    """A token prefix shared by several rows: computed once (on top of its parent's), then handed to each
    batch that holds one of its rows."""

    length: int
    parent: int | None
    rows: int = 0  # rows of its subtree not yet scored; its cache is freed at 0
    kv: list | None = None


def plan_prefixes(
    sequences: Sequence[Sequence[int]], saving: int = NODE_MIN_SAVING
) -> tuple[list[int], list[_Node], list[int | None]]:
    """A prefix tree over the sequences: the row order (token order, so each subtree is contiguous), the
    nodes, and each sequence's deepest node (None: no shared prefix worth computing apart). A run of
    neighbours in token order that share more than their parent's prefix becomes a node when computing
    the shared part once saves at least `saving` tokens (the exemplars of a (task, language); an XQuAD
    passage asked several questions); else sub-runs that share still more are looked for. Every row keeps
    at least one token of its own."""
    order = sorted(range(len(sequences)), key=lambda i: sequences[i])
    shared = [common_prefix_length([sequences[a], sequences[b]]) for a, b in zip(order, order[1:])]
    nodes: list[_Node] = []
    node_of: list[int | None] = [None] * len(sequences)

    # (rows order[lo:hi] that share `depth` tokens, the deepest node above them); a stack, not recursion,
    # since a chain of prompts each one token longer than the last would nest as deep as it is long
    stack: list[tuple[int, int, int, int | None]] = [(0, len(order), 0, None)]
    while stack:
        lo, hi, depth, parent = stack.pop()
        base = nodes[parent].length if parent is not None else 0

        def fits(m: int) -> bool:  # the row keeps a token of its own beyond `depth`
            return len(sequences[order[m]]) - 1 > depth  # noqa: B023 (called within this iteration only)

        j = lo
        while j < hi:
            k = j
            while fits(j) and k + 1 < hi and shared[k] > depth and fits(k + 1):
                k += 1
            members = [order[m] for m in range(j, k + 1)]
            if k == j:
                node_of[members[0]] = parent
            else:
                length = min(shared[j:k] + [len(sequences[i]) - 1 for i in members])
                if (len(members) - 1) * (length - base) >= saving:
                    nodes.append(_Node(length, parent))
                    stack.append((j, k + 1, length, len(nodes) - 1))
                else:
                    stack.append((j, k + 1, length, parent))
            j = k + 1
    for node in node_of:
        while node is not None:
            nodes[node].rows += 1
            node = nodes[node].parent
    return order, nodes, node_of


def _kv_of(cache) -> list:
    if hasattr(cache, "layers"):  # transformers >= 4.56
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


@lru_cache(maxsize=1)
def _growing_layer_class():
    """A cache layer that appends into spare capacity (doubling when full) instead of copying the whole
    cache at every step, as transformers' DynamicLayer does (that copy was 20% of zero-shot XQuAD decoding in a
    profile on the bench model, 0.86 of 4.2 s). None where transformers has no cache layers (< 4.56)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:
        return None

    class GrowingLayer(DynamicLayer):
        def update(self, key_states, value_states, *args, **kwargs):
            import torch

            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.used, self.key_buffer, self.value_buffer = 0, None, None
            new = key_states.shape[-2]
            if self.key_buffer is None or self.used + new > self.key_buffer.shape[-2]:
                capacity = max(2 * (self.used + new), 64)
                shape = (*key_states.shape[:-2], capacity, key_states.shape[-1])
                keys = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
                values = torch.empty(shape, dtype=value_states.dtype, device=value_states.device)
                if self.used:
                    keys[..., : self.used, :] = self.keys
                    values[..., : self.used, :] = self.values
                self.key_buffer, self.value_buffer = keys, values
            self.key_buffer[..., self.used : self.used + new, :] = key_states
            self.value_buffer[..., self.used : self.used + new, :] = value_states
            self.used += new
            self.keys = self.key_buffer[..., : self.used, :]
            self.values = self.value_buffer[..., : self.used, :]
            return self.keys, self.values

        def batch_select_indices(self, indices) -> None:
            if self.get_seq_length() > 0:
                self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
                self.keys = self.key_buffer[..., : self.used, :]
                self.values = self.value_buffer[..., : self.used, :]

    return GrowingLayer


def _new_cache(model):
    """An empty cache whose every layer keeps all its keys and grows in place. A sliding-window layer keeps
    them too: which keys a query may see is the explicit attention mask's business (`_Runner.masks`), since
    transformers' sliding layers trim by cache index, which left padding between a cached prefix and a
    row's own tokens makes differ from the token distance."""
    from transformers import DynamicCache

    cache = DynamicCache()
    growing = _growing_layer_class()
    if growing is not None:
        cache.layer_class_to_replicate = growing
    return cache


def _text_config(model):
    """The config of the model's language part (a multimodal config nests it; a PEFT model's is its base's)."""
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_windows(model) -> dict[str | None, int | None]:
    """Each kind of attention layer the model has and its window (None: full causal attention), read from
    its config: `layer_types` where it declares them (Gemma 3: 'sliding_attention' and 'full_attention'),
    else one kind for every layer with the config's `sliding_window` (Mistral: 4,096; Llama: none). A kind
    other than these two is refused: the masks below would not describe it."""
    config = _text_config(model)
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    if not types:
        return {None: window}
    known = {"full_attention": None, "sliding_attention": window}
    unknown = sorted(set(types) - set(known))
    if unknown:
        raise ValueError(
            f"{type(model).__name__}: attention layers of type {', '.join(unknown)} are not supported "
            "by maple_utils.eval.scoring (it builds masks for full and sliding-window attention)"
        )
    return {t: known[t] for t in sorted(set(types))}


class _Runner:
    """Forward passes over left-padded rows on top of per-row cached prefixes, with explicit positions, so
    each token sees exactly the positions and keys it would see alone."""

    def __init__(self, model, pad: int):
        self.model, self.pad = model, pad
        self.device = next(model.parameters()).device
        self.cache_argument = _cache_argument(model)
        self.windows = attention_windows(model)
        self.dtype = model.get_input_embeddings().weight.dtype
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        # the decoder without its LM head (LoRA layers, injected in place, stay in it), and the head
        self.body, self.lm_head = base.base_model, base.get_output_embeddings()
        self.vocab = self.lm_head.weight.shape[0]
        self.softcap = getattr(_text_config(base), "final_logit_softcapping", None)

    def prefix_budget(self) -> int:
        """Tokens of cached prefix that PREFIX_CACHE_BYTES holds: keys and values of every layer."""
        config = _text_config(self.model)
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        per_token = config.num_hidden_layers * 2 * heads * head_dim * self.dtype.itemsize
        return max(1, PREFIX_CACHE_BYTES // per_token)

    def masks(self, full_mask, width: int):
        """The attention masks of a pass whose last `width` columns of `full_mask` (batch, keys; 1 = a real
        token) are its queries, one per kind of attention layer: a real query sees the real keys at its own
        position or before, within the layer's window counted in positions, never in cache slots (a row's real
        tokens hold consecutive positions, so a key's position is the count of real keys before it). A pad
        sees only itself, so that nothing is NaN. Additive (0 or the dtype's minimum), as eager and SDPA
        attention both take them; a dict by layer type where the model has several kinds."""
        import torch

        real = full_mask.bool()
        positions = full_mask.cumsum(1) - 1
        q_positions = positions[:, -width:, None]
        distance = q_positions - positions[:, None, :]
        causal = real[:, None, :] & (distance >= 0)
        keys = full_mask.shape[1]
        pads_self = torch.zeros_like(causal)
        steps = torch.arange(width)
        pads_self[:, steps, keys - width + steps] = ~real[:, -width:]
        out = {}
        for kind, window in self.windows.items():
            allowed = (causal if window is None else causal & (distance < window)) | pads_self
            mask = torch.zeros(allowed.shape, dtype=self.dtype).masked_fill_(~allowed, torch.finfo(self.dtype).min)
            out[kind] = mask[:, None].to(self.device)
        return out[None] if None in out else out

    def node_kv(self, nodes: list[_Node], index: int, tokens: Sequence[int]) -> list:
        """The node's key/value tensors (batch 1), computed on first use on top of its parent's."""
        import torch

        node = nodes[index]
        if node.kv is None:
            start, cache, past = 0, None, torch.zeros((1, 0), dtype=torch.long)
            if node.parent is not None:
                start = nodes[node.parent].length
                cache = self.batch_cache([self.node_kv(nodes, node.parent, tokens)], [start])
                past = torch.ones((1, start), dtype=torch.long)
            _, cache, _, _ = self.forward(
                cache, [list(tokens[start : node.length])], past, torch.full((1,), start - 1), keep=1
            )
            node.kv = _kv_of(cache)
        return node.kv

    def rows_of(self, cache, index):
        """A new cache holding the given rows of `cache`, which stays as it is."""
        rows = _new_cache(self.model)
        for layer, (keys, values) in enumerate(_kv_of(cache)):
            rows.update(keys[index.to(keys.device)], values[index.to(keys.device)], layer)
        return rows

    def batch_cache(self, kvs: list, lengths: list[int]):
        """One cache for a batch whose rows hold prefixes of different lengths (None: none), each
        right-aligned: the positions before a shorter prefix are zeros, and masked."""
        import torch

        if not any(lengths):
            return None
        cache, width = _new_cache(self.model), max(lengths)
        filled = next(kv for kv in kvs if kv is not None)
        for layer, (like, _) in enumerate(filled):
            keys, values = [], []
            for kv, n in zip(kvs, lengths):
                pad = like.new_zeros(1, like.shape[1], width - n, like.shape[3])
                keys.append(torch.cat([pad, kv[layer][0][:, :, :n]], dim=2) if n else pad)
                values.append(torch.cat([pad, kv[layer][1][:, :, :n]], dim=2) if n else pad)
            cache.update(torch.cat(keys), torch.cat(values), layer)
        return cache

    def start(self, nodes: list[_Node], node_ids: list[int | None], sequences: list[Sequence[int]]):
        """The cache, mask and last positions of a batch whose rows begin at their nodes' prefixes."""
        import torch

        lengths = [nodes[n].length if n is not None else 0 for n in node_ids]
        kvs = [self.node_kv(nodes, n, seq) if n is not None else None for n, seq in zip(node_ids, sequences)]
        width = max(lengths)
        mask = torch.zeros((len(lengths), width), dtype=torch.long)
        for i, n in enumerate(lengths):
            mask[i, width - n :] = 1
        return self.batch_cache(kvs, lengths), mask, torch.tensor(lengths) - 1

    def forward(self, cache, rows: list[list[int]], past_mask, past_positions, keep: int, hidden: bool = False):
        """Run `rows` (each row's new tokens) on top of `cache`, left-padded between what the cache holds
        and the new tokens. past_mask: (batch, cached length) 0/1; past_positions: (batch,) the position of
        each row's last cached real token (-1 when none). Returns the last `keep` positions' logits (fp32; with
        hidden, their final hidden states, for `head` to read in slices), the extended cache, the extended mask
        and each row's last position."""
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        positions = past_positions[:, None] + torch.cumsum(mask, dim=1)
        positions = positions.clamp(min=0) * mask  # pads sit at position 0; no real token attends to them
        full_mask = torch.cat([past_mask, mask], dim=1)
        cache = cache if cache is not None else _new_cache(self.model)
        inputs = dict(
            input_ids=ids.to(self.device),
            attention_mask=self.masks(full_mask, width),
            position_ids=positions.to(self.device),
            use_cache=True,
            **{self.cache_argument: cache},
        )
        if hidden:
            out = self.body(**inputs)
            return out.last_hidden_state[:, -keep:], _cache_of(out), full_mask, positions[:, -1]
        out = self.model(**inputs, logits_to_keep=keep)
        return out.logits.float(), _cache_of(out), full_mask, positions[:, -1]

    def head(self, hidden):
        """Log-probabilities are read from these logits: the LM head over final hidden states (fp32), with the
        final soft-capping of the models that have it (Gemma 2), as the model's own forward applies them."""
        import torch

        logits = self.lm_head(hidden).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


PREFIX_CACHE_BYTES = 1 << 30  # cached prefixes a run of batches may hold at once (1 GiB)


def _windows(order: list[int], nodes: list[_Node], node_of: list[int | None], budget_tokens: int):
    """The token order cut into runs whose prefixes' caches (each node holds its whole length) fit within
    budget_tokens together; a run always takes at least one row."""

    def unheld(i: int, held: set) -> list[int]:  # the row's node and its ancestors not yet held
        chain, node = [], node_of[i]
        while node is not None and node not in held:
            chain.append(node)
            node = nodes[node].parent
        return chain

    window, held, tokens = [], set(), 0
    for i in order:
        chain = unheld(i, held)
        if window and tokens + sum(nodes[n].length for n in chain) > budget_tokens:
            yield window
            window, held, tokens = [], set(), 0
            chain = unheld(i, held)
        window.append(i)
        held.update(chain)
        tokens += sum(nodes[n].length for n in chain)
    if window:
        yield window


def _batches(sequences: list[Sequence[int]], batch_size: int, budget_tokens: int):
    """Batches of (indices, their nodes, the nodes): within each run of the token order whose cached
    prefixes fit the budget, rows longest first by the tokens they run beyond their prefix, so that a batch
    pads little (in token order a passage asked once sits beside its neighbours' short questions: 2.1 padded
    slots per real token on SmolLM2's zero-shot Belebele-vi, 1.09 sorted); a node's cache is dropped once its
    last row has been handed out."""
    order, nodes, node_of = plan_prefixes(sequences, NODE_MIN_SAVING)

    def own(i: int) -> int:
        return len(sequences[i]) - (nodes[node_of[i]].length if node_of[i] is not None else 0)

    for window in _windows(order, nodes, node_of, budget_tokens):
        window.sort(key=own, reverse=True)
        for start in range(0, len(window), batch_size):
            rows = window[start : start + batch_size]
            yield rows, [node_of[i] for i in rows], nodes
            for i in rows:
                node = node_of[i]
                while node is not None:
                    nodes[node].rows -= 1
                    if not nodes[node].rows:
                        nodes[node].kv = None
                    node = nodes[node].parent


def _pad_id(tokenizer) -> int:
    """Any id will do under a zero mask: the pad token, else EOS, else 0."""
    return next(c for c in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if c is not None)


# ---------------------------------------------------------------- log-likelihood


def loglikelihood(
    model, tokenizer, requests: Iterable[tuple[str, str]], batch_size: int = 8, max_length: int | None = None
) -> list[tuple[float, bool]]:
    """Summed log P(continuation | context) and is-greedy for each request, in the requests' order."""
    import torch

    requests = list(requests)
    if not requests:
        return []
    max_length = max_length or model_max_length(model, tokenizer)
    # Each request becomes a stem (the tokens up to and including the context's last one, whose output
    # predicts the continuation's first token) and a tail (the continuation's tokens but the last).
    stems: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    contexts: dict[str, list[int]] = {}
    for i, (context, continuation) in enumerate(requests):
        ctx, cont = encode_pair(tokenizer, context, continuation, contexts)
        if not cont:
            raise ValueError(f"request {i}: the continuation {continuation!r} encodes to no tokens")
        if len(cont) > max_length:
            raise ValueError(
                f"request {i}: the continuation has {len(cont)} tokens, more than the model's {max_length}"
            )
        inp = (ctx + cont)[-(max_length + 1) :][:-1]  # lm-eval's left truncation
        stem = tuple(inp[: len(inp) - len(cont) + 1])
        stems.setdefault(stem, []).append((i, cont))
    runner = _Runner(model, _pad_id(tokenizer))
    results: list[tuple[float, bool] | None] = [None] * len(requests)
    keys = list(stems)
    with torch.inference_mode():
        for rows, row_nodes, nodes in _batches(keys, batch_size, runner.prefix_budget()):
            _score_stems(runner, [keys[i] for i in rows], row_nodes, nodes, stems, results, batch_size)
    return results  # type: ignore[return-value]


LOGITS_BUDGET = 1 << 24  # vocabulary-sized logits held at once (64 MB in fp32; Gemma 3: 64 positions)


def _slices(n: int, vocab: int):
    """Position ranges of n whose logits stay within LOGITS_BUDGET."""
    step = max(1, LOGITS_BUDGET // vocab)
    return [slice(a, min(a + step, n)) for a in range(0, n, step)]


def _score_stems(
    runner: _Runner,
    batch: list[tuple[int, ...]],
    row_nodes: list[int | None],
    nodes: list[_Node],
    stems: dict,
    results: list,
    batch_size: int,
) -> None:
    """Log-likelihoods of every continuation of a batch of stems, written into `results` by request index."""
    import torch

    cache, past_mask, past_pos = runner.start(nodes, row_nodes, batch)
    own = [list(key[past_pos[row] + 1 :]) for row, key in enumerate(batch)]
    logits, cache, mask, last = runner.forward(cache, own, past_mask, past_pos, keep=1)
    first = torch.log_softmax(logits[:, -1], dim=-1)
    scored = [(row, i, cont) for row, key in enumerate(batch) for i, cont in stems[key]]
    targets = torch.tensor([cont[0] for _, _, cont in scored], device=first.device)
    rows = torch.tensor([row for row, _, _ in scored], device=first.device)
    totals = first[rows, targets]
    greedy = first[rows].argmax(-1) == targets
    # Continuations longer than one token run their other tokens on their context's cache, batch_size rows
    # at a time: one stem may hold every request (an empty context), and a pass must stay within the bound.
    longer = sorted((n for n, (_, _, cont) in enumerate(scored) if len(cont) > 1), key=lambda n: len(scored[n][2]))
    for start in range(0, len(longer), batch_size):
        chunk = longer[start : start + batch_size]
        index = torch.tensor([scored[n][0] for n in chunk])
        tails = [scored[n][2][1:] for n in chunk]
        width = max(len(t) for t in tails)
        hidden, _, _, _ = runner.forward(
            runner.rows_of(cache, index),
            [scored[n][2][:-1] for n in chunk],
            mask[index],
            last[index],
            keep=width,
            hidden=True,
        )
        for j, (n, tail) in enumerate(zip(chunk, tails)):
            states, target = hidden[j, width - len(tail) :], torch.tensor(tail, device=hidden.device)
            # the LM head over slices of positions, log-softmax read at the targets only: the logits held at
            # once stay within the budget whatever the vocabulary and the continuation's length
            for part in _slices(len(tail), runner.vocab):
                window = runner.head(states[part])
                picked = window.gather(1, target[part, None])[:, 0] - torch.logsumexp(window, dim=-1)
                totals[n] = totals[n] + picked.sum()
                greedy[n] = greedy[n] & (window.argmax(-1) == target[part]).all()
        del hidden
    # one transfer for the batch, not a device sync per request
    for (_, i, _), total, is_greedy in zip(scored, totals.tolist(), greedy.tolist()):
        results[i] = (total, bool(is_greedy))


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


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    stop: str | Sequence[str] = (),
    batch_size: int = 8,
    max_length: int | None = None,
) -> list[str]:
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
    encoded = [encode(tokenizer, p)[-(max_length - max_new_tokens) :] for p in prompts]
    runner, stop_ids = _Runner(model, _pad_id(tokenizer)), _stop_ids(model, tokenizer)
    outputs: list[str | None] = [None] * len(prompts)
    with torch.inference_mode():
        for rows, row_nodes, nodes in _batches(encoded, batch_size, runner.prefix_budget()):
            tokens = _decode_greedily(
                runner,
                *runner.start(nodes, row_nodes, [encoded[i] for i in rows]),
                [encoded[i] for i in rows],
                max_new_tokens,
                stop,
                tokenizer,
                stop_ids,
            )
            for i, new in zip(rows, tokens):
                outputs[i] = cut_at_stops(tokenizer.decode(new, skip_special_tokens=True), stop)
    return outputs  # type: ignore[return-value]


def _decode_greedily(
    runner: _Runner,
    cache,
    past_mask,
    past_pos,
    rows: list[list[int]],
    max_new_tokens: int,
    stop: list[str],
    tokenizer,
    stop_ids: set[int],
) -> list[list[int]]:
    """The tokens greedy decoding adds to each row (whose cached prefix ends at past_pos), EOS excluded; a
    row leaves the batch at EOS, at max_new_tokens, or once its text holds a stop string."""
    import torch

    generated: list[list[int]] = [[] for _ in rows]
    active = list(range(len(rows)))
    step = [row[past_pos[i] + 1 :] for i, row in enumerate(rows)]
    while active:
        logits, cache, past_mask, past_pos = runner.forward(cache, step, past_mask, past_pos, keep=1)
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
                cache.batch_select_indices(index.to(runner.device))
            past_mask, past_pos = past_mask[index], past_pos[index]
        step = [[next_tokens[slot]] for slot in keep]
        active = [active[slot] for slot in keep]
    return generated
