"""The report as plain text for a terminal or an e-mail: one block per station."""

from __future__ import annotations

from collections.abc import Iterator

from etong.report.build import Figures, Latency, Report
from etong.report.labels import both
from etong.report.percentiles import human_duration

_REPORT_KEYS = ("total", "accepted", "duplicate_id", "duplicate_household", "rejected")
_FATE_KEYS = ("received", "verified", "declined", "escalated", "undeliverable", "resend", "open")


def render_text(report: Report) -> str:
    """The whole report as text."""
    lines = [
        f"{both('title')}",
        f"{both('period')}: {report.first} – {report.last} ({report.zone})",
        f"{both('generated_at')}: {report.generated_at}",
    ]
    for figures in [*report.stations, *([report.total] if report.total else [])]:
        lines.append("")
        lines.extend(_station(figures, weekly=report.weekly))
    return "\n".join(lines) + "\n"


def _station(f: Figures, *, weekly: bool) -> Iterator[str]:
    head = f"{both('station')}: {f.name} ({f.station})" if f.station != "*" else f.name
    yield "=" * 72
    yield head
    yield "=" * 72
    yield f"{both('reports')}:"
    for key in _REPORT_KEYS:
        yield f"  {both(key):<36} {f.reports[key]:>8}"
    if f.by_type:
        yield f"{both('by_type')}:"
        for kind, counts in f.by_type.items():
            cells = "  ".join(f"{k} {counts[k]}" for k in _REPORT_KEYS[1:])
            yield f"  {both(kind):<28} {cells}"
    if f.top_reasons:
        yield f"{both('top_reasons')}:"
        for reason, n in f.top_reasons:
            yield f"  {n:>6}  {reason}"
    yield f"{both('fates')}:"
    for key in _FATE_KEYS:
        yield f"  {both(key):<36} {f.fates[key]:>8}"
    yield f"{both('latency')}:"
    yield f"  {both('to_received'):<28} {_lat(f.to_received)}"
    yield f"  {both('to_verified'):<28} {_lat(f.to_verified)}"
    if f.detail:
        yield from _officers(f)
        yield from _grids(f)
    if f.flags or f.registrar_copies:
        yield f"{both('flags')}: " + (
            ", ".join(f"{both(k)} {n}" for k, n in f.flags.items()) or both("none")
        )
        yield f"{both('registrar_copy')}: {f.registrar_copies}"
    if not f.detail and f.station != "*":
        yield f"{both('no_detail')}"
        return
    yield f"{both('series_weekly' if weekly else 'series')}:"
    for p in f.series:
        span = p.first if p.first == p.last else f"{p.first}–{p.last[5:]}"
        yield f"  {span:<18} {both('reports')} {p.reports:>6}   {both('verified')} {p.verified:>6}"


def _lat(lat: Latency) -> str:
    return (
        f"n {lat.n:>6}   median {human_duration(lat.median_s):>8}   "
        f"p90 {human_duration(lat.p90_s):>8}"
    )


def _officers(f: Figures) -> Iterator[str]:
    if not f.officers:
        return
    yield f"{both('officers')} (accepted / received / verified / declined / escalated / "
    yield "  re-sends / undeliverable; median and p90 to received, to verified):"
    for o in f.officers:
        yield (
            f"  {o.id:<12} {o.name:<8} {o.accepted:>5} {o.received:>5} {o.verified:>5} "
            f"{o.declined:>4} {o.escalated:>4} {o.resend:>5} {o.undeliverable:>4}   "
            f"{human_duration(o.to_received.median_s)}/{human_duration(o.to_received.p90_s)}  "
            f"{human_duration(o.to_verified.median_s)}/{human_duration(o.to_verified.p90_s)}"
        )


def _grids(f: Figures) -> Iterator[str]:
    yield f"{both('grids')} ({both('reports')} / {both('accepted')}):"
    for g in f.grids:
        yield f"  {g.id:<14} {g.name:<16} {g.reports:>6} {g.accepted:>6}"
    yield f"{both('members')} ({both('reports')} / {both('accepted')}):"
    for m in f.members:
        yield f"  {m.id:<14} {m.name:<10} {m.grid:<14} {m.reports:>6} {m.accepted:>6}"
    silent = ", ".join(f"{g.id} {g.name}".strip() for g in f.silent_grids) or both("none")
    yield f"{both('silent_grids')}: {silent}"
    quiet = ", ".join(f"{m.id} {m.name}".strip() for m in f.silent_members) or both("none")
    yield f"{both('silent_members')}: {quiet}"
