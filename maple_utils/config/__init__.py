"""Configs: every field declared once (`fields`), validation with errors that name the field (`errors`,
`validate`), run and data ids (`identity`), and grid files (`grid`)."""

from maple_utils.config.errors import ConfigError
from maple_utils.config.fields import RunConfig, fields_of, groups, known_datasets, known_models, known_tasks
from maple_utils.config.grid import (
    GridConfig,
    effective_yaml,
    expand,
    first_run,
    load_grid,
    parse_overrides,
    resolve_includes,
)
from maple_utils.config.ids import data_id, model_short, run_id
from maple_utils.config.validate import validate_run

__all__ = [
    "ConfigError",
    "RunConfig",
    "GridConfig",
    "validate_run",
    "load_grid",
    "resolve_includes",
    "parse_overrides",
    "effective_yaml",
    "expand",
    "first_run",
    "run_id",
    "data_id",
    "model_short",
    "fields_of",
    "groups",
    "known_models",
    "known_datasets",
    "known_tasks",
]
