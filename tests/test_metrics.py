import math

import pytest

from maple_utils.eval import metrics


def test_squad_normalisation_and_scores():
    assert metrics.squad_normalize("The  Eiffel-Tower!") == "eiffeltower"
    assert metrics.squad_scores("the Eiffel Tower", ["Eiffel Tower"]) == {"squad_em": 1.0, "squad_f1": 1.0}
    s = metrics.squad_scores("Eiffel Tower in Paris", ["Eiffel Tower", "tower"])
    assert s["squad_em"] == 0.0 and s["squad_f1"] == pytest.approx(2 * (2 / 4) * 1 / (2 / 4 + 1))
    assert metrics.squad_scores("", ["x"]) == {"squad_em": 0.0, "squad_f1": 0.0}


def test_mlqa_language_rules():
    assert metrics.mlqa_normalize("Los Ángeles, ¡sí!", "es") == "ángeles sí"  # articles and Unicode punctuation
    assert metrics.mlqa_normalize("在北京。", "zh") == "在 北 京"  # mixed segmentation
    assert metrics.mlqa_normalize("الكتاب", "ar") == "كتاب"  # the unanchored "ال" rule of the official script
    assert metrics.mlqa_scores("北京市", ["北京"], "zh")["mlqa_f1"] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="allowed: en, es"):
        metrics.mlqa_normalize("x", "fr")


ENGLISH_PAIRS = [
    ("The cats were running quickly to the houses.", "A cat runs quickly to the house!"),
    ("Don't stop believing; it's 2024.", "do not stop believing in 2024"),
    ("Super Bowl 50 was an American football game.", "The game was played on February 7, 2016."),
    ("", "empty prediction"),
]


@pytest.mark.parametrize("prediction, reference", ENGLISH_PAIRS)
def test_rouge_on_english_is_rouge_score_with_stemming(prediction, reference):
    from rouge_score import rouge_scorer

    expected = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True).score(reference, prediction)
    got = metrics.rouge_scores(prediction, reference, "en")
    assert got == {name: expected[name].fmeasure for name in ("rouge1", "rouge2", "rougeL")}


def test_rouge_scores_every_script():
    assert metrics.rouge_scores("河水很平静", "早上河水很平静", "zh")["rougeL"] == pytest.approx(
        2 * 1 * (5 / 7) / (1 + 5 / 7)
    )
    assert metrics.rouge_scores("河水很平静", "早上河水很平静", "zh")["rouge2"] == pytest.approx(
        2 * 1 * (4 / 6) / (1 + 4 / 6)
    )
    assert metrics.rouge_scores("Утром река спокойна", "река спокойна", "ru")["rougeL"] == pytest.approx(0.8)
    assert metrics.rouge_scores("", "x", "hi") == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


@pytest.mark.parametrize("code", ["hi", "zh", "th"])
def test_rouge_is_sensible_on_real_hindi_chinese_and_thai(shared_data, code):
    """A summary that is the first half of a real XQuAD passage scores between 0 and 1, above an unrelated
    passage and where rouge_score's own tokens would see almost nothing."""
    from rouge_score import tokenize as rouge_tokenize

    from maple_utils.eval.tasks import load_docs, load_task

    docs, _ = load_docs(load_task("xquad"), code, "validation", "local", str(shared_data))
    contexts = list(dict.fromkeys(d["context"] for d in docs))
    reference, unrelated = contexts[0], contexts[1]
    half = reference[: len(reference) // 2]
    scores = metrics.rouge_scores(half, reference, code)
    assert 0.3 < scores["rouge1"] < 1 and 0.3 < scores["rougeL"] < 1 and 0 < scores["rouge2"] < 1
    assert metrics.rouge_scores(unrelated, reference, code)["rougeL"] < scores["rougeL"]
    assert metrics.rouge_scores(reference, reference, code)["rougeL"] == 1.0
    # rouge_score's own tokens keep only [a-z0-9]: digits and Latin words, a small share of the passage
    assert len(rouge_tokenize.tokenize(reference, None)) < 0.1 * len(metrics.rouge_tokens(reference))


@pytest.mark.parametrize(
    "task, codes",
    [
        ("xquad", ["ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh"]),
        ("mlqa", ["ar", "de", "en", "es", "hi", "vi", "zh"]),
    ],
)
def test_gold_answers_score_100_on_the_real_files(shared_data, task, codes):
    from maple_utils.eval.tasks import load_docs, load_task

    spec = load_task(task)
    for code in codes:
        docs, _ = load_docs(spec, code, "validation", "local", str(shared_data))
        for doc in docs:
            golds = spec.answers(doc)
            scores = metrics.score_generation(spec.metrics, golds[0], golds, code)
            assert scores == {m: 1.0 for m in spec.metrics}, (code, doc["id"])


@pytest.mark.parametrize(
    "lang, prediction, gold, em, f1",
    [
        ("ar", "الكتاب الأحمر", "كتاب أحمر", 1.0, 1.0),  # every "ال" dropped, as the official script does
        ("zh", "北京大学。", "北京 大学", 1.0, 1.0),  # one token per character, punctuation dropped
        ("zh", "北京市", "北京", 0.0, 0.8),
        ("hi", "भारत का इतिहास।", "भारत का इतिहास", 1.0, 1.0),  # the danda is Unicode punctuation
        ("vi", "những cái bàn", "bàn", 1.0, 1.0),  # Vietnamese articles
        ("de", "Die Hauptstadt", "Hauptstadt", 1.0, 1.0),
        ("es", "La ciudad de los ángeles", "ciudad de ángeles", 1.0, 1.0),
        ("en", "The Eiffel Tower", "Eiffel tower", 1.0, 1.0),
        ("en", "a tower in Paris", "tower", 0.0, 0.5),
    ],
)
def test_mlqa_normalisation_cases(lang, prediction, gold, em, f1):
    scores = metrics.mlqa_scores(prediction, [gold], lang)
    assert scores["mlqa_em"] == em and scores["mlqa_f1"] == pytest.approx(f1)


def test_mean_stderr():
    mean, se = metrics.mean_stderr([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))
    assert metrics.mean_stderr([1.0]) == (1.0, 0.0)


@pytest.mark.parametrize(
    "output, gold, loose, strict",
    [
        (" True\nThe premise says so.", "True", 1, 1),
        ("true.", "True", 1, 1),  # normalised: case and punctuation
        (" t", "True", 1, 0),  # MEGAVERSE's quirk: the answer inside the gold counts
        ("True, because the river is calm", "True", 1, 0),  # and the gold inside the answer
        ("", "True", 0, 0),  # empty answers are wrong
        (" Neither", "True", 0, 0),
        (" choice", "choice2", 1, 0),  # XCOPA: "choice" is inside both choices
    ],
)
def test_megaverse_substring_parser_and_the_strict_one(output, gold, loose, strict):
    scores = metrics.classification_scores(
        "substring", output, gold, ["True", "Neither", "False", "choice1", "choice2"]
    )
    assert scores == {"acc_megaverse": float(loose), "acc_strict": float(strict)}


@pytest.mark.parametrize(
    "output, gold, loose, strict",
    [
        (" B", "B", 1, 1),
        ("(C)", "C", 1, 1),
        ("the answer is B", "B", 1, 0),  # a letter anywhere counts for MEGAVERSE, not for the strict parser
        ("Answer: B", "B", 0, 0),  # the capital A of "Answer" is checked first and wins (MV parse_pred)
        ("2", "B", 1, 0),  # digits stand for letters
        ("D.", "D", 1, 1),
    ],
)
def test_megaverse_belebele_letter_parser(output, gold, loose, strict):
    assert metrics.classification_scores("letter", output, gold, ["A", "B", "C", "D"]) == {
        "acc_megaverse": float(loose),
        "acc_strict": float(strict),
    }
