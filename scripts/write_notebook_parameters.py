"""Write each notebook's `parameters` cell from the field declarations and the stage registry, and its Colab
badge and set-up cell from the declarations below.

    python scripts/write_notebook_parameters.py          # rewrite the cells that differ
    python scripts/write_notebook_parameters.py --check  # exit 1 when a cell differs (what the tests check)

A stage's parameters are the fields of the groups it reads (maple_utils/config/fields.py) and its path
parameters (maple_utils/stages.py), in that order, each with its type, its default and its description as
the comment. Defaults are the smoke grid's first run (params/smoke.yaml): every notebook runs anywhere as
it stands, and run in order 01 to 05 they make, evaluate and report that run under runs/notebooks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SMOKE_GRID = ROOT / "params" / "smoke.yaml"
SCRATCH = "runs/notebooks"  # where the notebooks write at their defaults, relative to the project root
REPOSITORY = "maple-research/maple"
# The revision Colab opens and installs: the badge's branch, and the one the set-up cell checks out, so the
# code installed is the code the notebook was opened from (a release writes its tag here with `make notebooks`).
COLAB_REF = "main"
COLAB_CELL = f"""# Colab only (does nothing under Jupyter or papermill): install MAPLE at the revision this notebook was
# opened from (the badge's), and mount Google Drive: point out_dir there, and outputs and training checkpoints
# survive a disconnect (a rerun resumes training and skips finished evaluations).
import sys

if "google.colab" in sys.modules:
    MAPLE_REF = "{COLAB_REF}"
    !git clone --quiet https://github.com/{REPOSITORY} /content/maple
    !git -C /content/maple checkout --quiet {{MAPLE_REF}} && git -C /content/maple log -1 --format="MAPLE %h, %cs"
    %pip install --quiet -e /content/maple
    sys.path.insert(0, "/content/maple")
    from google.colab import drive

    drive.mount("/content/drive")"""


def literal(value) -> str:
    """A Python literal papermill and the eye both read easily (double-quoted strings)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def parameters_source(stage_name: str) -> str:
    from maple_utils import config, layout, stages
    from maple_utils.config import fields

    stage = stages.get(stage_name)
    first = config.first_run(SMOKE_GRID)
    defaults = {
        **first.model_dump(),
        "out_dir": SCRATCH,
        "run_dir": f"{SCRATCH}/{layout.RUNS_DIR}/{config.run_id(first)}",
    }
    lines = []
    for name in stage.fields:
        lines.append(f"{name}: {fields.annotation_text(name)} = {literal(defaults[name])}  # {fields.describe(name)}")
    for name in stage.paths:
        annotation, doc = stages.PATH_PARAMETERS[name]
        lines.append(f"{name}: {annotation} = {literal(defaults[name])}  # {doc}")
    head = "from typing import Optional\n\n" if any("Optional[" in line for line in lines) else ""
    return head + "\n".join(lines)


def badge(notebook_name: str) -> str:
    return (
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
        f"(https://colab.research.google.com/github/{REPOSITORY}/blob/{COLAB_REF}/notebooks/{notebook_name})"
    )


def colab_cells(notebook: dict, notebook_name: str) -> list[tuple[dict, str]]:
    """(cell, the source it should have) for the title cell's badge line and the Colab set-up cell; none for
    a notebook without a set-up cell (a stage added without Colab support)."""
    title, setup = notebook["cells"][0], notebook["cells"][1]
    if "google.colab" not in "".join(setup["source"]):
        return []
    lines = "".join(title["source"]).split("\n")
    lines = [badge(notebook_name) if line.startswith("[![Open In Colab]") else line for line in lines]
    return [(title, "\n".join(lines)), (setup, COLAB_CELL)]


def parameters_cell(notebook: dict) -> dict:
    tagged = [c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def main(argv: list[str]) -> int:
    from maple_utils import stages
    from maple_utils.paths import notebooks_dir

    check = "--check" in argv
    stale = []
    for stage in stages.all_stages():
        path = notebooks_dir() / stage.notebook
        notebook = json.loads(path.read_text(encoding="utf-8"))
        cells = [(parameters_cell(notebook), parameters_source(stage.name))] + colab_cells(notebook, path.name)
        differ = [(cell, want) for cell, want in cells if "".join(cell["source"]) != want]
        if not differ:
            continue
        stale.append(path.name)
        if not check:
            for cell, want in differ:
                cell["source"] = want.splitlines(keepends=True)
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    verb = "differ from the declarations" if check else "rewritten"
    print(f"{len(stale)} notebook(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
