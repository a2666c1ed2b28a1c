"""The one error of the benchmark: a run that could not complete."""

from __future__ import annotations


class BenchError(Exception):
    """A benchmark run could not complete; the message says what was missing."""
