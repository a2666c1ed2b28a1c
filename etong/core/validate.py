"""Bounded parsing of inbound payloads into `Event` / `Ack`, or a `Rejection` (pure, hot path).

The checks run cheapest first, and each bounds the work of the next:

1. size of the raw bytes, before anything is decoded;
2. JSON via orjson (strict UTF-8, no NaN/Infinity, written in C so that deep nesting cannot
   exhaust Python's stack); a failure is then classified as bad UTF-8 or bad JSON;
3. nesting depth, and that the payload is an object;
4. the pydantic model (types, lengths, patterns, check digits; see `etong.models`);
5. for events: ids consistent with the topic, and `reported_at` not in the future.

No function here raises on any input. A rejection reason names the field at fault in words a
grid member can act on and never repeats the value that failed: reasons go back to handhelds,
into dead letters and into logs, and the value may be a resident id or a phone number.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from etong.models import Ack, Event


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a payload was refused: becomes a `rejected` receipt and a dead-letter row."""

    reason: str
    """Human-readable, names the field at fault, never echoes personal data."""
    field: str | None = None
    """Dotted path such as "persons[0].id_number"; None for whole-payload problems."""
    security: bool = False
    """A terminal reached for what is not its own (a grid it is not in): a security event,
    the broker's pattern rules being unable to tell that apart (DESIGN §8)."""


def decode_json_object(
    payload: bytes, *, max_payload_bytes: int, max_depth: int = 8
) -> dict[str, object] | Rejection:
    """Decode `payload` as one JSON object within the size and depth bounds, or say why not."""
    if len(payload) > max_payload_bytes:
        return Rejection(f"payload is {len(payload)} bytes; the limit is {max_payload_bytes}")
    try:
        # orjson validates UTF-8 itself, so the hot path decodes the bytes once.
        value: object = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        return _json_failure(payload, exc)
    # Nesting needs an opening bracket per level, so a payload with no more brackets than
    # levels allowed (a report naming a few persons) skips the walk; the count is in C.
    brackets = payload.count(b"{") + payload.count(b"[")
    if brackets > max_depth and _exceeds_depth(value, max_depth):
        return Rejection("payload is nested too deeply")
    if not isinstance(value, dict):
        return Rejection("payload must be a JSON object")
    return value


def parse_event(
    payload: bytes,
    *,
    topic_grid_id: str,
    topic_member_id: str,
    max_payload_bytes: int,
    now: datetime,
    max_future_s: float = 300,
) -> Event | Rejection:
    """Parse an event published on the events topic of `topic_grid_id`/`topic_member_id`.

    `now` must be timezone-aware; a `reported_at` more than `max_future_s` after it is refused
    (DESIGN §2: more than 5 minutes in the future).
    """
    obj = decode_json_object(payload, max_payload_bytes=max_payload_bytes)
    if isinstance(obj, Rejection):
        return obj
    try:
        event = Event.model_validate(obj)
    except ValidationError as exc:
        return rejection_from_validation_error(exc)
    # Ids are not personal data, so naming both sides helps the handheld's installer.
    if event.grid_id != topic_grid_id:
        return Rejection(
            f"grid_id '{event.grid_id}' does not match the topic's grid '{topic_grid_id}'",
            "grid_id",
        )
    if event.member_id != topic_member_id:
        return Rejection(
            f"member_id '{event.member_id}' does not match the topic's member '{topic_member_id}'",
            "member_id",
        )
    if event.reported_at - now > timedelta(seconds=max_future_s):
        return Rejection(
            f"reported_at: more than {max_future_s:g} seconds in the future; "
            "check the handheld's clock",
            "reported_at",
        )
    return event


def parse_ack(
    payload: bytes, *, max_payload_bytes: int, correlation_data: bytes | None = None
) -> Ack | Rejection:
    """Parse an ack published by an officer terminal.

    On MQTT 5 the delivery id may come as the message's Correlation Data instead of (or as
    well as) the `delivery_id` field (DESIGN §2): the push carried it there, and a terminal
    answering through the Response Topic echoes it. When both are given they must agree.
    """
    obj = decode_json_object(payload, max_payload_bytes=max_payload_bytes)
    if isinstance(obj, Rejection):
        return obj
    if correlation_data is not None:
        try:
            from_properties = correlation_data.decode("ascii")
        except UnicodeDecodeError:
            return Rejection("Correlation Data is not a delivery id", "delivery_id")
        given = obj.setdefault("delivery_id", from_properties)
        if given != from_properties:
            return Rejection("delivery_id: differs from the Correlation Data", "delivery_id")
    try:
        return Ack.model_validate(obj)
    except ValidationError as exc:
        return rejection_from_validation_error(exc)


def rejection_from_validation_error(exc: ValidationError) -> Rejection:
    """One short rejection naming the first failing field; pydantic's input value is never used."""
    errors = exc.errors(include_url=False, include_context=True, include_input=False)
    if not errors:  # pydantic always reports at least one; stay total regardless.
        return Rejection("payload is invalid")
    first = errors[0]
    path = _format_loc(first["loc"])
    if path is None:
        return Rejection(f"payload {_describe(first)}")
    return Rejection(f"{path}: {_describe(first)}", path)


def _json_failure(payload: bytes, exc: orjson.JSONDecodeError) -> Rejection:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return Rejection("payload is not valid UTF-8")
    # orjson enforces its own depth limit (1024) while parsing; report it as what it is.
    if "depth" in str(exc):
        return Rejection("payload is nested too deeply")
    # Line and column locate the problem without quoting the payload.
    return Rejection(f"payload is not valid JSON (line {exc.lineno}, column {exc.colno})")


def _exceeds_depth(value: object, max_depth: int) -> bool:
    """True if containers nest more than `max_depth` levels (the top-level object is level 1)."""
    if not isinstance(value, dict | list):
        return False
    # Iterative, so the check itself cannot recurse; it stops at the first level too deep.
    level: list[dict[object, object] | list[object]] = [value]
    depth = 1
    while level:
        if depth > max_depth:
            return True
        children: list[dict[object, object] | list[object]] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            children.extend(item for item in items if isinstance(item, dict | list))
        level = children
        depth += 1
    return False


def _format_loc(loc: tuple[int | str, ...]) -> str | None:
    """("persons", 0, "id_number") → "persons[0].id_number"; () → None (the payload itself)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or None


_RFC3339_WORDS = "must be an RFC 3339 date-time such as 2026-11-28T09:14:14+08:00"
# Pydantic error types whose wording we replace; anything else is described as "is invalid".
_FIXED_WORDS = {
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "missing": "required",
    "timezone_aware": "must include a UTC offset",
    "datetime_type": _RFC3339_WORDS,
    "datetime_parsing": _RFC3339_WORDS,
    "datetime_from_date_parsing": _RFC3339_WORDS,
}
_PATTERN_WORDS = {
    "event_id": "must be 8 to 64 letters, digits, '_' or '-'",
    "phone": "may contain only digits, '+', '-' and spaces",
}
_ID_PATTERN_WORDS = "must be 1 to 64 letters, digits, '_' or '-'"


def _describe(error: ErrorDetails) -> str:
    """Words for one pydantic error, built only from the schema (ctx, field), never the input."""
    kind = error["type"]
    if kind.startswith("etong_"):
        # Our own validators' messages (etong.models) are fixed strings without the input.
        return error["msg"]
    if kind == "string_pattern_mismatch":
        field = error["loc"][-1] if error["loc"] else ""
        return _PATTERN_WORDS.get(str(field), _ID_PATTERN_WORDS)
    return _FIXED_WORDS.get(kind) or _describe_bound(kind, error.get("ctx") or {})


def _describe_bound(kind: str, ctx: dict[str, object]) -> str:
    """Words for the errors that carry the schema's bound or choices in their context."""
    if kind == "literal_error":
        # ctx["expected"] is "'move_in', 'move_out' or 'info_update'": the schema's choices.
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {choices}"
    if kind == "string_too_short":
        minimum = ctx.get("min_length")
        return "must not be empty" if minimum == 1 else f"at least {minimum} characters"
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters"
    if kind in {"too_short", "too_long"}:
        bound = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        entries = "1 entry" if bound == 1 else f"{bound} entries"
        return f"at least {entries}" if kind == "too_short" else f"at most {entries}"
    return "is invalid"
