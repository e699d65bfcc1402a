"""The embedded tokenizer: SentencePiece-style BPE that behaves like Llama-2's and Mistral-7B's.

Like theirs: ids 0/1/2 are <unk>/<s>/</s>, then the 256 byte tokens <0x00>..<0xFF>, then the learned
pieces; spaces become the word marker "▁" and a text gets a dummy "▁" prefix; a character outside the
vocabulary is spelled in byte tokens (byte fallback), never <unk>; BOS is prepended by default and no EOS
appended; there is no pad token. It is trained on the bundled corpus (every script of the language table)
and loads with AutoTokenizer.from_pretrained from its folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from maple_utils.embedded.build import HERE, build_atomically, content_hash

SPECIALS = ("<unk>", "<s>", "</s>")
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))
LEARNED_VOCAB = 2048  # pieces learned on the corpus (alphabet included), on top of specials and bytes
CORPUS = HERE / "corpus.yaml"


def corpus() -> dict[str, list[str]]:
    """The bundled sentences by language code, and `prompts`: the words of the prompt templates."""
    with open(CORPUS, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _train(lines: list[str], learned_vocab: int):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    learner = Tokenizer(models.BPE(unk_token="<unk>"))  # learns within words, each with its "▁" prefix
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    learner.train_from_iterator(
        lines,
        trainers.BpeTrainer(
            vocab_size=learned_vocab, min_frequency=1, special_tokens=list(SPECIALS), show_progress=False
        ),
    )
    learned = json.loads(learner.to_str())["model"]
    vocab = {t: i for i, t in enumerate(SPECIALS + BYTE_TOKENS)}
    for piece, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in learned["merges"]]
    # As Llama-2's tokenizer.json: the dummy prefix and the word marker come from the normalizer, and BPE runs
    # over the whole text (no merge crosses a word, since none was learned across one).
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return tok


def llama_style_tokenizer(lines: list[str], learned_vocab: int = LEARNED_VOCAB, model_max_length: int = 2048):
    """A transformers tokenizer trained on `lines` with Llama-2's conventions (BOS prepended, byte fallback);
    the benchmarks train one of Llama-2's vocabulary size on real text."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=_train(lines, learned_vocab),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=model_max_length,
    )


def tokenizer_dir() -> Path:
    """Folder of the embedded tokenizer, built on first use."""

    def build(out: Path) -> None:
        text = corpus()
        llama_style_tokenizer([s for sentences in text.values() for s in sentences]).save_pretrained(out)

    return build_atomically("tokenizer", content_hash(Path(__file__), CORPUS), build)
