"""The report as CSV, one figure a line (station, section, key, figure, value), so a
spreadsheet can pivot it whatever the station count."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from etong.report.build import OFFICER_MEASURES, Figures, Report

Line = tuple[str, str, str, str, object]


def render_csv(report: Report) -> str:
    """The report as CSV text with a header line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("station", "section", "key", "figure", "value"))
    for figures in [*report.stations, *([report.total] if report.total else [])]:
        writer.writerows(_lines(figures))
    return out.getvalue()


def _lines(f: Figures) -> Iterator[Line]:
    s = f.station
    for key, n in f.reports.items():
        yield s, "reports", "", key, n
    for kind, counts in f.by_type.items():
        for key, n in counts.items():
            yield s, "by_type", kind, key, n
    for reason, n in f.top_reasons:
        yield s, "rejection_reason", reason, "rejected", n
    for key, n in f.fates.items():
        yield s, "fates", "", key, n
    for name, lat in (("to_received", f.to_received), ("to_verified", f.to_verified)):
        yield s, "latency", name, "n", lat.n
        yield s, "latency", name, "median_s", _num(lat.median_s)
        yield s, "latency", name, "p90_s", _num(lat.p90_s)
    for o in f.officers:
        for key in OFFICER_MEASURES:
            yield s, "officer", o.id, key, getattr(o, key)
        yield s, "officer", o.id, "to_received_median_s", _num(o.to_received.median_s)
        yield s, "officer", o.id, "to_received_p90_s", _num(o.to_received.p90_s)
        yield s, "officer", o.id, "to_verified_median_s", _num(o.to_verified.median_s)
        yield s, "officer", o.id, "to_verified_p90_s", _num(o.to_verified.p90_s)
    for g in f.grids + f.silent_grids:
        yield s, "grid", g.id, "reports", g.reports
        yield s, "grid", g.id, "accepted", g.accepted
    for m in f.members + f.silent_members:
        yield s, "member", m.id, "reports", m.reports
        yield s, "member", m.id, "accepted", m.accepted
    for flag, n in f.flags.items():
        yield s, "flags", flag, "raised", n
    yield s, "registrar", "", "copies", f.registrar_copies
    for p in f.series:
        yield s, "series", p.first, "reports", p.reports
        yield s, "series", p.first, "verified", p.verified


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.0f}"
