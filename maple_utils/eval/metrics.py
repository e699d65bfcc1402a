"""Metrics: accuracy, SQuAD and MLQA exact match / F1, ROUGE-1/2/L on every script; means with standard errors.

SQuAD follows the official v1.1 script's normalisation; MLQA follows the official MLQA script
(per-language articles, Unicode punctuation, mixed segmentation for Chinese), as recorded in
../shared/data/README.md. Per-item scores are kept so that standard errors and paired tests can be taken.
"""

from __future__ import annotations

import math
import re
import string
import sys
import unicodedata
from collections import Counter
from functools import lru_cache

ASCII_PUNCT = set(string.punctuation)
UNICODE_PUNCT = {
    chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")
} | ASCII_PUNCT
MLQA_LANGS = ("en", "es", "hi", "vi", "de", "ar", "zh")
MLQA_ARTICLES = {
    "en": r"\b(a|an|the)\b",
    "es": r"\b(un|una|unos|unas|el|la|los|las)\b",
    "vi": r"\b(của|là|cái|chiếc|những)\b",
    "de": r"\b(ein|eine|einen|einem|eines|einer|der|die|das|den|dem|des)\b",
    "ar": "\\sال^|ال",  # the official script's unanchored pattern: every "ال" becomes a space
}


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)); 0 for n < 2."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens and not gold_tokens:
        # Declared deviation: the official v1.1 and MLQA scripts give F1 0 (with EM 1) when both sides
        # normalise to nothing, as MLQA's Spanish gold answer "una" (dev id 60184cb2...) does; SQuAD v2's
        # script gives 1, which keeps F1 >= EM.
        return 1.0
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_normalize(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in ASCII_PUNCT)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def mlqa_normalize(text: str, lang: str) -> str:
    if lang not in MLQA_LANGS:
        raise ValueError(f"MLQA normalisation has no rules for language {lang!r} (allowed: {', '.join(MLQA_LANGS)})")
    text = "".join(ch for ch in text.lower() if ch not in UNICODE_PUNCT)
    if lang in MLQA_ARTICLES:
        text = re.sub(MLQA_ARTICLES[lang], " ", text)
    if lang == "zh":
        return " ".join(_mixed_segmentation(text))
    return " ".join(text.split())


def _mixed_segmentation(text: str) -> list[str]:
    """Each CJK character (U+4E00-U+9FA5) and punctuation mark is a token; other runs split on spaces."""
    tokens, run = [], ""
    for ch in text:
        if "\u4e00" <= ch <= "\u9fa5" or ch in UNICODE_PUNCT:
            tokens += run.split()
            run = ""
            tokens.append(ch)
        else:
            run += ch
    return tokens + run.split()


def squad_scores(prediction: str, golds: list[str]) -> dict[str, float]:
    """Exact match and F1 (0..1) of one prediction against its gold answers, max over golds."""
    pred = squad_normalize(prediction)
    return {
        "squad_em": max(float(pred == squad_normalize(g)) for g in golds),
        "squad_f1": max(_f1(pred.split(), squad_normalize(g).split()) for g in golds),
    }


def mlqa_scores(prediction: str, golds: list[str], lang: str) -> dict[str, float]:
    pred = mlqa_normalize(prediction, lang)
    return {
        "mlqa_em": max(float(pred == mlqa_normalize(g, lang)) for g in golds),
        "mlqa_f1": max(_f1(pred.split(), mlqa_normalize(g, lang).split()) for g in golds),
    }


def _is_unspaced(ch: str) -> bool:
    """Characters of scripts written without spaces between words: each becomes its own token."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x3040 <= cp <= 0x30FF  # Han, Kana
        or 0x0E00 <= cp <= 0x0E7F
        or 0x1000 <= cp <= 0x109F
        or 0x1780 <= cp <= 0x17FF
    )  # Thai, Myanmar, Khmer


def rouge_tokens(text: str) -> list[str]:
    text = "".join(" " if ch in UNICODE_PUNCT else ch for ch in unicodedata.normalize("NFKC", text.lower()))
    tokens = []
    for word in text.split():
        run = ""
        for ch in word:
            if _is_unspaced(ch):
                if run:
                    tokens.append(run)
                    run = ""
                tokens.append(ch)
            else:
                run += ch
        if run:
            tokens.append(run)
    return tokens


class _UnicodeTokenizer:
    """rouge_score's tokenizer interface over `rouge_tokens` (no stemming: Porter's stemmer is English)."""

    def tokenize(self, text: str) -> list[str]:
        return rouge_tokens(text)


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=2)
def _rouge_scorer(english: bool):
    from rouge_score import rouge_scorer

    if english:  # exactly MEGAVERSE's scorer (MV eval_xlsum.py: use_stemmer=True)
        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_UnicodeTokenizer())


def rouge_scores(prediction: str, reference: str, lang: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures. English: rouge_score as MEGAVERSE ran it (ASCII tokens, Porter stemming);
    every other language: the same n-gram and LCS scoring over Unicode-aware tokens, since rouge_score's own
    tokens keep only [a-z0-9] and would score a Hindi or Thai summary near 0 (mission_anchors.md 2.5)."""
    scores = _rouge_scorer(lang == "en").score(reference, prediction)
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}


# ---------------------------------------------------------------- classification answered by generation


def _first_line(output: str) -> str:
    lines = output.strip().split("\n")
    return lines[0] if lines else ""


def megaverse_normalize(text: str) -> str:
    """MEGAVERSE's normalize_answer (MV mega/utils/misc_utils.py): SQuAD v1.1's, after removing "</s>"."""
    return squad_normalize(text.replace("</s>", ""))


def classification_scores(parser: str, output: str, gold: str, choices: list[str]) -> dict[str, float]:
    """A generated answer to a classification item, scored two ways (mission_anchors.md 2.5):

    - acc_megaverse, MEGAVERSE's parser, quirks kept: `substring` (XNLI, XCOPA) takes the first line, and
      counts it right when the normalised answer is inside the normalised gold or the gold inside it, so
      "t" is right for "True", and "choice" for either of XCOPA's "choice1"/"choice2"; an empty answer is
      wrong. `letter` (Belebele, MV parse_pred) reads A if "A" or "1" is anywhere in the output, else B if
      "B" or "2", and so on: any capital A wins.
    - acc_strict: the first line, normalised, must be exactly one choice (Belebele: a bare letter, optionally
      in parentheses, or the letter and a full stop).
    """
    line = _first_line(output)
    if parser == "substring":
        pred, ref = megaverse_normalize(line), megaverse_normalize(gold)
        loose = bool(pred) and (pred in ref or ref in pred)
        strict = pred == ref and [megaverse_normalize(c) for c in choices].count(pred) == 1
    elif parser == "letter":
        loose_letter = next(
            (letter for letter, digit in zip("ABCD", "1234") if letter in output or digit in output), None
        )
        loose = loose_letter == gold.strip()
        match = re.fullmatch(r"\(?([A-D])\)?\.?", line.strip())
        strict = bool(match) and match.group(1) == gold.strip()
    else:
        raise ValueError(f"unknown classification parser {parser!r} (allowed: substring, letter)")
    return {"acc_megaverse": float(loose), "acc_strict": float(strict)}


def score_generation(metrics: list[str], prediction: str, golds: list[str], lang: str) -> dict[str, float]:
    """Per-item scores of a generated answer for the metrics a task asks for."""
    scores: dict[str, float] = {}
    if any(m.startswith("squad_") for m in metrics):
        scores.update(squad_scores(prediction, golds))
    if any(m.startswith("mlqa_") for m in metrics):
        scores.update(mlqa_scores(prediction, golds, lang))
    if any(m in ROUGE_TYPES for m in metrics):
        per_gold = [rouge_scores(prediction, g, lang) for g in golds]
        scores.update({name: max(s[name] for s in per_gold) for name in ROUGE_TYPES})
    return {m: scores[m] for m in metrics}
