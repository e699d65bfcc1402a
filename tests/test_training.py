"""Training on the tiny models through real bitsandbytes and PEFT on the CPU: every quantisation at two ranks
for Llama and Mistral, closed-form trainable counts, padding-free exactness, gradient accumulation, a run
killed with SIGKILL and resumed, the adapter round trip."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from maple_utils import config
from maple_utils.models import loading
from maple_utils.models.resolve import resolve_model
from maple_utils.train import batches, loop, modeling, varlen

MODELS = ["tiny-llama", "tiny-mistral"]
LAYER = {4: "Linear4bit", 8: "Linear8bitLt", 16: "Linear"}


@pytest.fixture(scope="module")
def tok(tiny_built):
    return loading.load_tokenizer("tiny-llama")  # tiny Llama and Mistral share the embedded tokenizer


def _records(n=16):
    return [
        {
            "language": "en",
            "prompt": f"### Instruction:\nSay {i}\n\n### Response:\n",
            "response": " ".join(["number", str(i % 3)] * (i % 4 + 1)),
        }
        for i in range(n)
    ]


def _closed_form(model: str, rank: int, targets: list[str]) -> int:
    """r x (in + out) for every adapted linear layer, from the model's config."""
    c = json.loads((Path(resolve_model(model)) / "config.json").read_text())
    head = c["hidden_size"] // c["num_attention_heads"]
    shapes = {
        "q_proj": (c["hidden_size"], c["num_attention_heads"] * head),
        "k_proj": (c["hidden_size"], c["num_key_value_heads"] * head),
        "v_proj": (c["hidden_size"], c["num_key_value_heads"] * head),
        "o_proj": (c["num_attention_heads"] * head, c["hidden_size"]),
        "gate_proj": (c["hidden_size"], c["intermediate_size"]),
        "up_proj": (c["hidden_size"], c["intermediate_size"]),
        "down_proj": (c["intermediate_size"], c["hidden_size"]),
    }
    return c["num_hidden_layers"] * sum(rank * sum(shapes[t]) for t in targets)


def test_training_reads_a_text_as_evaluation_does_with_or_without_a_bos(tok):
    """SmolLM2's tokenizer adds no BOS (its bos_token, <|im_start|>, opens a chat turn): training once
    prepended it anyway, so adapters learnt on text that evaluation never shows them."""
    import copy

    from maple_utils.eval import scoring

    record = _records(1)[0]
    for adds_bos in (True, False):
        own = copy.deepcopy(tok)
        own.add_bos_token = adds_bos
        example = batches.tokenize([record], own, max_length=256).examples[0]
        assert example["input_ids"][:-1] == scoring.encode(own, record["prompt"] + record["response"])
        assert (example["input_ids"][0] == own.bos_token_id) is adds_bos
    # a prompt that a chat template began with BOS's text gets no second BOS, as in evaluation
    chat = {**record, "prompt": tok.bos_token + record["prompt"]}
    example = batches.tokenize([chat], tok, max_length=256).examples[0]
    assert example["input_ids"][:-1] == scoring.encode(tok, chat["prompt"] + chat["response"])
    assert example["input_ids"][1] != tok.bos_token_id


def test_labels_mask_the_prompt_and_keep_eos(tok):
    data = batches.tokenize(_records(2), tok, max_length=64)
    ex = data.examples[0]
    prompt_len = len(tok(_records(1)[0]["prompt"], add_special_tokens=False)["input_ids"]) + 1  # + BOS
    assert ex["input_ids"][0] == tok.bos_token_id
    assert ex["labels"][:prompt_len] == [-100] * prompt_len
    assert ex["labels"][prompt_len:] == ex["input_ids"][prompt_len:]
    assert ex["labels"][-1] == tok.eos_token_id and tok.pad_token_id != tok.eos_token_id
    # the tokens are those of the text the model reads when it answers: prompt and response as one string
    record = _records(2)[1]
    assert ex["input_ids"] != data.examples[1]["input_ids"]
    assert (
        data.examples[1]["input_ids"][1:-1]
        == tok(record["prompt"] + record["response"], add_special_tokens=False)["input_ids"]
    )
    separate = tok(record["response"], add_special_tokens=False)["input_ids"]
    assert [t for t in data.examples[1]["labels"] if t != -100][:-1] != separate  # not a word-initial first piece
    padded = batches.pad(data.examples, tok.pad_token_id)
    assert (padded["targets"].reshape(2, -1)[padded["attention_mask"] == 0] == -100).all()


def test_truncation_and_prompts_that_fill_max_length_are_counted(tok):
    long = {"language": "en", "prompt": "word " * 80, "response": "yes"}
    data = batches.tokenize(_records(3) + [long], tok, max_length=24)
    assert data.dropped == 1 and len(data.examples) == 3
    assert data.truncated == sum(1 for r in _records(3) if len(tok(r["prompt"] + r["response"])["input_ids"]) + 1 > 24)
    assert all(len(e["input_ids"]) <= 24 for e in data.examples)
    with pytest.raises(batches.TrainingDataError, match="max_length=8"):
        batches.tokenize([long], tok, max_length=8)


@pytest.mark.parametrize("model_name, quant, rank", list(itertools.product(MODELS, (4, 8, 16), (4, 8))))
def test_lora_trains_and_round_trips_at_every_quantisation_and_rank(tmp_path, tok, model_name, quant, rank):
    import torch
    from peft import PeftModel

    cfg = config.validate_run(
        {
            "model": model_name,
            "quant": quant,
            "rank": rank,
            "max_steps": 10,
            "batch_size": 4,
            "learning_rate": 5e-3,
            "lora_dropout": 0.0,
            "target_modules": ["attention"],
        }
    )
    loop.seed_everything(0)
    model = modeling.attach_lora(loading.load_base(model_name, quant), rank, 16, 0.0, ["attention"], quant)
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == LAYER[quant]
    trainable, total = modeling.trainable_parameters(model)
    assert trainable == _closed_form(model_name, rank, ["q_proj", "k_proj", "v_proj", "o_proj"])
    record = loop.train(model, tok, batches.tokenize(_records(), tok, 64), cfg, progress=False)
    assert record["steps"] == 10 == len(record["curve"]) and record["padding_fraction"] == 0.0
    assert record["curve"][-1]["loss"] < record["curve"][0]["loss"]  # it learns the tiny task
    summary = loop.summarise(record, trainable, total)
    adapter = loop.save_adapter(model, tok, tmp_path / "adapter", cfg, summary)
    assert json.loads((adapter / "maple_config.json").read_text())["rank"] == rank
    assert f"LoRA r{rank}" in (adapter / "README.md").read_text() and (adapter / "tokenizer.json").is_file()

    x = torch.tensor([tok("### Instruction:\nSay 4")["input_ids"]])
    with torch.inference_mode():
        trained = model(input_ids=x).logits
        reloaded = PeftModel.from_pretrained(loading.load_base(model_name, quant), str(adapter))(input_ids=x).logits
        plain = loading.load_base(model_name, quant)(input_ids=x).logits
    assert torch.allclose(trained, reloaded, atol=1e-5)
    assert not torch.allclose(trained, plain, atol=1e-4)  # the adapter changes the model


@pytest.mark.parametrize(
    "preset, layers",
    [
        ("q_v", ["q_proj", "v_proj"]),
        ("all_linear", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
    ],
)
def test_target_presets_adapt_the_layers_they_name(preset, layers):
    model = modeling.attach_lora(loading.load_base("tiny-mistral", 16), 8, 16, 0.0, [preset], 16)
    assert modeling.trainable_parameters(model)[0] == _closed_form("tiny-mistral", 8, layers)
    assert "lm_head" not in {n for n, p in model.named_parameters() if p.requires_grad and "lora" in n}


def _adapted(model_name: str):
    """A LoRA model whose adapters are not zero (a fresh LoRA B is), so the tests see them act."""
    import torch

    loop.seed_everything(1)
    model = modeling.attach_lora(loading.load_base(model_name, 16), 4, 16, 0.0, ["attention"], 16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    return model


@pytest.mark.parametrize("model_name", MODELS)
def test_a_padding_free_batch_equals_its_examples_one_by_one(tok, model_name):
    import torch
    import torch.nn.functional as F

    model = _adapted(model_name)
    examples = batches.tokenize(_records(6), tok, 64).examples
    packed = batches.pack(examples)
    one_by_one = [model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples]
    with varlen.padding_free(model):
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
        loss = loop._loss_sum(model, packed, "cpu")
    assert torch.allclose(logits, torch.cat(one_by_one), atol=1e-5)
    expected = sum(
        F.cross_entropy(lg[:-1], torch.tensor(e["labels"][1:]), ignore_index=-100, reduction="sum")
        for lg, e in zip(one_by_one, examples)
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # gradients too: the packed loss's equal the sum of the examples' own
    loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    expected = sum(
        F.cross_entropy(
            model(input_ids=torch.tensor([e["input_ids"]])).logits[0][:-1],
            torch.tensor(e["labels"][1:]),
            ignore_index=-100,
            reduction="sum",
        )
        for e in examples
    )
    expected.backward()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(packed_grads[n], p.grad, atol=1e-5), n
    # the same row without the per-example attention lets later examples see earlier ones: not exact
    crossing = model(input_ids=packed["input_ids"], use_cache=False).logits[0]
    assert not torch.allclose(crossing, logits, atol=1e-3)


def test_sliding_window_attention_stays_exact_in_a_packed_row(tok):
    import torch

    model = _adapted("tiny-mistral")
    model.get_base_model().config.sliding_window = 6  # shorter than every example: the banded path runs
    examples = batches.tokenize(_records(4), tok, 64).examples
    packed = batches.pack(examples)
    one_by_one = torch.cat([model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples])
    with varlen.padding_free(model):
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits[0]
    assert torch.allclose(logits, one_by_one, atol=1e-5)
    model.get_base_model().config.sliding_window = 1024
    assert not torch.allclose(
        model(input_ids=torch.tensor([examples[0]["input_ids"]])).logits[0],
        one_by_one[: len(examples[0]["input_ids"])],
        atol=1e-4,
    )  # the window mattered


def _trained_weights(tok, **settings):
    cfg = config.validate_run(
        {"quant": 16, "rank": 4, "max_steps": 3, "learning_rate": 5e-3, "lora_dropout": 0.0, **settings}
    )
    loop.seed_everything(0)
    model = modeling.attach_lora(
        loading.load_base("tiny-llama", 16), 4, 16, 0.0, ["q_v"], 16, gradient_checkpointing=cfg.gradient_checkpointing
    )
    base = model.get_base_model()
    assert (
        getattr(base, "is_activation_checkpointing", getattr(base, "is_gradient_checkpointing", None))
        == cfg.gradient_checkpointing
    )
    record = loop.train(model, tok, batches.tokenize(_records(), tok, 64), cfg, progress=False)
    return record, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_accumulation_padding_and_recomputation_leave_the_update_unchanged(tok):
    import torch

    reference, weights = _trained_weights(tok, batch_size=4, grad_accum=1)
    for settings in (
        {"batch_size": 2, "grad_accum": 2},
        {"batch_size": 4, "gradient_checkpointing": True},
        {"batch_size": 4, "packing": "padded"},
    ):
        record, other = _trained_weights(tok, **settings)
        assert [c["loss"] for c in record["curve"]] == pytest.approx([c["loss"] for c in reference["curve"]], abs=1e-5)
        assert all(torch.allclose(weights[n], other[n], atol=1e-6) for n in weights), settings
    assert reference["padding_fraction"] == 0.0 and record["padding_fraction"] > 0.1


def test_learning_rate_schedules():
    assert [loop.lr_factor("linear", s, 2, 6) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert [round(loop.lr_factor("cosine", s, 0, 4), 4) for s in range(4)] == [1.0, 0.8536, 0.5, 0.1464]
    assert loop.lr_factor("constant", 5, 1, 6) == 1.0


def _job(checkpoints, *args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "training_job.py"), str(checkpoints), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_run_killed_after_its_second_checkpoint_resumes_where_it_stopped(tmp_path):
    from safetensors.torch import load_file

    checkpoints = tmp_path / "checkpoints"
    killed = _job(checkpoints, "--kill-after-checkpoints", "2")
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-000002", "step-000004"]
    interrupted = json.loads((checkpoints / "step-000004" / "trainer_state.json").read_text())
    # a newer checkpoint without its trainer state (cut short, or copied in by hand) must be passed over
    (checkpoints / "step-000006").mkdir()
    (checkpoints / "step-000006" / "trainable.safetensors").write_bytes(
        (checkpoints / "step-000004" / "trainable.safetensors").read_bytes()
    )

    resumed = _job(checkpoints, "--record", str(tmp_path / "resumed.json"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-000006 skipped: no complete trainer state" in resumed.stdout
    assert "resumed from" in resumed.stdout and "step-000004 after step 4 of 8" in resumed.stdout
    uninterrupted = _job(tmp_path / "fresh", "--record", str(tmp_path / "fresh.json"))
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    record, reference = (json.loads((tmp_path / f).read_text()) for f in ("resumed.json", "fresh.json"))
    assert record["steps"] == reference["steps"] == len(record["curve"]) == 8 and record["resumed_from_step"] == 4
    assert record["curve"][:4] == interrupted["curve"]  # the curve continues the interrupted one
    for got, want in zip(record["curve"], reference["curve"]):  # same data order, optimiser, schedule, dropout RNG
        assert got["step"] == want["step"] and got["lr"] == pytest.approx(want["lr"])
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-5)
    assert record["tokens"] == reference["tokens"] and record["supervised_tokens"] == reference["supervised_tokens"]
    weights = load_file(checkpoints / "step-000004" / "trainable.safetensors")
    assert weights and all(".lora_" in name for name in weights)


def test_nan_loss_stops_training(tok):
    import torch

    cfg = config.validate_run({"quant": 16, "max_steps": 3})
    model = modeling.attach_lora(loading.load_base("tiny-llama", 16), 4, 16, 0.0, ["q_proj"], 16)
    with torch.no_grad():
        model.base_model.model.model.embed_tokens.weight[:] = float("nan")
    with pytest.raises(loop.TrainingError, match="nan_loss"):
        loop.train(model, tok, batches.tokenize(_records(), tok, 64), cfg, progress=False)


def test_unknown_target_modules_are_named():
    with pytest.raises(ValueError, match="target_modules \\['c_attn'\\].*q_proj.*presets: q_v"):
        modeling.attach_lora(loading.load_base("tiny-llama", 16), 4, 16, 0.0, ["c_attn"], 16)


def test_an_adapter_folder_travels_its_card_loads_it_as_trained_and_names_what_it_came_from(tmp_path, tok):
    """The card's own loading snippet, run as written, gives the model MAPLE trained (4-bit: with the
    BitsAndBytesConfig it names); adapter_config.json names the base by its model name, not a cache path."""
    import re

    import torch

    from maple_utils import layout
    from maple_utils.train import card

    cfg = config.validate_run({"model": "tiny-llama", "quant": 4, "rank": 4, "max_steps": 3, "learning_rate": 5e-3})
    loop.seed_everything(0)
    model = modeling.attach_lora(loading.load_base("tiny-llama", 4), 4, 16, 0.0, ["attention"], 4)
    record = loop.train(model, tok, batches.tokenize(_records(), tok, 64), cfg, progress=False)
    (tmp_path / layout.TRAIN_RECORD).write_text(json.dumps(record))
    adapter = loop.save_adapter(
        model, tok, tmp_path / "adapter", cfg, {"steps": 3}, record=tmp_path / layout.TRAIN_RECORD
    )
    assert json.loads((adapter / layout.ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == "tiny-llama"
    assert json.loads((adapter / layout.TRAIN_RECORD).read_text())["curve"] == record["curve"]
    text = (adapter / layout.MODEL_CARD).read_text()
    head = text.split("---")[1]
    assert "base_model: tiny-llama" in head and "license: apache-2.0" in head and "library_name: peft" in head
    assert "datasets: [DAMO-NLP-MT/multialpaca]" in head and "qlora" in head
    snippet = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert 'BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"' in snippet
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(adapter)  # the snippet loads "." : the folder it ships in
    try:
        exec(snippet.replace("torch.bfloat16", "torch.float32"), namespace)  # noqa: S102 (CPU compute is fp32)
    finally:
        os.chdir(cwd)
    x = torch.tensor([tok("### Instruction:\nSay 4")["input_ids"]])
    with torch.inference_mode():
        assert torch.allclose(namespace["model"](input_ids=x).logits, model(input_ids=x).logits, atol=1e-5)
    assert namespace["tokenizer"]("Say 4")["input_ids"] == tok("Say 4")["input_ids"]
    # 03's scores go into the card between its markers; a rerun replaces them
    run = type("Run", (), {"adapter_dir": adapter})()
    rows = [
        {"task": "xcopa", "metric": "acc", "language": lang, "value": v, "limit": 4}
        for lang, v in (("en", 0.5), ("zh", 0.25))
    ]
    card.add_scores(run, rows)
    card.add_scores(run, [{**r, "value": 0.75} for r in rows])
    text = (adapter / layout.MODEL_CARD).read_text()
    assert text.count("## Evaluation (03_evaluate)") == 1 and "| xcopa | acc | 0.750 | 0.750 |" in text
    assert "not comparable" in text and text.count("## Load it") == 1
