"""The study's configurations measured on the GPU at hand, with no download: one prepared check.

    python bench/gpu_check.py                  # on a CUDA machine: LLaMA-2-7B- and Mistral-7B-shaped models
    python bench/gpu_check.py --tiny           # the same code on the CPU with tiny models (the tests run it)

Models are built from LLaMA-2-7B's and Mistral-7B's configurations with random weights (written once to a
temporary folder as safetensors, then loaded through the project's own loader at each quantisation), so
nothing is downloaded and the numbers are about shapes, not weights. It measures, through the project's
code (maple_utils.train.loop, maple_utils.eval.scoring):

  training     for quantisation 4, 8, 16 and LoRA ranks 8, 64, 128 (attention layers, the paper grid's
               targets): trained tokens/s over a fixed token budget after warm-up steps, MFU (6 x trainable
               + 4 x frozen parameter FLOPs per token, over the GPU's dense bf16/fp16 peak), peak GPU memory
  scoring      log-likelihood prefill tokens/s on requests that share a long few-shot prefix, with the
               prefix computed once (the default) and with prefix sharing turned off
  generation   greedy decode tokens/s at batch 1, 16 and 64 (new tokens over the call's wall time, a short
               prompt's prefill included)
  adapters     seconds to load an adapter onto a loaded base and to switch between two

4- and 8-bit rows need bitsandbytes; without it they say so. It prints one table and writes the JSON
(default bench/results/gpu_check.json). Aimed at under 8 minutes on one H100-class GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The published configurations (config.json of meta-llama/Llama-2-7b-hf and mistralai/Mistral-7B-v0.1).
SHAPES = {
    "llama2-7b": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
            max_position_embeddings=4096,
            rms_norm_eps=1e-5,
        ),
    ),
    "mistral-7b": (
        "MistralConfig",
        "MistralForCausalLM",
        dict(
            vocab_size=32000,
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=32768,
            rms_norm_eps=1e-5,
            sliding_window=4096,
            rope_theta=10000.0,
        ),
    ),
}
TINY = dict(
    vocab_size=2304,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,
)
QUANTS, RANKS, DECODE_BATCHES = (4, 8, 16), (8, 64, 128), (1, 16, 64)
# (full, tiny): sequence length, examples per step, warm-up and measured steps, scoring and decoding sizes
SIZES = {
    "seq": (512, 64),
    "batch": (4, 2),
    "warmup": (2, 1),
    "steps": (6, 2),
    "prefix": (1536, 96),
    "requests": (32, 6),
    "prompt": (128, 16),
    "new_tokens": (64, 4),
}


def size(name: str, tiny: bool) -> int:
    return SIZES[name][1 if tiny else 0]


def build(kind: str, folder: Path, tiny: bool) -> None:
    """A random model of the named shape, saved as safetensors with the embedded (Llama-style) tokenizer."""
    import torch
    import transformers

    from maple_utils.embedded.tokenizer import tokenizer_dir

    config_name, model_name, shape = SHAPES[kind]
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir())
    shape = {**shape, **TINY} if tiny else shape
    config = getattr(transformers, config_name)(
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.unk_token_id,
        tie_word_embeddings=False,
        **shape,
    )
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    with torch.device(device):
        model = getattr(transformers, model_name)(config).to(dtype)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
    if device == "cuda":
        torch.cuda.empty_cache()


def _reset_peak():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def training_rows(folder: Path, kind: str, quant: int, tiny: bool) -> list[dict]:
    """Trained tokens/s, MFU and peak memory of LoRA at each rank on one quantised base."""
    import torch

    from maple_utils import config
    from maple_utils.models import loading
    from maple_utils.train import batches, loop, modeling

    base, tok = loading.load_base(str(folder), quant), loading.load_tokenizer(str(folder))
    seq, per_step = size("seq", tiny), size("batch", tiny)
    rng = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 2000, (per_step * 4, seq), generator=rng).tolist()  # 4 steps' worth, reused
    data = batches.Tokenized([{"input_ids": x, "labels": [-100] * (seq // 2) + x[seq // 2 :]} for x in ids], 0, 0)
    rows = []
    for rank in RANKS:
        settings = {
            "model": str(folder),
            "quant": quant,
            "rank": rank,
            "batch_size": per_step,
            "max_length": seq,
            "learning_rate": 1e-4,
            "lora_dropout": 0.05,
            "checkpoint_every": None,
            "warmup_ratio": 0.0,
        }
        model = modeling.attach_lora(base, rank, 16, 0.05, ["attention"], quant)
        trainable, total = modeling.trainable_parameters(model)
        loop.train(
            model, tok, data, config.validate_run({**settings, "max_steps": size("warmup", tiny)}), progress=False
        )
        _reset_peak()
        record = loop.train(
            model, tok, data, config.validate_run({**settings, "max_steps": size("steps", tiny)}), progress=False
        )
        rows.append(
            {
                "part": "training",
                "model": kind,
                "quant": quant,
                "rank": rank,
                "trained_tokens_per_s": record["tokens_per_s"],
                "tokens": record["tokens"],
                "mfu": loop.mfu(trainable, total, record["tokens_per_s"]),
                "peak_gpu_gb": _peak_gb(),
                "trainable_params": trainable,
                "total_params": total,
            }
        )
        base = model.unload()  # the base without this rank's LoRA layers, for the next rank
    del base
    return rows


def _timed(fn):
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def inference_rows(folder: Path, kind: str, tiny: bool, adapter: Path) -> list[dict]:
    """Prefill with and without prefix sharing, decode at several batch sizes, adapter load and switch."""
    from maple_utils.eval import scoring
    from maple_utils.models import loading

    model, tok = loading.load_base(str(folder), 16), loading.load_tokenizer(str(folder))
    words = "the river is calm in the morning and children read books at the school library".split()

    def text(n_words: int, offset: int) -> str:
        return " ".join(words[(offset + i) % len(words)] for i in range(n_words))

    prefix = text(size("prefix", tiny), 0)
    requests = [(prefix + " " + text(40, i), " yes") for i in range(size("requests", tiny))]
    prompt_tokens = sum(len(scoring.encode(tok, c)) for c, _ in requests)
    rows = []
    saved = scoring.NODE_MIN_SAVING
    for label, saving in (("shared prefix", saved), ("no sharing", 10**12)):
        scoring.NODE_MIN_SAVING = saving
        try:
            scoring.loglikelihood(model, tok, requests[:2], batch_size=8)  # warm-up
            _reset_peak()
            _, wall = _timed(lambda: scoring.loglikelihood(model, tok, requests, batch_size=8))
        finally:
            scoring.NODE_MIN_SAVING = saved
        rows.append(
            {
                "part": "scoring",
                "model": kind,
                "quant": 16,
                "mode": label,
                "requests": len(requests),
                "prompt_tokens": prompt_tokens,
                "prefill_tokens_per_s": round(prompt_tokens / wall, 1),
                "peak_gpu_gb": _peak_gb(),
            }
        )
    new_tokens = size("new_tokens", tiny)
    for batch in DECODE_BATCHES:
        prompts = [text(size("prompt", tiny), i) for i in range(batch)]
        scoring.generate(model, tok, prompts[:1], max_new_tokens=2, batch_size=batch)  # warm-up
        _reset_peak()
        # no stop strings and an EOS the random model rarely emits: every row decodes all its tokens
        outputs, wall = _timed(
            partial(scoring.generate, model, tok, prompts, max_new_tokens=new_tokens, batch_size=batch)
        )
        generated = sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in outputs)
        rows.append(
            {
                "part": "generation",
                "model": kind,
                "quant": 16,
                "batch": batch,
                "decode_tokens_per_s": round(batch * new_tokens / wall, 1),
                "generated_tokens": generated,
                "peak_gpu_gb": _peak_gb(),
            }
        )
    from peft import PeftModel

    adapted, load_s = _timed(lambda: PeftModel.from_pretrained(model, str(adapter), adapter_name="a"))
    _, second_s = _timed(lambda: adapted.load_adapter(str(adapter), adapter_name="b"))
    _, switch_s = _timed(lambda: adapted.set_adapter("a"))
    rows.append(
        {
            "part": "adapters",
            "model": kind,
            "quant": 16,
            "load_s": round(load_s, 3),
            "load_another_s": round(second_s, 3),
            "switch_s": round(switch_s, 4),
        }
    )
    return rows


def save_adapter(folder: Path, out: Path) -> None:
    """A rank-64 LoRA on the attention layers, saved as the evaluation stages load one."""
    from maple_utils.models import loading
    from maple_utils.train import modeling

    model = modeling.attach_lora(loading.load_base(str(folder), 16), 64, 16, 0.0, ["attention"], 16)
    model.save_pretrained(out)


def check(kinds: list[str], tiny: bool, quants: tuple[int, ...]) -> tuple[list[dict], dict]:
    import importlib.util

    import torch

    has_bnb = importlib.util.find_spec("bitsandbytes") is not None
    rows = []
    for kind in kinds:
        folder = Path(tempfile.mkdtemp(prefix=f"gpu-check-{kind}-"))
        try:
            build(kind, folder, tiny)
            for quant in quants:
                if quant < 16 and not has_bnb:
                    rows.append(
                        {
                            "part": "training",
                            "model": kind,
                            "quant": quant,
                            "note": "bitsandbytes is not installed: no 4- or 8-bit row",
                        }
                    )
                    continue
                rows += training_rows(folder, kind, quant, tiny)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            save_adapter(folder, folder / "adapter")
            rows += inference_rows(folder, kind, tiny, folder / "adapter")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or platform.machine()})"
    )
    import transformers

    facts = {
        "date": date.today().isoformat(),
        "device": device,
        "tiny": tiny,
        "command": "python bench/gpu_check.py " + " ".join(sys.argv[1:]),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "bitsandbytes": _version("bitsandbytes"),
            "peft": _version("peft"),
        },
        "sizes": {k: size(k, tiny) for k in SIZES},
        "flops_per_token": "6 x trainable + 4 x frozen parameters (forward, activation gradients; weight "
        "gradients for the trainable ones only)",
    }
    return rows, facts


def _version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def table(rows: list[dict]) -> str:
    lines = ["| part | model | setting | measured | peak GPU GB |", "|---|---|---|---|---|"]
    for r in rows:
        if "note" in r:
            lines.append(f"| {r['part']} | {r['model']} | {r['quant']}-bit | {r['note']} | |")
        elif r["part"] == "training":
            mfu = f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else ""
            lines.append(
                f"| training | {r['model']} | {r['quant']}-bit, r {r['rank']} | "
                f"{r['trained_tokens_per_s']:,.0f} trained tokens/s{mfu} | {r['peak_gpu_gb'] or ''} |"
            )
        elif r["part"] == "scoring":
            lines.append(
                f"| scoring | {r['model']} | {r['mode']} | {r['prefill_tokens_per_s']:,.0f} prefill tokens/s | "
                f"{r['peak_gpu_gb'] or ''} |"
            )
        elif r["part"] == "generation":
            lines.append(
                f"| generation | {r['model']} | batch {r['batch']} | {r['decode_tokens_per_s']:,.0f} decode "
                f"tokens/s | {r['peak_gpu_gb'] or ''} |"
            )
        else:
            lines.append(
                f"| adapters | {r['model']} | load, another, switch | {r['load_s']} s, {r['load_another_s']} s, "
                f"{r['switch_s']} s | |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny models on the CPU (or GPU): the same code, in seconds"
    )
    parser.add_argument("--models", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--quant", nargs="+", type=int, choices=QUANTS, default=list(QUANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_check.json")
    args = parser.parse_args()
    import torch

    if not args.tiny and not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run with --tiny for the CPU check, or on a GPU machine")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing to download: every model is built here
    start = time.perf_counter()
    rows, facts = check(args.models, args.tiny, tuple(args.quant))
    facts["wall_s"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**facts, "rows": rows}, indent=2) + "\n")
    print(f"{facts['device']}, {facts['date']}, {facts['wall_s']} s\n")
    print(table(rows))


if __name__ == "__main__":
    main()
