"""The analysis' statistics against hand computations on small synthetic predictions."""

import json

import numpy as np
import pytest

from maple_utils import layout
from maple_utils.analysis import stats
from synthetic_results import synthetic_grid


def test_task_score_is_the_mean_of_language_means():
    scores = {"en": {"1": 1.0, "2": 0.0}, "zh": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 0.0}}
    assert stats.task_score(scores) == pytest.approx((0.5 + 0.75) / 2)


def test_bootstrap_resamples_items_within_each_language():
    scores = {"zh": {"a": 1.0, "b": 0.0, "c": 1.0}, "en": {"a": 0.0, "b": 1.0}}
    low, high = stats.bootstrap_ci(scores, level=0.9, resamples=50, seed=3)
    # by hand: the same generator, languages in sorted order (en, then zh), each drawing its 50 resamples at once
    rng = np.random.default_rng(3)
    en, zh = np.array([0.0, 1.0]), np.array([1.0, 0.0, 1.0])
    en_means = en[rng.integers(0, 2, (50, 2), dtype=np.int32)].mean(axis=1)
    zh_means = zh[rng.integers(0, 3, (50, 3), dtype=np.int32)].mean(axis=1)
    draws = [(a + b) / 2 for a, b in zip(en_means, zh_means)]
    assert (low, high) == (np.quantile(draws, 0.05), np.quantile(draws, 0.95))
    assert low <= stats.task_score(scores) <= high
    assert stats.bootstrap_ci({"en": {"a": 0.7, "b": 0.7}}) == (pytest.approx(0.7), pytest.approx(0.7))


def test_exact_paired_permutation_p_value_by_hand():
    a = {"en": {"1": 1.0, "2": 1.0, "3": 1.0, "4": 0.0}}
    b = {"en": {"1": 0.0, "2": 0.0, "3": 1.0, "4": 0.0, "5": 1.0}}  # item 5 is not in both: left out
    diffs = stats.paired_differences(a, b)
    assert list(diffs) == [1.0, 1.0, 0.0, 0.0]
    # 16 sign patterns of (1, 1, 0, 0): |mean| = 0.5 when both non-zero signs agree (8 of 16), else 0
    assert stats.paired_permutation_p(diffs) == 8 / 16
    same = np.array([0.5, 0.25, 0.25])
    assert stats.paired_permutation_p(same) == 2 / 8  # only all-plus and all-minus reach |mean| = 1/3


def test_monte_carlo_p_value_for_many_items_is_small_for_a_clear_difference():
    diffs = np.ones(40)
    p = stats.paired_permutation_p(diffs, resamples=999, seed=1)
    assert p == pytest.approx(1 / 1000)  # no random pattern reaches the observed mean; the observed one counts
    assert stats.paired_permutation_p(np.array([1.0, -1.0] * 20), resamples=999, seed=1) == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.02, 0.04, 0.30 -> 4 x 0.01, 3 x 0.02, 2 x 0.04, 1 x 0.30 with running maximum
    assert stats.holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_item_scores_read_the_predictions_files(tmp_path):
    for code, scores in (("en", [1.0, 0.0]), ("zh", [0.5])):
        path = layout.predictions(tmp_path, "xquad", code)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "".join(
                json.dumps({"id": f"q{i}", "scores": {"squad_f1": s, "squad_em": 0.0}}) + "\n"
                for i, s in enumerate(scores)
            )
        )
    assert stats.item_scores(tmp_path, "xquad", "squad_f1") == {"en": {"q0": 1.0, "q1": 0.0}, "zh": {"q0": 0.5}}
    assert stats.item_scores(tmp_path, "xquad", "squad_f1", ["zh"]) == {"zh": {"q0": 0.5}}


def test_table1_best_configuration_averages_intervals_and_marks_by_hand(tmp_path):
    from maple_utils.analysis import report, tables

    frame, items = synthetic_grid(tmp_path)
    table = report.task_table(frame)
    numbers, display, found = tables.table1(table, frame, tmp_path, seed=4)
    ours = numbers[numbers["kind"] == "ours: best rank x quantisation"].iloc[0]
    # by hand: r8q4 averages (0.75 + 0.625) / 2 = 0.6875 over tasks; r8q16 (0.5 + 0.75) / 2 = 0.625; r16q4 is
    # higher (1.0) but lacks XQuAD, which the others have
    assert (ours["rank"], ours["quant"]) == (8, 4)
    assert ours["xnli"] == pytest.approx(0.75) and ours["xquad"] == pytest.approx(0.625)
    assert ours["average"] == pytest.approx(0.6875)
    assert set(numbers["kind"]) == {"ours: base model", "ours: best rank x quantisation", "study: baseline"}
    gpt4 = numbers[numbers["model"] == "GPT-4"].iloc[0]
    assert gpt4["xnli"] == 0.75 and gpt4["average"] == 0.69
    # the interval is the stratified bootstrap of the best run's XNLI items
    low, high = stats.bootstrap_ci({"en": dict(enumerate([1, 1, 1, 0])), "zh": dict(enumerate([1, 0, 1, 1]))}, seed=4)
    assert display.loc[ours.name, "xnli"].startswith(f"0.750 [{low:.3f}, {high:.3f}]")
    # best vs runner-up on XNLI: differences (0, 0, 1, 0) and (0, 0, 0, 1): exact p = 8/16 over 8 items ...
    row = found[(found["kind"] == "best vs runner-up") & (found["task"] == "xnli")].iloc[0]
    diffs = np.array([0, 0, 1, 0, 0, 0, 0, 1], dtype=float)
    assert row["items"] == 8 and row["p"] == pytest.approx(stats.paired_permutation_p(diffs)) == pytest.approx(0.5)
    # ... Holm over the family (on xnli and xquad each: best vs runner-up, best vs base, 4-bit vs 16-bit at rank 8)
    assert len(found) == 6 and list(found["p_holm"]) == pytest.approx(stats.holm(list(found["p"])))
    versus_base = found[(found["kind"] == "finetuned vs base") & (found["task"] == "xquad")].iloc[0]
    assert versus_base["mean_difference"] == pytest.approx(np.mean([0.5, 1.0, 1.0, 0.0]))
    assert display.loc[ours.name, "xnli"].endswith(tables.NOT_SIGNIFICANT)
    base = numbers[numbers["kind"] == "ours: base model"].iloc[0]
    assert base["average"] == pytest.approx((0.25 + 0.0) / 2)


def test_english_degradation_and_the_difference_to_the_study_by_hand(tmp_path):
    from maple_utils.analysis import report, tables

    frame, _ = synthetic_grid(tmp_path)
    table = report.task_table(frame)
    english = tables.english_degradation(frame, tables.best_configurations(table)).set_index("task")
    # best r8q4 on English: XNLI 3/4 against the base's 1/4; XQuAD (0.5 + 1.0) / 2 against 0
    assert english.loc["xnli", "change"] == pytest.approx(0.5) and english.loc["xquad", "change"] == pytest.approx(0.75)
    # the same rows under the study's model name: ours minus the study's Llama-2-7b / multialpaca row
    renamed = frame.assign(model="meta-llama/Llama-2-7b-hf", dataset=frame["dataset"].replace({"d": "multialpaca"}))
    numbers, _, _ = tables.table1(report.task_table(renamed), renamed, tmp_path)
    versus = tables.paper_differences(numbers).iloc[0]
    assert versus["xnli"] == pytest.approx(0.75 - 0.35) and versus["xquad"] == pytest.approx(0.625 - 0.64)
    assert "xlsum" not in versus and versus["average"] == pytest.approx(0.6875 - 0.39)
