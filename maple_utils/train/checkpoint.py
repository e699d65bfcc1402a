"""Training checkpoints: everything a killed run needs to go on exactly where it stopped.

<run>/checkpoints/step-000040/
  trainable.safetensors   the trainable (LoRA) weights
  optimizer.safetensors   the optimiser's state tensors; optimizer.json its groups and scalar state
  rng.safetensors         torch's CPU and CUDA generator states (LoRA dropout draws from them)
  scheduler.json          the learning-rate schedule's state
  trainer_state.json      step, loss curve, counters, data order, Python and NumPy RNG states; written last

A checkpoint is written into a temporary folder and renamed into place, so it is whole or absent; one whose
trainer_state.json is missing or unreadable (copied by hand, or from another tool) is skipped with a
message. Tensors are stored as safetensors only: loading a pickle can run code.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from maple_utils import io

# the checkpoint folder's files, the format this module alone writes and reads (layout.py names the folder)
PREFIX = "step-"
TRAINER_STATE = "trainer_state.json"
TRAINABLE = "trainable.safetensors"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_STATE = "optimizer.json"
RNG = "rng.safetensors"
SCHEDULER = "scheduler.json"


def folder_for(root: Path, step: int) -> Path:
    return Path(root) / f"{PREFIX}{step:06d}"


def _trainable(model) -> dict:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _optimizer_parts(optimizer) -> tuple[dict, dict]:
    import torch

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{key}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _rng_tensors() -> dict:
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = s
    return tensors


def _host_rng() -> dict:
    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def save(root: Path, step: int, model, optimizer, scheduler, trainer_state: dict, keep: int) -> Path:
    """Write the checkpoint after `step` optimiser steps, then drop all but the newest `keep`."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in _trainable(model).items()}, str(tmp / TRAINABLE))
        tensors, meta = _optimizer_parts(optimizer)
        save_file(tensors, str(tmp / OPTIMIZER_TENSORS))
        (tmp / OPTIMIZER_STATE).write_text(json.dumps(meta))
        save_file(_rng_tensors(), str(tmp / RNG))
        (tmp / SCHEDULER).write_text(json.dumps(scheduler.state_dict()))
        (tmp / TRAINER_STATE).write_text(json.dumps({**trainer_state, "step": step, "rng": _host_rng()}))

    path = io.atomic_dir(folder_for(root, step), write)
    for old in complete(root)[keep:]:
        shutil.rmtree(old[0], ignore_errors=True)
    return path


def complete(root: Path) -> list[tuple[Path, dict]]:
    """Complete checkpoints under root with their trainer state, newest first; incomplete ones are
    reported and skipped."""
    found = []
    for folder in sorted(Path(root).glob(f"{PREFIX}*"), reverse=True):
        state_file = folder / TRAINER_STATE
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            if not all((folder / f).is_file() for f in (TRAINABLE, OPTIMIZER_TENSORS, OPTIMIZER_STATE, SCHEDULER, RNG)):
                raise FileNotFoundError("a weights, optimiser, schedule or RNG file is missing")
        except (OSError, ValueError) as err:
            print(f"checkpoint {folder} skipped: no complete trainer state ({err})")  # shown in the notebook
            continue
        found.append((folder, state))
    return found


def latest(root: Path) -> tuple[Path, dict] | None:
    checkpoints = complete(root)
    return checkpoints[0] if checkpoints else None


def restore(folder: Path, state: dict, model, optimizer, scheduler) -> None:
    """Load a checkpoint's weights, optimiser, schedule and RNG states into a freshly built run."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    weights = load_file(str(folder / TRAINABLE))
    params = _trainable(model)
    if set(weights) != set(params):
        raise ValueError(
            f"checkpoint {folder}: its trainable weights do not match this model's "
            f"({len(weights)} stored, {len(params)} trainable); was the LoRA config changed?"
        )
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(weights[name].to(p.device, p.dtype))
    tensors = load_file(str(folder / OPTIMIZER_TENSORS))
    meta = json.loads((folder / OPTIMIZER_STATE).read_text())
    opt_state: dict = {int(k): dict(v) for k, v in meta["scalars"].items()}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        opt_state.setdefault(int(index), {})[name] = value
    groups = meta["param_groups"]
    for group in groups:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
    scheduler.load_state_dict(json.loads((folder / SCHEDULER).read_text()))
    rng = load_file(str(folder / RNG))
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("cuda/"))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = state["rng"]["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
