"""The study's tables from the tidy rows, with the statistics it lacked: the per-configuration task table,
the training and win-rate tables, Table 1, Table 2, the paired comparisons and the study's analyses.

Table 1 puts each model x dataset at its best rank and quantisation beside the base models and the study's
baselines (registry/baselines.yaml). The best configuration is the one with the highest model average
over tasks (baselines.yaml `best_configuration`: the study does not state its rule); a configuration that
lacks a task the others of its model x dataset have cannot be best (its average would be over fewer tasks);
ties go to the smaller rank, then the fewer bits (the cheaper adapter). Task cells carry a bootstrap interval from the per-item predictions, and a
cell where the best configuration is not significantly better than the runner-up (paired permutation
test, Holm-corrected over every comparison of the report) is marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from maple_utils import layout, registry, stages, units
from maple_utils.analysis import stats

RUN_COLUMNS = ["model", "dataset", "rank", "quant"]


def primary_metrics() -> dict[str, str]:
    """The metric each task reports in the study's Table 1 (its first metric in the tasks registry)."""
    return {name: spec["metrics"][0] for name, spec in registry.read("tasks")["tasks"].items()}


# How a task's primary metric <m> is scored under each protocol, in order of preference among the rows a run
# has: MEGAVERSE's code (<m>_megaverse; a classification answered by generation: acc_megaverse, its loose
# parser), which scored the study's baselines; the official scorers (<m>; generation: acc_strict). A
# classification scored by log-likelihood has one form, `acc`, in both.
PROTOCOLS = {"megaverse": ("{m}_megaverse", "{m}"), "official": ("{m}", "{m}_strict")}
DEFAULT_PROTOCOL = "megaverse"  # Table 1 sets our rows beside the baselines: on the baselines' protocol


def protocol_view(frame, protocol: str = DEFAULT_PROTOCOL):
    """The rows as the tables read them under `protocol`: per run, task and language, the task's primary
    metric in that protocol's form, renamed to the primary metric's name (every other form of it dropped);
    frame.attrs["source_metric"][(run_id, task)] is the metric each came from (its per-item scores'), and
    frame.attrs["protocol"] the protocol. A frame already in the view is returned as it is."""
    import pandas as pd

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of: {', '.join(PROTOCOLS)}")
    if frame.attrs.get("protocol") == protocol:
        return frame
    if frame.attrs.get("protocol"):
        raise ValueError(f"rows already viewed under {frame.attrs['protocol']!r}: view the gathered rows instead")
    primary = primary_metrics()
    declared = {n: set(spec["metrics"]) for n, spec in registry.read("tasks")["tasks"].items()}
    forms = {}  # (task, metric) -> preference
    for task, m in primary.items():
        for i, form in enumerate(PROTOCOLS[protocol]):
            name = form.format(m=m)
            # a task scored in both forms at once (squad_f1 and squad_f1_megaverse) never shows one in the other's
            # place; a classification's `acc` (log-likelihood) is the one form of either protocol
            shadowed = name == m and f"{m}_megaverse" in declared[task] and protocol == "megaverse"
            if not shadowed:
                forms[(task, name)] = i
    every_form = {(t, f.format(m=m)) for t, m in primary.items() for f in ("{m}", *PROTOCOLS[protocol])}
    keys = list(zip(frame["task"], frame["metric"]))
    preference = pd.Series([forms.get(k) for k in keys], index=frame.index, dtype="float")
    candidates = frame[preference.notna()].assign(_preference=preference[preference.notna()])
    chosen = candidates.sort_values("_preference").drop_duplicates(["run_id", "task", "language"], keep="first")
    source = {(r.run_id, r.task): r.metric for r in chosen.itertuples()}
    chosen = chosen.assign(metric=chosen["task"].map(primary)).drop(columns="_preference")
    is_form = pd.Series([k in every_form for k in keys], index=frame.index, dtype=bool)
    view = pd.concat([frame[~is_form], chosen]).sort_index()
    view.attrs = {**frame.attrs, "protocol": protocol, "source_metric": source}
    return view


def task_table(frame, protocol: str = DEFAULT_PROTOCOL):
    """Study Table 1 layout: one row per model x dataset x rank x quant, one column per task (mean over
    languages of its primary metric, scored under `protocol`), and the model average."""
    import pandas as pd

    frame = protocol_view(frame, protocol)
    primary = primary_metrics()
    ev = frame[frame["task"].isin(primary) & (frame["metric"] == frame["task"].map(primary))].copy()
    if ev.empty:
        return pd.DataFrame()
    table = with_run_columns(ev).pivot_table(index=RUN_COLUMNS, columns="task", values="value", aggfunc="mean")
    table["average"] = table.mean(axis=1)
    table = table.reset_index().rename_axis(columns=None)
    table.attrs = {"protocol": protocol}
    return table


def with_run_columns(rows):
    """Run columns fit for display: base models as dataset "(base)" and rank 0, ranks and bits as integers."""
    rows = rows.copy()
    rows["dataset"] = rows["dataset"].fillna("(base)")
    rows["rank"] = rows["rank"].fillna(0).astype(int)
    rows["quant"] = rows["quant"].astype(int)
    return rows


def training_table(frame):
    train = frame[frame["stage"].isin([s.name for s in stages.of_unit(units.ADAPTER)])]
    if train.empty:
        return train
    return (
        with_run_columns(train)
        .pivot_table(index=RUN_COLUMNS, columns="metric", values="value", aggfunc="first")
        .reset_index()
    )


def win_rate_table(frame):
    """AlpacaEval win rate (percent, against the reference generator) per run, with its standard error,
    the number of judged pairs and the judge; empty when nothing was judged."""
    import pandas as pd

    rows = frame[(frame["task"] == "alpaca_eval") & (frame["metric"] == "win_rate")]
    if rows.empty:
        return pd.DataFrame()
    rows = with_run_columns(rows)
    table = rows[RUN_COLUMNS + ["value", "stderr", "n", "scoring"]].rename(
        columns={"value": "win_rate", "stderr": "standard_error", "n": "judged", "scoring": "judge"}
    )
    return table.sort_values(RUN_COLUMNS).reset_index(drop=True)


NOT_SIGNIFICANT = "†"  # the mark of a cell whose lead over the runner-up is not significant


def tasks_of(table) -> list[str]:
    return [t for t in primary_metrics() if t in table.columns]


def best_configurations(table):
    """Per finetuned model x dataset: its configurations ranked by the rule above (rank 1 = best)."""
    tasks = tasks_of(table)
    tuned = table[table["dataset"] != "(base)"].copy()
    if tuned.empty:
        return tuned.assign(place=[])
    present = tuned.groupby(["model", "dataset"])[tasks].transform(lambda c: c.notna().any())
    tuned["complete"] = (tuned[tasks].notna() | ~present).all(axis=1)
    tuned = tuned.sort_values(
        ["model", "dataset", "complete", "average", "rank", "quant"], ascending=[True, True, False, False, True, True]
    )
    tuned["place"] = tuned.groupby(["model", "dataset"]).cumcount() + 1
    return tuned


def table1(table, frame, out_dir: str | Path, paper: bool = False, seed: int = 0):
    """Table 1 (numbers), its display form (cells with intervals and marks) and the comparisons behind the
    marks. The numbers carry, per task, the 95% bootstrap interval of our rows (`<task>_lower`, `<task>_upper`)
    and, for a best configuration, the paired test against its runner-up (`<task>_p`, `<task>_p_holm`) as data;
    base models have no rank (NA), missing values are NA everywhere."""
    import pandas as pd

    frame = protocol_view(frame, table.attrs.get("protocol", DEFAULT_PROTOCOL))
    tasks = tasks_of(table)
    ranked = best_configurations(table)
    best = ranked[ranked["place"] == 1].assign(kind="ours: best rank x quantisation")
    base = table[table["dataset"] == "(base)"].assign(kind="ours: base model")
    rows = [base, best]
    study = registry.read("baselines")
    rows.append(pd.DataFrame(study["table1"]["baselines"]).assign(kind="study: baseline", dataset="NA"))
    if paper:
        rows.append(pd.DataFrame(study["table1"]["finetuned"]).assign(kind="study: finetuned"))
    numbers = pd.concat(rows, ignore_index=True)[["kind", "model", "dataset", "rank", "quant", *tasks, "average"]]
    numbers[["rank", "quant"]] = numbers[["rank", "quant"]].astype("Int64")  # NA, not NaN, for the study's rows
    run_ids = _run_ids(frame)
    run_of = [
        run_ids.get((r["model"], r["dataset"], r["rank"], r["quant"])) if r["kind"].startswith("ours") else None
        for _, r in numbers.iterrows()
    ]
    numbers.loc[numbers["kind"] == "ours: base model", "rank"] = pd.NA  # a base model has no rank
    scores_of = scores_reader(out_dir, frame)
    found = comparisons(ranked, frame, out_dir, seed, scores_of)
    extra = {f"{task}_{part}": [float("nan")] * len(numbers) for task in tasks for part in TABLE1_COLUMNS}
    display = numbers.copy().astype(object)
    for i, row in numbers.iterrows():
        for task in tasks:
            value = row[task]
            if pd.isna(value):
                display.at[i, task] = "missing" if row["kind"].startswith("ours") else "NA"
                continue
            text = f"{value:.3f}"
            scores = scores_of(run_of[i], task) if run_of[i] else None
            if scores:
                extra[f"{task}_lower"][i], extra[f"{task}_upper"][i] = stats.bootstrap_ci(scores, seed=seed)
                text += f" [{extra[f'{task}_lower'][i]:.3f}, {extra[f'{task}_upper'][i]:.3f}]"
            if row["kind"] == "ours: best rank x quantisation":
                mine = found[
                    (found["kind"] == "best vs runner-up")
                    & (found["model"] == row["model"])
                    & (found["dataset"] == row["dataset"])
                    & (found["task"] == task)
                ]
                if len(mine):
                    extra[f"{task}_p"][i], extra[f"{task}_p_holm"][i] = mine["p"].iloc[0], mine["p_holm"].iloc[0]
                    if not mine["significant"].iloc[0]:
                        text += f" {NOT_SIGNIFICANT}"
            display.at[i, task] = text
        display.at[i, "average"] = f"{row['average']:.3f}" if pd.notna(row["average"]) else "NA"
    display["rank"] = display["rank"].map(lambda r: "NA" if pd.isna(r) else str(r))
    display["quant"] = display["quant"].map(lambda q: "NA" if pd.isna(q) else str(q))
    numbers = pd.concat([numbers, pd.DataFrame(extra, index=numbers.index)], axis=1)
    return numbers, display, found


# the data columns Table 1 carries per task beside its score
TABLE1_COLUMNS = ("lower", "upper", "p", "p_holm")


def table1_legend(tasks: list[str], protocol: str, n_comparisons: int) -> str:
    """What Table 1's columns and marks mean: each task's metric (under the protocol), the interval, the mark."""
    primary = primary_metrics()
    form = PROTOCOLS[protocol][0]
    metrics = ", ".join(f"{t}: {form.format(m=primary[t])}" for t in tasks)
    return (
        f"Metrics ({protocol} scoring; {metrics}; average: their mean). Our rows: the score, then a 95% "
        f"bootstrap interval from the per-item predictions (items resampled within each language). "
        f"{NOT_SIGNIFICANT}: the best configuration's lead over its runner-up on that task is not significant "
        f"(paired permutation test, Holm-corrected over all {n_comparisons} comparisons, alpha {stats.ALPHA}). "
        "missing: the task was not evaluated for that row; NA: not applicable, or the study reports none "
        "(base models have no rank). Best configuration: the one with the best model average over tasks "
        f"(registry/baselines.yaml best_configuration: {best_rule()})."
    )


def best_rule() -> str:
    """The declared rule for Table 1's best configuration; only `average` is implemented (best_configurations)."""
    rule = registry.read("baselines").get("best_configuration", "average")
    if rule != "average":
        raise ValueError(f"registry/baselines.yaml best_configuration {rule!r}: the rule implemented is 'average'")
    return rule


def _metric(task: str) -> str:
    return primary_metrics()[task]


def _run_ids(frame) -> dict:
    ev = with_run_columns(frame[frame["stage"].isin(stages.reading("evaluation"))])
    return {
        (r.model, r.dataset, r.rank, r.quant): r.run_id
        for r in ev[["model", "dataset", "rank", "quant", "run_id"]].drop_duplicates().itertuples()
    }


# dataset pairs the study compares: multilingual data against English Alpaca; translated (Bactrian-X) data
# against LLM-generated (MultiAlpaca) data on the same 11 languages
DATASET_CONTRASTS = [("multilingual vs Alpaca", d, "alpaca") for d in ("multialpaca", "bactrian-x-11", "bactrian-x-22")]
DATASET_CONTRASTS += [("translated vs generated", "bactrian-x-11", "multialpaca")]


def scores_reader(out_dir: str | Path, frame=None):
    """item_scores of (run id, task) on the metric its Table 1 cell shows (the protocol view's source metric,
    else the task's primary metric), each predictions file read once per report (the same run appears in
    Table 1 and in several comparisons)."""
    from functools import cache

    source = frame.attrs.get("source_metric", {}) if frame is not None else {}

    def read(run_id: str, task: str):
        metric = source.get((run_id, task), _metric(task))
        return stats.item_scores(layout.run_folder(out_dir, run_id), task, metric)

    return cache(read)


def comparisons(ranked, frame, out_dir: str | Path, seed: int = 0, scores_of=None):
    """Paired tests per task, on the items both configurations scored: the best configuration of each
    model x dataset against its runner-up and against its base model; 4-bit against 16-bit at each model x
    dataset x rank; and, per model, the best configurations of the dataset pairs the study contrasts
    (DATASET_CONTRASTS). One Holm correction over all of them."""
    import pandas as pd

    scores_of = scores_of or scores_reader(out_dir, frame)
    run_ids = _run_ids(frame)
    pairs = []
    best = {}
    for (model, dataset), group in ranked.groupby(["model", "dataset"]):
        group = group.sort_values("place")
        best[(model, dataset)] = group.iloc[0]
        if len(group) >= 2:
            pairs.append(("best vs runner-up", model, dataset, group.iloc[0], group.iloc[1]))
        for _, same_rank in group.groupby("rank"):
            by_bits = {int(r["quant"]): r for _, r in same_rank.iterrows()}
            if 4 in by_bits and 16 in by_bits:
                pairs.append(("4-bit vs 16-bit", model, dataset, by_bits[4], by_bits[16]))
    bases = {key[0]: {"dataset": "(base)", "rank": key[2], "quant": key[3]} for key in run_ids if key[1] == "(base)"}
    for (model, dataset), top in best.items():
        if model in bases:
            pairs.append(("finetuned vs base", model, dataset, top, bases[model]))
    for model in sorted({m for m, _ in best}):
        for kind, first, second in DATASET_CONTRASTS:
            if (model, first) in best and (model, second) in best:
                pairs.append((kind, model, f"{first} vs {second}", best[(model, first)], best[(model, second)]))
    records = []
    for kind, model, dataset, a, b in pairs:
        ids = [
            run_ids.get((model, a["dataset"], a["rank"], a["quant"])),
            run_ids.get((model, b["dataset"], b["rank"], b["quant"])),
        ]
        if None in ids:
            continue
        for task in tasks_of(ranked):
            sa, sb = (scores_of(i, task) for i in ids)
            diffs = stats.paired_differences(sa, sb)
            if not len(diffs):
                continue
            records.append(
                {
                    "kind": kind,
                    "model": model,
                    "dataset": dataset,
                    "task": task,
                    "a": f"r{a['rank']} q{a['quant']}",
                    "b": f"r{b['rank']} q{b['quant']}",
                    "items": len(diffs),
                    "mean_difference": float(np.mean(diffs)),
                    "p": stats.paired_permutation_p(diffs, seed=seed),
                }
            )
    found = pd.DataFrame(
        records, columns=["kind", "model", "dataset", "task", "a", "b", "items", "mean_difference", "p"]
    )
    found["p_holm"] = stats.holm(list(found["p"])) if len(found) else []
    found["significant"] = found["p_holm"] < stats.ALPHA
    return found


def table2(frame, paper: bool = False):
    """Table 2: the best AlpacaEval win rate per model x dataset, its rank and quantisation, beside the
    study's baselines (and, in paper mode, the study's own rows)."""
    import pandas as pd

    wins = win_rate_table(frame)
    study = registry.read("baselines")["table2"]
    rows = []
    if len(wins):
        tuned = wins.sort_values(
            ["model", "dataset", "win_rate", "rank", "quant"], ascending=[True, True, False, True, True]
        )
        rows.append(tuned.groupby(["model", "dataset"]).head(1).assign(kind="ours"))
    rows.append(pd.DataFrame(study["baselines"]).assign(kind="study: baseline", dataset="NA"))
    if paper:
        rows.append(pd.DataFrame(study["finetuned"]).assign(kind="study: finetuned"))
    columns = ["kind", "model", "dataset", "rank", "quant", "win_rate", "standard_error", "judge"]
    table = pd.concat(rows, ignore_index=True).reindex(columns=columns)
    table[["rank", "quant"]] = table[["rank", "quant"]].astype("Int64")
    return table


def english_degradation(frame, ranked):
    """The study's forgetting analysis: on English, each model x dataset's best configuration minus its base
    model, per task (primary metric); negative = finetuning lost English ability."""
    import pandas as pd

    frame = protocol_view(frame)
    primary = primary_metrics()
    en = with_run_columns(frame[(frame["language"] == "en") & frame["task"].isin(primary)])
    en = en[en["metric"] == en["task"].map(primary)]
    base = en[en["dataset"] == "(base)"].set_index(["model", "task"])["value"]
    best = ranked[ranked["place"] == 1][["model", "dataset", "rank", "quant"]]
    tuned = en.merge(best, on=["model", "dataset", "rank", "quant"])
    rows = [
        {
            "model": r.model,
            "dataset": r.dataset,
            "rank": r.rank,
            "quant": r.quant,
            "task": r.task,
            "finetuned": r.value,
            "base": base.get((r.model, r.task)),
            "change": r.value - base[(r.model, r.task)] if (r.model, r.task) in base.index else None,
        }
        for r in tuned.itertuples()
    ]
    return pd.DataFrame(rows, columns=["model", "dataset", "rank", "quant", "task", "finetuned", "base", "change"])


def trainable_share_vs_score(table, frame):
    """Share of trainable parameters against the model average, per configuration (the study's
    rank-as-capacity analysis)."""
    train = training_table(frame)
    if train.empty or "trainable_pct" not in train:
        return train
    return table.merge(
        train[["model", "dataset", "rank", "quant", "trainable_pct"]], on=["model", "dataset", "rank", "quant"]
    )[["model", "dataset", "rank", "quant", "trainable_pct", "average"]]


def paper_differences(numbers):
    """Ours minus the study's, per task, where a best configuration of ours is a model x dataset the study
    reports (models matched by registry/models.yaml `study_name`); empty on other models."""
    import pandas as pd

    names = {k: v.get("study_name") for k, v in registry.read("models")["models"].items() if v.get("study_name")}
    study = pd.DataFrame(registry.read("baselines")["table1"]["finetuned"])
    ours = (
        numbers[numbers["kind"] == "ours: best rank x quantisation"]
        .assign(study_model=lambda t: t["model"].map(names))
        .dropna(subset=["study_model"])
    )
    tasks = tasks_of(numbers)
    joined = ours.merge(
        study, left_on=["study_model", "dataset"], right_on=["model", "dataset"], suffixes=("", "_study")
    )
    out = joined[["model", "dataset", "rank", "quant"]].copy()
    for task in [*tasks, "average"]:
        out[task] = joined[task].astype(float) - joined[f"{task}_study"].astype(float)
    return out
