"""The embedded default: a tokenizer that behaves like Llama-2's and Mistral's, tiny models, samples."""

import hashlib
import shutil

import pytest

from maple_utils.data import languages
from maple_utils.embedded import models, samples, tokenizer
from maple_utils.models.resolve import resolve_model


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-mistral"])
def tok(request, tiny_built):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model(request.param))  # as a hub model's folder loads


def test_bos_is_prepended_and_no_eos_appended_with_llama_ids(tok):
    ids = tok("Hello")["input_ids"]
    assert ids[0] == tok.bos_token_id == 1 and ids[-1] != tok.eos_token_id
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.pad_token is None  # like Llama-2 and Mistral: loaders choose a pad token
    assert tok("Hello", add_special_tokens=False)["input_ids"] == ids[1:]


def test_sentencepiece_word_marker_and_dummy_prefix(tok):
    pieces = tok.convert_ids_to_tokens(tok("The river is calm", add_special_tokens=False)["input_ids"])
    assert pieces[0].startswith("▁") and "▁is" in pieces  # a dummy prefix, and words start with the marker
    assert all(" " not in p for p in pieces)
    assert tok.convert_ids_to_tokens(3) == "<0x00>" and tok.convert_ids_to_tokens(258) == "<0xFF>"


def test_every_language_round_trips_without_unknowns(tok):
    text = tokenizer.corpus()
    for code in languages.codes():
        for sentence in text[code]:
            ids = tok(sentence, add_special_tokens=False)["input_ids"]
            assert tok.unk_token_id not in ids, code
            assert tok.decode(ids) == sentence, code
            assert tok.decode(tok(sentence)["input_ids"], skip_special_tokens=True) == sentence


def test_unseen_characters_fall_back_to_bytes_not_unk(tok):
    text = "☃ 𝔘 ꙮ"  # a snowman, a Fraktur letter and a Cyrillic multiocular O: in no bundled sentence
    assert not set(text) - {" "} & set("".join(s for v in tokenizer.corpus().values() for s in v))
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert tok.unk_token_id not in ids
    assert sum(p.startswith("<0x") for p in pieces) == len("☃".encode()) + len("𝔘".encode()) + len("ꙮ".encode())
    assert tok.decode(ids) == text


@pytest.mark.parametrize("name, cls", [("tiny-llama", "LlamaForCausalLM"), ("tiny-mistral", "MistralForCausalLM")])
def test_tiny_models_load_from_a_folder_like_hub_models(tiny_built, name, cls):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(resolve_model(name))
    assert type(model).__name__ == cls
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 1_000_000  # "a few hundred thousand parameters"
    assert model.config.num_key_value_heads < model.config.num_attention_heads  # GQA like the 7B Mistral
    assert (model.config.bos_token_id, model.config.eos_token_id) == (1, 2)


def test_the_two_architectures_differ_in_weights(tiny_built):
    a = (models.model_dir("llama") / "model.safetensors").read_bytes()
    b = (models.model_dir("mistral") / "model.safetensors").read_bytes()
    assert hashlib.sha256(a).digest() != hashlib.sha256(b).digest()


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_builds_are_deterministic_and_rebuilt_when_missing(tmp_path, monkeypatch, tiny_built):
    monkeypatch.setenv("MAPLE_CACHE", str(tmp_path))
    first = models.model_dir("llama")
    assert first.name == tiny_built["tiny-llama"].name  # the same content hash names the same build
    assert _digest(first / "model.safetensors") == _digest(tiny_built["tiny-llama"] / "model.safetensors")
    tok_digest = _digest(tokenizer.tokenizer_dir() / "tokenizer.json")
    shutil.rmtree(first)
    shutil.rmtree(tokenizer.tokenizer_dir())
    assert _digest(models.model_dir("llama") / "model.safetensors") == _digest(
        tiny_built["tiny-llama"] / "model.safetensors"
    )
    assert _digest(tokenizer.tokenizer_dir() / "tokenizer.json") == tok_digest
    assert not list(tmp_path.glob(".*-*"))  # no temporary build folders left behind


def test_a_change_to_the_build_inputs_builds_anew(tmp_path, monkeypatch, tiny_built):
    monkeypatch.setenv("MAPLE_CACHE", str(tmp_path))
    registry_copy = tmp_path / "registry"
    registry_copy.mkdir()
    from maple_utils import registry

    text = (registry.PACKAGED / "tasks.yaml").read_text(encoding="utf-8")
    (registry_copy / "tasks.yaml").write_text(text.replace("True, False, or Neither?", "True, False or Neither?"))
    before = samples.samples_dir()
    monkeypatch.setenv("MAPLE_REGISTRY", str(registry_copy))
    after = samples.samples_dir()
    assert before != after and before.exists() and after.exists()  # a content hash, not a hand-bumped version


def test_an_interrupted_build_leaves_no_half_built_artefact(tmp_path, monkeypatch):
    from maple_utils.embedded.build import build_atomically

    monkeypatch.setenv("MAPLE_CACHE", str(tmp_path))

    def crash(out):
        (out / "partial").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        build_atomically("thing", "k", crash)
    assert list(tmp_path.iterdir()) == []


def test_samples_cover_every_task_language_in_hub_schema(tiny_built):
    from maple_utils import config
    from maple_utils.eval.tasks import load_docs, load_task

    for task in config.known_tasks():
        spec = load_task(task)
        for code in spec.languages():
            eval_split, fewshot_split = spec.splits_for(spec.config_for(code))
            docs, origin = load_docs(spec, code, eval_split)
            assert docs and spec.render(docs[0]) and origin.source == "embedded"
            assert set(docs[0]) == set(spec.embedded_sample)
            if spec.scoring == "loglikelihood":
                assert 0 <= spec.label(docs[0]) < len(spec.choices)
            else:
                assert spec.answers(docs[0])
    xquad = load_docs(load_task("xquad"), "hi", "validation")[0][0]
    start = xquad["answers"]["answer_start"][0]
    assert xquad["context"][start:].startswith(xquad["answers"]["text"][0])
    belebele = load_docs(load_task("belebele"), "th", "test")[0][0]
    assert belebele["dialect"] == "tha_Thai" and belebele["correct_answer_num"] in {"1", "2", "3", "4"}


def test_instruction_samples_follow_each_release_convention(tiny_built):
    from maple_utils.io import read_jsonl

    multi = read_jsonl(samples.sample_path("multialpaca", "es", "train"))
    alpaca = read_jsonl(samples.sample_path("alpaca", "en", "train"))
    assert None in {r["input"] for r in multi} and "" in {r["input"] for r in alpaca}  # null vs "" (release formats)
    assert all(r["id"] for r in read_jsonl(samples.sample_path("bactrian-x-11", "de", "train")))
