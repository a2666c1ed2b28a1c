"""The station figures' record types (DESIGN §10): the daily aggregate's rows, a report's
origin, and a later fate of its delivery. Pure values; they hold no personal data (ids of
stations, grids, members and officers, a report type, a rejection reason, counts).

Imports nothing of etong, so `records.py` can carry them in a `BatchWrite`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

# Upper edges, in seconds, of the latency buckets (report → received, report → verified).
# Bucket i holds latencies in [EDGES[i-1], EDGES[i]); the last bucket, len(EDGES), holds
# everything from a week up. Fixed for ever: stored rows name buckets by index, so a median
# can be estimated from rows written years apart (append-only, like a migration).
LATENCY_EDGES_S: tuple[float, ...] = (
    10,
    30,
    60,
    120,
    300,
    600,
    1200,
    1800,
    3600,
    7200,
    14400,
    28800,
    43200,
    86400,
    172800,
    345600,
    604800,
)
NO_BUCKET = -1
"""The bucket of a row that measures no latency."""

# What a figure row counts (its `measure` column).
REPORT_MEASURES = ("accepted", "duplicate_id", "duplicate_household", "rejected")
FATE_MEASURES = ("received", "verified", "declined", "escalated", "undeliverable", "resend")
OTHER_MEASURES = ("flag", "registrar_copy", "settled")
LATENCY_MEASURES = frozenset({"received", "verified"})
SERIES_MEASURES = (*REPORT_MEASURES, "verified")
"""What the day-by-day series counts (and the monthly rollup keeps per day)."""
DAY_PREFIX = "day:"
"""A monthly rollup row whose measure starts so counts one day of the series (`detail` the
day): `day:accepted`, `day:verified` ..."""


class FigureRow(NamedTuple):
    """One increment of the daily aggregate (`figures_daily`), keyed by everything but `n`.

    `day` is the local calendar day (ISO date, `bridge.timezone`) on which the report was
    decided; a delivery's later fates are counted on its report's day, so a period's figures
    describe the reports of that period. `detail`: a rejection reason, a flag name, or (for
    `settled`) the local day the report was first received or given up.
    """

    day: str
    station: str
    grid: str
    member: str
    officer: str
    type: str
    measure: str
    detail: str
    bucket: int
    n: int


class MonthlyRow(NamedTuple):
    """One increment of the monthly rollup (`figures_monthly`): a `FigureRow` without grid,
    member and officer, on the first day of its month (ISO), so the province-wide view reads
    ~400 rows a station and month rather than every grid's and member's day.

    Besides the station's sums (`measure` as in `FigureRow`), the series measures are kept
    per day: `measure` `day:<measure>`, `detail` the day, `type` '' and `bucket` -1.
    """

    month: str
    station: str
    type: str
    measure: str
    detail: str
    bucket: int
    n: int


class FigureCell(NamedTuple):
    """One sum `etong report` reads, over the period's days, summed by the store in one of
    four views (so a province's month comes back as sums, not as every day's rows):

    - `station`: by type, measure, detail, bucket (`key` the type);
    - `member`: the report outcomes by grid (`key`) and member (`sub`);
    - `officer`: by officer (`key`), measure and bucket;
    - `series`: by local day (`key`, ISO) and measure.
    """

    view: str
    station: str
    key: str
    sub: str
    measure: str
    detail: str
    bucket: int
    n: int


class Origin(NamedTuple):
    """A `figure_origins` row: where an accepted report's delivery came from, for its fates."""

    delivery_id: str
    day: str
    station: str
    grid: str
    member: str
    officer: str  # the first recipient
    type: str
    accepted_at: float  # unix seconds
    marks: int  # which once-only fates were counted already (figures.MARK_*)


class Fate(NamedTuple):
    """Something that happened to a delivery in a batch, to count on its report's day."""

    delivery_id: str
    measure: str  # one of FATE_MEASURES
    officer: str  # who acted (or, for an escalation, whom it went past)
    at: float  # unix seconds
    day: str  # the local day it happened


@dataclass(slots=True)
class FigureBatch:
    """A batch's figures: rows known at once, origins of new deliveries, fates to resolve
    against their origins in the store's transaction (`figures.fate_rows`)."""

    rows: list[FigureRow] = field(default_factory=list)
    origins: list[Origin] = field(default_factory=list)
    fates: list[Fate] = field(default_factory=list)

    def is_empty(self) -> bool:
        """True when there is nothing to write."""
        return not (self.rows or self.origins or self.fates)
