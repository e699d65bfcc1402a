"""The unique-token lower bound of log-likelihood scoring, against which MAPLE's scorer is measured.

A plain scorer with none of MAPLE's machinery (no prefix tree, no cache): every distinct sequence it must
read runs once, whole, from its first token; sequences are sorted by length and batched under a token budget
(rows x the batch's longest), right-padded, so padding is nearly nil; the LM head runs only at the positions
whose log-probabilities are read. Requests whose continuation is one token and whose contexts are equal
share one sequence (the context), so a zero-shot item with four single-token choices costs its context once.
The tokens are MAPLE's (lm-eval's rules: `scoring.encode_pair`, left truncation), so the two must agree to
float rounding; the bench checks that they do before it reports a time.

What it cannot do is share a prefix between different sequences: on few-shot prompts it pays for the k
exemplars in every item, which is where MAPLE's prefix tree is meant to win.
"""

from __future__ import annotations

from maple_utils.eval import scoring


def sequences_for(tokenizer, requests, max_length: int):
    """The distinct token sequences to run, and per request (its sequence, the positions whose outputs
    predict its continuation's tokens, those tokens)."""
    index: dict[tuple[int, ...], int] = {}
    reads = []
    contexts: dict = {}
    for context, continuation in requests:
        ctx, cont = scoring.encode_pair(tokenizer, context, continuation, contexts)
        whole = (ctx + cont)[-(max_length + 1) :]
        inp = whole[:-1]
        stem = len(inp) - len(cont) + 1  # tokens up to the one that predicts the continuation's first
        # a one-token continuation needs only its stem; a longer one its whole input
        seq = tuple(inp[:stem]) if len(cont) == 1 else tuple(inp)
        if seq not in index:
            index[seq] = len(index)
        reads.append((index[seq], list(range(stem - 1, len(inp))), cont))
    return list(index), reads


def loglikelihood(model, tokenizer, requests, token_budget: int = 8192, max_length: int | None = None):
    """(summed log-probability, is-greedy) per request, as `scoring.loglikelihood` returns them."""
    import torch

    requests = list(requests)
    max_length = max_length or scoring.model_max_length(model, tokenizer)
    seqs, reads = sequences_for(tokenizer, requests, max_length)
    readers: dict[int, list[int]] = {}
    for n, (seq, _, _) in enumerate(reads):
        readers.setdefault(seq, []).append(n)
    pad = scoring._pad_id(tokenizer)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    body, head = base.base_model, base.get_output_embeddings()
    cap = getattr(scoring._text_config(base), "final_logit_softcapping", None)
    results: list = [None] * len(reads)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    with torch.inference_mode():
        start = 0
        while start < len(order):
            longest, end = len(seqs[order[start]]), start + 1
            while end < len(order) and (end - start + 1) * longest <= token_budget:
                end += 1
            batch = order[start:end]
            ids = torch.full((len(batch), longest), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[row, : len(seqs[i])] = 1
            hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            for row, i in enumerate(batch):
                positions = sorted({p for n in readers[i] for p in reads[n][1]})
                logits = head(hidden[row, positions]).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
                out = torch.log_softmax(logits, dim=-1)
                at = {p: k for k, p in enumerate(positions)}
                for n in readers[i]:
                    _, wanted, cont = reads[n]
                    rows, target = out[[at[p] for p in wanted]], torch.tensor(cont)
                    results[n] = (rows.gather(1, target[:, None]).sum().item(), bool((rows.argmax(-1) == target).all()))
            start = end
    return results
