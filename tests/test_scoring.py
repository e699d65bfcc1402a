"""The evaluation hot path against lm-eval's contract and against a plain full-sequence computation.

Pinned values were computed with lm-evaluation-harness 0.4.13's HFLM (`loglikelihood`, `generate_until`,
batch size 3, max_length 64) on the embedded tiny Llama and its tokenizer, which prepends BOS as Llama-2's
does; the script that produced them is in the docstring of `test_loglikelihood_equals_lm_eval`.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from transformers import AutoTokenizer  # noqa: E402

from maple_utils.embedded.models import model_dir  # noqa: E402
from maple_utils.eval import scoring  # noqa: E402
from maple_utils.models import loading  # noqa: E402

SHOTS = (
    "The river is calm in the morning.\nAnswer: True\n\nChildren read books at the school library.\nAnswer: False\n\n"
)
REQUESTS = [
    (SHOTS + "早上河水很平静。\nAnswer:", " True"),
    (SHOTS + "早上河水很平静。\nAnswer:", " Neither"),
    (SHOTS + "早上河水很平静。\nAnswer:", " False"),
    (SHOTS + "Kinder lesen Bücher.\nAnswer: ", "False"),
    (SHOTS + "Kinder lesen Bücher.\nAnswer:", " choice2"),
    ("", "The river"),
    ("Answer:", " True"),
    ("word " * 40 + "end", " of the long line"),
    ("The river is", "ာင်း σ当晚c"),
]
LM_EVAL_LOGLIKELIHOODS = [
    -23.73673,
    -23.61869,
    -23.42391,
    -23.40955,
    -15.07609,
    -30.77968,
    -23.65015,
    -69.94531,
    -29.67199,
]
PROMPTS = [SHOTS + "早上河水很平静。\nAnswer:", SHOTS + "Kinder lesen", "The river is", "word " * 40 + "end"]
LM_EVAL_UNTIL_E_OR_NEWLINE = ["کớ grigत کớodt.ãом : Lap", "ेलुλικ", "ာင်း σ当晚c", "מבש"]
LM_EVAL_NO_STOP = [
    "کớ grigत کớodt.ãом : Lap",
    "ेलुλικeshקטးတွගඟに新니다lq..ن",
    "ာင်း σ当晚ce. kliX\u001fب c..نز",
    "מבשestion riv rolighãhãhãhãhãhãhãඋ",
]


@pytest.fixture(scope="module")
def llama():
    return loading.load_base("tiny-llama", 16).eval(), AutoTokenizer.from_pretrained(model_dir("llama"))


@pytest.fixture(params=[1, 10**9], ids=["every-shared-prefix-a-node", "no-nodes"])
def saving(request, monkeypatch):
    """The tests' prompts are short: with the default threshold few prefixes would be computed apart, so
    each test runs with every shared prefix a node of its own, and with none."""
    monkeypatch.setattr(scoring, "NODE_MIN_SAVING", request.param)
    return request.param


def test_the_tokenizer_prepends_bos(llama):
    _, tok = llama
    assert tok("Answer")["input_ids"][0] == tok.bos_token_id


def test_loglikelihood_equals_lm_eval(llama, saving):
    """lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=tok, batch_size=3, max_length=64)
    .loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(REQUESTS)]): every greedy flag
    False; the long request is truncated from the left (123 + 9 tokens > 64)."""
    model, tok = llama
    for batch_size in (1, 2, 16):
        ours = scoring.loglikelihood(model, tok, REQUESTS, batch_size=batch_size, max_length=64)
        assert [ll for ll, _ in ours] == pytest.approx(LM_EVAL_LOGLIKELIHOODS, abs=1e-4)
        assert [greedy for _, greedy in ours] == [False] * len(REQUESTS)


def test_generate_equals_lm_eval_generate_until(llama, saving):
    """HFLM(...).generate_until with {"until": ["e", "\\n"], "max_gen_toks": 12} and with no stop strings."""
    model, tok = llama
    for batch_size in (1, 3):
        assert (
            scoring.generate(model, tok, PROMPTS, 12, stop=["e", "\n"], batch_size=batch_size, max_length=64)
            == LM_EVAL_UNTIL_E_OR_NEWLINE
        )
        assert scoring.generate(model, tok, PROMPTS, 12, batch_size=batch_size, max_length=64) == LM_EVAL_NO_STOP


def _plain_loglikelihood(model, tok, context, continuation):
    """The definition, computed the slow way: one full forward pass of context + continuation."""
    ctx, cont = scoring.encode_pair(tok, context, continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
    window = logprobs[-len(cont) :]
    target = torch.tensor(cont)
    return window.gather(1, target[:, None]).sum().item(), bool((window.argmax(-1) == target).all())


def test_loglikelihood_with_shared_exemplars_equals_one_full_pass_per_request(llama, saving):
    """Many items behind the same exemplars (one shared prefix, computed once), each with choices of one and
    of several tokens, plus requests that share nothing: equal to the plain computation, whatever the
    batch size."""
    model, tok = llama
    items = ["早上河水很平静。", "Kinder lesen Bücher in der Bibliothek.", "The river", "Il fiume è calmo.", "x"]
    choices = [" True", " Neither", " False", " choice1", " a much longer continuation here"]
    requests = [(SHOTS + item + "\nAnswer:", c) for item in items for c in choices]
    requests += [("Totally different", " start"), ("Une autre phrase", " encore")]
    # a continuation that greedy decoding produces: the model's own argmax token after the context
    context = SHOTS + "x\nAnswer:"
    with torch.no_grad():
        best = model(input_ids=torch.tensor([scoring.encode(tok, context)])).logits[0, -1].argmax().item()
    requests.append((context, tok.decode([best])))
    expected = [_plain_loglikelihood(model, tok, c, x) for c, x in requests]
    for batch_size in (1, 3, 64):
        got = scoring.loglikelihood(model, tok, requests, batch_size=batch_size)
        assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-4)
        assert [g for _, g in got] == [g for _, g in expected]
    assert expected[-1][1] is True  # the greedy flag is exercised both ways


def _plain_greedy(model, tok, prompt, max_new_tokens):
    ids = scoring.encode(tok, prompt)
    new = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            token = model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax().item()
            if token == tok.eos_token_id:
                break
            new.append(token)
    return tok.decode(new, skip_special_tokens=True)


def test_generation_with_shared_exemplars_equals_plain_greedy_decoding(llama, saving):
    model, tok = llama
    prompts = [SHOTS + item for item in ("早上", "Kinder lesen Bücher in der", "The", "x y z")]
    prompts += ["Unrelated start", "Another"]
    expected = [_plain_greedy(model, tok, p, 8) for p in prompts]
    for batch_size in (1, 4):
        assert scoring.generate(model, tok, prompts, 8, batch_size=batch_size) == expected


def test_prefix_tree_computes_exemplars_once_and_passages_once_beneath_them():
    exemplars_a, exemplars_b = [1] + [7] * 300, [1] + [8] * 300
    passage_1, passage_2 = [20] * 100, [21] * 100
    seqs = [
        exemplars_a + passage_1 + [1],
        exemplars_b + [2],
        exemplars_a + passage_1 + [3],
        [1, 5],
        exemplars_b + [4],
        exemplars_a + passage_1 + [6],
        exemplars_a + passage_2 + [7],
        [1, 6],
    ]
    order, nodes, node_of = scoring.plan_prefixes(seqs, saving=150)
    assert sorted(order) == list(range(len(seqs)))
    a, b = node_of[6], node_of[1]
    assert nodes[a].length == 301 and nodes[b].length == 301 and nodes[a].parent is None
    passage = node_of[0]
    assert node_of[2] == node_of[5] == passage and nodes[passage].parent == a and nodes[passage].length == 401
    assert node_of[3] is None and node_of[7] is None  # sharing only BOS: not worth a node
    assert nodes[a].rows == 4 and nodes[passage].rows == 3
    # in token order, every subtree is contiguous
    positions = [order.index(i) for i in (0, 2, 5)]
    assert max(positions) - min(positions) == 2
    # a passage shared by two rows saves 100 tokens: under the threshold it is no node of its own
    _, nodes, node_of = scoring.plan_prefixes(seqs[:3] + seqs[6:7], saving=250)
    assert node_of[0] == node_of[2] == node_of[3] and nodes[node_of[0]].length == 301


def test_an_empty_continuation_is_named(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="request 1: the continuation ''"):
        scoring.loglikelihood(model, tok, [("a", " b"), ("a", "")])


def test_adapters_are_scored_through_peft(llama, saving):
    """A LoRA adapter with non-zero weights changes the scores, and the fast path still equals the plain one."""
    from maple_utils.models import loading
    from maple_utils.train import modeling

    _, tok = llama
    model = modeling.attach_lora(loading.load_base("tiny-llama", 16), 4, 16, 0.0, ["q_proj", "v_proj"], 16)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    model.eval()
    requests = [(SHOTS + "x\nAnswer:", " True"), (SHOTS + "y\nAnswer:", " a longer one")]
    got = scoring.loglikelihood(model, tok, requests, batch_size=2)
    expected = [_plain_loglikelihood(model, tok, c, x) for c, x in requests]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-4)
    base = scoring.loglikelihood(llama[0], tok, requests)
    assert abs(base[0][0] - got[0][0]) > 1e-3


@pytest.mark.parametrize("quant", [4, 8])
def test_quantised_bases_take_the_same_path(llama, saving, quant):
    """NF4 and LLM.int8 layers (bitsandbytes on the CPU) under the shared-prefix path equal the plain pass."""
    _, tok = llama
    model = loading.load_base("tiny-llama", quant)
    requests = [(SHOTS + item + "\nAnswer:", c) for item in ("x", "y z") for c in (" True", " a longer one")]
    got = scoring.loglikelihood(model, tok, requests, batch_size=4)
    expected = [_plain_loglikelihood(model, tok, c, x) for c, x in requests]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in expected], abs=1e-3)


def test_a_chain_of_prompts_each_one_token_longer_plans_without_recursion():
    chain = [[1] + [5] * n + [9] for n in range(3000)]
    order, nodes, node_of = scoring.plan_prefixes(chain, saving=10**9)
    assert sorted(order) == list(range(3000)) and not nodes and set(node_of) == {None}
    order, nodes, node_of = scoring.plan_prefixes(chain, saving=1)
    assert nodes and all(n is None or nodes[n].length < len(chain[i]) for i, n in enumerate(node_of))


def test_batches_hand_out_every_row_once_longest_first_within_the_prefix_budget():
    """Rows are ordered by the tokens they run beyond their prefix within runs of the token order whose
    prefixes' caches fit the budget; every node's cache is freed once its last row is out."""
    shared_a, shared_b = [1] + [7] * 300, [1] + [8] * 300
    seqs = (
        [shared_a + [10 + j] * n for j, n in enumerate((3, 40, 9, 25))]
        + [shared_b + [20 + j] * n for j, n in enumerate((30, 2, 50))]
        + [[1] + [9] * n for n in (200, 4, 120)]
    )
    order, nodes, node_of = scoring.plan_prefixes(seqs)
    assert len(nodes) == 2 and all(nodes[n].length == 301 for n in node_of[:7])
    # one node's cache fits 301 tokens: a run ends where a second node would be held; rows with no node join
    assert list(scoring._windows(order, nodes, node_of, 301)) == [[0, 1, 2, 3], [4, 5, 6, 8, 9, 7]]
    assert list(scoring._windows(order, nodes, node_of, 10**6)) == [order]

    def own(i):
        return len(seqs[i]) - (301 if i < 7 else 0)

    for budget, runs in ((301, [range(0, 4), range(4, 10)]), (10**6, [range(10)])):
        batches = list(scoring._batches(seqs, 3, budget))
        rows = [i for batch, _, _ in batches for i in batch]
        assert sorted(rows) == list(range(len(seqs)))
        assert all(node.kv is None and node.rows == 0 for node in batches[0][2])
        start = 0
        for run in runs:
            handed = rows[start : start + len(run)]
            assert sorted(handed) == sorted(run)
            assert [own(i) for i in handed] == sorted((own(i) for i in run), reverse=True)
            start += len(run)
