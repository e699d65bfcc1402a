"""The report: every table and figure of the analysis into <out>/report/, and one self-contained HTML page.

Reads only the result rows (the runs' results.jsonl, gathered into results.parquet), so anything that
writes the schema can be analysed.
Rows from runs with a `limit` are smoke-sized and labelled as not comparable with the paper.
"""

from __future__ import annotations

import html
from pathlib import Path

from maple_utils import io, layout, results
from maple_utils.analysis.tables import task_table, training_table, win_rate_table
from maple_utils.paths import resolve


def load(out_dir: str):
    """All result rows of a grid folder, gathered afresh from its runs (and rewritten to results.parquet),
    so the analysis never reads a stale copy; rows of jobs whose latest attempt did not complete are left
    out (they came from an earlier config), listed in frame.attrs["left_out"] and named by the report."""
    from maple_utils.grid import manifest

    out = resolve(out_dir)
    frame = results.aggregate(out, leave_out=manifest.not_current(out))
    if frame.attrs["left_out"]:
        print(f"left out (the latest attempt did not complete): {_left_out(frame)}")
    return frame


def _left_out(frame) -> str:
    return "; ".join(f"the rows of {stage} in {key}" for stage, key in frame.attrs.get("left_out", []))


def _embedded_image(path: Path, alt: str) -> str:
    """An <img> whose PNG is inside the page, so the report opens from disk, moved or mailed."""
    import base64

    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(alt)}'><figcaption>{html.escape(alt)}</figcaption></figure>"


def provenance(out: Path) -> dict:
    """What produced these rows, from the runs' records: the grid, the code (git shas, dirty or not), the
    package versions and hardware, and the task x language pairs a task lacked."""
    records = [io.read_json(p) for p in layout.run_records(out)]
    sections = [section for record in records for section in record.get("stages", {}).values()]
    lacking = sorted({(n["task"], n["language"]) for s in sections for n in s.get("not_evaluated", [])})
    first = sections[0] if sections else {}
    return {
        "grid": (out / layout.GRID_FILE).name if (out / layout.GRID_FILE).exists() else "",
        "runs": len(records),
        "git_sha": sorted({str(s.get("git_sha")) for s in sections}),
        "dirty": any(s.get("dirty") for s in sections),
        "versions": first.get("versions", {}),
        "hardware": first.get("hardware", {}),
        "not_evaluated": [f"{t}/{c}" for t, c in lacking],
    }


def missing_cells(table) -> list[str]:
    """Every configuration x task of the table with no score, named."""
    from maple_utils.analysis.tables import tasks_of

    return [
        f"{r['model']} / {r['dataset']} / r{r['rank']} q{r['quant']}: {task}"
        for _, r in table.iterrows()
        for task in tasks_of(table)
        if r[task] != r[task]
    ]


def write_report(out_dir: str, frame, paper: bool = True) -> dict[str, Path]:
    """<out>/report/: Table 1 (numbers as md, tex, csv; the display form with intervals and marks as md), the
    paired comparisons, Table 2, the training table, the figure (png, pdf) and analysis.html, one
    self-contained page. paper: the study's own finetuned rows beside ours in Tables 1 and 2."""
    from maple_utils.analysis import tables

    out = resolve(out_dir)
    report = out / layout.REPORT_DIR
    report.mkdir(parents=True, exist_ok=True)
    gathered = frame
    frame = tables.protocol_view(gathered, tables.DEFAULT_PROTOCOL)  # beside the baselines: their protocol
    table = task_table(frame)
    if table.empty:
        raise ValueError(f"no evaluation rows under {out}: run the evaluation first")
    shown, paths = _write_tables(report, table, frame, out, paper)
    official = tables.protocol_view(gathered, "official")
    official_table = task_table(official, "official")
    off_numbers, shown["official"], off_found = tables.table1(official_table, official, out, paper=False)
    shown["official_legend"] = tables.table1_legend(tables.tasks_of(official_table), "official", len(off_found))
    paths["table1_official_csv"] = io.write_text(
        report / "table1_official.csv", off_numbers.to_csv(index=False, na_rep="NA")
    )
    paths["table1_official_md"] = io.write_text(
        report / "table1_official.md", shown["official"].to_markdown(index=False) + f"\n\n{shown['official_legend']}\n"
    )
    shown["figure"] = paths["figure"] = figures_of(report, table, frame, shown)
    paths["figures_json"] = io.write_json(
        report / "figures.json", [{**f, "path": str(f["path"])} for f in shown["drawn"]]
    )
    note = (
        "Smoke-sized run: rows come from runs with a `limit` on items and are not comparable with the paper's numbers."
        if frame["limit"].notna().any()
        else "Full evaluation sets."
    )
    style = (
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:0.85em;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
        "th{background:#f0f0f0}img{max-width:100%}figcaption{font-size:0.85em;color:#555}"
    )
    if frame.attrs.get("left_out"):
        note += (
            f" Left out: {_left_out(frame)}, whose latest attempt did not complete, so that their rows are "
            "from an earlier config (see `grid status`)."
        )
    body = _body(out, note, shown, paper) + _provenance_html(out, table)
    paths["html"] = io.write_text(
        layout.report_page(out),
        f"<!doctype html><meta charset='utf-8'><title>MAPLE report</title><style>{style}</style><body>{body}</body>\n",
    )
    return paths


TABLE1_TITLE = "Table 1: task-wise performance at the best rank and quantisation"


def _write_tables(report: Path, table, frame, out: Path, paper: bool) -> tuple[dict, dict[str, Path]]:
    """Every table of the report as files (md, tex, csv), and the frames the page shows."""
    from maple_utils.analysis import tables

    rounded = table.round(3)
    numbers, display, found = tables.table1(table, frame, out, paper=paper)
    legend = tables.table1_legend(
        tables.tasks_of(table), table.attrs.get("protocol", tables.DEFAULT_PROTOCOL), len(found)
    )
    ranked = tables.best_configurations(table)
    shown = {
        "table": table, "rounded": rounded, "numbers": numbers, "display": display, "found": found, "legend": legend,
        "ranked": ranked, "wins": win_rate_table(frame), "wins2": tables.table2(frame, paper=paper),
        "train": training_table(frame), "english": tables.english_degradation(frame, ranked),
        "capacity": tables.trainable_share_vs_score(table, frame), "versus_study": tables.paper_differences(numbers),
    }  # fmt: skip
    paths = {
        "table_md": io.write_text(report / "task_table.md", rounded.to_markdown(index=False) + "\n"),
        "table_tex": io.write_text(report / "task_table.tex", rounded.to_latex(index=False, float_format="%.3f")),
        "table_csv": io.write_text(report / "task_table.csv", table.to_csv(index=False)),
        "table1_csv": io.write_text(report / "table1.csv", numbers.to_csv(index=False, na_rep="NA")),
        "table1_parquet": io.atomic_write(report / "table1.parquet", lambda tmp: numbers.to_parquet(tmp, index=False)),
        "table1_md": io.write_text(report / "table1.md", display.to_markdown(index=False) + f"\n\n{legend}\n"),
        "table1_tex": io.write_text(
            report / "table1.tex",
            display.to_latex(index=False, na_rep="NA", caption=f"{TABLE1_TITLE}. {legend}", label="tab:table1"),
        ),
        "comparisons_csv": io.write_text(report / "comparisons.csv", found.to_csv(index=False)),
        "table2_md": io.write_text(report / "table2.md", shown["wins2"].round(2).to_markdown(index=False) + "\n"),
        "english_csv": io.write_text(report / "english_degradation.csv", shown["english"].to_csv(index=False)),
        "capacity_csv": io.write_text(report / "trainable_share_vs_score.csv", shown["capacity"].to_csv(index=False)),
        "versus_study_csv": io.write_text(report / "versus_study.csv", shown["versus_study"].to_csv(index=False)),
    }
    if len(shown["wins"]):
        paths["win_rate_md"] = io.write_text(
            report / "win_rate_table.md", shown["wins"].round(2).to_markdown(index=False) + "\n"
        )
    if len(shown["train"]):
        paths["training_md"] = io.write_text(
            report / "training_table.md", shown["train"].round(4).to_markdown(index=False) + "\n"
        )
    return shown, paths


def figures_of(report: Path, table, frame, shown: dict) -> Path:
    """Draw every figure into the report folder; shown["drawn"] gets what each shows. Returns the overview's path."""
    from maple_utils.analysis import figures
    from maple_utils.analysis.tables import scores_reader

    overview = figures.rank_quant_lines(table, report / "rank_quant.png")["path"]
    ranked, numbers = shown["ranked"], shown["numbers"]
    scores_of = scores_reader(report.parent, frame)
    shown["drawn"] = [
        figures.rank_quant_heatmaps(table, report / "figure1_rank_quant.png"),
        figures.rank_quant_heatmaps_per_task(table, report / "figure1b_rank_quant_per_task.png"),
        figures.best_vs_off_the_shelf(numbers, report / "figure2_best_vs_off_the_shelf.png"),
        figures.belebele_by_group(frame, ranked, report / "figure3_belebele_groups.png", scores_of),
        figures.xquad_by_language(frame, ranked, numbers, report / "figure4_xquad_languages.png", scores_of),
    ]
    records = training_records(report.parent, frame)
    if records:
        shown["drawn"].append(figures.training_curves(records, report / layout.TRAINING_CURVES))
    return overview


def training_records(out: Path, frame) -> dict[str, dict]:
    """Each trained run's train_record.json (its loss curves), for the runs whose rows the report shows."""
    runs = sorted(frame.loc[frame["task"] == "train", "run_id"].unique()) if "task" in frame else []
    paths = {run: layout.run_folder(out, run) / layout.TRAIN_RECORD for run in runs}
    return {run: io.read_json(p) for run, p in paths.items() if p.is_file()}


def _body(out: Path, note: str, shown: dict, paper: bool) -> str:
    """The page's tables and figures, in the order a reader of the study expects them."""

    found, english, capacity = shown["found"], shown["english"], shown["capacity"]
    versus_study, wins, train = shown["versus_study"], shown["wins"], shown["train"]
    legend = shown["legend"]
    protocol_note = (
        "Scored as MEGAVERSE's code scores, the protocol of the study's baselines (the GPT-4, PaLM2, "
        "Llama-2-70b-chat and Mistral-7B-Instruct rows): XQuAD and MLQA with its normalisation, XL-Sum with its "
        "ROUGE, classification answered by generation with its parser (docs/fidelity.md). A task with a MEGAVERSE "
        "form that a run lacks is missing, never filled from another form."
    )
    official_note = (
        "Our rows again, on the official scorers: the SQuAD v1.1 and MLQA scripts, XL-Sum's multilingual ROUGE, "
        "and an exact choice for classification answered by generation. Not comparable with the baselines."
    )
    overview = _embedded_image(shown["figure"], "Average score over tasks by LoRA rank and quantisation")
    body = (
        f"<h1>MAPLE report: {html.escape(out.name)}</h1><p>{html.escape(note)}</p>"
        f"<h2>{TABLE1_TITLE}</h2>"
        f"<p>{html.escape(protocol_note)}</p>"
        f"{shown['display'].to_html(index=False, na_rep='NA')}<p class='legend'>{html.escape(legend)}</p>"
        f"<h2>Table 1 on the official scorers</h2><p>{html.escape(official_note)}</p>"
        f"{shown['official'].to_html(index=False, na_rep='NA')}<p class='legend'>{html.escape(shown['official_legend'])}</p>"
        f"<h2>Every configuration</h2>{shown['rounded'].to_html(index=False)}"
        f"<h2>Average score by rank and quantisation</h2>{overview}"
        + "".join(f"<h2>{html.escape(f['title'])}</h2>{_embedded_image(f['path'], f['title'])}" for f in shown["drawn"])
        + f"<h2>Table 2: best AlpacaEval win rate (%)</h2>{shown['wins2'].round(2).to_html(index=False, na_rep='')}"
        + f"<h2>English after multilingual finetuning (best configuration minus base)</h2>"
        f"{english.round(3).to_html(index=False, na_rep='') if len(english) else '<p>No English rows.</p>'}"
        + f"<h2>Share of trainable parameters and score</h2>"
        f"{capacity.round(4).to_html(index=False) if len(capacity) else '<p>No training rows.</p>'}"
        + (
            f"<h2>Ours minus the study's (paper mode)</h2>{versus_study.round(3).to_html(index=False)}"
            if paper and len(versus_study)
            else "<p>Paper mode: none of these runs is a model and dataset the study reports, so there is no difference "
            "to show beside its Table 1 rows.</p>"
            if paper
            else ""
        )
        + (
            f"<h2>AlpacaEval win rate of every run against the reference outputs (%)</h2>{wins.round(2).to_html(index=False)}"
            if len(wins)
            else ""
        )
        + f"<h2>Paired comparisons</h2>{found.round(4).to_html(index=False) if len(found) else '<p>No pair of configurations to compare.</p>'}"
    )
    if len(train):
        body += f"<h2>Training</h2>{train.round(4).to_html(index=False)}"
    return body


def _provenance_html(out: Path, table) -> str:
    facts, gaps = provenance(out), missing_cells(table)
    return (
        "<h2>Provenance</h2><ul>"
        + "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in facts.items())
        + "</ul><h2>What is missing</h2>"
        + (
            "<ul>" + "".join(f"<li>{html.escape(g)}</li>" for g in gaps) + "</ul>"
            if gaps
            else "<p>Every configuration has a score for every task evaluated.</p>"
        )
    )
