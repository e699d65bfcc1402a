"""Stage 03's evaluation: every task in every language of the table, prompts under the MEGAVERSE protocol,
prompts fitted to the model's context, per-item predictions and the rows they make."""

from __future__ import annotations

import json

import pytest

from maple_utils import config, layout
from maple_utils.data import languages as lang_table
from maple_utils.eval import evaluate
from maple_utils.eval.tasks import load_docs, load_task


@pytest.fixture(scope="module")
def tiny(tiny_built):
    from maple_utils.models import loading

    return loading.load_base("tiny-llama", 16), loading.load_tokenizer("tiny-llama")


def test_every_task_in_every_language_of_the_table(tiny, tmp_path):
    model, tok = tiny
    cfg = config.validate_run(
        {
            "tasks": list(config.known_tasks()),
            "languages": lang_table.codes(),
            "limit": 2,
            "k_shot": {"xnli": 1, "xcopa": 1, "xquad": 1, "mlqa": 1, "xlsum": 1},
            "max_new_tokens": 3,
        }
    )
    pairs, lacking = evaluate.task_languages(cfg)
    assert len(pairs) + len(lacking) == len(list(config.known_tasks())) * len(lang_table.codes())
    rows, facts = evaluate.evaluate(model, tok, cfg, {"run_id": "r", "stage": "03_evaluate"}, tmp_path, progress=False)
    for task, code in pairs:
        spec = load_task(task)
        mine = {r["metric"]: r for r in rows if (r["task"], r["language"]) == (task, code)}
        assert set(mine) == set(spec.metrics), (task, code)
        assert all(0 <= r["value"] <= 1 and r["n"] == 2 and r["limit"] == 2 for r in mine.values())
        items = [json.loads(line) for line in layout.predictions(tmp_path, task, code).read_text().splitlines()]
        assert len(items) == 2 and all(len(it["prompt_sha256"]) == 16 for it in items)
        assert all(len(it["exemplars"]) == (1 if task != "belebele" else 0) for it in items)
    assert {(n["task"], n["language"]) for n in facts["not_evaluated"]} == set(lacking)


def test_prompts_follow_megaverse(tiny_built):
    """Instruction first, exemplars with their answers, then the item; QA answers on their own indented line;
    XQuAD exemplars from English SQuAD (its embedded sample)."""
    spec = load_task("xquad")
    docs, prompts, used = evaluate.build_prompts(spec, "th", 2, 42, "embedded", None, limit=1)
    prompt = prompts[0]
    assert prompt.startswith(spec.instruction + "\n\n")
    shots = used["exemplars"]
    first = shots[0]
    assert (
        f"{first['context']}\n    Q: {first['question']}\n\n    Referring to the passage above, the correct answer "
        f"to the given question is:\n    {first['answers']['text'][0]}\n\n"
    ) in prompt
    assert prompt.endswith(
        f"{docs[0]['context']}\n    Q: {docs[0]['question']}\n\n    Referring to the passage "
        "above, the correct answer to the given question is:\n    "
    )
    assert all(s["id"].startswith("xquad-exemplars") for s in shots)
    xnli = load_task("xnli")
    _, prompts, _ = evaluate.build_prompts(xnli, "en", 1, 42, "embedded", None, limit=1)
    assert prompts[0].startswith(xnli.instruction + "\n\n") and prompts[0].endswith("True, False, or Neither?\nAnswer:")


def test_xquad_exemplars_come_from_squad_without_xquad_passages(shared_data):
    """../shared/data has SQuAD's dev set, from which XQuAD was made: its evaluated questions and every
    question on their passages leave the pool (squad/SOURCE.md: 9,380 questions remain once all 240 XQuAD
    passages are out)."""
    spec = load_task("xquad")
    docs, _, used = evaluate.build_prompts(spec, "de", 8, 42, "local", str(shared_data))
    assert used["origins"][1]["location"].endswith("squad/dev-v1.1.json")
    english, _ = load_docs(spec, "en", "validation", "local", str(shared_data))
    xquad_passages = {d["context"] for d in english}
    assert len(used["exemplars"]) == 8 and not {s["context"] for s in used["exemplars"]} & xquad_passages
    from maple_utils.eval.tasks import load_fewshot_pool

    pool, _ = load_fewshot_pool(spec, "de", "train", "local", str(shared_data), docs)
    assert len(pool) == 9380 and not {p["context"] for p in pool} & xquad_passages


def test_prompts_too_long_lose_exemplars_from_the_end_and_are_counted(tiny):
    _, tok = tiny
    spec = load_task("xnli")
    docs, prompts, used = evaluate.build_prompts(spec, "en", 4, 42, "embedded", None, limit=3)
    shots = used["exemplars"]
    short = len(tok(spec.preamble(shots[:2]) + spec.prompt_for(docs[0]))["input_ids"])
    fitted, kept, too_long = evaluate.fit_to_context(spec, shots, docs[:1], tok, short)
    assert kept == [2] and too_long == [False] and fitted[0] == spec.preamble(shots[:2]) + spec.prompt_for(docs[0])
    fitted, kept, too_long = evaluate.fit_to_context(spec, shots, docs, tok, 5)
    assert kept == [0, 0, 0] and too_long == [True] * 3
    fitted, kept, too_long = evaluate.fit_to_context(spec, shots, docs, tok, 100_000)
    assert fitted == prompts and kept == [4] * 3


def test_rows_count_dropped_exemplars_and_truncated_prompts(tiny, tmp_path):
    model, tok = tiny
    model.config.max_position_embeddings = 64  # a context the 2-shot XQuAD prompts overflow
    try:
        cfg = config.validate_run(
            {"tasks": ["xquad"], "languages": ["en"], "limit": 2, "k_shot": {"xquad": 2}, "max_new_tokens": 3}
        )
        rows, _ = evaluate.evaluate(model, tok, cfg, {"run_id": "r", "stage": "03_evaluate"}, tmp_path, progress=False)
    finally:
        model.config.max_position_embeddings = 2048
    assert {r["exemplars_dropped"] for r in rows} == {2} and {r["truncated"] for r in rows} == {2}
    items = [json.loads(line) for line in layout.predictions(tmp_path, "xquad", "en").read_text().splitlines()]
    assert all(it["exemplars"] == [] and it["truncated"] for it in items)


def test_classification_answered_by_generation_reports_both_parsers(tiny, tmp_path):
    model, tok = tiny
    cfg = config.validate_run(
        {
            "tasks": ["xnli", "belebele", "xquad"],
            "languages": ["en"],
            "limit": 3,
            "classification": "generate",
            "k_shot": {"xnli": 1, "xquad": 1},
            "max_new_tokens": 4,
        }
    )
    rows, _ = evaluate.evaluate(model, tok, cfg, {"run_id": "r", "stage": "03_evaluate"}, tmp_path, progress=False)
    metrics_of = {(r["task"], r["metric"]): r for r in rows}
    assert set(metrics_of) == {
        ("xnli", "acc_megaverse"),
        ("xnli", "acc_strict"),
        ("belebele", "acc_megaverse"),
        ("belebele", "acc_strict"),
        ("xquad", "squad_f1"),
        ("xquad", "squad_em"),
        ("xquad", "squad_f1_megaverse"),
        ("xquad", "squad_em_megaverse"),
    }
    assert metrics_of[("xnli", "acc_strict")]["scoring"] == "generate"
    items = [json.loads(x) for x in layout.predictions(tmp_path, "xnli", "en").read_text().splitlines()]
    assert all("output" in it and it["reference"] in ("True", "Neither", "False") for it in items)
    # the strict parser never accepts what MEGAVERSE's rejects
    assert all(it["scores"]["acc_strict"] <= it["scores"]["acc_megaverse"] for it in items)


CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
    "<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_chat_prompts_for_instruction_tuned_baselines(tiny, tmp_path):
    """MEGAVERSE's chat form: exemplars as user/assistant turns; a template with no system role gets the
    instruction at the head of the first user turn."""
    model, tok = tiny
    tok.chat_template = CHAT_TEMPLATE
    try:
        spec = load_task("xnli")
        docs, _, used = evaluate.build_prompts(spec, "en", 2, 42, "embedded", None, limit=1)
        prompt = spec.compose(used["exemplars"], docs[0], tok)
        shot = used["exemplars"][0]
        assert prompt.startswith(
            f"<|user|>{spec.instruction}\n\n{spec.render(shot)}\n<|assistant|>{spec.target(shot).strip()}\n"
        )
        assert prompt.endswith(f"<|user|>{spec.render(docs[0])}\n<|assistant|>")
        cfg = config.validate_run(
            {
                "tasks": ["xnli"],
                "languages": ["en"],
                "limit": 2,
                "k_shot": {"xnli": 1},
                "prompt_template": "chat",
                "dataset": None,
                "rank": None,
            }
        )
        items, _ = evaluate.evaluate_pair(model, tok, cfg, "xnli", "en")
        assert len(items) == 2
    finally:
        tok.chat_template = None


def test_a_new_task_is_registry_entries_only_planned_evaluated_and_tabled(tiny, tmp_path, monkeypatch):
    """A task added in a registry copy (its tasks.yaml entry and its column of the language table), with no
    code edit: the grid plans it, stage 03 evaluates it, Table 1's layout has its column."""
    import pandas as pd
    import yaml

    from conftest import REPO
    from maple_utils.analysis import tables
    from maple_utils.grid import planner

    packaged, copy = REPO / "maple_utils" / "registry", tmp_path / "registry"
    copy.mkdir()
    tasks = yaml.safe_load((packaged / "tasks.yaml").read_text(encoding="utf-8"))
    question = "\nWhich one is more plausible?\n- choice1: {choice1}\n- choice2: {choice2}\nAnswer:"
    tasks["tasks"]["copa_plain"] = {**tasks["tasks"]["xcopa"], "language_column": "copa_plain"}
    tasks["tasks"]["copa_plain"]["prompt"] = "{premise} {connector}" + question
    (copy / "tasks.yaml").write_text(yaml.safe_dump(tasks, sort_keys=False, allow_unicode=True), encoding="utf-8")
    languages = yaml.safe_load((packaged / "languages.yaml").read_text(encoding="utf-8"))
    for row in languages["languages"]:
        row["copa_plain"] = row["xcopa"]  # XCOPA's data under the new task's own column
    (copy / "languages.yaml").write_text(yaml.safe_dump(languages, sort_keys=False, allow_unicode=True), "utf-8")
    monkeypatch.setenv("MAPLE_REGISTRY", str(copy))

    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "name: new-task\n"
        "fixed: {languages: [en, id, de], limit: 3, k_shot: {xcopa: 0, copa_plain: 0}, max_steps: 1}\n"
        "axes: {model: [tiny-llama], dataset: [multialpaca], rank: [4], quant: [16]}\nevaluate_base_models: false\n"
    )
    plan = planner.plan_grid(grid, tmp_path / "out")
    [job] = plan.jobs_of("03_evaluate")
    assert job.cfg.tasks[-1] == "copa_plain" and "copa_plain" in job.params["tasks"]  # the default: every task
    assert ("copa_plain", "de") in plan.not_evaluated[job.key]  # XCOPA has no German
    model, tok = tiny
    cfg = config.validate_run({**job.cfg.model_dump(), "tasks": ["xcopa", "copa_plain"]})
    identity = {"run_id": job.key, "stage": "03_evaluate", "model": cfg.model, "dataset": cfg.dataset}
    rows, _ = evaluate.evaluate(model, tok, cfg, {**identity, "rank": 4, "quant": 16}, job.folder, progress=False)
    mine = [r for r in rows if r["task"] == "copa_plain"]
    assert sorted((r["language"], r["metric"], r["n"]) for r in mine) == [("en", "acc", 3), ("id", "acc", 3)]
    for code in ("en", "id"):
        new = [json.loads(x) for x in layout.predictions(job.folder, "copa_plain", code).read_text().splitlines()]
        old = [json.loads(x) for x in layout.predictions(job.folder, "xcopa", code).read_text().splitlines()]
        # its own items (built from its registry entry), scored on its choices, asked in its own prompt
        assert len(new) == 3 and {i["reference"] for i in new} <= {"choice1", "choice2"}
        assert not {i["prompt_sha256"] for i in new} & {i["prompt_sha256"] for i in old}
    table = tables.task_table(pd.DataFrame(rows))
    assert table["copa_plain"].iloc[0] == pytest.approx(sum(r["value"] for r in mine) / 2)
