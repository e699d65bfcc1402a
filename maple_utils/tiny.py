"""The embedded default: tiny models, a tokenizer and bundled dataset samples, built here.

Nothing in the project may download from the Hugging Face hub, so tests, `make demo` and the notebooks'
defaults run on artefacts built locally and deterministically: a byte-level BPE tokenizer trained on
`data/tiny_corpus.yaml` (every script of the language table), random-initialised Llama- and
Mistral-architecture models saved with `save_pretrained` (they load with `from_pretrained` from a folder,
as a hub model would), and small samples of every dataset in its hub schema. Scores on them are at
chance; they prove that every code path runs.

Built artefacts are cached under `paths.cache_dir()`; each is written to a temporary folder and renamed
into place, so a crash never leaves a half-built one, and a missing one is rebuilt.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import yaml

from maple_utils import languages as lang_table
from maple_utils.paths import PACKAGE_DATA, cache_dir, read_params
from maple_utils.results import write_jsonl

BUILD_VERSION = "v1"  # bump when anything below changes what is built
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
# A few hundred thousand parameters: big enough for every code path (GQA, 4/8-bit layers whose
# dimensions suit bitsandbytes' blocks), small enough for a CPU grid in minutes.
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048)
TINY_ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {"sliding_window": 1024}),
}
SAMPLE_SIZES = {"eval": 16, "fewshot": 8, "instruct": 24, "alpaca_eval": 16}


def corpus() -> dict[str, list[str]]:
    """The bundled multilingual sentences, by language code."""
    with open(PACKAGE_DATA / "tiny_corpus.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)


def _build_atomically(target: Path, build) -> Path:
    """Run build(tmp_dir) and rename the result to target; skip when target is complete already."""
    marker = target / ".complete"
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        (tmp / ".complete").write_text(BUILD_VERSION)
        if target.exists():  # an incomplete leftover from a crash
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:
            if not marker.exists():  # lost a race only if someone else finished it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _tokenizer_training_text() -> list[str]:
    lines = [s for sents in corpus().values() for s in sents]
    # Prompt words of every template and task, so prompts do not fall apart into single bytes.
    for task in read_params("tasks")["tasks"].values():
        lines.append(task["prompt"])
    lines += ["Below is an instruction that describes a task. Write a response that appropriately completes the request.",
              "### Instruction:", "### Input:", "### Response:", "### Output:"]
    return lines


def tokenizer_dir() -> Path:
    """Folder of the tiny byte-level BPE tokenizer (loads with AutoTokenizer.from_pretrained)."""

    def build(out: Path) -> None:
        from tokenizers import ByteLevelBPETokenizer
        from transformers import PreTrainedTokenizerFast

        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(_tokenizer_training_text(), vocab_size=2048, min_frequency=1,
                                special_tokens=list(SPECIAL_TOKENS.values()), show_progress=False)
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, **SPECIAL_TOKENS)
        tok.save_pretrained(out)

    return _build_atomically(cache_dir() / f"tokenizer-{BUILD_VERSION}", build)


def model_dir(kind: str, seed: int | None = None) -> Path:
    """Folder of a tiny random-initialised model of the given architecture, with its tokenizer.

    Each architecture gets its own default seed, so the tiny Llama and Mistral differ in their weights too.
    """
    if kind not in TINY_ARCHITECTURES:
        raise ValueError(f"unknown tiny architecture {kind!r} (allowed: {', '.join(TINY_ARCHITECTURES)})")
    seed = list(TINY_ARCHITECTURES).index(kind) if seed is None else seed

    def build(out: Path) -> None:
        import torch
        import transformers
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tokenizer_dir())
        config_name, model_name, extra = TINY_ARCHITECTURES[kind]
        config = getattr(transformers, config_name)(
            vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **TINY_SHAPE, **extra)
        torch.manual_seed(seed)
        model = getattr(transformers, model_name)(config)
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return _build_atomically(cache_dir() / f"tiny-{kind}-s{seed}-{BUILD_VERSION}", build)


def resolve_model(model: str) -> str:
    """What from_pretrained should load: the built folder of an embedded model, else the id or path."""
    entry = read_params("models")["models"].get(model, {})
    return str(model_dir(entry["embedded"])) if entry.get("embedded") else model


# ---------------------------------------------------------------- bundled samples, in hub schemas

def _rng(*key) -> random.Random:
    return random.Random("/".join(map(str, key)))


def _sentences(code: str) -> list[str]:
    return corpus()[code]


def _passage(rng: random.Random, sents: list[str], n: int = 3) -> list[str]:
    return [rng.choice(sents) for _ in range(n)]


def _record(task: str, code: str, i: int, rng: random.Random) -> dict:
    """One record of a task in its hub schema, built from the language's sentences."""
    s = _sentences(code)
    if task == "xnli":
        return {"premise": rng.choice(s), "hypothesis": rng.choice(s), "label": rng.randrange(3)}
    if task == "xcopa":
        return {"premise": rng.choice(s), "choice1": rng.choice(s), "choice2": rng.choice(s),
                "question": rng.choice(["cause", "effect"]), "label": rng.randrange(2), "idx": i, "changed": False}
    if task == "belebele":
        flores = lang_table.table()[code].config_for("belebele")
        rec = {"link": f"https://example.invalid/{code}/{i}", "question_number": 1,
               "flores_passage": " ".join(_passage(rng, s)), "question": rng.choice(s).rstrip(".。") + "?",
               "correct_answer_num": str(rng.randrange(1, 5)), "dialect": flores, "ds": "2023-01-01"}
        rec.update({f"mc_answer{k}": rng.choice(s) for k in range(1, 5)})
        return rec
    if task in ("xquad", "mlqa"):
        parts = _passage(rng, s)
        context = " ".join(parts)
        answer = rng.choice(parts)
        return {"id": f"{task}-{code}-{i:04d}", "context": context, "question": rng.choice(s).rstrip(".。") + "?",
                "answers": {"text": [answer], "answer_start": [context.index(answer)]}}
    if task == "xlsum":
        return {"id": f"xlsum-{code}-{i:04d}", "url": f"https://example.invalid/{code}/{i}",
                "title": rng.choice(s), "summary": rng.choice(s), "text": " ".join(_passage(rng, s, 4))}
    raise KeyError(task)


def _instruction(dataset: str, code: str, i: int, rng: random.Random) -> dict:
    s = _sentences(code)
    has_input = rng.random() < 0.4
    rec = {"instruction": rng.choice(s), "input": rng.choice(s) if has_input else "", "output": " ".join(_passage(rng, s, 2))}
    if dataset == "multialpaca" and not has_input:
        rec["input"] = None  # MultiAlpaca's release uses null for a missing input (shared/data/README.md)
    if dataset.startswith("bactrian-x"):
        rec["id"] = f"alpaca-{i}"
    return rec


def samples_dir() -> Path:
    """Folder of bundled samples: <name>/<config>/<split>.jsonl for every task and dataset."""

    def build(out: Path) -> None:
        from maple_utils.tasks import load_task

        for task in read_params("tasks")["tasks"]:
            spec = load_task(task)
            for code in spec.languages():
                config = spec.config_for(code)
                eval_split, fewshot_split = spec.splits_for(config)
                for split, size in ((eval_split, SAMPLE_SIZES["eval"]), (fewshot_split, SAMPLE_SIZES["fewshot"])):
                    if (out / task / config / f"{split}.jsonl").exists():  # zero-shot tasks share the split
                        continue
                    rng = _rng(task, config, split)
                    write_jsonl(out / task / config / f"{split}.jsonl", [_record(task, code, i, rng) for i in range(size)])
        for dataset, spec in read_params("datasets")["datasets"].items():
            for code in spec["languages"]:
                rng = _rng(dataset, code)
                rows = [_instruction(dataset, code, i, rng) for i in range(SAMPLE_SIZES["instruct"])]
                write_jsonl(out / dataset / code / "train.jsonl", rows)
        rng = _rng("alpaca_eval")
        rows = [{"instruction": rng.choice(_sentences("en")), "output": " ".join(_passage(rng, _sentences("en"), 2)),
                 "generator": "text_davinci_003", "dataset": "helpful_base"} for _ in range(SAMPLE_SIZES["alpaca_eval"])]
        write_jsonl(out / "alpaca_eval" / "alpaca_eval" / "eval.jsonl", rows)

    return _build_atomically(cache_dir() / f"samples-{BUILD_VERSION}", build)


def sample_path(name: str, config: str, split: str) -> Path:
    return samples_dir() / name / config / f"{split}.jsonl"


def build_all() -> dict[str, Path]:
    """Build (or find) every embedded artefact; returns their folders."""
    out = {"tokenizer": tokenizer_dir(), "samples": samples_dir()}
    for name, entry in read_params("models")["models"].items():
        if entry.get("embedded"):
            out[name] = model_dir(entry["embedded"])
    return out
