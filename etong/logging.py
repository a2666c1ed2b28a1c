"""structlog set-up: one JSON object per line on stdout (journald), PII masked everywhere.

Every rendered string passes through `etong.textsafety` (resident ids and phone numbers
masked, control characters escaped, length bounded), including exception text and
tracebacks, so a call site cannot leak a resident id or forge a log line by accident.
Frame locals are never rendered (they can hold parts of ids; DESIGN §6).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import orjson
import structlog

from etong.textsafety import TRACEBACK_CAP, bounded, for_humans

LogFormat = Literal["json", "console", "auto"]


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: every value made safe for a person to read (etong.textsafety).

    Resident ids and phone numbers masked, line and format control characters escaped,
    each string bounded (`VALUE_CAP`; a console traceback `TRACEBACK_CAP`, its newlines kept).
    """
    for key, value in event_dict.items():
        if key == "exception" and isinstance(value, str):
            event_dict[key] = bounded(value, TRACEBACK_CAP, keep_newlines=True)
        else:
            event_dict[key] = for_humans(value)
    return event_dict


def indent_traceback(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor (console format): every line of a traceback indented.

    A traceback keeps its newlines on a console, so text inside it (an exception message
    quoting a topic) could start a line that looks like a log line of its own; indented, it
    can only read as part of the traceback.
    """
    exception = event_dict.get("exception")
    if isinstance(exception, str):
        event_dict["exception"] = "\n".join("  " + line for line in exception.split("\n"))
    return event_dict


def _orjson_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog (and the stdlib root logger) for the daemon and the CLI."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: Any
    console_only: list[Any] = []
    if use_json:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        exc = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
        exc = structlog.processors.format_exc_info
        console_only.append(indent_traceback)
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            exc,
            # Masking runs after exception rendering so traceback text is masked too.
            mask_personal_data,
            *console_only,
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
    # asyncpg's pool warns with a 40-line traceback each time it fails to reopen a connection
    # (every ~1.25 s while PostgreSQL is away); the cluster says the same once per lease tick
    # as `cluster_tick_failed` naming the database, so only its errors come through.
    logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)


class _MaskingFormatter(logging.Formatter):
    """A stdlib formatter whose output (tracebacks included) is masked, escaped and bounded."""

    def format(self, record: logging.LogRecord) -> str:
        text = bounded(super().format(record), TRACEBACK_CAP, keep_newlines=True)
        # As on the console (indent_traceback): only a record's first line starts a line.
        return text.replace("\n", "\n  ")


def get_logger(name: str) -> Any:
    """A bound structlog logger named after its module."""
    return structlog.get_logger(name)
