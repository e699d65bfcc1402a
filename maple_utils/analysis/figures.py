"""The study's figures from the tidy rows, drawn with seaborn in one colour-blind-safe palette.

Each function saves a PNG and a PDF and returns the PNG's path with what the figure shows (its title, axis
labels and legend entries), which the report lists and the tests check. A missing cell is left empty
(a blank heatmap square, a missing bar), never drawn as zero.
"""

from __future__ import annotations

from pathlib import Path

from maple_utils import io, registry


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["pdf.fonttype"] = 42  # TrueType (Type 42) in PDFs, which journals ask for, not Type 3
    matplotlib.rcParams["ps.fonttype"] = 42
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", palette="colorblind")
    return plt, sns


def _save(fig, path: Path, title: str) -> dict:
    """Title the figure above its panels, save PNG and PDF; what the figure shows."""
    fig.suptitle(title, y=1.03)  # above the panels' own titles; bbox_inches="tight" keeps it in the picture
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    legends = [t.get_text() for ax in axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    legends += [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    facts = {
        "title": title,
        "xlabels": sorted({ax.get_xlabel() for ax in axes if ax.get_xlabel()}),
        "ylabels": sorted({ax.get_ylabel() for ax in axes if ax.get_ylabel()}),
        "legend": legends,
        "colorbar": any(ax.get_label() == "<colorbar>" for ax in fig.axes),
    }
    # whole or absent, like every file of a run (a full disk left a 0-byte PDF in report/)
    io.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    io.atomic_write(path.with_suffix(".pdf"), lambda tmp: fig.savefig(tmp, format="pdf", bbox_inches="tight"))
    import matplotlib.pyplot as plt

    plt.close(fig)
    return {"path": path, **facts}


def rank_quant_lines(table, path: Path) -> dict:
    """Average score against LoRA rank, one line per quantisation, one panel per model; base models dashed."""
    plt, sns = _pyplot()
    models = list(dict.fromkeys(table["model"])) or ["(none)"]
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.4), squeeze=False, sharey=True)
    for ax, model in zip(axes[0], models):
        part = table[table["model"] == model]
        tuned = (
            part[part["dataset"] != "(base)"]
            .sort_values(["dataset", "quant", "rank"])
            .assign(setting=lambda t: t["dataset"] + ", " + t["quant"].astype(str) + "-bit")
        )
        if len(tuned):
            sns.lineplot(
                data=tuned,
                x="rank",
                y="average",
                hue="setting",
                hue_order=list(dict.fromkeys(tuned["setting"])),
                marker="o",
                ax=ax,
                legend=ax is axes[0][-1],
            )
        for _, row in part[part["dataset"] == "(base)"].iterrows():
            ax.axhline(row["average"], linestyle="--", color="grey", label=f"base, {row['quant']}-bit")
        ax.set_title(model)
        ax.set_xlabel("LoRA rank")
        if len(tuned):
            ranks = sorted(tuned["rank"].unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(ranks, [str(r) for r in ranks])
            ax.minorticks_off()
        ax.set_ylabel("")
    axes[0][0].set_ylabel("average score over tasks")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path, "Average score over tasks by LoRA rank, one line per quantisation")


def _heatmap(ax, grid, low: float, high: float, colour_label: str | None) -> None:
    """A heatmap of a rank x quantisation grid, each cell annotated with three decimals (two showed 0.104 and
    0.106 as 0.10 and 0.11), a missing cell left blank, a colour bar when `colour_label` is given. Drawn with
    matplotlib itself: seaborn's heatmap draws the whole figure once per panel to check its tick labels, which
    made the 12-panel Figure 1b take 20 s."""
    import matplotlib.pyplot as plt
    import numpy as np

    values = grid.to_numpy(dtype=float)
    image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=low, vmax=high, aspect="auto")
    colours = plt.get_cmap("viridis")
    for (i, j), value in np.ndenumerate(values):
        if value == value:
            shade = colours((value - low) / (high - low) if high > low else 0.0)
            light = 0.299 * shade[0] + 0.587 * shade[1] + 0.114 * shade[2] > 0.5
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=8, color="black" if light else "white")
    ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns])
    ax.set_yticks(range(len(grid.index)), [str(r) for r in grid.index])
    if colour_label:
        ax.figure.colorbar(image, ax=ax, label=colour_label)


def _colour_range(values) -> tuple[float, float]:
    """A heatmap's colour range: its values' own, so small differences show; one value alone (every cell 0, say)
    gets a range of 0.1 from it upward, within [0, 1], not one reaching below zero."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-9:
        low = max(0.0, min(low, 0.9))
        high = low + 0.1
    return low, high


def _missing(ax, what: str) -> None:
    """An empty panel that says what is missing, rather than bars at zero."""
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="grey")


def rank_quant_heatmaps(table, path: Path) -> dict:
    """Figure 1: the model average over tasks at every rank x quantisation, one heatmap per model x dataset."""
    plt, sns = _pyplot()
    tuned = table[table["dataset"] != "(base)"]
    panels = list(tuned.groupby(["model", "dataset"])) or [(("(none)", "(none)"), tuned)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    vmin, vmax = _colour_range(tuned["average"]) if len(tuned) else (0, 1)
    for ax, ((model, dataset), part) in zip(axes[0], panels):
        grid = part.pivot_table(index="quant", columns="rank", values="average", aggfunc="mean")
        _heatmap(ax, grid, vmin, vmax, "average score" if ax is axes[0][-1] else None)
        ax.set_title(f"{model} / {dataset}", fontsize=9)
        ax.grid(False)
        ax.set_xlabel("LoRA rank")
        ax.set_ylabel("quantisation (bits)" if ax is axes[0][0] else "")
    return _save(fig, path, "Figure 1: average score over tasks by rank and quantisation")


def rank_quant_heatmaps_per_task(table, path: Path) -> dict:
    """Figure 1b: each task's score at every rank x quantisation, one row of heatmaps per model x dataset."""
    plt, sns = _pyplot()
    from maple_utils.analysis.tables import tasks_of

    tasks = tasks_of(table)
    tuned = table[table["dataset"] != "(base)"]
    panels = list(tuned.groupby(["model", "dataset"])) or [(("(none)", "(none)"), tuned)]
    fig, axes = plt.subplots(
        len(panels), max(1, len(tasks)), figsize=(2.6 * max(1, len(tasks)), 2.4 * len(panels)), squeeze=False
    )
    for row, ((model, dataset), part) in zip(axes, panels):
        for ax, task in zip(row, tasks or ["(none)"]):
            grid = (
                part.pivot_table(index="quant", columns="rank", values=task, aggfunc="mean") if task in part else None
            )
            if grid is not None and grid.size:
                low, high = _colour_range(grid.stack())
                _heatmap(ax, grid, low, high, "score")
            else:
                _missing(ax, "no rows")
            ax.grid(False)
            ax.set_title(f"{model} / {dataset}: {task}", fontsize=8)
            ax.set_xlabel("LoRA rank")
            ax.set_ylabel("quantisation (bits)")
    fig.tight_layout()
    return _save(fig, path, "Figure 1b: each task's score by rank and quantisation")


def _bars(ax, data, x: str, order: list[str]) -> int:
    """Grouped bars of data["value"] per x (in `order`) and data["system"], each with its 95% bootstrap interval
    (data["lower"], data["upper"]) as an error bar where one is known (the study's baselines have none).
    Returns the number of error bars drawn."""
    import math

    import seaborn as sns

    systems = list(dict.fromkeys(data["system"]))
    width = 0.8 / max(1, len(systems))
    colours = sns.color_palette("colorblind", max(1, len(systems)))
    drawn = 0
    for j, system in enumerate(systems):
        part = data[data["system"] == system].set_index(x)
        at = [i - 0.4 + width * (j + 0.5) for i in range(len(order))]
        values = [float(part.at[k, "value"]) if k in part.index else math.nan for k in order]
        ax.bar(at, values, width, label=system, color=colours[j])
        known = [
            (a, v, float(part.at[k, "lower"]), float(part.at[k, "upper"]))
            for a, v, k in zip(at, values, order)
            if k in part.index and not math.isnan(v) and not math.isnan(float(part.at[k, "lower"]))
        ]
        if known:
            a, v, lo, hi = zip(*known)
            errors = [[max(0.0, y - low) for y, low in zip(v, lo)], [max(0.0, high - y) for y, high in zip(v, hi)]]
            ax.errorbar(a, v, yerr=errors, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
            drawn += len(known)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlim(-0.5, len(order) - 0.5)  # every category in view, an empty one too
    return drawn


def best_vs_off_the_shelf(numbers, path: Path) -> dict:
    """Figure 2: per task, the best finetuned configuration of each model x dataset, the base models and the
    study's baselines, on the baselines' protocol; our bars carry their 95% bootstrap intervals."""
    plt, _ = _pyplot()
    from maple_utils.analysis.tables import tasks_of

    tasks = tasks_of(numbers)
    rows = numbers[numbers["kind"] != "study: finetuned"].copy()
    rows["system"] = rows.apply(
        lambda r: r["model"] if r["kind"] == "study: baseline" else f"{r['model']} / {r['dataset']}", axis=1
    )
    long = [
        {
            "system": r["system"],
            "task": task,
            "value": r[task],
            "lower": r.get(f"{task}_lower", float("nan")),
            "upper": r.get(f"{task}_upper", float("nan")),
        }
        for _, r in rows.iterrows()
        for task in tasks
        if r[task] == r[task] and r[task] is not None
    ]
    import pandas as pd

    long = pd.DataFrame(long, columns=["system", "task", "value", "lower", "upper"]).astype(
        {"value": float, "lower": float, "upper": float}
    )
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks)), 3.8))
    bars = _bars(ax, long, "task", tasks) if len(long) else 0
    if not len(long):
        _missing(ax, "no Table 1 rows")
    ax.set_xlabel("task")
    ax.set_ylabel("score (MEGAVERSE's scoring)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", title="system")
    return {**_save(fig, path, "Figure 2: best finetuned models against off-the-shelf models"), "errorbars": bars}


def _best_and_base_rows(frame, ranked, task: str, metric: str):
    """One task's per-language rows of each model x dataset at its best configuration, and of the base
    models, each labelled with its system."""
    import pandas as pd

    from maple_utils.analysis.tables import with_run_columns

    rows = with_run_columns(frame[(frame["task"] == task) & (frame["metric"] == metric)])
    best = ranked[ranked["place"] == 1][["model", "dataset", "rank", "quant"]]
    chosen = pd.concat([rows.merge(best, on=["model", "dataset", "rank", "quant"]), rows[rows["dataset"] == "(base)"]])
    return chosen.assign(system=chosen["model"] + " / " + chosen["dataset"])


def _intervals(chosen, scores_of, by: str, members: dict[str, list[str]]):
    """Per system and value of `by`: the mean over its languages of their means, and the 95% bootstrap
    interval of that mean from the per-item scores (items resampled within each language)."""
    import pandas as pd

    from maple_utils.analysis import stats

    out = []
    for (system, run_id), part in chosen.groupby(["system", "run_id"]):
        items = scores_of(run_id, part["task"].iloc[0])
        for key, languages in members.items():
            present = [c for c in languages if c in set(part["language"])]
            if not present:
                continue
            value = float(part[part["language"].isin(present)]["value"].mean())
            picked = {c: items[c] for c in present if items.get(c)}
            low, high = stats.bootstrap_ci(picked) if picked else (float("nan"), float("nan"))
            out.append({"system": system, by: key, "value": value, "lower": low, "upper": high})
    return pd.DataFrame(out, columns=["system", by, "value", "lower", "upper"])


def belebele_by_group(frame, ranked, path: Path, scores_of) -> dict:
    """Figure 3: Belebele accuracy by language group (G1 = MultiAlpaca's languages, G2 = the rest of
    Bactrian-X-22's, G3 = neither; registry/languages.yaml) for each model x dataset at its best
    configuration, and the base models, with 95% bootstrap intervals; a group none of whose languages was
    evaluated is named as empty."""
    plt, _ = _pyplot()
    groups = {}
    for row in registry.read("languages")["languages"]:
        groups.setdefault(row["group"], []).append(row["code"])
    order = ["G1", "G2", "G3"]
    chosen = _best_and_base_rows(frame, ranked, "belebele", "acc")
    data = _intervals(chosen, scores_of, "group", {g: groups.get(g, []) for g in order}) if len(chosen) else None
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    bars = 0
    if data is not None and len(data):
        bars = _bars(ax, data, "group", order)
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", title="system")
        for i, group in enumerate(order):
            if group not in set(data["group"]):
                where = ax.get_xaxis_transform()  # x in data, y as a share of the axes' height
                ax.text(i, 0.5, "no language of\nthis group evaluated", ha="center", va="center", fontsize=7,
                        color="grey", transform=where)  # fmt: skip
    else:
        _missing(ax, "no Belebele rows in these results")
    ax.set_xlabel("language group (G1: MultiAlpaca's 11, G2: Bactrian-X-22's other 11, G3: neither)")
    ax.set_ylabel("Belebele accuracy")
    return {**_save(fig, path, "Figure 3: Belebele by language group"), "errorbars": bars}


def xquad_by_language(frame, ranked, numbers, path: Path, scores_of) -> dict:
    """Figure 4: XQuAD F1 in the study's 11 languages (registry/baselines.yaml figure4_languages) for each model
    x dataset at its best configuration and the base models, with 95% bootstrap intervals; the study's
    baselines, which it reports as averages over languages only, as bars of their own at "mean", beside our
    systems' means over those languages."""
    plt, _ = _pyplot()
    import pandas as pd

    chosen = _best_and_base_rows(frame, ranked, "xquad", "squad_f1")
    study_languages = registry.read("baselines")["figure4_languages"]  # the study's 11: no zh
    chosen = chosen[chosen["language"].isin(study_languages)] if len(chosen) else chosen
    languages = [c for c in study_languages if c in set(chosen["language"])] if len(chosen) else []
    data = _intervals(chosen, scores_of, "language", {c: [c] for c in languages}) if len(chosen) else None
    fig, ax = plt.subplots(figsize=(8.5, 3.6))
    bars = 0
    if data is not None and len(data):
        means = _intervals(chosen, scores_of, "language", {"mean": languages})
        study = numbers[(numbers["kind"] == "study: baseline") & numbers["xquad"].notna()] if "xquad" in numbers else []
        baselines = pd.DataFrame(
            [
                {"system": f"{r['model']} (study)", "language": "mean", "value": float(r["xquad"])}
                for _, r in study.iterrows()
            ]
            if len(study)
            else [],
            columns=["system", "language", "value"],
        ).assign(lower=float("nan"), upper=float("nan"))
        bars = _bars(ax, pd.concat([data, means, baselines], ignore_index=True), "language", [*languages, "mean"])
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", title="system")
    else:
        _missing(ax, "no XQuAD rows in these results")
    ax.set_xlabel("language (mean: over these languages; the study's baselines report only a mean)")
    ax.set_ylabel("XQuAD F1 (MEGAVERSE's scoring)")
    return {**_save(fig, path, "Figure 4: XQuAD by language against the baselines"), "errorbars": bars}


def training_curves(records: dict[str, dict], path: Path) -> dict:
    """The training loss (left) and the held-out loss (right, where a run held records out: eval_fraction)
    against the optimiser step, one line per run; runs are named in the legend up to a dozen."""
    plt, sns = _pyplot()
    held = {run: r["eval_curve"] for run, r in records.items() if r.get("eval_curve")}
    fig, axes = plt.subplots(1, 2 if held else 1, figsize=(11 if held else 6, 3.8), squeeze=False)
    panels = [(axes[0][0], {run: r.get("curve") or [] for run, r in records.items()}, "training loss")]
    if held:
        panels.append((axes[0][1], held, "held-out loss"))
    from matplotlib.ticker import MaxNLocator

    for i, (ax, curves, title) in enumerate(panels):
        for run, curve in sorted(curves.items()):
            steps, losses = [p["step"] for p in curve], [p["loss"] for p in curve]
            ax.plot(steps, losses, label=run, marker="." if len(curve) < 30 else None)
        ax.set(title=title, xlabel="optimiser step", ylabel="" if i else "loss (nats per response token)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    if 1 < len(records) <= 12:
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=2, fontsize="small")
    return _save(fig, path, "Training and held-out loss per run" if held else "Training loss per run")
