"""Validating messages against the published JSON Schemas as a JSON Schema validator would.

Shared by the contract tests. JSON Schema patterns are ECMA-262 regular expressions (JSON
Schema 2020-12 §6.4), where `$` matches only at the very end; Python's `$` also matches before a
final newline, so the `jsonschema` library's `pattern` is replaced by one with ECMA's `$`.
Formats are asserted (`date-time` via rfc3339-validator), as ajv-formats and most generated
clients do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from etong.contract.schemas import published_schemas


def python_regex(pattern: str) -> re.Pattern[str]:
    """A published (ECMA-262) pattern as a Python regex: `$` only at the very end.

    Our patterns use `$` only as their last character, never escaped."""
    return re.compile(pattern[:-1] + r"\Z" if pattern.endswith("$") else pattern)


def _ecma_pattern(
    validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not python_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


# types-jsonschema leaves `extend` unannotated; the class it returns is a Validator.
EcmaValidator: type[Validator] = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _ecma_pattern}
)


@cache
def validator_for(message: str) -> Validator:
    """A validator of the published schema of `message` (event, receipt, push, ack, status)."""
    schema = published_schemas()[message]
    return EcmaValidator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_problems(message: str, value: Any) -> list[str]:
    """What the published schema of `message` finds wrong with `value`; [] when valid."""
    return [error.message for error in validator_for(message).iter_errors(value)]
