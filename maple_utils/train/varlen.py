"""Attention over a padding-free row: each example attends only to itself.

A packed row holds several examples end to end with position ids restarting at 0. Transformers can mask
such a row for SDPA with one block-diagonal T x T mask, which computes the scores of every pair of examples
only to throw them away. Here each example runs its own causal SDPA call instead: the same arithmetic as
that example alone (so the result is exact), and attention costs the sum of the squared lengths rather
than the square of their sum. Registered with transformers' attention interface as `maple_varlen`, and
switched on only while a training loop runs (`padding_free`), so generation and evaluation are untouched.
"""

from __future__ import annotations

import contextlib

IMPLEMENTATION = "maple_varlen"


class PaddingFreeUnsupported(ValueError):
    """The model does not route its attention through transformers' attention interface."""


def _segments(position_ids) -> list[tuple[int, int]]:
    starts = (position_ids[0] == 0).nonzero().squeeze(1).tolist() + [position_ids.shape[1]]
    return list(zip(starts[:-1], starts[1:]))


def _sliding_mask(length: int, window: int, device):
    """Causal and within the window (transformers' rule: key index > query index - window)."""
    import torch

    q = torch.arange(length, device=device)[:, None]
    k = torch.arange(length, device=device)[None, :]
    return (k <= q) & (k > q - window)


def varlen_attention(
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs
):
    """transformers' attention-function contract: (batch, heads, seq, head_dim) in, (batch, seq, heads,
    head_dim) out. Expects one packed row and its position ids."""
    import torch
    import torch.nn.functional as F

    position_ids = kwargs.get("position_ids")
    if position_ids is None or query.shape[0] != 1 or key.shape[2] != query.shape[2]:
        raise RuntimeError(
            "maple_varlen attention needs one packed row with position ids and no KV cache "
            "(it is meant for training only; see maple_utils/train/varlen.py)"
        )
    groups = query.shape[1] // key.shape[1]
    # Mistral passes its window as an argument; other models keep it on the attention module
    window = kwargs.get("sliding_window") or getattr(module, "sliding_window", None) or None
    outputs = []
    for start, end in _segments(position_ids):
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        if window is not None and end - start > window:
            mask = _sliding_mask(end - start, window, q.device)
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling, enable_gqa=groups > 1
            )
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=groups > 1
            )
        outputs.append(out)
    return torch.cat(outputs, dim=2).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(IMPLEMENTATION, varlen_attention)
    # No mask to build: the segments come from the position ids, read by the attention function itself.
    AttentionMaskInterface.register(IMPLEMENTATION, lambda *args, **kwargs: None)


def _configs(model):
    """Every config object of the model (the PEFT wrapper, the causal LM, its decoder) that says which
    attention implementation runs."""
    seen = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen[id(config)] = config
    return list(seen.values())


def supports_padding_free(model) -> bool:
    base = getattr(model, "get_base_model", lambda: model)()
    return bool(getattr(base, "_supports_attention_backend", False))


@contextlib.contextmanager
def padding_free(model):
    """Run the model's attention as per-example causal attention inside the block, then restore it."""
    if not supports_padding_free(model):
        name = type(getattr(model, "get_base_model", lambda: model)()).__name__
        raise PaddingFreeUnsupported(
            f"{name} does not use transformers' attention interface, so its attention "
            "cannot be kept within each example of a packed row; set packing: padded"
        )
    _register()
    configs = _configs(model)
    before = [c._attn_implementation for c in configs]
    for config in configs:
        config._attn_implementation = IMPLEMENTATION
    try:
        yield model
    finally:
        for config, implementation in zip(configs, before):
            config._attn_implementation = implementation
