import hashlib

import pytest

from maple_utils import languages, tiny


def test_tokenizer_covers_every_script_without_unknowns(tiny_built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny.tokenizer_dir())
    assert tok.pad_token_id not in (None, tok.eos_token_id)
    for code in languages.codes():
        for sentence in tiny.corpus()[code]:
            ids = tok(sentence, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == sentence, code


@pytest.mark.parametrize("name, cls", [("tiny-llama", "LlamaForCausalLM"), ("tiny-mistral", "MistralForCausalLM")])
def test_tiny_models_load_from_a_folder_like_hub_models(tiny_built, name, cls):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny.resolve_model(name))
    assert type(model).__name__ == cls
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 1_000_000  # "a few hundred thousand parameters"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA like the 7B Mistral


def test_the_two_architectures_differ_in_weights(tiny_built):
    a = (tiny.model_dir("llama") / "model.safetensors").read_bytes()
    b = (tiny.model_dir("mistral") / "model.safetensors").read_bytes()
    assert hashlib.sha256(a).digest() != hashlib.sha256(b).digest()


def test_build_is_deterministic_and_rebuilt_when_missing(tmp_path, monkeypatch, tiny_built):
    monkeypatch.setenv("MAPLE_CACHE", str(tmp_path))
    first = tiny.model_dir("llama")
    digest = hashlib.sha256((first / "model.safetensors").read_bytes()).hexdigest()
    tok_digest = hashlib.sha256((tiny.tokenizer_dir() / "tokenizer.json").read_bytes()).hexdigest()
    assert digest == hashlib.sha256((tiny_built["tiny-llama"] / "model.safetensors").read_bytes()).hexdigest()
    import shutil

    shutil.rmtree(first)
    shutil.rmtree(tiny.tokenizer_dir())
    again = tiny.model_dir("llama")
    assert hashlib.sha256((again / "model.safetensors").read_bytes()).hexdigest() == digest
    assert hashlib.sha256((tiny.tokenizer_dir() / "tokenizer.json").read_bytes()).hexdigest() == tok_digest
    assert not list(tmp_path.glob(".*-*"))  # no temporary build folders left behind


def test_an_interrupted_build_leaves_no_half_built_artefact(tmp_path, monkeypatch):
    monkeypatch.setenv("MAPLE_CACHE", str(tmp_path))

    def crash(out):
        (out / "partial").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        tiny._build_atomically(tmp_path / "thing", crash)
    assert not (tmp_path / "thing").exists()
    assert list(tmp_path.iterdir()) == []


def test_samples_cover_every_task_language_in_hub_schema(tiny_built):
    from maple_utils.tasks import all_tasks, load_docs, load_task

    for task in all_tasks():
        spec = load_task(task)
        for code in spec.languages():
            eval_split, fewshot_split = spec.splits_for(spec.config_for(code))
            docs = load_docs(spec, code, eval_split)
            assert docs and spec.render(docs[0])
            if spec.scoring == "loglikelihood":
                assert 0 <= spec.label(docs[0]) < len(spec.choices)
            else:
                assert spec.answers(docs[0])
    xquad = load_docs(load_task("xquad"), "hi", "validation")[0]
    start = xquad["answers"]["answer_start"][0]
    assert xquad["context"][start:].startswith(xquad["answers"]["text"][0])
