"""A small grid of results with known structure, written as stage 03 writes it, for the analysis tests."""

import json

import numpy as np

from maple_utils import layout


def synthetic_grid(root):
    """One model, one dataset at three configurations and its base, on XNLI (acc) and XQuAD (F1) in two
    languages: per-item predictions written where stage 03 writes them, and the rows they make."""
    import pandas as pd

    from maple_utils import results

    items = {  # run -> task -> language -> per-item scores
        "r8q4": {"xnli": {"en": [1, 1, 1, 0], "zh": [1, 0, 1, 1]}, "xquad": {"en": [0.5, 1.0], "zh": [1.0, 0.0]}},
        "r8q16": {"xnli": {"en": [1, 1, 0, 0], "zh": [1, 0, 1, 0]}, "xquad": {"en": [0.5, 1.0], "zh": [1.0, 0.5]}},
        "r16q4": {"xnli": {"en": [1, 1, 1, 1], "zh": [1, 1, 1, 1]}},  # lacks XQuAD: cannot be best
        "base": {"xnli": {"en": [0, 0, 1, 0], "zh": [0, 0, 0, 1]}, "xquad": {"en": [0.0, 0.0], "zh": [0.0, 0.0]}},
    }
    configs = {"r8q4": ("d", 8, 4), "r8q16": ("d", 8, 16), "r16q4": ("d", 16, 4), "base": (None, None, 16)}
    rows = []
    for run, tasks in items.items():
        dataset, rank, quant = configs[run]
        identity = {
            "run_id": run,
            "stage": "03_evaluate",
            "model": "m",
            "dataset": dataset,
            "rank": rank,
            "quant": quant,
        }
        for task, languages in tasks.items():
            # XQuAD in both forms (official and MEGAVERSE's), equal here: Table 1 reads the latter
            names = ["acc"] if task == "xnli" else ["squad_f1", "squad_f1_megaverse"]
            for code, scores in languages.items():
                path = layout.predictions(root / "runs" / run, task, code)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(
                    "".join(json.dumps({"id": i, "scores": {m: s for m in names}}) + "\n" for i, s in enumerate(scores))
                )
                for metric in names:
                    rows.append(
                        results.make_row(
                            identity,
                            task=task,
                            language=code,
                            metric=metric,
                            value=float(np.mean(scores)),
                            n=len(scores),
                        )
                    )
    return pd.DataFrame(rows, columns=list(results.ROW_FIELDS)), items
