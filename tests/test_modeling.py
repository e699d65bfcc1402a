"""Training, adapters and scoring on the tiny models, through real bitsandbytes and PEFT on the CPU."""

import pytest

from maple_utils import config
from maple_utils.eval import scoring
from maple_utils.train import loop as training
from maple_utils.train import modeling


@pytest.fixture(scope="module")
def tok(tiny_built):
    return modeling.load_tokenizer("tiny-llama")


def _records(n=16):
    return [{"language": "en", "prompt": f"### Instruction:\nSay {i}\n\n### Response:\n", "response": f"number {i % 3}"}
            for i in range(n)]


def test_labels_mask_the_prompt_and_keep_eos(tok):
    ex = training.tokenize(_records(1), tok, max_length=64)[0]
    prompt_len = len(tok(_records(1)[0]["prompt"], add_special_tokens=False)["input_ids"]) + 1  # + BOS
    assert ex["labels"][:prompt_len] == [-100] * prompt_len
    assert ex["labels"][-1] == tok.eos_token_id and ex["input_ids"][-1] == tok.eos_token_id
    ids, mask, labels = training.collate(training.tokenize(_records(2), tok, 64) + [ex], tok.pad_token_id)
    assert (labels[mask == 0] == -100).all()
    assert tok.pad_token_id != tok.eos_token_id


@pytest.mark.parametrize("quant, layer", [(4, "Linear4bit"), (8, "Linear8bitLt"), (16, "Linear")])
def test_lora_trains_at_every_quantisation_and_round_trips(tmp_path, tok, quant, layer):
    cfg = config.validate_run({"quant": quant, "rank": 4, "max_steps": 12, "batch_size": 4, "learning_rate": 5e-3})
    base = modeling.load_base("tiny-llama", quant)
    training.seed_everything(0)
    model = modeling.attach_lora(base, 4, 16, 0.0, ["q_proj", "v_proj", "o_proj"], quant)
    assert type(model.base_model.model.model.layers[0].self_attn.q_proj.base_layer).__name__ == layer
    trainable, total = modeling.trainable_parameters(model)
    assert 0 < trainable < total / 10
    record = training.train(model, tok, training.tokenize(_records(), tok, 64), cfg, progress=False)
    assert record["steps"] == 12
    assert record["curve"][-1]["loss"] < record["curve"][0]["loss"]  # it learns the tiny task
    adapter = training.save_adapter(model, tok, tmp_path / "adapter")
    assert (adapter / "adapter_model.safetensors").exists() and (adapter / "adapter_config.json").exists()

    import torch

    x = torch.tensor([tok("### Instruction:\nSay 4", add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        trained = model(input_ids=x).logits
        reloaded = modeling.load_adapted("tiny-llama", quant, str(adapter))(input_ids=x).logits
        plain = modeling.load_base("tiny-llama", quant)(input_ids=x).logits
    assert torch.allclose(trained, reloaded, atol=1e-5)
    assert not torch.allclose(trained, plain, atol=1e-4)  # the adapter changes the model


def test_nan_loss_stops_training(tok):
    import torch

    cfg = config.validate_run({"quant": 16, "max_steps": 3})
    model = modeling.attach_lora(modeling.load_base("tiny-llama", 16), 4, 16, 0.0, ["q_proj"], 16)
    with torch.no_grad():
        model.base_model.model.model.embed_tokens.weight[:] = float("nan")
    with pytest.raises(training.TrainingError, match="nan_loss"):
        training.train(model, tok, training.tokenize(_records(), tok, 64), cfg, progress=False)


def test_unknown_target_modules_are_named():
    with pytest.raises(ValueError, match="target_modules \\['c_attn'\\].*q_proj"):
        modeling.attach_lora(modeling.load_base("tiny-llama", 16), 4, 16, 0.0, ["c_attn"], 16)


def test_batched_loglikelihood_equals_one_by_one(tok):
    model = modeling.load_base("tiny-mistral", 16)
    requests = [("The river is", " calm"), ("Children read books at the school", " library."),
                ("早上河水", "很平静。"), ("Answer:", " True")]
    batched = scoring.loglikelihood(model, tok, requests, batch_size=4)
    single = [scoring.loglikelihood(model, tok, [r], batch_size=1)[0] for r in requests]
    for (a, ga), (b, gb) in zip(batched, single):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb
    assert all(ll < 0 for ll, _ in batched)


def test_batched_generation_with_left_padding_equals_one_by_one(tok):
    model = modeling.load_base("tiny-llama", 16)
    prompts = ["The river is calm in the", "Kinder", "早上河水很平静。孩子们在学校图书馆里"]
    batched = scoring.generate(model, tok, prompts, max_new_tokens=6, batch_size=3)
    single = [scoring.generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right"  # restored for training


def test_a_pickled_adapter_is_refused_before_the_base_loads(tmp_path):
    import torch

    model = modeling.attach_lora(modeling.load_base("tiny-llama", 16), 4, 16, 0.0, ["q_proj"], 16)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "adapter_model.safetensors")
    (tmp_path / "adapter_model.safetensors").unlink()
    torch.save(weights, tmp_path / "adapter_model.bin")
    with pytest.raises(ValueError, match="no adapter_model.safetensors .found: adapter_model.bin.; only safetensors"):
        modeling.load_adapted("tiny-llama", 16, str(tmp_path))
