"""Tiny random-initialised Llama and Mistral models, built locally and loaded with from_pretrained."""

from __future__ import annotations

from pathlib import Path

from maple_utils.embedded.build import build_atomically, content_hash
from maple_utils.embedded.tokenizer import tokenizer_dir

# A few hundred thousand parameters: big enough for every code path (GQA, 4/8-bit layers whose
# dimensions suit bitsandbytes' blocks), small enough for a CPU grid in minutes.
TINY_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)
ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 1024}),
}


def model_dir(kind: str, seed: int | None = None) -> Path:
    """Folder of a tiny model of the given architecture, with its tokenizer.

    Each architecture gets its own default seed, so the tiny Llama and Mistral differ in their weights too.
    """
    if kind not in ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {kind!r} (allowed: {', '.join(ARCHITECTURES)})")
    seed = list(ARCHITECTURES).index(kind) if seed is None else seed
    tokenizer = tokenizer_dir()

    def build(out: Path) -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer)
        config_name, model_name, extra = ARCHITECTURES[kind]
        config = getattr(transformers, config_name)(
            vocab_size=len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.unk_token_id,
            tie_word_embeddings=False,
            **TINY_SHAPE,
            **extra,
        )
        torch.manual_seed(seed)
        model = getattr(transformers, model_name)(config)
        model.save_pretrained(out)
        tok.save_pretrained(out)

    key = content_hash(Path(__file__), tokenizer.name, kind, str(seed))
    return build_atomically(f"tiny-{kind}-s{seed}", key, build)
