"""The daemon's real logging configuration, writing into buffers a test can read."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog

from etong.logging import LogFormat, configure_logging


@dataclass
class CapturedLogs:
    """What structlog wrote (stdout) and what the stdlib loggers wrote (stderr)."""

    stdout: io.StringIO
    stderr: io.StringIO


@contextlib.contextmanager
def captured_logs(monkeypatch: pytest.MonkeyPatch, fmt: LogFormat) -> Iterator[CapturedLogs]:
    """`configure_logging(fmt=fmt)` as the daemon calls it, undone afterwards."""
    captured = CapturedLogs(io.StringIO(), io.StringIO())
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    monkeypatch.setattr(sys, "stdout", captured.stdout)
    monkeypatch.setattr(sys, "stderr", captured.stderr)
    configure_logging("info", fmt)
    # The daemon caches loggers on first use; in a test run that would tie module loggers
    # (bridge.py's) to this buffer for every later test.
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield captured
    finally:
        structlog.reset_defaults()
        root.handlers[:], level = saved
        root.setLevel(level)
