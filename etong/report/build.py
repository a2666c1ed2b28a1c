"""A report's figures, built from the daily aggregate's rows and the roster (pure).

Every figure is over the reports decided in the period (their local day in
`bridge.timezone`): their outcomes, and what has become of the accepted ones so far, counted
on the report's day. "Still open" is an accepted report that by the end of the period's last
day had been neither received nor verified by an officer nor given up as undeliverable.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from etong.core.figure_records import REPORT_MEASURES, FigureCell
from etong.report.percentiles import quantile
from etong.report.period import Period, buckets
from etong.roster import Grid, Roster

FATES = ("received", "verified", "declined", "escalated", "undeliverable", "resend")
TOP_REASONS = 5


@dataclass(slots=True)
class Latency:
    """How long from the report to an officer's ack: how many, median, 90th percentile."""

    n: int = 0
    median_s: float | None = None
    p90_s: float | None = None


@dataclass(slots=True)
class OfficerLine:
    """One officer's share: pushes first sent to them, their acks, what went past them."""

    id: str
    name: str
    accepted: int = 0
    received: int = 0
    verified: int = 0
    declined: int = 0
    escalated: int = 0
    resend: int = 0
    undeliverable: int = 0
    registrar_copy: int = 0
    to_received: Latency = field(default_factory=Latency)
    to_verified: Latency = field(default_factory=Latency)


@dataclass(slots=True)
class GridLine:
    """A grid's reports (all outcomes) and accepted ones."""

    id: str
    name: str
    officer: str
    reports: int = 0
    accepted: int = 0


@dataclass(slots=True)
class MemberLine:
    """A grid member's reports (all outcomes) and accepted ones."""

    id: str
    name: str
    grid: str
    reports: int = 0
    accepted: int = 0


@dataclass(slots=True)
class SeriesPoint:
    """One day (or week) of the series: reports decided, accepted, verified."""

    first: str
    last: str
    reports: int = 0
    accepted: int = 0
    verified: int = 0


@dataclass(slots=True)
class Figures:
    """One station's figures over the period (or, with `station` '*', every station's)."""

    station: str
    name: str
    reports: dict[str, int]
    by_type: dict[str, dict[str, int]]
    top_reasons: list[tuple[str, int]]
    fates: dict[str, int]
    to_received: Latency
    to_verified: Latency
    officers: list[OfficerLine]
    grids: list[GridLine]
    members: list[MemberLine]
    silent_grids: list[GridLine]
    silent_members: list[MemberLine]
    flags: dict[str, int]
    registrar_copies: int
    series: list[SeriesPoint]
    detail: bool = True
    """False in the province view (`build_report(detail=False)`): no officer, grid or member
    lists (nor silent grids), which only the detailed report reads."""


@dataclass(slots=True)
class Report:
    """What `etong report` prints: the period, when it was made, each station, the total."""

    first: str
    last: str
    zone: str
    generated_at: str
    weekly: bool
    stations: list[Figures]
    total: Figures | None


def build_report(
    rows: Sequence[FigureCell],
    roster: Roster,
    stations: Sequence[str],
    period: Period,
    *,
    generated_at: str,
    zone: str,
    with_total: bool,
    detail: bool = True,
) -> Report:
    """The report of `stations` over `period` from the aggregate's `rows`: with `detail`,
    the four views of `figure_cells.cells_sql`; without, the province view of
    `figure_cells.summary_sql` (per station its figures, no grid, member or officer lists)."""
    per_station: dict[str, list[FigureCell]] = defaultdict(list)
    for row in rows:
        per_station[row.station].append(row)
    grids = _grids_by_station(roster) if detail else {}
    shown = [
        figures_of(
            per_station.get(s, []),
            roster,
            grids.get(s, []),
            period,
            station=s,
            name=roster.stations[s].name if s in roster.stations else s,
            detail=detail,
        )
        for s in stations
    ]
    total = None
    if with_total:
        total = figures_of(
            [r for s in dict.fromkeys(stations) for r in per_station.get(s, [])],
            roster,
            [g for s in dict.fromkeys(stations) for g in grids.get(s, [])],
            period,
            station="*",
            name="合计 Total",
            detail=detail,
        )
    return Report(
        period.first.isoformat(),
        period.last.isoformat(),
        zone,
        generated_at,
        period.weekly,
        shown,
        total,
    )


def _grids_by_station(roster: Roster) -> dict[str, list[Grid]]:
    """Each station's grids in the roster (one pass: a province has 85,000)."""
    out: dict[str, list[Grid]] = defaultdict(list)
    for g in roster.grids.values():
        community = roster.communities.get(g.community)
        if community is not None:
            out[community.station].append(g)
    return out


def figures_of(
    rows: Sequence[FigureCell],
    roster: Roster,
    grids: Sequence[Grid],
    period: Period,
    *,
    station: str,
    name: str,
    detail: bool = True,
) -> Figures:
    """One station's (or the total's) figures from its rows and its grids in the roster."""
    measures: Counter[str] = Counter()
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    reasons: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    latency: dict[str, Counter[int]] = {"received": Counter(), "verified": Counter()}
    last = period.last.isoformat()
    open_settled = 0
    views: dict[str, list[FigureCell]] = defaultdict(list)
    for r in rows:
        if r.view != "station":
            views[r.view].append(r)
            continue
        measures[r.measure] += r.n
        if r.measure in REPORT_MEASURES:
            by_type[r.key or "-"][r.measure] += r.n
        if r.measure == "rejected":
            reasons[r.detail] += r.n
        elif r.measure == "flag":
            flags[r.detail] += r.n
        elif r.measure == "settled" and r.detail <= last:
            open_settled += r.n
        elif r.measure in latency:
            latency[r.measure][r.bucket] += r.n
    reports = {m: measures[m] for m in REPORT_MEASURES}
    reports["total"] = sum(reports.values())
    fates = {m: measures[m] for m in FATES}
    fates["open"] = max(0, measures["accepted"] - open_settled)
    grid_lines, member_lines = _grids_and_members(views["member"], roster, grids)
    return Figures(
        station=station,
        name=name,
        reports=reports,
        by_type={t: {m: c[m] for m in REPORT_MEASURES} for t, c in sorted(by_type.items())},
        top_reasons=reasons.most_common(TOP_REASONS),
        fates=fates,
        to_received=_latency(latency["received"]),
        to_verified=_latency(latency["verified"]),
        officers=_officers(views["officer"], roster),
        grids=[g for g in grid_lines if g.reports],
        members=[m for m in member_lines if m.reports],
        silent_grids=[g for g in grid_lines if not g.reports],
        silent_members=[m for m in member_lines if not m.reports],
        flags=dict(sorted(flags.items())),
        registrar_copies=measures["registrar_copy"],
        series=_series(views["series"], period),
        detail=detail,
    )


def _latency(counts: Counter[int]) -> Latency:
    return Latency(sum(counts.values()), quantile(counts, 0.5), quantile(counts, 0.9))


def _grids_and_members(
    rows: Sequence[FigureCell], roster: Roster, grids: Sequence[Grid]
) -> tuple[list[GridLine], list[MemberLine]]:
    """Every grid of the roster and every grid in the rows; their members likewise."""
    grid_lines = {g.id: GridLine(g.id, g.name, g.officer) for g in grids}
    member_lines: dict[tuple[str, str], MemberLine] = {}
    for g in grids:
        for m in g.members:
            known = roster.members.get(m)
            member_lines[g.id, m] = MemberLine(m, known.name if known else "", g.id)
    for r in rows:
        grid = grid_lines.setdefault(r.key, GridLine(r.key, "", ""))
        member = member_lines.setdefault((r.key, r.sub), MemberLine(r.sub, "", r.key))
        grid.reports += r.n
        member.reports += r.n
        if r.measure == "accepted":
            grid.accepted += r.n
            member.accepted += r.n
    return sorted(grid_lines.values(), key=lambda g: g.id), sorted(
        member_lines.values(), key=lambda m: (m.grid, m.id)
    )


OFFICER_MEASURES = (
    "accepted",
    "received",
    "verified",
    "declined",
    "escalated",
    "resend",
    "undeliverable",
    "registrar_copy",
)
"""What is counted per officer, in the order every format shows it."""
_OFFICER_MEASURES = frozenset(OFFICER_MEASURES)


def _officers(rows: Sequence[FigureCell], roster: Roster) -> list[OfficerLine]:
    lines: dict[str, OfficerLine] = {}
    latency: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    for r in rows:
        if r.measure not in _OFFICER_MEASURES:
            continue
        line = lines.get(r.key)
        if line is None:
            officer = roster.officers.get(r.key)
            line = lines[r.key] = OfficerLine(r.key, officer.name if officer else "")
        setattr(line, r.measure, getattr(line, r.measure) + r.n)
        if r.measure in ("received", "verified"):
            latency[r.key, r.measure][r.bucket] += r.n
    for line in lines.values():
        line.to_received = _latency(latency[line.id, "received"])
        line.to_verified = _latency(latency[line.id, "verified"])
    return sorted(lines.values(), key=lambda o: o.id)


def _series(rows: Sequence[FigureCell], period: Period) -> list[SeriesPoint]:
    points = [SeriesPoint(a.isoformat(), b.isoformat()) for a, b in buckets(period)]
    starts = [p.first for p in points]
    for r in rows:
        i = bisect_right(starts, r.key) - 1
        if i < 0:
            continue
        if r.measure in REPORT_MEASURES:
            points[i].reports += r.n
        if r.measure == "accepted":
            points[i].accepted += r.n
        elif r.measure == "verified":
            points[i].verified += r.n
    return points
