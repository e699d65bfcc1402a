"""Write each notebook's `parameters` cell from the field declarations and the stage registry.

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
    defaults = {**first.model_dump(), "out_dir": SCRATCH,
                "run_dir": f"{SCRATCH}/{layout.RUNS_DIR}/{config.run_id(first)}"}
    lines = []
    for name in stage.fields:
        lines.append(f"{name}: {fields.annotation_text(name)} = {literal(defaults[name])}  # {fields.describe(name)}")
    for name in stage.paths:
        annotation, doc = stages.PATH_PARAMETERS[name]
        lines.append(f"{name}: {annotation} = {literal(defaults[name])}  # {doc}")
    head = "from typing import Optional\n\n" if any("Optional[" in line for line in lines) else ""
    return head + "\n".join(lines)


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
        cell = parameters_cell(notebook)
        want = parameters_source(stage.name)
        if "".join(cell["source"]) == want:
            continue
        stale.append(path.name)
        if not check:
            cell["source"] = want.splitlines(keepends=True)
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    verb = "differ from the declarations" if check else "rewritten"
    print(f"{len(stale)} parameters cell(s) {verb}" + (f": {', '.join(stale)}" if stale else ""))
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
