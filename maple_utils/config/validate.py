"""Plain values to a RunConfig, or a ConfigError naming every bad field."""

from __future__ import annotations

from pydantic import ValidationError

from maple_utils.config.errors import ConfigError, message
from maple_utils.config.fields import RunConfig


def validate_run(values: dict, where: str = "config", origin: dict[str, str] | None = None) -> RunConfig:
    try:
        return RunConfig.model_validate(values)
    except ValidationError as err:
        raise ConfigError(message(err, where, origin or {}, RunConfig)) from None
