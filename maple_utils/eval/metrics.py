"""Metrics: accuracy, SQuAD and MLQA exact match / F1, Unicode-aware ROUGE-L; means with standard errors.

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

ASCII_PUNCT = set(string.punctuation)
UNICODE_PUNCT = {chr(i) for i in range(sys.maxunicode + 1) if unicodedata.category(chr(i)).startswith("P")} | ASCII_PUNCT
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
    return {"squad_em": max(float(pred == squad_normalize(g)) for g in golds),
            "squad_f1": max(_f1(pred.split(), squad_normalize(g).split()) for g in golds)}


def mlqa_scores(prediction: str, golds: list[str], lang: str) -> dict[str, float]:
    pred = mlqa_normalize(prediction, lang)
    return {"mlqa_em": max(float(pred == mlqa_normalize(g, lang)) for g in golds),
            "mlqa_f1": max(_f1(pred.split(), mlqa_normalize(g, lang).split()) for g in golds)}


def _is_unspaced(ch: str) -> bool:
    """Characters of scripts written without spaces between words: each becomes its own token."""
    cp = ord(ch)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x3040 <= cp <= 0x30FF  # Han, Kana
            or 0x0E00 <= cp <= 0x0E7F or 0x1000 <= cp <= 0x109F or 0x1780 <= cp <= 0x17FF)  # Thai, Myanmar, Khmer


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


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (beta = 1, as rouge-score) on Unicode-aware tokens."""
    p, r = rouge_tokens(prediction), rouge_tokens(reference)
    if not p or not r:
        return 0.0
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def score_generation(metrics: list[str], prediction: str, golds: list[str], lang: str) -> dict[str, float]:
    """Per-item scores of a generated answer for the metrics a task asks for."""
    scores: dict[str, float] = {}
    if any(m.startswith("squad_") for m in metrics):
        scores.update(squad_scores(prediction, golds))
    if any(m.startswith("mlqa_") for m in metrics):
        scores.update(mlqa_scores(prediction, golds, lang))
    if "rougeL" in metrics:
        scores["rougeL"] = max(rouge_l(prediction, g) for g in golds)
    return {m: scores[m] for m in metrics}
