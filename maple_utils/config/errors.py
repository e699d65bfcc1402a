"""Config errors that name the field as the user wrote it, the value, and what is allowed."""

from __future__ import annotations

import difflib
import re
import reprlib
from typing import Any

from pydantic import BaseModel, ValidationError

# what an error shows of a value: bounded, so a huge input (a long list, a deep mapping) never makes a huge message
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxdict, _SHOWN.maxlist, _SHOWN.maxstring, _SHOWN.maxother = 3, 8, 8, 120, 120


class ConfigError(ValueError):
    """Invalid user input; the message is meant to be shown as is, without a traceback."""


def suggest(value: Any, allowed: list) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def one_of(what: str, value: Any, allowed: list[str]) -> str:
    shown = ", ".join(allowed) if len(allowed) <= 45 else ", ".join(allowed[:45]) + ", ..."
    return f"unknown {what} {value!r}{suggest(value, allowed)} (allowed: {shown})"


def _describe(error: dict, origin: dict[str, str], model: type[BaseModel]) -> str:
    """One pydantic error as a line naming the field (as the user wrote it), the value and what is allowed."""
    loc = [str(p) for p in error["loc"]]
    fields = list(model.model_fields)
    if error["type"] == "extra_forbidden":
        return f"unknown key {loc[0]!r}{suggest(loc[0], fields)} (allowed keys: {', '.join(fields)})"
    msg = error["msg"].removeprefix("Value error, ")
    if not loc:  # a check across fields
        return msg
    where = origin.get(loc[0], loc[0]) + "".join(f"[{p}]" for p in loc[1:])
    if error["type"] == "value_error":  # our own validators already say what is allowed
        return f"field {where!r}: {msg}"
    expected = ""
    if loc[0] in model.model_fields and (error["type"].endswith("_type") or error["type"] == "literal_error"):
        annotation = str(model.model_fields[loc[0]].annotation)
        expected = " (expected " + re.sub(r"typing\.|<class '|'>", "", annotation) + ")"
    return f"field {where!r}: {msg}{expected}; got {_SHOWN.repr(error.get('input'))}"


def message(err: ValidationError, where: str, origin: dict[str, str], model: type[BaseModel]) -> str:
    lines = list(dict.fromkeys(_describe(e, origin, model) for e in err.errors()))
    return f"{where}: invalid configuration\n  - " + "\n  - ".join(lines)
