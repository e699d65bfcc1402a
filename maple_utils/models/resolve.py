"""What `from_pretrained` loads for a model name of a grid.

- an embedded model (registry `embedded:`): its folder, built here (maple_utils.embedded);
- a packaged model (registry `packaged:`): its converted safetensors folder (maple_utils.models.packaged);
- a local folder: itself; anything else: a hub id.
"""

from __future__ import annotations

from maple_utils import registry
from maple_utils.paths import resolve


def resolve_model(model: str) -> str:
    entry = registry.read("models")["models"].get(model, {})
    if entry.get("embedded"):
        from maple_utils.embedded.models import model_dir

        return str(model_dir(entry["embedded"]))
    if entry.get("packaged"):
        from maple_utils.models.packaged import converted_dir

        return str(converted_dir(model))
    local = resolve(model)
    return str(local) if local.is_dir() else model
