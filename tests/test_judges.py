"""AlpacaEval judging: alpaca_eval's prompt and parser, win-rate math, a real chat-completions server on
127.0.0.1 with injected failures and a SIGKILL mid-run, the local judge on a tiny model, interop."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import REPO
from maple_utils.eval import judges

KEY = "sk-maple-test-KEY-7f3a9c"  # a marker: it must appear in no file and no output


def _pairs(n: int):
    outputs = [
        {
            "instruction": f"Instruction {i}: tell me about item {i}.",
            "generator": "m",
            "dataset": "d",
            "output": "a long and thorough answer " * (1 + i % 3),
        }
        for i in range(n)
    ]
    references = [
        {
            "instruction": o["instruction"],
            "generator": "text_davinci_003",
            "dataset": "d",
            "output": "a medium answer " * (1 + (i * 2) % 4),
        }
        for i, o in enumerate(outputs)
    ]
    return outputs, references


def _expected_rate(outputs, references) -> float:
    prefs = [2.0 if len(o["output"]) > len(r["output"]) else 1.0 for o, r in zip(outputs, references)]
    return sum(p - 1 for p in prefs) / len(prefs) * 100


def test_annotator_is_alpaca_evals_chatgpt_config_with_its_parser():
    annotator = judges.load_annotator("chatgpt")
    messages = annotator.messages("Say hi.", "Hello!", "Hi there.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert (
        "## Instruction:\nSay hi." in messages[1]["content"] and "## Output (b):\nHi there." in messages[1]["content"]
    )
    assert annotator.parse("Output (a)") == 1 and annotator.parse("Output (b)") == 2
    assert annotator.parse("\nOutput (b) because") == 2
    assert annotator.parse("I cannot decide") is None and annotator.parse("Output (a)\nOutput (b)") is None


RANKINGS = [
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]",
    "[{'model': 'model_2', 'rank': 1}, {'model': 'model_1', 'rank': 2}]",
    "  [{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]\n",
    "[{'model': 'model_1', 'rank': 3}, {'model': 'model_2', 'rank': 1}]",  # rank 3: unparsed
    "model_1 is better",
    "[{'model': 'model_3', 'rank': 1}]",
    "",
]


def test_alpaca_eval_gpt4_annotator_is_alpaca_evals_leaderboard_config_with_its_ranking_parser():
    from alpaca_eval import completion_parsers

    annotator = judges.load_annotator("alpaca_eval_gpt4")
    assert annotator.parser == "ranking" and annotator.model == "gpt-4"
    system, user = (m["content"] for m in annotator.messages("Say {hi}.", "Hello!", "Hi there."))
    assert system == "You are a helpful assistant, that ranks models by the quality of their answers."
    # filled as alpaca_eval fills it (first occurrence of each placeholder), the prompt's own braces kept
    assert '"instruction": """Say {hi}.""",' in user and '"answer": """Hi there."""' in user
    assert "{'model': <model-name>, 'rank': <model-rank>}" in user
    for answer in RANKINGS:  # alpaca_eval's own parser: [rank] or [nan] (an empty answer raises there)
        theirs = completion_parsers.ranking_parser(answer)[0] if answer else float("nan")
        ours = annotator.parse(answer)
        assert ours == theirs if ours is not None else theirs != theirs, answer
    assert [annotator.parse(a) for a in annotator.answers] == [1, 2]
    with pytest.raises(judges.JudgeError, match="is not one of: chatgpt, alpaca_eval_gpt4"):
        judges.load_annotator("gpt4_turbo")


def test_a_local_judge_answers_the_ranking_prompt_in_a_form_its_parser_reads(tmp_path):
    outputs, references = _pairs(3)
    judge = judges.LocalJudge("tiny-llama", batch_size=4)
    annotator = judges.load_annotator("alpaca_eval_gpt4")
    found = judges.judge_outputs(judge, annotator, outputs, references, tmp_path / "cache.jsonl")
    assert len(found) == 3 and all(j["preference"] in (1.0, 2.0) for j in found)
    assert {j["raw"] for j in found} <= set(judges.RANKING_ANSWERS)  # a literal ranking_parser reads
    cached = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert {c["annotator"] for c in cached} == {"alpaca_eval_gpt4"} and {c["attempts"] for c in cached} == {1}


def test_order_is_seeded_by_content_and_preferences_map_back():
    outputs, references = _pairs(40)
    first = judges.items(outputs, references, both_orders=False)
    assert [i["model_first"] for i in first] == [i["model_first"] for i in judges.items(outputs, references, False)]
    assert 5 < sum(i["model_first"] for i in first) < 35  # both orders occur
    both = judges.items(outputs, references, both_orders=True)
    assert len(both) == 80 and {i["model_first"] for i in both[:2]} == {True, False}
    item = {"model_first": True}
    assert judges.preference(item, 1) == 2.0 and judges.preference(item, 2) == 1.0
    item = {"model_first": False}
    assert judges.preference(item, 1) == 1.0 and judges.preference(item, 2) == 2.0
    assert judges.preference(item, None) is None


def test_win_rates_equal_a_hand_computation_and_alpaca_evals_own():
    judgements = [{"preference": p} for p in (2.0, 1.0, 1.5, 2.0, 2.0)] + [{"preference": None}]
    outputs = [{"output": "ab"}, {"output": "abcd"}]
    scores = judges.win_rates(judgements, outputs)
    assert scores["win_rate"] == pytest.approx((1 + 0 + 0.5 + 1 + 1) / 5 * 100)
    assert scores["discrete_win_rate"] == pytest.approx((1 + 0 + 0.5 + 1 + 1) / 5 * 100)
    assert scores["n"] == 5 and scores["unparsed"] == 1 and scores["avg_length"] == 3
    mean = 0.7
    sd = (sum((x - mean) ** 2 for x in (1, 0, 0.5, 1, 1)) / 4) ** 0.5
    assert scores["standard_error"] == pytest.approx(sd / 5**0.5 * 100)
    pytest.importorskip("pkg_resources", reason="alpaca_eval imports pkg_resources (setuptools<81, a dev dependency)")
    from alpaca_eval.metrics.winrate import pairwise_to_winrate

    theirs = pairwise_to_winrate([2.0, 1.0, 1.5, 2.0, 2.0])
    assert theirs["win_rate"] == pytest.approx(scores["win_rate"])
    assert theirs["standard_error"] == pytest.approx(scores["standard_error"])
    assert theirs["discrete_win_rate"] == pytest.approx(scores["discrete_win_rate"])


def test_alpaca_eval_reads_our_outputs_and_annotations(tmp_path):
    pytest.importorskip("pkg_resources", reason="alpaca_eval imports pkg_resources (setuptools<81, a dev dependency)")
    from alpaca_eval import utils
    from alpaca_eval.metrics.winrate import get_winrate

    from maple_utils import io

    outputs, references = _pairs(6)
    io.write_json(tmp_path / "model_outputs.json", outputs)
    frame = utils.load_or_convert_to_dataframe(str(tmp_path / "model_outputs.json"))
    assert list(frame["instruction"]) == [o["instruction"] for o in outputs] and set(frame["generator"]) == {"m"}
    judged = [
        {**item, "preference": p, "raw": "Output (a)"}
        for item, p in zip(judges.items(outputs, references, False), (2.0, 1.0, 2.0, 1.5, 1.0, 2.0))
    ]
    annotations = judges.annotations(judged, "m", "text_davinci_003", "chatgpt", "local:tiny-llama")
    io.write_json(tmp_path / "annotations.json", annotations)
    theirs = get_winrate(utils.load_or_convert_to_dataframe(str(tmp_path / "annotations.json")))
    ours = judges.win_rates(judged, outputs)
    assert theirs["win_rate"] == pytest.approx(ours["win_rate"]) and theirs["n_total"] == ours["n"]


def test_the_api_judge_names_a_missing_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with pytest.raises(judges.JudgeError, match="needs OPENAI_API_KEY"):
        judges.ApiJudge("gpt-4")


class _Server:
    """A chat-completions server: deterministic answers (the longer output wins), one 429, one 500 and one
    dropped connection on first asking, and a gate that holds every answer after the first `hold_after`."""

    def __init__(self, fail: dict[str, str], hold_after: int):
        self.fail, self.hold_after = fail, hold_after
        self.asked, self.answered, self.slots = Counter(), Counter(), 0
        self.lock, self.gate, self.closed = threading.Lock(), threading.Event(), False
        self.bad_auth = 0
        self.mode, self.requests = None, 0  # mode: every request answered 500, garbage, no choices, or hung
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {KEY}":
                    server.bad_auth += 1
                    return self._send(401, {"error": {"message": "bad key"}})
                with server.lock:
                    server.requests += 1
                if server.mode == "500":
                    return self._send(500, {"error": {"message": "boom"}})
                if server.mode == "no_choices":
                    return self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": "m"})
                if server.mode == "garbage":
                    data = b"<html>502 Bad Gateway</html>"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    return self.wfile.write(data)
                if server.mode == "hang":
                    server.gate.wait(10)
                    self.close_connection = True
                    return
                user = body["messages"][-1]["content"].split("# Task:", 1)[1]  # past the prompt's own example
                instruction = re.search(r"## Instruction:\n(.*?)\n\n## Output \(a\)", user, re.S).group(1)
                a = re.search(r"## Output \(a\):\n(.*?)\n\n## Output \(b\)", user, re.S).group(1)
                b = re.search(r"## Output \(b\):\n(.*?)\n\n## Which", user, re.S).group(1)
                with server.lock:
                    server.asked[instruction] += 1
                    first = server.asked[instruction] == 1
                    kind = server.fail.get(instruction) if first else None
                    held = kind is None and server.slots >= server.hold_after
                    if kind is None and not held:
                        server.slots += 1  # a slot reserved at arrival: never more answers than hold_after
                if kind == "429":
                    return self._send(429, {"error": {"message": "slow down", "type": "rate_limit"}})
                if kind == "500":
                    return self._send(500, {"error": {"message": "boom"}})
                if kind == "drop":
                    self.close_connection = True
                    return  # no response at all: the client sees the connection drop
                if held:
                    server.gate.wait(60)
                    if server.closed:
                        self.close_connection = True
                        return
                time.sleep(0.05)
                with server.lock:
                    server.answered[instruction] += 1
                self._send(
                    200,
                    {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {
                                    "role": "assistant",
                                    "content": "Output (a)" if len(a) >= len(b) else "Output (b)",
                                },
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.closed = True
        self.gate.set()
        self.httpd.shutdown()


CLIENT = """
import json, sys
from maple_utils.eval import judges
outputs, references = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
judge = judges.ApiJudge("judge-model", concurrency=3, max_retries=4, backoff_s=0.05)
found = judges.judge_outputs(judge, judges.load_annotator("chatgpt"), outputs, references, sys.argv[3])
print(json.dumps(judges.win_rates(found, outputs)))
"""


def test_api_judge_survives_failures_and_a_kill_and_asks_each_item_once(tmp_path):
    outputs, references = _pairs(12)
    (tmp_path / "out.json").write_text(json.dumps(outputs))
    (tmp_path / "ref.json").write_text(json.dumps(references))
    run_dir = tmp_path / "run"
    cache = run_dir / "alpaca_eval" / "judgements.jsonl"
    fail = {outputs[0]["instruction"]: "429", outputs[1]["instruction"]: "500", outputs[2]["instruction"]: "drop"}
    server = _Server(fail, hold_after=5)
    env = {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": server.url, "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-c", CLIENT, str(tmp_path / "out.json"), str(tmp_path / "ref.json"), str(cache)]
    try:
        first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 5):
            time.sleep(0.05)
        assert len(cache.read_text().splitlines()) == 5  # five judged and cached; the rest held at the server
        first.send_signal(signal.SIGKILL)
        out1, err1 = first.communicate(timeout=30)
        assert first.returncode == -signal.SIGKILL
        server.closed = True
        server.gate.set()  # the held requests end unanswered: their client is dead
        time.sleep(0.3)
        server.closed, server.hold_after = False, 10**6
        server.gate.clear()
        second = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stderr[-3000:]
    finally:
        server.stop()
    assert server.bad_auth == 0
    assert set(server.answered) == {o["instruction"] for o in outputs}
    assert all(n == 1 for n in server.answered.values()), server.answered  # every item judged exactly once
    assert all(server.asked[i] >= 2 for i in fail)  # each injected failure was retried
    scores = json.loads(second.stdout.splitlines()[-1])
    assert scores["n"] == 12 and scores["unparsed"] == 0
    assert scores["win_rate"] == pytest.approx(_expected_rate(outputs, references))
    assert len(cache.read_text().splitlines()) == 12
    for text in (out1, err1, second.stdout, second.stderr):
        assert KEY not in text
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), path


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("500", "InternalServerError"),
        ("hang", "APITimeoutError"),
        ("garbage", "a reply that is not a chat completion"),
        ("no_choices", "a reply that is not a chat completion"),
    ],
)
def test_a_down_or_broken_judge_server_stops_the_stage_within_its_failure_budget(tmp_path, monkeypatch, mode, says):
    """A server that answers 500 forever, hangs, or answers what is not a chat completion: the stage stops
    after judge_max_failures failed requests in a row, naming the judge, the server and what came back, not
    after 7 attempts of every item (8 items: 56 requests, or 56 timeouts)."""
    outputs, references = _pairs(8)
    server = _Server({}, hold_after=10**6)
    server.mode = mode
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    judge = judges.ApiJudge("judge-model", concurrency=2, max_retries=6, backoff_s=0.01, timeout_s=0.5, max_failures=5)
    started = time.perf_counter()
    try:
        with pytest.raises(judges.JudgeError) as stopped:
            judges.judge_outputs(judge, judges.load_annotator("chatgpt"), outputs, references, tmp_path / "j.jsonl")
    finally:
        server.stop()
    message = str(stopped.value)
    assert f"judge judge-model at {server.url}: stopped after 5 failed requests in a row" in message
    assert says in message and KEY not in message
    assert 5 <= server.requests <= 5 + 2  # the budget, plus what was in flight when the breaker opened
    assert judge.requests == server.requests or mode == "hang"
    assert time.perf_counter() - started < 15
    assert not (tmp_path / "j.jsonl").exists() or (tmp_path / "j.jsonl").read_text() == ""
    assert judges._server(f"https://user:{KEY}@example.org:8443/v1") == "https://example.org:8443/v1"


def test_a_flaky_server_that_answers_in_between_is_judged_to_the_end(tmp_path, monkeypatch):
    """The breaker counts failures in a row: a 429, a 500 and a dropped connection among answers reset it."""
    outputs, references = _pairs(6)
    fail = {outputs[0]["instruction"]: "429", outputs[1]["instruction"]: "500", outputs[2]["instruction"]: "drop"}
    server = _Server(fail, hold_after=10**6)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url)
    judge = judges.ApiJudge("judge-model", concurrency=1, max_retries=2, backoff_s=0.01, max_failures=2)
    counts = {}
    try:
        found = judges.judge_outputs(
            judge, judges.load_annotator("chatgpt"), outputs, references, tmp_path / "j.jsonl", counts=counts
        )
    finally:
        server.stop()
    assert len(found) == 6 and judge.requests == 9 and counts == {"pairs_asked": 6, "pairs_cached": 0}
    assert judges.win_rates(found, outputs)["win_rate"] == pytest.approx(_expected_rate(outputs, references))


def test_the_local_judge_prefers_by_log_probability_and_never_asks_twice(tmp_path, tiny_built):
    outputs, references = _pairs(3)
    judge = judges.LocalJudge("tiny-llama")
    annotator = judges.load_annotator("chatgpt")
    found = judges.judge_outputs(judge, annotator, outputs, references, tmp_path / "cache.jsonl")
    assert len(found) == 3 and {f["preference"] for f in found} <= {1.0, 2.0}
    assert all("log p(a)" in f["raw"] for f in found)

    class Refuse:
        id = judge.id

        def judge_all(self, annotator, todo, record):
            assert todo == []  # everything comes from the cache

    again = judges.judge_outputs(Refuse(), annotator, outputs, references, tmp_path / "cache.jsonl")
    assert [f["preference"] for f in again] == [f["preference"] for f in found]


def test_an_unparseable_answer_is_asked_again_once_then_counted_never_scored(tmp_path):
    outputs, references = _pairs(3)
    asked = Counter()

    class Mumbler:  # a judge that answers the first item sensibly and the others with no verdict
        id = "mumbler"

        def judge_all(self, annotator, todo, record):
            for item in todo:

                def ask(messages, item=item):
                    asked[item["instruction"]] += 1
                    return "Output (b)" if item["instruction"] == outputs[0]["instruction"] else "Hard to say."

                record(item, ask)

    found = judges.judge_outputs(
        Mumbler(), judges.load_annotator("chatgpt"), outputs, references, tmp_path / "cache.jsonl"
    )
    assert [asked[o["instruction"]] for o in outputs] == [1, 2, 2]
    scores = judges.win_rates(found, outputs)
    assert scores["n"] == 1 and scores["unparsed"] == 2  # two unparsed answers are not two losses
    assert scores["win_rate"] in (0.0, 100.0)
    cached = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert sorted(c["attempts"] for c in cached) == [1, 2, 2] and sum(c["choice"] is None for c in cached) == 2


def test_outputs_with_duplicated_or_unreferenced_instructions_are_named(tmp_path):
    from maple_utils import io, layout
    from maple_utils.eval import alpaca

    outputs, references = _pairs(3)
    io.write_json(layout.alpaca_eval_references(tmp_path), references)
    io.write_json(layout.alpaca_eval_outputs(tmp_path), outputs + [outputs[1]])
    with pytest.raises(ValueError, match="model_outputs.json rows 2 and 4: the same instruction twice"):
        alpaca.read_outputs(tmp_path)
    io.write_json(layout.alpaca_eval_outputs(tmp_path), outputs + [{**outputs[0], "instruction": "Unknown?"}])
    with pytest.raises(ValueError, match="1 instruction\\(s\\) have no reference output, e.g. 'Unknown\\?'"):
        alpaca.read_outputs(tmp_path)
    io.write_json(layout.alpaca_eval_outputs(tmp_path), [{"instruction": "x"}])
    with pytest.raises(
        ValueError, match="model_outputs.json row 1: expected an object with string instruction and output"
    ):
        alpaca.read_outputs(tmp_path)


def test_instruction_tuned_baselines_are_prompted_in_their_own_chat_template(tiny_built):
    from maple_utils import config
    from maple_utils.config import ConfigError
    from maple_utils.eval import alpaca
    from maple_utils.models import loading

    with pytest.raises(ConfigError, match="prompt_template 'chat'.*only for a base model"):
        config.validate_run({"prompt_template": "chat"})
    cfg = config.validate_run(
        {"dataset": None, "rank": None, "quant": 16, "prompt_template": "chat", "alpaca_eval_max_new_tokens": 3}
    )
    tok, model = loading.load_tokenizer("tiny-llama"), loading.load_base("tiny-llama", 16)
    records = [{"instruction": "Name a river.", "output": "x"}]
    with pytest.raises(ValueError, match="has no chat template"):
        alpaca.generate_outputs(model, tok, records, "g", cfg)
    tok.chat_template = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    prompts, chat = alpaca.render_prompts(tok, records, cfg)
    assert chat and prompts == ["<s>[INST] Name a river. [/INST]"]
    ids = tok(prompts[0], add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # the template's BOS, once
    out = alpaca.generate_outputs(model, tok, records, "g", cfg)
    assert len(out) == 1 and out[0]["instruction"] == "Name a river." and isinstance(out[0]["output"], str)
