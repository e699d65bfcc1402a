"""The package's shape: every run-folder file name is spelled in maple_utils/layout.py alone."""

import ast
import json
import re

from conftest import REPO
from maple_utils import layout


def _strings(source: str):
    """(line, text, parent node) of every string constant that is not a docstring."""
    tree = ast.parse(source)
    docs, parents = set(), {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[id(child)] = node
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            yield node.lineno, node.value, parents.get(id(node))


def _sources():
    """(where, code) of every package module but layout.py, and of every notebook code cell (magics left out)."""
    for path in sorted((REPO / "maple_utils").rglob("*.py")):
        if path.name != "layout.py":
            yield str(path.relative_to(REPO)), path.read_text(encoding="utf-8")
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code":
                code = "".join(cell["source"])
                yield f"{path.relative_to(REPO)} cell {i}", re.sub(r"(?m)^\s*[!%].*$", "", code)


def spelled_outside_layout(sources=None) -> list[str]:
    """Where a run-folder name of layout.py is written out again: a file name inside any string (a path, a
    glob, a message), a folder name as a path part (`x / "runs"`, `.glob("runs")`)."""
    names = {v for k, v in vars(layout).items() if k.isupper() and isinstance(v, str) and "{" not in v}
    found = []
    for where, code in sources or _sources():
        for line, text, parent in _strings(code):
            for name in names:
                if "." in name:
                    if re.search(r"(^|[/*\s{}'\"(`])" + re.escape(name) + r"($|[/\s'\")`:,])", text):
                        found.append(f"{where}:{line}: {name!r} in {text[:70]!r}")
                elif text == name and (
                    (isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div))
                    or (isinstance(parent, ast.Call) and getattr(parent.func, "attr", "") in ("glob", "joinpath"))
                ):
                    found.append(f"{where}:{line}: {name!r} as a path part")
    return sorted(found)


def test_every_run_folder_name_is_spelled_in_layout_alone():
    assert spelled_outside_layout() == []


def test_the_check_finds_a_name_spelled_again():
    """The grep above can fail: code that names a run folder's file or folder by its literal is found, a
    docstring or a dictionary key of the same word is not."""
    code = (
        'from pathlib import Path\n\n\ndef f(out):\n    """Reads results.jsonl."""\n'
        '    rows = {"runs": 1}\n    return Path(out) / "runs" / "x" / "results.jsonl", f"see {out}/analysis.html"\n'
    )
    assert spelled_outside_layout([("m.py", code)]) == [
        "m.py:7: 'analysis.html' in '/analysis.html'",
        "m.py:7: 'results.jsonl' in 'results.jsonl'",
        "m.py:7: 'runs' as a path part",
    ]


def _layout_block() -> dict[str, set[str]]:
    """{folder: names} of docs/architecture.md's tree of maple_utils (its first code block)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```")[1]
    listed: dict[str, set[str]] = {}
    folder = ""
    for line in block.splitlines()[2:]:
        match = re.match(r"^( +)(\S+)", line)
        if not match:
            continue
        indent, name = len(match.group(1)), match.group(2)
        if indent == 2:
            folder = name.rstrip("/") if name.endswith("/") else ""
            if not name.endswith("/"):
                listed.setdefault("", set()).add(name)
        elif indent == 4 and folder:
            listed.setdefault(folder, set()).add(name)
    return listed


def test_docs_architecture_lists_every_module_and_registry():
    """docs/architecture.md's tree names every module and registry file of the package, and nothing else."""
    package = REPO / "maple_utils"
    actual: dict[str, set[str]] = {}
    for path in package.rglob("*"):
        if path.suffix in (".py", ".yaml") and "__pycache__" not in path.parts:
            rel = path.relative_to(package)
            folder = rel.parts[0] if len(rel.parts) > 1 else ""
            if path.name == "__init__.py" and folder != "registry":
                continue  # a package's __init__ re-exports; registry's reads the YAML files
            actual.setdefault(folder, set()).add(path.name)
    listed = _layout_block()
    missing = {f: sorted(n - listed.get(f, set())) for f, n in actual.items() if n - listed.get(f, set())}
    stale = {f: sorted(n - actual.get(f, set())) for f, n in listed.items() if n - actual.get(f, set())}
    assert (missing, stale) == ({}, {})


def _functions():
    for path in sorted((REPO / "maple_utils").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path.relative_to(REPO), node


def test_no_function_is_longer_than_80_lines_and_the_runner_is_short():
    long = [f"{path}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)" for path, n in _functions()
            if n.end_lineno - n.lineno + 1 > 80]  # fmt: skip
    assert long == []
    assert len((REPO / "maple_utils" / "grid" / "runner.py").read_text().splitlines()) < 150


def bare_names_compared(sources=None) -> list[str]:
    """Comparisons (==, !=, in) with a job status, an executor's name or a unit's name as a string literal:
    statuses are manifest.Status members, executors the keys of runner.EXECUTORS, units the entries of
    units.UNITS (read by their attributes), and none is spelled in a comparison."""
    from maple_utils import units
    from maple_utils.grid.manifest import Status
    from maple_utils.grid.runner import EXECUTORS

    statuses, executors = {s.value for s in Status}, set(EXECUTORS)
    found = []
    for where, code in sources or _sources():
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Compare):
                parts = [node.left, *node.comparators]
                parts += [e for p in parts if isinstance(p, (ast.Tuple, ast.List, ast.Set)) for e in p.elts]
                names = " ".join(
                    ast.unparse(p) for p in parts if isinstance(p, (ast.Name, ast.Attribute, ast.Subscript))
                )
                # "local" is also a data source and a judge: an executor is what a name called *executor* holds
                bare = statuses | (executors if "executor" in names else set())
                bare |= set(units.UNITS) if "unit" in names else set()  # "adapter" is also a folder's name
                hits = sorted({p.value for p in parts if isinstance(p, ast.Constant) and p.value in bare})
                found += [f"{where}:{node.lineno}: {hit!r}" for hit in hits]
    return found


def test_no_status_or_executor_is_a_bare_string_in_a_comparison():
    assert bare_names_compared() == []
    assert bare_names_compared([("m.py", 'if entry["status"] in ("done", "skipped") or executor == "slurm":\n    pass\n')]) == [
        "m.py:1: 'done'", "m.py:1: 'skipped'", "m.py:1: 'slurm'"]  # fmt: skip
    assert bare_names_compared([("m.py", 'x = stage.unit == "grid" or folder == "adapter"\n')]) == ["m.py:1: 'grid'"]
