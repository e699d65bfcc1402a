"""End to end: the smoke grid through papermill, as `make demo` runs it."""

import json
import os
import sys

import pandas as pd
import pytest
import yaml

from conftest import REPO, run_cli
from maple_utils import config
from maple_utils.grid import local, manifest, planner, runner

SMOKE = REPO / "params" / "smoke.yaml"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(smoke_grid):
    return smoke_grid


def test_the_demos_report_in_headless_chromium_shows_its_figures_and_the_legend_under_table_1(smoke):
    import chromium_local

    try:
        chromium_local.executable()
    except chromium_local.Unavailable as err:
        pytest.skip(str(err))
    out, _ = smoke
    check = chromium_local.page_facts(out / "report" / "analysis.html")
    assert check["images"] >= 6 and check["loaded"] == check["images"]  # the overview and Figures 1-4
    assert (
        check["legend"].startswith("Metrics (megaverse scoring; xnli: acc") and "bootstrap interval" in check["legend"]
    )
    drawn = {f["title"].split(":")[0]: f for f in json.loads((out / "report" / "figures.json").read_text())}
    assert all(drawn[f"Figure {n}"]["errorbars"] > 0 for n in (2, 3, 4)), drawn  # drawn on the page's images


def test_smoke_grid_writes_rows_for_every_run_and_stage(smoke):
    out, proc = smoke
    plan = planner.plan_grid(SMOKE, out)
    frame = pd.read_parquet(out / "results.parquet")
    expected = {(j.key, j.stage.name) for j in plan.jobs if not j.stage.unit.reads_all_rows}  # the analysis: no rows
    assert set(zip(frame["run_id"], frame["stage"])) == expected
    ev = frame[frame["stage"] == "03_evaluate"]
    assert set(ev["task"]) == {"xnli", "xcopa", "belebele", "xquad", "mlqa", "xlsum"}
    assert set(ev["language"]) == {"en", "zh"}
    assert ev["value"].between(0, 1).all() and (ev["n"] == 4).all() and (ev["limit"] == 4).all()
    assert set(frame[frame["stage"] == "02_train"]["quant"]) == {4, 8, 16}
    assert not frame.duplicated(["run_id", "stage", "task", "language", "metric"]).any()
    assert "results: " in proc.stdout and "report: " in proc.stdout


def test_the_demo_prints_no_error_line(smoke):
    """`make demo`'s output is the runner's lines only: no kernel logs `[IPKernelApp] ERROR | KeyboardInterrupt
    caught in kernel` when its finished notebook is shut down (jupyter_client's interrupt before shutdown)."""
    _, proc = smoke
    shown = (proc.stdout + proc.stderr).splitlines()
    assert not [line for line in shown if "ERROR" in line or "Traceback" in line], shown[-40:]


def test_an_api_key_in_the_environment_reaches_no_file_and_no_output(smoke):
    """OPENAI_API_KEY was set for the whole run: no executed notebook, log, row, record or manifest line
    holds it, nor does anything the run printed."""
    from conftest import SECRET_MARKER

    out, proc = smoke
    marker = SECRET_MARKER.encode()
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 100  # notebooks, adapters, rows, records, predictions, the report
    assert [str(p) for p in files if marker in p.read_bytes()] == []
    assert SECRET_MARKER not in proc.stdout and SECRET_MARKER not in proc.stderr


def test_run_folders_hold_notebooks_adapters_records_and_predictions(smoke):
    out, _ = smoke
    plan = planner.plan_grid(SMOKE, out)
    for cfg in plan.adapters:
        folder = out / "runs" / config.run_id(cfg)
        for name in (
            "02_train.ipynb",
            "03_evaluate.ipynb",
            "04_alpaca_eval.ipynb",
            ".completed/04_alpaca_eval",
            "config.json",
            "train_record.json",
            "run_record.json",
            "adapter/adapter_config.json",
            "predictions/xquad-zh.jsonl",
            "alpaca_eval/model_outputs.json",
        ):
            assert (folder / name).exists(), (folder, name)
        assert json.loads((folder / "config.json").read_text()) == cfg.model_dump()
        record = json.loads((folder / "run_record.json").read_text())
        assert {"02_train", "03_evaluate", "04_alpaca_eval"} <= set(record["stages"])
        assert "git_sha" in record["stages"]["02_train"] and "versions" in record["stages"]["02_train"]
    outputs = json.loads((out / "runs" / config.run_id(plan.bases[0]) / "alpaca_eval/model_outputs.json").read_text())
    assert len(outputs) == 4 and set(outputs[0]) == {"instruction", "output", "generator", "dataset"}


def test_report_has_a_table_and_a_figure(smoke):
    out, _ = smoke
    report = out / "report"
    table = (report / "task_table.md").read_text()
    assert "xquad" in table and "(base)" in table and "tiny-mistral" in table
    assert (report / "rank_quant.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (report / "rank_quant.pdf").exists() and (report / "task_table.tex").exists()
    assert "not comparable" in (report / "analysis.html").read_text()
    # the demo's Figures 2-4 carry our rows' bootstrap intervals; Table 1 again on the official scorers
    drawn = {f["title"].split(":")[0]: f for f in json.loads((report / "figures.json").read_text())}
    assert all(drawn[f"Figure {n}"]["errorbars"] > 0 for n in (2, 3, 4)), drawn
    assert "Metrics (official scoring" in (report / "table1_official.md").read_text()
    # the local judge ran on the tiny models in every evaluated run, and its rows reach the report
    frame = pd.read_parquet(out / "results.parquet")
    wins = frame[(frame["stage"] == "05_judge") & (frame["metric"] == "win_rate")]
    assert len(wins) == 10 and (wins["n"] == 4).all() and wins["value"].between(0, 100).all()
    assert set(wins["scoring"]) == {"judge:local:tiny-llama:chatgpt"}  # who judged: kind, model, annotator
    assert (
        "win rate" in (report / "analysis.html").read_text() and "(base)" in (report / "win_rate_table.md").read_text()
    )


def test_the_results_data_dictionary_example_runs_on_the_smoke_grid(smoke, capsys):
    """docs/results.md's example query, as written, on this grid's rows; and the typed columns it promises."""
    import re

    from maple_utils import results

    out, _ = smoke
    doc = (REPO / "docs" / "results.md").read_text()
    example = re.search(r"## Example: XCOPA.*?```python\n(.*?)```", doc, re.S).group(1)
    namespace: dict = {}
    exec(example.replace('"runs/smoke"', repr(str(out))), namespace)  # noqa: S102 (the doc's own code)
    table = namespace["table"]
    assert len(table) == 8 and sorted(table["value"].columns) == ["en", "zh"]
    assert ((table["lower"] <= table["value"]) & (table["value"] <= table["upper"])).all().all()
    rows = results.load(out)
    assert (
        str(rows["rank"].dtype) == "Int64"
        and str(rows["quant"].dtype) == "Int64"
        and str(rows["seed"].dtype) == "Int64"
    )
    assert set(rows["kind"]) == {"adapter", "base", "data"} and rows.loc[rows["kind"] == "base", "rank"].isna().all()
    assert set(rows.loc[rows["metric"] == "win_rate", "unit"]) == {"percent"}
    assert set(rows.loc[rows["metric"] == "acc", "unit"]) == {"fraction"} and rows["unit"].notna().all()
    documented = set(re.findall(r"^\| `(\w+)` \|", doc, re.M))
    assert set(rows.columns) <= documented, set(rows.columns) - documented
    xcopa = results.load_predictions(out, task="xcopa", lang="en")
    xquad = results.load_predictions(out, task="xquad", lang="en")
    assert xcopa["id"].map(type).eq(str).all() and xquad["id"].map(type).eq(str).all()
    assert xcopa.groupby("run_id").size().eq(4).all() and xcopa["run_id"].nunique() == 10
    first, second = sorted(xcopa["run_id"].unique())[:2]
    paired = xcopa[xcopa["run_id"] == first].merge(xcopa[xcopa["run_id"] == second], on="id")
    assert len(paired) == 4


def test_every_table_and_figure_of_the_study_is_drawn(smoke):
    out, _ = smoke
    report = out / "report"
    for name in ("table1.md", "table1.tex", "table1.csv", "table2.md", "comparisons.csv"):
        assert (report / name).stat().st_size > 0, name
    table1 = pd.read_csv(report / "table1.csv")
    assert set(table1["kind"]) == {
        "ours: base model",
        "ours: best rank x quantisation",
        "study: baseline",
        "study: finetuned",
    }
    drawn = json.loads((report / "figures.json").read_text())
    assert [f["title"].split(":")[0] for f in drawn] == [
        "Figure 1", "Figure 1b", "Figure 2", "Figure 3", "Figure 4", "Training loss per run"
    ]  # fmt: skip
    for figure in drawn:
        assert figure["xlabels"] and figure["ylabels"], figure
        assert figure["legend"] or figure["colorbar"], figure  # a heatmap's legend is its colour bar
        png = report / figure["path"].split("/")[-1]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.with_suffix(".pdf").exists()
    page = (report / "analysis.html").read_text()
    assert page.count("data:image/png;base64,") == 7 and "src='rank_quant.png'" not in page
    assert "Provenance" in page and "What is missing" in page


def test_rerun_skips_completed_runs(smoke):
    out, _ = smoke
    before = (out / "results.parquet").stat().st_mtime_ns
    proc = run_cli("run", "params/smoke.yaml", "--out", str(out))
    assert proc.returncode == 0
    assert proc.stdout.count("already complete") == 40  # 1 + 8 + 3 x 10 + 1 jobs
    assert pd.read_parquet(out / "results.parquet").shape[0] > 0
    assert (out / "results.parquet").stat().st_mtime_ns >= before


def test_the_report_is_redone_when_the_rows_change(smoke):
    out, _ = smoke
    plan = planner.plan_grid(SMOKE, out)
    rows_path = out / "runs" / config.run_id(plan.bases[0]) / "results.jsonl"
    original = rows_path.read_text()
    rows = [json.loads(line) for line in original.splitlines()]
    first = next(r for r in rows if r["stage"] == "03_evaluate" and r["task"] == "xnli")
    first["value"] = 0.987654  # as if that evaluation had been redone with other results
    rows_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        proc = run_cli("run", "params/smoke.yaml", "--out", str(out))
        assert proc.returncode == 0
        assert proc.stdout.count("already complete") == 39
        frame = pd.read_parquet(out / "results.parquet")
        assert 0.987654 in set(frame["value"])
        xnli = frame[(frame["run_id"] == first["run_id"]) & (frame["task"] == "xnli")]["value"].mean()
        table = pd.read_csv(out / "report" / "task_table.csv")
        base = table[(table["model"] == plan.bases[0].model) & (table["dataset"] == "(base)")]
        assert base["xnli"].item() == pytest.approx(xnli)  # the mean over languages, with the changed row
    finally:  # the session's smoke grid is the reference of other tests (the SLURM executor's)
        rows_path.write_text(original)
        restored = run_cli("report", "params/smoke.yaml", "--out", str(out))
    assert restored.returncode == 0 and "report:" in restored.stdout
    assert 0.987654 not in set(pd.read_parquet(out / "results.parquet")["value"])


def test_manifest_tolerates_a_cut_line_and_never_appends_onto_it(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"job": "02_train:a", "status": "failed"}\n{"job": "02_tr')
    assert manifest.read(tmp_path) == [{"job": "02_train:a", "status": "failed"}]
    manifest.append(tmp_path, {"job": "02_train:a", "status": "done"})  # as after a full disk or a kill
    assert manifest.read(tmp_path) == [
        {"job": "02_train:a", "status": "failed"},
        {"job": "02_train:a", "status": "done"},
    ]


def _local_grid(tmp_path, root):
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(
        yaml.safe_dump(
            {
                "name": "preflight",
                "fixed": {
                    "max_steps": 1,
                    "tasks": ["xcopa"],
                    "languages": ["en"],
                    "limit": 2,
                    "alpaca_eval_limit": 2,
                    "max_train_examples": 8,
                    "data_source": "local",
                    "data_root": str(root),
                },
                "axes": {"model": ["tiny-llama"], "dataset": ["alpaca"], "rank": [4], "quant": [16]},
                "evaluate_base_models": False,
            }
        )
    )
    return grid_file


def test_preflight_names_a_damaged_data_file_before_anything_runs(tmp_path, shared_data):
    import shutil

    root = tmp_path / "data"
    for part in (
        "alpaca/alpaca_5000.json",
        "xcopa/copa_en/val-en.jsonl",
        "xcopa/copa_en/train-en.jsonl",
        "alpaca_eval/results/text_davinci_003/model_outputs.json",
    ):
        (root / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / part, root / part)
    damaged = root / "xcopa/copa_en/val-en.jsonl"
    lines = damaged.read_text(encoding="utf-8").splitlines(keepends=True)
    damaged.write_text("".join(lines[:4] + ['{"premise": "cut short by a full disk\n'] + lines[5:]), encoding="utf-8")
    proc = run_cli("run", str(_local_grid(tmp_path, root)), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"preflight: {damaged}: line 5: not valid JSON" in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written
    (root / "alpaca/alpaca_5000.json").unlink()
    proc = run_cli("run", str(_local_grid(tmp_path, root)), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and "1 local data file(s) missing" in proc.stderr and "alpaca_5000.json" in proc.stderr


def test_an_output_folder_that_takes_no_writes_stops_the_grid_at_once(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = run_cli("run", str(SMOKE), "--out", str(blocker / "out"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"output folder {blocker / 'out'} is not writable" in proc.stderr


def test_an_attempt_cut_off_by_a_killed_runner_is_marked_interrupted_not_failed(tmp_path):
    train = {"job": "02_train:a", "stage": "02_train", "key": "a"}
    evaluate = {"job": "03_evaluate:a", "stage": "03_evaluate", "key": "a"}
    for entry in (
        {**train, "status": "running", "attempt": 1},
        {**train, "status": "failed", "attempt": 1},
        {**evaluate, "status": "running", "attempt": 1},
        {**evaluate, "status": "done", "attempt": 1},
        {**train, "status": "running", "attempt": 2},
    ):  # then the runner was killed
        manifest.append(tmp_path, entry)
    manifest.close_interrupted(tmp_path, manifest.read(tmp_path))
    latest = manifest.latest(manifest.read(tmp_path))
    assert latest["02_train:a"]["status"] == "interrupted" and latest["02_train:a"]["attempt"] == 2
    assert latest["03_evaluate:a"]["status"] == "done"
    assert "interrupted" in manifest.RETRYABLE and "interrupted" not in manifest.COUNTED  # retried; not held against it


def test_attempts_left_in_slurm_by_a_killed_runner_are_followed_not_closed(tmp_path):
    from maple_utils.grid import slurm

    train = {"job": "02_train:a", "stage": "02_train", "key": "a"}
    judge = {"job": "05_judge:b", "stage": "05_judge", "key": "b"}
    evaluate = {"job": "03_evaluate:c", "stage": "03_evaluate", "key": "c"}
    queued = {"status": "queued", "event": "slurm", "started": 1.0}
    for entry in (
        {**train, "status": "running", "attempt": 1},
        {**train, **queued, "attempt": 1, "slurm_job_id": "7_0"},
        {**train, "status": "crashed", "attempt": 1, "slurm_state": "CANCELLED"},
        {**train, "status": "running", "attempt": 2},
        {**train, **queued, "attempt": 2, "slurm_job_id": "9_0"},
        {**train, "status": "running", "event": "slurm", "attempt": 2, "slurm_job_id": "9_0"},
        {**judge, "status": "running", "attempt": 1},
        {**judge, **queued, "attempt": 1, "slurm_job_id": "8_1"},
        {**judge, "status": "done", "attempt": 1},
        {**evaluate, "status": "running", "attempt": 1},
    ):  # then the runner was killed, before sbatch
        manifest.append(tmp_path, entry)
    flying = slurm.in_flight(manifest.read(tmp_path))
    assert list(flying) == ["02_train:a"]  # the judge ended; the evaluation never reached SLURM
    attempt, event = flying["02_train:a"]
    assert attempt == 2 and event["slurm_job_id"] == "9_0" and event["announced"]
    manifest.close_interrupted(tmp_path, manifest.read(tmp_path), keep=flying)
    latest = manifest.latest(e for e in manifest.read(tmp_path) if "event" not in e)
    assert latest["02_train:a"]["status"] == "running" and latest["03_evaluate:c"]["status"] == "interrupted"


def test_a_local_run_closes_slurm_attempts_that_are_no_longer_in_slurm(tmp_path, monkeypatch):
    plan = planner.plan_grid(str(REPO / "params" / "smoke.yaml"), str(tmp_path / "out"))
    data = plan.jobs_of("01_data")[0]
    base = {"job": data.id, "stage": data.stage.name, "key": data.key, "attempt": 1}
    manifest.append(plan.out, {**base, "status": "running"})
    manifest.append(plan.out, {**base, "status": "queued", "event": "slurm", "slurm_job_id": "999_0"})
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no SLURM client: nothing can be in SLURM
    status = runner.run_plan(plan, echo=lambda line: None, only=set())  # run nothing; only the bookkeeping
    assert status[data.id] == "not retried"
    assert manifest.latest(manifest.read(plan.out))[data.id]["status"] == "interrupted"


def test_each_gpu_job_gets_a_gpu_of_its_own_and_cpu_jobs_none(tmp_path):
    plan = planner.plan_grid(str(REPO / "params" / "smoke.yaml"), str(tmp_path / "out"))
    train, data = plan.jobs_of("02_train"), plan.jobs_of("01_data")[0]
    pool = local.DevicePool(["5", "7"])
    assert [pool.take(j) for j in train[:2]] == ["5", "7"]
    assert not pool.can_start(train[2]) and pool.can_start(data) and pool.take(data) is None
    pool.give_back("5")
    assert pool.can_start(train[2]) and pool.take(train[2]) == "5"
    cpu = local.DevicePool([])
    assert cpu.can_start(train[0]) and cpu.take(train[0]) is None


class OneThreadExecutor:
    """An executor of this test's own, not the package's: every job on one thread of this process, in the
    order submitted, through the package's papermill execution; it holds no GPUs and nothing of it outlives
    the runner. What a Ray or Kubernetes executor would be, it shows, is this protocol and nothing more."""

    name = "one thread"

    def __init__(self, plan, workers: int):
        from concurrent.futures import ThreadPoolExecutor

        self.out, self.pool, self.submitted = plan.out, ThreadPoolExecutor(max_workers=1), []

    @staticmethod
    def default_workers() -> int:
        return 1

    def check(self) -> None:
        pass

    def left_running(self, history):
        return {}

    def has_room(self, in_flight: int) -> bool:
        return True  # the thread takes them one by one

    def can_start(self, job) -> bool:
        return True

    def submit(self, job, attempt: int, timeout):
        self.submitted.append(job.id)
        return self.pool.submit(local.execute, job, self.out, attempt, timeout)

    def flush(self) -> None:
        pass

    def adopt(self, job, attempt, queued):
        raise AssertionError("nothing is left running to adopt")

    def finished(self, future) -> None:
        pass

    def again(self, entry) -> bool:
        return False

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def test_a_grid_runs_through_an_executor_defined_in_a_test(smoke, tmp_path, monkeypatch):
    """A part of the smoke grid (one adapter, its evaluations, the analysis: 6 jobs) through the executor above,
    registered for the run as the CLI's table would hold it: every job ran once, after the jobs it needs; the
    rows equal the local executor's; a second run skips every job."""
    from grid_checks import assert_same_rows, smoke_variant

    grid = smoke_variant(tmp_path, model=["tiny-llama"], rank=[4], quant=[16])
    spec = yaml.safe_load(grid.read_text())
    grid.write_text(yaml.safe_dump({**spec, "evaluate_base_models": False}))
    plan = planner.plan_grid(grid, tmp_path / "out")
    built = []
    monkeypatch.setitem(runner.EXECUTORS, "one-thread", lambda p, w: built.append(OneThreadExecutor(p, w)) or built[-1])
    status = runner.run_plan(plan, echo=lambda line: None, executor="one-thread")
    assert status == {j.id: "done" for j in plan.jobs} and len(plan.jobs) == 6
    order = built[0].submitted
    assert sorted(order) == sorted(j.id for j in plan.jobs)
    assert all(order.index(need) < order.index(j.id) for j in plan.jobs for need in j.needs)
    assert_same_rows(plan.out, smoke[0])
    again = runner.run_plan(planner.plan_grid(grid, plan.out), echo=lambda line: None, executor="one-thread")
    assert set(again.values()) == {"skipped"} and built[1].submitted == []
