"""The real logging configuration: what a log line can carry, in both formats and on stderr."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from tests.logcapture import captured_logs

DOTTED_ID = "330211.19880901.3088"
SPACED_PHONE = "+86 138 0013 8000"


def _parse(topic: str) -> None:
    raise ValueError(f"cannot parse topic {topic}")


def _fail_with(topic: str) -> None:
    try:
        _parse(topic)
    except ValueError:
        structlog.get_logger("t").exception("parse_failed", topic=topic)


def test_json_lines_mask_and_escape_values_and_exception_text(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = f"etong/v1/grid/ZS-017/member/{DOTTED_ID}\u2028\u202e/{SPACED_PHONE}"
    with captured_logs(monkeypatch, "json") as logs:
        _fail_with(topic)
        structlog.get_logger("t").info("big", value="v" * 100_000)
    raw = logs.stdout.getvalue()
    assert "\u2028" not in raw and "\u202e" not in raw
    first, big = (json.loads(line) for line in raw.splitlines())
    assert first["topic"] == (
        "etong/v1/grid/ZS-017/member/330****************8\\u2028\\u202e/+86************00"
    )
    rendered = json.dumps(first["exception"], ensure_ascii=False)
    assert "cannot parse topic etong/v1/grid/ZS-017/member/330*" in rendered
    assert "19880901" not in rendered and "0013" not in rendered
    assert len(big["value"]) < 2100 and big["value"].endswith("…[truncated, 100000 bytes]")


def test_console_lines_escape_values_and_keep_only_the_tracebacks_own_newlines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with captured_logs(monkeypatch, "console") as logs:
        _fail_with(f"{DOTTED_ID}\n2026-11-20 [info] forged line")
    out = logs.stdout.getvalue()
    assert "19880901" not in out
    assert "\\u000a2026-11-20 [info] forged line" in out
    # Inside the traceback the newline stays (a traceback reads as one), indented like all of it.
    assert "\n  2026-11-20 [info] forged line" in out
    assert not any(line.startswith("2026-11-20 [info] forged") for line in out.splitlines())
    assert "\n  Traceback (most recent call last):\n" in out


def test_stdlib_loggers_on_stderr_are_masked_and_escaped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with captured_logs(monkeypatch, "json") as logs:
        logging.getLogger("paho").warning("bad topic %s", f"{SPACED_PHONE}\u2029\x1b[2J")
    err = logs.stderr.getvalue()
    assert err == "WARNING paho: bad topic +86************00\\u2029\\u001b[2J\n"


def _explode() -> None:
    raise OSError("boom")


def test_a_stdlib_message_cannot_start_a_line_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    with captured_logs(monkeypatch, "json") as logs:
        try:
            _explode()
        except OSError:
            logging.getLogger("asyncio").exception("Exception in callback\nERROR forged: x")
    lines = logs.stderr.getvalue().splitlines()
    assert lines[0] == "ERROR asyncio: Exception in callback"
    assert all(line.startswith("  ") for line in lines[1:])
    assert "  ERROR forged: x" in lines and "  OSError: boom" in lines
