"""The report as JSON: every figure, keyed in English, for other tools."""

from __future__ import annotations

from dataclasses import asdict

import orjson

from etong.report.build import Report


def render_json(report: Report) -> str:
    """The report as indented JSON text."""
    return orjson.dumps(asdict(report), option=orjson.OPT_INDENT_2).decode() + "\n"
