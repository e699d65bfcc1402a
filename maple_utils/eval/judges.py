"""AlpacaEval judging: the model's outputs against the reference outputs, by an API judge or a local one.

The judging prompt and its parsing rules are an alpaca_eval annotator config, read from the installed
alpaca_eval package, so both stay exactly alpaca_eval's: `chatgpt` (a system and a user message; the answer is
matched with the regexes `Output (a)` / `Output (b)`) or `alpaca_eval_gpt4`, AlpacaEval 1's leaderboard
annotator, whose rows the study's GPT-4 and PaLM2 win rates are (a ranking prompt; `ranking_parser`). Preferences follow alpaca_eval's convention:
output_1 is the reference, output_2 the model; 1 = reference better, 2 = model better, 1.5 = a tie
(identical outputs, which are not sent to a judge).

Each item is shown in an order drawn from a seed derived from its content (or in both orders). Every
judgement is appended to an on-disk cache as it arrives, keyed by (judge, annotator, instruction, both
outputs as shown), so a rerun or a crash resumes without asking twice. The API judge reads its key and base
URL from OPENAI_API_KEY and OPENAI_BASE_URL; the key is never written, logged or put in an error message.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import os
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from maple_utils import io
from maple_utils.eval import metrics

ENV_KEY, ENV_URL = "OPENAI_API_KEY", "OPENAI_BASE_URL"


def missing_api_environment() -> list[str]:
    """The environment variables the API judge needs that are not set (names only: values are secrets)."""
    return [v for v in (ENV_KEY, ENV_URL) if not os.environ.get(v)]


class JudgeError(RuntimeError):
    """The judge cannot run (no key, no base URL, no annotator config); generations are untouched."""


# The parsers of alpaca_eval's annotator configs that MAPLE reproduces (alpaca_eval/completion_parsers.py), and
# for the local judge, the answer that prefers output 1 and the one that prefers output 2 under each
RANKING_ANSWERS = (
    "[{'model': 'model_1', 'rank': 1}, {'model': 'model_2', 'rank': 2}]",
    "[{'model': 'model_1', 'rank': 2}, {'model': 'model_2', 'rank': 1}]",
)


@dataclass(frozen=True)
class Annotator:
    name: str
    system: str
    user_template: str  # with {instruction}, {output_1}, {output_2}
    parser: str  # "regex" (chatgpt: Output (a) / Output (b)) or "ranking" (alpaca_eval_gpt4: a ranked list)
    outputs_to_match: dict  # regex: 1 / 2 -> pattern
    model: str  # the model alpaca_eval's config asks (completions_kwargs.model_name)

    def messages(self, instruction: str, output_1: str, output_2: str) -> list[dict]:
        """The system and user messages, the template filled as alpaca_eval fills it: each placeholder's first
        occurrence replaced in turn (utils.make_prompts; not str.format, as the ranking prompt holds braces)."""
        user = self.user_template
        for key, value in (("instruction", instruction), ("output_1", output_1), ("output_2", output_2)):
            user = user.replace("{" + key + "}", value, 1)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def parse(self, answer: str) -> int | None:
        """1 (output_1 preferred) or 2 as alpaca_eval's parser reads the answer; None when it cannot. regex:
        exactly one of the two patterns found; ranking (ranking_parser): the answer read as a Python literal,
        model_1's rank, which must be 1 or 2."""
        if self.parser == "ranking":
            try:
                ranked = ast.literal_eval(answer.strip())
                rank = [entry for entry in ranked if entry["model"] == "model_1"][0]["rank"]
            except (ValueError, SyntaxError, TypeError, KeyError, IndexError, MemoryError, RecursionError):
                return None
            return rank if rank in (1, 2) else None
        found = [k for k, pattern in self.outputs_to_match.items() if re.search(pattern, answer)]
        return found[0] if len(found) == 1 else None

    @property
    def answers(self) -> tuple[str, str]:
        """The answer preferring output 1 and the one preferring output 2 (what the local judge compares)."""
        return RANKING_ANSWERS if self.parser == "ranking" else ("Output (a)", "Output (b)")


def _chatml(text: str) -> dict[str, str]:
    parts = re.findall(r"<\|im_start\|>(\w+)\n(.*?)\n?<\|im_end\|>", text, flags=re.S)
    return {role: content.strip("\n") for role, content in parts}


ANNOTATORS = ("chatgpt", "alpaca_eval_gpt4")  # the alpaca_eval configs MAPLE reads (the judge_annotator field)


def load_annotator(name: str = "chatgpt") -> Annotator:
    """An annotator config from the installed alpaca_eval package (read as files; the package is not imported):
    `chatgpt` (AlpacaEval's Output (a)/(b) prompt) or `alpaca_eval_gpt4` (AlpacaEval 1's leaderboard annotator,
    a ranking prompt read by ranking_parser)."""
    spec = importlib.util.find_spec("alpaca_eval")
    if spec is None or not spec.submodule_search_locations:
        raise JudgeError("the judge needs the `alpaca_eval` package for its annotator prompt: pip install alpaca_eval")
    if name not in ANNOTATORS:
        raise JudgeError(f"judge_annotator {name!r} is not one of: {', '.join(ANNOTATORS)}")
    folder = Path(spec.submodule_search_locations[0]) / "evaluators_configs"
    config = yaml.safe_load((folder / name / "configs.yaml").read_text(encoding="utf-8"))[name]
    messages = _chatml((folder / config["prompt_template"]).read_text(encoding="utf-8"))
    parser = "ranking" if config.get("fn_completion_parser") == "ranking_parser" else "regex"
    matches = {int(k): v for k, v in config.get("completion_parser_kwargs", {}).get("outputs_to_match", {}).items()}
    model = config.get("completions_kwargs", {}).get("model_name", "")
    return Annotator(name, messages["system"], messages["user"], parser, matches, model)


# ---------------------------------------------------------------- items and the cache


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def items(outputs: list[dict], references: list[dict], both_orders: bool) -> list[dict]:
    """What to judge: per instruction, the pair in a content-seeded order (or both orders)."""
    by_instruction = {r["instruction"]: r["output"] for r in references}
    out = []
    for o in outputs:
        reference = by_instruction[o["instruction"]]
        if both_orders:
            orders = [False, True]
        else:  # the same item gets the same order on every machine and rerun
            orders = [random.Random(_digest(o["instruction"], reference, o["output"])).random() < 0.5]
        for model_first in orders:
            out.append(
                {
                    "instruction": o["instruction"],
                    "reference": reference,
                    "output": o["output"],
                    "model_first": model_first,
                }
            )
    return out


def shown(item: dict) -> tuple[str, str]:
    """(Output (a), Output (b)) as the judge sees them."""
    return (item["output"], item["reference"]) if item["model_first"] else (item["reference"], item["output"])


def cache_key(judge_id: str, annotator: str, item: dict) -> str:
    a, b = shown(item)
    return _digest(judge_id, annotator, item["instruction"], a, b)


def preference(item: dict, choice: int | None) -> float | None:
    """alpaca_eval's preference (1 reference, 2 model) from the judge's choice of (a) or (b)."""
    if choice is None:
        return None
    model_chosen = (choice == 1) == item["model_first"]
    return 2.0 if model_chosen else 1.0


class Cache:
    """Judgements appended one JSON line at a time (flushed and synced), read back whole lines only."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.entries = {e["key"]: e for e in io.read_appended(self.path)}  # a cut line: that item is asked again

    def add(self, entry: dict) -> None:
        with self.lock:
            io.append_jsonl(self.path, entry)
            self.entries[entry["key"]] = entry


# ---------------------------------------------------------------- judges


def _scrub(text: str) -> str:
    key = os.environ.get(ENV_KEY)
    return text.replace(key, "***") if key else text


def _server(url: str) -> str:
    """The judge server as an error may name it: scheme, host, port and path, never credentials in the URL."""
    parts = urlsplit(url)
    host = parts.hostname or url
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}" if parts.scheme else host


class ApiJudge:
    """An OpenAI-compatible chat-completions judge: bounded concurrency, retries with backoff, a timeout per
    request, and a circuit breaker: after `max_failures` failed requests in a row (any answer resets the count)
    the stage stops, naming the server and what it last returned, so a server that is down or hung costs
    minutes, not hours (805 items x 7 attempts each, otherwise)."""

    def __init__(
        self,
        model: str,
        concurrency: int = 4,
        max_retries: int = 6,
        backoff_s: float = 0.5,
        timeout_s: float = 60.0,
        max_failures: int = 12,
    ):
        missing = missing_api_environment()
        if missing:
            raise JudgeError(
                f"the API judge needs {' and '.join(missing)} in the environment "
                "(the outputs of 04_alpaca_eval are kept; set them and rerun)"
            )
        self.model, self.concurrency, self.max_retries, self.backoff_s = model, concurrency, max_retries, backoff_s
        self.timeout_s, self.max_failures = timeout_s, max_failures
        self.id = f"api:{model}"
        self.where = f"judge {model} at {_server(os.environ[ENV_URL])}"
        self.requests, self.failed_in_a_row, self.last_failure = 0, 0, ""
        self._lock, self._stop = threading.Lock(), threading.Event()

    def _client(self):
        import openai

        # max_retries=0: retries are ours, so that every attempt and its wait are under our control
        return openai.OpenAI(
            api_key=os.environ[ENV_KEY], base_url=os.environ[ENV_URL], max_retries=0, timeout=self.timeout_s
        )

    def _stopped(self) -> JudgeError:
        return JudgeError(
            _scrub(
                f"{self.where}: stopped after {self.max_failures} failed requests in a row (judge_max_failures); "
                f"last: {self.last_failure}. {self.requests} requests were made; the judgements "
                "cached so far are kept, and a rerun asks only for the rest"
            )
        )

    def _failed(self, what: str) -> None:
        with self._lock:
            self.failed_in_a_row += 1
            self.last_failure = what
            if self.failed_in_a_row >= self.max_failures:
                self._stop.set()

    def ask(self, client, messages: list[dict]) -> str:
        import openai

        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise self._stopped()
            with self._lock:
                self.requests += 1
            try:
                reply = client.chat.completions.create(
                    model=self.model, messages=messages, temperature=0, max_tokens=50
                )
                answer = reply.choices[0].message.content or ""
            except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as err:
                what = f"{type(err).__name__}: {err}"  # APIConnectionError covers a timeout and a dropped connection
            except openai.APIStatusError as err:  # 4xx other than 429: asking again will not help
                raise JudgeError(_scrub(f"{self.where}: {type(err).__name__}: {err}")) from None
            except (openai.APIResponseValidationError, ValueError, TypeError, AttributeError, IndexError) as err:
                what = f"a reply that is not a chat completion ({type(err).__name__}: {str(err)[:200]})"
            else:
                with self._lock:
                    self.failed_in_a_row = 0
                return answer
            self._failed(what)
            if self._stop.is_set():
                raise self._stopped()
            if attempt == self.max_retries:
                raise JudgeError(_scrub(f"{self.where}: gave up after {attempt + 1} attempts: {what}"))
            self._stop.wait(self.backoff_s * 2**attempt)  # woken at once when the breaker opens
        raise AssertionError("unreachable")

    def judge_all(self, annotator: Annotator, todo: list[dict], record) -> None:
        client = self._client()

        def one(item: dict) -> None:
            record(item, lambda messages: self.ask(client, messages))

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(one, item) for item in todo]
            try:
                for future in futures:
                    future.result()
            except BaseException:
                self._stop.set()  # the items in flight stop at their next request; the queued never start
                pool.shutdown(cancel_futures=True)
                raise


class LocalJudge:
    """A Hugging Face causal LM as the judge: the log-probability of "Output (a)" against "Output (b)"."""

    def __init__(self, model_name: str, batch_size: int = 8):
        from maple_utils.models import loading

        self.tokenizer = loading.load_tokenizer(model_name)
        self.model = loading.load_base(model_name, 16)
        self.batch_size = batch_size
        self.id = f"local:{model_name}"

    def judge_all(self, annotator: Annotator, todo: list[dict], record) -> None:
        """Every pair scored in one batched call (sorted by length inside), then recorded one by one."""
        from maple_utils.eval import scoring

        contexts = [
            "\n\n".join(m["content"] for m in annotator.messages(i["instruction"], *shown(i))) + "\n" for i in todo
        ]
        first, second = annotator.answers
        requests = [(c, label) for c in contexts for label in (first, second)]
        lls = scoring.loglikelihood(self.model, self.tokenizer, requests, batch_size=self.batch_size)
        for n, item in enumerate(todo):
            (la, _), (lb, _) = lls[2 * n], lls[2 * n + 1]
            if annotator.parser == "ranking":  # the answer must stay a Python literal for ranking_parser
                answer = first if la >= lb else second
            else:
                answer = f"Output ({'a' if la >= lb else 'b'}) [log p(a) {la:.4f}, log p(b) {lb:.4f}]"
            record(item, lambda messages, answer=answer: answer)  # deterministic: asking again gives the same


def make_judge(cfg):
    if cfg.judge == "api":
        return ApiJudge(
            cfg.judge_model,
            cfg.judge_concurrency,
            cfg.judge_max_retries,
            timeout_s=cfg.judge_timeout_s,
            max_failures=cfg.judge_max_failures,
        )
    return LocalJudge(cfg.judge_model, cfg.alpaca_eval_batch_size)


def judge_outputs(
    judge,
    annotator: Annotator,
    outputs: list[dict],
    references: list[dict],
    cache_path: Path,
    both_orders: bool = False,
    counts: dict | None = None,
) -> list[dict]:
    """A judgement per item (from the cache, or asked now and cached); an answer that cannot be parsed is
    asked again once and then recorded as unparsed, never scored. `counts`, when given, receives how many
    pairs were asked and how many came from the cache (what the stage cost)."""
    cache = Cache(cache_path)
    pairs = items(outputs, references, both_orders)
    for item in pairs:
        item["key"] = cache_key(judge.id, annotator.name, item)
    judged = [i for i in pairs if i["output"] != i["reference"]]
    todo = [i for i in judged if i["key"] not in cache.entries]
    if counts is not None:
        counts.update(pairs_asked=len(todo), pairs_cached=len(judged) - len(todo))

    def record(item: dict, ask) -> None:
        a, b = shown(item)
        messages = annotator.messages(item["instruction"], a, b)
        for attempt in (1, 2):  # noqa: B007 (recorded after the loop) one more ask when the first answer does not parse
            raw = ask(messages)
            choice = annotator.parse(raw)
            if choice is not None:
                break
        cache.add(
            {
                "key": item["key"],
                "judge": judge.id,
                "annotator": annotator.name,
                "instruction": item["instruction"],
                "output_1": a,
                "output_2": b,
                "raw": raw,
                "choice": choice,
                "attempts": attempt,
            }
        )

    judge.judge_all(annotator, todo, record)
    return [
        {**item, "choice": None, "preference": 1.5, "raw": "(identical outputs: a tie)"}
        if item["output"] == item["reference"]
        else {**item, **_result(cache.entries[item["key"]], item)}
        for item in pairs
    ]  # in the outputs' order, whatever came from the cache


def _result(entry: dict, item: dict) -> dict:
    return {"choice": entry["choice"], "raw": entry["raw"], "preference": preference(item, entry["choice"])}


def annotations(
    judgements: list[dict], generator: str, reference_generator: str, annotator: str, judge_id: str
) -> list[dict]:
    """The judgements in alpaca_eval's annotation format (output_1 the reference, output_2 the model), which
    its own functions read: get_winrate, and get_length_controlled_winrate where the hub is reachable."""
    return [
        {
            "instruction": j["instruction"],
            "output_1": j["reference"],
            "generator_1": reference_generator,
            "output_2": j["output"],
            "generator_2": generator,
            "annotator": annotator,
            "judge": judge_id,
            "preference": j["preference"],
            "raw_completion": j["raw"],
            "model_shown_first": j["model_first"],
        }
        for j in judgements
    ]


# ---------------------------------------------------------------- metrics


def win_rates(judgements: list[dict], outputs: list[dict]) -> dict:
    """Win rate (ties count half), its standard error and the discrete win rate, in percent, over the parsed
    judgements (both orders of an item count as two judgements); unparsed ones are counted, not scored."""
    prefs = [j["preference"] for j in judgements if j["preference"] is not None]
    unparsed = sum(j["preference"] is None for j in judgements)
    rate, se = metrics.mean_stderr([p - 1.0 for p in prefs]) if prefs else (float("nan"), float("nan"))
    discrete = [1.0 if p > 1.5 else 0.5 if p == 1.5 else 0.0 for p in prefs]
    lengths = [len(o["output"]) for o in outputs]
    return {
        "win_rate": rate * 100,
        "standard_error": se * 100,
        "discrete_win_rate": (sum(discrete) / len(discrete) * 100) if discrete else float("nan"),
        "n": len(prefs),
        "unparsed": unparsed,
        "avg_length": sum(lengths) / max(1, len(lengths)),
    }


def judge_run(run, judge, annotator: Annotator, outputs: list[dict], references: list[dict]):
    """05_judge's body: every pair judged (from the run's cache, or asked now), alpaca_eval's annotations
    written; returns the judgements, the win-rate rows and the run record's facts."""
    from maple_utils.eval import alpaca

    cache, counts = alpaca.judgements_path(run.folder), {}
    both = run.cfg.judge_both_orders
    judgements = judge_outputs(judge, annotator, outputs, references, cache, both_orders=both, counts=counts)
    if isinstance(judge, ApiJudge):
        counts["requests"] = judge.requests
    print(f"{judge.id}: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))  # what it cost
    scores = win_rates(judgements, outputs)
    generator = references[0]["generator"]
    alpaca.write_annotations(run.folder, annotations(judgements, run.run_id, generator, annotator.name, judge.id))
    facts = {"judge": judge.id, "annotator": annotator.name, **{k: scores[k] for k in ("n", "unparsed")}, **counts}
    return judgements, alpaca.win_rate_rows(run.identity(), scores, run.cfg), facts
