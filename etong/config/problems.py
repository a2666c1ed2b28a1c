"""The wording of config and roster problems: "dotted.key: what is wrong", one per line.

Both `etong.config` and `etong.roster` report through these functions, so a problem reads the
same whichever file it is in, and neither ever echoes the value pydantic saw.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from etong.config.fields import config_fields, section_model

_TEMPLATES: dict[str, str] = {
    "greater_than_equal": "must be at least {ge}",
    "greater_than": "must be greater than {gt}",
    "less_than_equal": "must be at most {le}",
    "less_than": "must be less than {lt}",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "literal_error": "must be {expected}",
    "path_type": "must be a path (a string)",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dataclass_type": "must be a table",
    "dataclass_args_type": "must be a table",
    "dict_type": "must be a table",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "date_type": "must be a date (YYYY-MM-DD)",
    "date_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_inexact": "must be a date (YYYY-MM-DD), not a date-time",
    "date_from_datetime_parsing": "must be a date (YYYY-MM-DD)",
    "too_short": "must have at least {min_length} entries",
    "too_long": "must have at most {max_length} entries",
    "missing": "is required",
    "missing_argument": "is required",
}


def close_match_hint(word: str, choices: Mapping[str, Any], prefix: str = "") -> str:
    """' (did you mean 'x'?)' for the closest of `choices`, or '' when none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{prefix}{match[0]}'?)" if match else ""


def raise_problems(found: list[str]) -> None:
    """Raise a model validator's problems together, one "key: text" per line.

    `validation_problems` splits the lines again and puts each under its own key.
    """
    if found:
        raise ValueError("\n".join(found))


def validation_problems(
    exc: ValidationError,
    model: type[BaseModel] | None = None,
    prefix: str = "",
    keys_at: Callable[[tuple[int | str, ...]], Mapping[str, Any]] | None = None,
) -> list[str]:
    """Turn a pydantic ValidationError into "dotted.key: what is wrong" lines.

    Never echoes the input pydantic saw (it may be personal data, or a password); only our own
    validators name a value, and only where it is harmless (a time zone). `model` lets an
    unknown key get a "did you mean" hint; `prefix` is put before every key (e.g. a roster row).
    A validator raising ValueError("key: text\\nother: text") reports two problems on those keys.
    `keys_at(location)` gives the keys accepted there instead, where `model` is not a model
    (the roster's rows are dataclasses: pydantic names their unknown keys
    "unexpected_keyword_argument").
    """
    problems: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = tuple(error["loc"])
        where = _dotted(loc, prefix)
        if error["type"] in {"extra_forbidden", "unexpected_keyword_argument"}:
            if keys_at is not None:
                choices = keys_at(loc[:-1])
            else:
                choices = config_fields(_model_at(model, loc[:-1])) if model else {}
            owner = where.rpartition(".")[0] if "." in where else ""
            hint = close_match_hint(str(loc[-1]), choices, prefix=f"{owner}." if owner else "")
            problems.append(f"unknown key '{where}'{hint}")
            continue
        if error["type"] == "value_error":
            message = str(error["msg"]).removeprefix("Value error, ")
            problems += [_join(where, line) for line in message.splitlines()]
            continue
        template = _TEMPLATES.get(error["type"])
        # 0.0 reads as 0 in a message about a config file.
        ctx = {
            key: f"{v:g}" if isinstance(v, float) else v for key, v in error.get("ctx", {}).items()
        }
        try:
            message = template.format(**ctx) if template else str(error["msg"])
        except (KeyError, IndexError):
            message = str(error["msg"])
        problems.append(_join(where, message))
    return problems


def _join(where: str, message: str) -> str:
    # A model-level validator reports "key: text" at its model's location; merge them so the
    # problem reads "delivery.backoff_max_s: ..." rather than "delivery: backoff_max_s: ...".
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", head):
        return f"{where}.{head}: {rest}" if where else f"{head}: {rest}"
    return f"{where}: {message}" if where else message


def _dotted(loc: tuple[int | str, ...], prefix: str) -> str:
    """A pydantic location as the key an operator reads: `delivery.max_attempts`, `x[#2].id`."""
    text = prefix
    for part in loc:
        if isinstance(part, int):
            text += f"[#{part + 1}]"
        else:
            text += f".{part}" if text else part
    return text


def _model_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> type[BaseModel]:
    """The (section) model a location points into, for the keys an unknown key is matched to."""
    current = model
    for part in loc:
        if not isinstance(part, str) or part not in current.model_fields:
            continue
        inner = section_model(current.model_fields[part].annotation)
        if inner is not None:
            current = inner
    return current
