"""The language table (registry/languages.yaml): codes, scripts, per-dataset config names, groups."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from maple_utils import registry

ROW_FIELDS = ("code", "name", "script", "group")  # every other column of a row names a dataset's config


@dataclass(frozen=True)
class Language:
    code: str
    name: str
    script: str
    group: str
    configs: dict  # dataset column (a task's language_column in tasks.yaml, or an instruction set's) -> its config name, or None

    def config_for(self, column: str) -> str | None:
        return self.configs.get(column)


def table() -> dict[str, Language]:
    """All languages by ISO code, in the table's order (built once per registry file: planning a grid asks
    for it thousands of times)."""
    return _table(str(registry.folder_for("languages")))


@functools.cache
def _table(folder: str) -> dict[str, Language]:
    rows = registry.read("languages")["languages"]
    columns = {c for r in rows for c in r if c not in ROW_FIELDS}
    for task, spec in registry.read("tasks")["tasks"].items():
        if spec["language_column"] not in columns:
            raise ValueError(
                f"{registry.folder_for('tasks') / 'tasks.yaml'}: task {task}: language_column "
                f"{spec['language_column']!r} is not a column of {registry.folder_for('languages') / 'languages.yaml'} "
                f"(columns: {', '.join(sorted(columns))})"
            )
    return {
        r["code"]: Language(
            code=r["code"],
            name=r["name"],
            script=r["script"],
            group=r["group"],
            configs={c: r.get(c) for c in sorted(columns)},
        )
        for r in rows
    }


def codes() -> list[str]:
    return list(table())


def supporting(column: str) -> list[str]:
    """Codes of the languages for which the dataset column has a config."""
    return [code for code, lang in table().items() if lang.config_for(column)]
