"""Run ids and data ids: short stable hashes of the fields a stage's output depends on.

An adapter's id hashes the fields its training stage reads, so changing an evaluation setting keeps the
trained adapter; a base model's id hashes model and quantisation only. Ids are `slug-<8 hex>`, e.g.
`tiny-llama_multialpaca_r4_q4-1a2b3c4d`; tests pin literal ids, so a change here is never silent.
"""

from __future__ import annotations

import re
from pathlib import Path

from maple_utils import registry, units
from maple_utils.config.fields import RunConfig, known_models

BASE_FIELDS = ("model", "quant")


def _stage_fields(unit: units.Unit) -> list[str]:
    from maple_utils import stages

    return sorted({f for s in stages.of_unit(unit) for f in s.outcome_fields})


def train_fields() -> list[str]:
    """The fields of the stages that make an adapter (its id hashes them)."""
    return _stage_fields(units.ADAPTER)


def data_fields() -> list[str]:
    """The fields of the stages that prepare a data set (its id hashes them)."""
    return _stage_fields(units.DATASET)


def model_short(model: str) -> str:
    entry = known_models().get(model, {})
    if entry.get("short"):
        return entry["short"]
    return re.sub(r"[^a-z0-9.-]+", "-", Path(model).name.lower()).strip("-") or "model"


def data_id(cfg: RunConfig) -> str:
    return f"{cfg.dataset}-{registry.stable_hash(cfg.hashed(data_fields()))}"


def run_id(cfg: RunConfig) -> str:
    """Id of an adapter (training run), or of a base model evaluated alone when dataset is None."""
    if cfg.dataset is None:
        return f"{model_short(cfg.model)}_base_q{cfg.quant}-{registry.stable_hash(cfg.subset(BASE_FIELDS))}"
    slug = f"{model_short(cfg.model)}_{cfg.dataset}_r{cfg.rank}_q{cfg.quant}"
    return f"{slug}-{registry.stable_hash(cfg.hashed(train_fields()))}"
