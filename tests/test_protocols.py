"""The two scoring protocols: MEGAVERSE's (what the study's baselines were scored by) beside the official one.
Its exemplar draw on the real files, its generation, and Table 1 read under each protocol, a classification
answered by generation included."""

import json

import numpy as np
import pytest

from maple_utils import layout, results
from maple_utils.analysis import stats, tables

# MEGAVERSE's exemplar indices on the real files, by its rule (mega/data/data_utils.py: np.random.seed(42) in
# main(), then np.random.choice(len(pool), size=8, replace=False) once there and once in evaluate_model, which
# keeps its own): XNLI-en over XTREME's English dev file (2,490 items), XCOPA-zh over its validation file (100)
MEGAVERSE_EXEMPLARS = {
    ("xnli", "en"): [1690, 2316, 1008, 1212, 629, 2043, 919, 1769],
    ("xcopa", "zh"): [79, 37, 65, 54, 15, 20, 99, 25],
}


def _megaverse_rule(n: int, k: int, draw: int) -> list[int]:
    np.random.seed(42)
    for _ in range(draw):
        picked = np.random.choice(n, size=k, replace=False).astype(int).tolist()
    return picked


@pytest.mark.parametrize("task, code", list(MEGAVERSE_EXEMPLARS), ids=["xnli-en", "xcopa-zh"])
def test_the_megaverse_sampler_draws_megaverses_exemplars_from_the_real_files(shared_data, task, code):
    from maple_utils.eval import evaluate
    from maple_utils.eval.tasks import load_docs, load_task

    spec = load_task(task)
    dev_only = {"eval_split": "validation", "fewshot_split": "validation"} if task == "xnli" else None
    _, _, used = evaluate.build_prompts(
        spec, code, 8, 42, "local", str(shared_data), split_override=dev_only, sampler="megaverse"
    )
    pool, _ = load_docs(spec, code, "validation", "local", str(shared_data))
    picked = [pool.index(shot) for shot in used["exemplars"]]
    assert picked == MEGAVERSE_EXEMPLARS[(task, code)] == _megaverse_rule(len(pool), 8, spec.megaverse_draw)
    _, _, plain = evaluate.build_prompts(spec, code, 8, 42, "local", str(shared_data), split_override=dev_only)
    assert not {pool.index(s) for s in plain["exemplars"]} & set(picked[:2])  # Python's draw is another


def test_the_megaverse_protocol_draws_its_way_and_generates_without_a_stop_string():
    from maple_utils.config import RunConfig
    from maple_utils.eval import evaluate

    plain = RunConfig(model="tiny-llama", dataset="alpaca", rank=4, quant=16)
    assert evaluate.fewshot_sampler(plain) == "random" and evaluate.stop_strings(plain, ["\n"]) == ["\n"]
    megaverse = plain.model_copy(update={"protocol": "megaverse"})
    assert evaluate.fewshot_sampler(megaverse) == "megaverse" and evaluate.stop_strings(megaverse, ["\n"]) == []
    chosen = plain.model_copy(update={"protocol": "megaverse", "fewshot_sampler": "random"})
    assert evaluate.fewshot_sampler(chosen) == "random"  # the field, when given, wins over the protocol


def _rows(root, run: str, task: str, scores: dict[str, list[float]], **identity):
    """Rows and per-item predictions of one run, task and English, as stage 03 writes them."""
    path = layout.predictions(root / "runs" / run, task, "en")
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(next(iter(scores.values())))
    path.write_text(
        "".join(json.dumps({"id": i, "scores": {m: s[i] for m, s in scores.items()}}) + "\n" for i in range(n))
    )
    who = {"run_id": run, "stage": "03_evaluate", "model": "m", **identity}
    return [
        results.make_row(who, task=task, language="en", metric=m, value=float(np.mean(s)), n=n)
        for m, s in scores.items()
    ]


def test_table1_reads_each_protocol_and_shows_a_classification_answered_by_generation(tmp_path):
    import pandas as pd

    rows = []
    # answered by generation (classification: generate): MEGAVERSE's loose parser and the strict one
    rows += _rows(
        tmp_path,
        "gen",
        "xnli",
        {"acc_megaverse": [1, 1, 1, 0], "acc_strict": [1, 0, 0, 0]},
        dataset="d",
        rank=8,
        quant=4,
    )
    rows += _rows(
        tmp_path,
        "gen",
        "xquad",
        {"squad_f1": [0.5, 0.5], "squad_f1_megaverse": [1.0, 0.5]},
        dataset="d",
        rank=8,
        quant=4,
    )
    # an older run: XQuAD in the official form only; XNLI by log-likelihood, one form for both protocols
    rows += _rows(tmp_path, "old", "xnli", {"acc": [1, 0, 0, 0]}, dataset=None, rank=None, quant=16)
    rows += _rows(tmp_path, "old", "xquad", {"squad_f1": [0.25, 0.25]}, dataset=None, rank=None, quant=16)
    frame = pd.DataFrame(rows, columns=list(results.ROW_FIELDS))

    megaverse = tables.task_table(frame)  # the default: the baselines' protocol
    by_run = megaverse.set_index("dataset")
    assert by_run.loc["d", "xnli"] == 0.75 and by_run.loc["d", "xquad"] == 0.75
    assert by_run.loc["(base)", "xnli"] == 0.25
    assert pd.isna(by_run.loc["(base)", "xquad"])  # never filled from the official form
    official = tables.task_table(frame, "official").set_index("dataset")
    assert official.loc["d", "xnli"] == 0.25 and official.loc["d", "xquad"] == 0.5
    assert official.loc["(base)", "xquad"] == 0.25

    numbers, display, _ = tables.table1(megaverse, frame, tmp_path, seed=1)
    ours = numbers[numbers["kind"] == "ours: best rank x quantisation"].iloc[0]
    assert ours["xnli"] == 0.75  # the generative run is in Table 1 (it vanished when Table 1 looked for `acc`)
    low, high = stats.bootstrap_ci({"en": dict(enumerate([1.0, 1.0, 1.0, 0.0]))}, seed=1)
    assert display.loc[ours.name, "xnli"].startswith(f"0.750 [{low:.3f}, {high:.3f}]")  # acc_megaverse's items
    view = tables.protocol_view(frame)
    assert view.attrs["source_metric"][("gen", "xnli")] == "acc_megaverse"
    assert tables.protocol_view(view) is view
    with pytest.raises(ValueError, match="already viewed under 'megaverse'"):
        tables.protocol_view(view, "official")
