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


def test_rouge_l_is_unicode_aware():
    assert metrics.rouge_l("the river is calm", "The river is calm.") == 1.0
    assert metrics.rouge_l("河水很平静", "早上河水很平静") == pytest.approx(2 * 1 * (5 / 7) / (1 + 5 / 7))
    assert metrics.rouge_l("Утром река спокойна", "река спокойна") == pytest.approx(0.8)
    assert metrics.rouge_l("", "x") == 0.0


def test_mean_stderr():
    mean, se = metrics.mean_stderr([1.0, 0.0, 1.0, 0.0])
    assert mean == 0.5 and se == pytest.approx(math.sqrt((4 * 0.25 / 3) / 4))
    assert metrics.mean_stderr([1.0]) == (1.0, 0.0)
