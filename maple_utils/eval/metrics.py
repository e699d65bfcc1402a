"""Metrics: accuracy, SQuAD and MLQA exact match / F1, ROUGE-1/2/L on every script; means with standard errors.

Two forms of each QA and summary metric. The official one: SQuAD follows the official v1.1 script's
normalisation; MLQA the official MLQA script (per-language articles, Unicode punctuation, mixed segmentation
for Chinese), as recorded in ../shared/data/README.md; ROUGE XL-Sum's own multilingual scorer. The
`_megaverse` one: as MEGAVERSE's code computes it, which scored the study's baselines (docs/fidelity.md).
Per-item scores are kept so that standard errors and paired tests can be taken.
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


def _f1(pred_tokens: list[str], gold_tokens: list[str], empty_is_match: bool = True) -> float:
    if not pred_tokens and not gold_tokens and empty_is_match:
        # Declared deviation: the official v1.1 and MLQA scripts give F1 0 (with EM 1) when both sides
        # normalise to nothing, as MLQA's Spanish gold answer "una" (dev id 60184cb2...) does; SQuAD v2's
        # script gives 1, which keeps F1 >= EM. MEGAVERSE's form keeps v1.1's 0 (empty_is_match=False).
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


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@lru_cache(maxsize=64)
def _xlsum_scorer(language: str):
    """XL-Sum's scorer for one of its languages, with two declared deviations that keep it offline: Snowball
    stems stopwords too (XL-Sum's ignore_stopwords=True needs NLTK's stopwords corpus, a download from outside
    PyPI; both sides are stemmed alike, so a pair's shared words rarely change), and Japanese is segmented over
    unidic-lite (the UniDic on PyPI) instead of the full UniDic, which `python -m unidic download` fetches."""
    from multilingual_rouge import rouge_scorer
    from nltk.stem import SnowballStemmer

    name = rouge_scorer.SPECIAL_LANGID_CONVERSION_MAP.get(language, language)
    extra = {}
    if name in SnowballStemmer.languages:
        extra["callable_stemmer"] = SnowballStemmer(name, ignore_stopwords=False).stem
    if name == "japanese":
        import fugashi
        import unidic_lite

        rc = f"{unidic_lite.DICDIR}/mecabrc"  # fugashi.Tagger would look for the full UniDic first
        tagger = fugashi.GenericTagger(f'-r "{rc}" -d "{unidic_lite.DICDIR}" -O wakati -b 50000')
        extra["callable_tokenizer"] = lambda text: tagger.parse(text).split()
    import warnings

    with warnings.catch_warnings():  # "unknown stemmer language" (XL-Sum stems only where it has one), pkg_resources
        warnings.simplefilter("ignore")
        if name == "chinese":
            import logging

            import jieba

            jieba.setLogLevel(logging.WARNING)  # it prints its dictionary's loading otherwise
        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True, lang=language, **extra)


def xlsum_language(code: str) -> str:
    """XL-Sum's name of a language (the languages table's `xlsum` column: "hindi", "chinese_simplified"), which
    picks the XL-Sum scorer's segmenter and stemmer."""
    from maple_utils.data import languages

    language = languages.table().get(code)
    name = language.config_for("xlsum") if language else None
    if not name:
        raise ValueError(f"XL-Sum has no language for code {code!r} (the languages table's xlsum column)")
    return name


def rouge_scores(prediction: str, reference: str, lang: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures as XL-Sum's own multilingual scorer computes them (csebuetnlp/xl-sum
    `multilingual_rouge_scoring`, on PyPI as multilingual-rouge): lower-cased, punctuation split off, words
    segmented by jieba (Chinese), fugashi with UniDic (Japanese), PyThaiNLP's newmm (Thai) or its Burmese rules,
    and stemmed per language (Snowball, and its own Hindi, Bengali and Turkish stemmers)."""
    scores = _xlsum_scorer(xlsum_language(lang)).score(reference, prediction)
    return {name: scores[name].fmeasure for name in ROUGE_TYPES}


# ---------------------------------------------------------------- MEGAVERSE's own scoring, quirks kept
# The study's baselines (GPT-4, PaLM2, Llama-2-70b-chat, Mistral-7B-Instruct) were scored by MEGAVERSE's code;
# a metric named <metric>_megaverse is <metric> as that code computes it, each quirk named where it is kept.


def squad_v1(prediction: str, golds: list[str]) -> tuple[float, float]:
    """(EM, F1) of one prediction as `evaluate.load("squad")` (the SQuAD v1.1 script) scores it, max over golds."""
    pred = squad_normalize(prediction)
    return (
        max(float(pred == squad_normalize(g)) for g in golds),
        max(_f1(pred.split(), squad_normalize(g).split(), empty_is_match=False) for g in golds),
    )


def megaverse_answer_normalize(text: str) -> str:
    """MV eval_qa_gptturbo.py normalize_answer: SQuAD's, but with every Unicode punctuation mark removed."""
    text = "".join(ch for ch in text.lower() if ch not in UNICODE_PUNCT)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def megaverse_qa_scores(prediction: str, golds: list[str], task: str, lang: str) -> dict[str, float]:
    """EM and F1 of a QA answer as MEGAVERSE scores it (MV eval_qa_gptturbo.py, evaluate_qa_chatgpt): the
    prediction is normalised first (`pred = normalize_fn(pred)`: XQuAD by normalize_answer, Unicode punctuation
    removed; MLQA by normalize_answer_mlqa of the target language, which segments Chinese into characters and
    removes every "ال" from Arabic), then `evaluate.load("squad")` normalises it again and the gold once, with
    SQuAD v1.1's English rules. So MLQA's gold keeps its articles and its Chinese words whole while the
    prediction lost them: an exactly right answer scores far below 1 in zh and ar (a quirk kept)."""
    if task == "mlqa":
        normalized = mlqa_normalize(prediction, lang)
    elif task == "xquad":
        normalized = megaverse_answer_normalize(prediction)
    else:
        raise ValueError(f"MEGAVERSE's QA scoring is for xquad and mlqa, not {task!r}")
    em, f1 = squad_v1(normalized, golds)
    prefix = "mlqa" if task == "mlqa" else "squad"
    return {f"{prefix}_em_megaverse": em, f"{prefix}_f1_megaverse": f1}


def megaverse_rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE as MEGAVERSE scores XL-Sum (MV mega/hf_models/src/XLSUM.py): rouge_score's scorer with Porter
    stemming and its own tokenizer, which keeps only [a-z0-9] (a Hindi or Thai summary has almost no tokens),
    for every language; called as `scorer.score(pred, label)` (arguments swapped: precision and recall trade
    places); the reported number is `np.average` over the Score tuples, so each item counts the mean of its
    precision, recall and F (a quirk kept)."""
    scores = _rouge_score_scorer().score(prediction, reference)
    return {f"{name}_megaverse": sum(scores[name]) / 3 for name in ROUGE_TYPES}


@lru_cache(maxsize=1)
def _rouge_score_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


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
    """Per-item scores of a generated answer for the metrics a task asks for (official and MEGAVERSE forms)."""
    wanted, scores = set(metrics), {}
    if wanted & {"squad_em", "squad_f1"}:
        scores.update(squad_scores(prediction, golds))
    if wanted & {"mlqa_em", "mlqa_f1"}:
        scores.update(mlqa_scores(prediction, golds, lang))
    if wanted & {"squad_em_megaverse", "squad_f1_megaverse"}:
        scores.update(megaverse_qa_scores(prediction, golds, "xquad", lang))
    if wanted & {"mlqa_em_megaverse", "mlqa_f1_megaverse"}:
        scores.update(megaverse_qa_scores(prediction, golds, "mlqa", lang))
    if wanted & set(ROUGE_TYPES):
        per_gold = [rouge_scores(prediction, g, lang) for g in golds]
        scores.update({name: max(s[name] for s in per_gold) for name in ROUGE_TYPES})
    if wanted & {f"{name}_megaverse" for name in ROUGE_TYPES}:
        per_gold = [megaverse_rouge_scores(prediction, g) for g in golds]
        scores.update({name: max(s[name] for s in per_gold) for name in per_gold[0]})
    return {m: scores[m] for m in metrics}
