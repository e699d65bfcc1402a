"""What `from_pretrained` loads for a model name of a grid.

- an embedded model (registry `embedded:`): its folder, built here (maple_utils.embedded);
- a packaged model (registry `packaged:`): its converted safetensors folder (maple_utils.models.packaged);
- a local folder: itself; anything else: a hub id.
"""

from __future__ import annotations

from pathlib import Path

from maple_utils import layout, registry
from maple_utils.paths import resolve


def resolve_model(model: str) -> str:
    entry = registry.read("models")["models"].get(model, {})
    if entry.get("embedded"):
        from maple_utils.embedded.models import model_dir

        return str(model_dir(entry["embedded"]))
    if entry.get("packaged"):
        from maple_utils.models.packaged import converted_dir

        return str(converted_dir(model))
    local = local_folder(model)
    return str(local) if local is not None else model


def loadable(model: str) -> str:
    """resolve_model's answer, once a local folder is known to hold what loading needs (else a ValueError)."""
    local = local_folder(model)
    problem = folder_problem(local) if local is not None else None
    if problem:
        raise ValueError(problem)
    return resolve_model(model)


# What a model folder must hold for MAPLE to load it (transformers' own file names)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt")


def folder_problem(folder: str | Path) -> str | None:
    """What a local model folder lacks to be loaded (config.json, weights as safetensors, a tokenizer), or None.
    Pickled (.bin, .pt) and GGUF weights are not loaded: a pickle can run code, and a GGUF file needs converting."""
    folder = Path(folder)
    lacking = []
    if not (folder / layout.MODEL_CONFIG).is_file():
        lacking.append(layout.MODEL_CONFIG)
    if not any((folder / w).is_file() for w in WEIGHTS) and not any(folder.glob("*.safetensors")):
        other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
        found = (
            f" (it holds {', '.join(other[:3])}: pickled or GGUF weights are not loaded; save the model "
            "with save_pretrained(safe_serialization=True))"
            if other
            else ""
        )
        lacking.append(f"weights as safetensors{found}")
    if not any((folder / t).is_file() for t in TOKENIZER_FILES):
        lacking.append(f"tokenizer (one of {', '.join(TOKENIZER_FILES)}; save it with tokenizer.save_pretrained)")
    if not lacking:
        return None
    return f"model folder {folder} has no {'; no '.join(lacking)}"


def local_folder(model: str) -> Path | None:
    """The folder of a model given as a local folder (not a registered name, not a hub id), or None."""
    if model in registry.read("models")["models"]:
        return None
    folder = resolve(model)
    return folder if folder.is_dir() else None
