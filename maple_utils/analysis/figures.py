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


def _missing(ax, what: str) -> None:
    """An empty panel that says what is missing, rather than bars at zero."""
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="grey")


def rank_quant_heatmaps(table, path: Path) -> dict:
    """Figure 1: the model average over tasks at every rank x quantisation, one heatmap per model x dataset."""
    plt, sns = _pyplot()
    tuned = table[table["dataset"] != "(base)"]
    panels = list(tuned.groupby(["model", "dataset"])) or [(("(none)", "(none)"), tuned)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    vmin, vmax = (tuned["average"].min(), tuned["average"].max()) if len(tuned) else (0, 1)
    for ax, ((model, dataset), part) in zip(axes[0], panels):
        grid = part.pivot_table(index="quant", columns="rank", values="average", aggfunc="mean")
        sns.heatmap(
            grid,
            annot=True,
            fmt=".2f",
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            ax=ax,
            cbar=ax is axes[0][-1],
            cbar_kws={"label": "average score"},
        )
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
                sns.heatmap(grid, annot=True, fmt=".2f", cmap="viridis", ax=ax, cbar_kws={"label": "score"})
            else:
                _missing(ax, "no rows")
            ax.grid(False)
            ax.set_title(f"{model} / {dataset}: {task}", fontsize=8)
            ax.set_xlabel("LoRA rank")
            ax.set_ylabel("quantisation (bits)")
    fig.tight_layout()
    return _save(fig, path, "Figure 1b: each task's score by rank and quantisation")


def best_vs_off_the_shelf(numbers, path: Path) -> dict:
    """Figure 2: per task, the best finetuned configuration of each model x dataset, the base models and the
    study's baselines."""
    plt, sns = _pyplot()
    from maple_utils.analysis.tables import tasks_of

    tasks = tasks_of(numbers)
    rows = numbers[numbers["kind"] != "study: finetuned"].copy()
    rows["system"] = rows.apply(
        lambda r: r["model"] if r["kind"] == "study: baseline" else f"{r['model']} / {r['dataset']}", axis=1
    )
    long = rows.melt(id_vars=["system", "kind"], value_vars=tasks, var_name="task", value_name="score").dropna()
    long["score"] = long["score"].astype(float)
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks)), 3.8))
    sns.barplot(data=long, x="task", y="score", hue="system", ax=ax)
    ax.set_xlabel("task")
    ax.set_ylabel("score (accuracy, F1 or ROUGE-L)")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", title="system")
    return _save(fig, path, "Figure 2: best finetuned models against off-the-shelf models")


def _best_and_base_rows(frame, ranked, task: str, metric: str):
    """One task's per-language rows of each model x dataset at its best configuration, and of the base
    models, each labelled with its system."""
    import pandas as pd

    from maple_utils.analysis.tables import with_run_columns

    rows = with_run_columns(frame[(frame["task"] == task) & (frame["metric"] == metric)])
    best = ranked[ranked["place"] == 1][["model", "dataset", "rank", "quant"]]
    chosen = pd.concat([rows.merge(best, on=["model", "dataset", "rank", "quant"]), rows[rows["dataset"] == "(base)"]])
    return chosen.assign(system=chosen["model"] + " / " + chosen["dataset"])


def belebele_by_group(frame, ranked, path: Path) -> dict:
    """Figure 3: Belebele accuracy by language group (G1 = MultiAlpaca's languages, G2 = the rest of
    Bactrian-X-22's, G3 = neither; registry/languages.yaml) for each model x dataset at its best
    configuration, and the base models."""
    plt, sns = _pyplot()
    groups = {row["code"]: row["group"] for row in registry.read("languages")["languages"]}
    chosen = _best_and_base_rows(frame, ranked, "belebele", "acc")
    chosen = chosen.assign(group=chosen["language"].map(groups))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if len(chosen):
        sns.barplot(data=chosen, x="group", y="value", hue="system", order=["G1", "G2", "G3"], ax=ax, errorbar=None)
        ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", title="system")
    else:
        _missing(ax, "no Belebele rows in these results")
    ax.set_xlabel("language group (G1: MultiAlpaca's 11, G2: Bactrian-X-22's other 11, G3: neither)")
    ax.set_ylabel("Belebele accuracy")
    return _save(fig, path, "Figure 3: Belebele by language group")


def xquad_by_language(frame, ranked, numbers, path: Path) -> dict:
    """Figure 4: XQuAD F1 per language for each model x dataset at its best configuration and the base
    models; the study's baselines, which it reports as averages only, as dashed lines."""
    plt, sns = _pyplot()
    chosen = _best_and_base_rows(frame, ranked, "xquad", "squad_f1")
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    if len(chosen):
        sns.barplot(data=chosen, x="language", y="value", hue="system", ax=ax, errorbar=None)
    else:
        _missing(ax, "no XQuAD rows in these results")
    for (_, row), style in zip(
        numbers[numbers["kind"] == "study: baseline"].iterrows(), ("--", ":", "-.", (0, (1, 3)))
    ):
        if row.get("xquad") is not None and row["xquad"] == row["xquad"]:
            ax.axhline(
                float(row["xquad"]), linestyle=style, color="grey", linewidth=1, label=f"{row['model']} (study, mean)"
            )
    ax.set_xlabel("language")
    ax.set_ylabel("XQuAD F1")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left", title="system")
    return _save(fig, path, "Figure 4: XQuAD by language against the baselines")
