"""structlog set-up: one JSON object per line on stdout (journald), PII masked everywhere.

Every rendered string passes through `etong.pii.mask_text`, including exception text and
tracebacks, so a call site cannot leak a resident id by accident. Frame locals are never
rendered (they can hold parts of ids; DESIGN §6).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import orjson
import structlog

from etong.pii import mask_text

LogFormat = Literal["json", "console", "auto"]


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {mask_text(str(k)): _mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask_value(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return mask_text(bytes(value).decode("utf-8", "replace"))
    # Anything else would be rendered with str() after this processor: render it now, masked.
    return mask_text(str(value))


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask resident ids and phone numbers in every value."""
    for key, value in event_dict.items():
        event_dict[key] = _mask_value(value)
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and the stdlib root logger) for the daemon and the CLI."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any
    if use_json:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        exc = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        exc = structlog.processors.format_exc_info
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exc,
            # Masking runs after exception rendering so traceback text is masked too.
            mask_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=True,
    )
    # Standard-library loggers (asyncio's "Exception in callback", paho) go through the
    # same masking, so nothing reaches stderr in clear.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.WARNING))


class _MaskingFormatter(logging.Formatter):
    """A stdlib formatter whose output (tracebacks included) is masked."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


def get_logger(name: str) -> Any:
    """A bound structlog logger named after its module."""
    return structlog.get_logger(name)
