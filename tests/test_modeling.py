"""Scoring and adapter loading on the tiny models, through real bitsandbytes and PEFT on the CPU (training: test_training.py)."""

import pytest

from maple_utils.eval import scoring
from maple_utils.models import loading
from maple_utils.train import modeling


@pytest.fixture(scope="module")
def tok(tiny_built):
    return loading.load_tokenizer("tiny-llama")


def test_batched_loglikelihood_equals_one_by_one(tok):
    model = loading.load_base("tiny-mistral", 16)
    requests = [
        ("The river is", " calm"),
        ("Children read books at the school", " library."),
        ("早上河水", "很平静。"),
        ("Answer:", " True"),
    ]
    batched = scoring.loglikelihood(model, tok, requests, batch_size=4)
    single = [scoring.loglikelihood(model, tok, [r], batch_size=1)[0] for r in requests]
    for (a, ga), (b, gb) in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    assert all(ll < 0 for ll, _ in batched)


def test_batched_generation_with_left_padding_equals_one_by_one(tok):
    model = loading.load_base("tiny-llama", 16)
    prompts = ["The river is calm in the", "Kinder", "早上河水很平静。孩子们在学校图书馆里"]
    batched = scoring.generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [scoring.generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"  # restored for training


def test_a_pickled_adapter_is_refused_before_the_base_loads(tmp_path):
    import torch

    model = modeling.attach_lora(loading.load_base("tiny-llama", 16), 4, 16, 0.0, ["q_proj"], 16)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_model.safetensors").unlink()
    torch.save(weights, tmp_path / "adapter_model.bin")
    with pytest.raises(ValueError, match="no adapter_model.safetensors .found: adapter_model.bin.; only safetensors"):
        loading.load_adapted("tiny-llama", 16, str(tmp_path))
