"""`etong report`: what a station's grids reported over a period and what became of it
(DESIGN §10), from the store's daily aggregate only (never the daemon), on SQLite or
PostgreSQL, while the daemon runs.

Exit 2 for a request that cannot be answered (an unknown station, a malformed date, `--from`
after `--to`); an empty period is a valid, empty report.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from etong.clock import iso_from_unix
from etong.config import load_settings
from etong.errors import EtongError
from etong.report.build import Report, build_report
from etong.report.period import BadRequestError, Period, period_from
from etong.report.render_csv import render_csv
from etong.report.render_html import render_html
from etong.report.render_json import render_json
from etong.report.render_text import render_text
from etong.roster import Roster, load_roster
from etong.store import open_store

EXIT_OK = 0
EXIT_USAGE = 2
DETAIL_UP_TO = 10
"""`--detail auto` lists grids, members and officers when at most this many stations are
shown (one station's month is a fraction of a second; a province's, half a minute to
minutes and a 112 MB page: docs/BENCHMARKS.md), and the province view otherwise."""
RENDERERS: dict[str, Callable[[Report], str]] = {
    "text": render_text,
    "json": render_json,
    "csv": render_csv,
    "html": render_html,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `etong report` to its sub-parser."""
    parser.add_argument(
        "--station",
        action="append",
        default=None,
        metavar="ID",
        help="a station of the roster (repeat for several); default: every station and a total",
    )
    parser.add_argument(
        "--from",
        dest="first",
        default=None,
        metavar="DATE",
        help="first local day, YYYY-MM-DD (default: last full month)",
    )
    parser.add_argument(
        "--to",
        dest="last",
        default=None,
        metavar="DATE",
        help="last local day, inclusive (default: last full month)",
    )
    parser.add_argument(
        "--detail",
        choices=("auto", "full", "summary"),
        default="auto",
        help="full: per grid, member and officer for every station shown; summary: each "
        "station's figures only, from the monthly rollup (the province view); auto "
        f"(default): full for --station or up to {DETAIL_UP_TO} stations, else summary",
    )
    parser.add_argument("--format", choices=sorted(RENDERERS), default="text")
    parser.add_argument("--out", default=None, metavar="FILE", help="write here, not stdout")
    parser.epilog = (
        "days are calendar days in bridge.timezone; exit codes: 0 written (an empty period is "
        "a valid report), 1 error, 2 bad usage (unknown station, bad date, --from after --to) "
        "or invalid config"
    )


def run(args: argparse.Namespace, clock: Callable[[], float] = time.time) -> int:
    """Read the aggregate, build the figures, render them; exit 2 on a bad request."""
    settings = load_settings(Path(args.config).absolute())
    roster = load_roster(settings.roster.path)
    zone = settings.bridge.zone
    now = clock()
    try:
        period = period_from(args.first, args.last, datetime.fromtimestamp(now, zone).date())
        stations = _stations(roster, args.station)
    except BadRequestError as exc:
        print(f"etong report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    detail = _detail(getattr(args, "detail", "auto"), args.station, stations)
    asked = None if args.station is None else stations
    rows = asyncio.run(_read(settings, asked, period, detail=detail))
    report = build_report(
        rows,
        roster,
        stations,
        period,
        generated_at=iso_from_unix(now, zone),
        zone=settings.bridge.timezone,
        with_total=args.station is None or len(stations) > 1,
        detail=detail,
    )
    text = RENDERERS[args.format](report)
    if args.out is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(args.out).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise EtongError(f"cannot write {args.out}: {exc.strerror or exc}") from exc
    print(f"wrote {args.out} ({args.format}, {period.label()})", file=sys.stderr)
    return EXIT_OK


def _stations(roster: Roster, asked: Sequence[str] | None) -> list[str]:
    if asked is None:
        return sorted(roster.stations)
    unknown = [s for s in asked if s not in roster.stations]
    if unknown:
        raise BadRequestError(
            f"unknown station {', '.join(unknown)} (the roster has "
            f"{', '.join(sorted(roster.stations)[:10]) or 'none'}"
            f"{' ...' if len(roster.stations) > 10 else ''})"
        )
    return list(dict.fromkeys(asked))


def _detail(choice: str, asked: Sequence[str] | None, stations: Sequence[str]) -> bool:
    """Whether the report lists grids, members and officers (`--detail`)."""
    if choice != "auto":
        return choice == "full"
    return asked is not None or len(stations) <= DETAIL_UP_TO


async def _read(
    settings: Any, stations: Sequence[str] | None, period: Period, *, detail: bool
) -> list[Any]:
    if settings.store.url is None and not settings.store.path.exists():
        raise EtongError(f"no store at {settings.store.path} (has the bridge ever run?)")
    store = await open_store(settings.store, application_name="etong-report")
    try:
        if detail:
            return await store.figures(stations, period.first, period.last)
        return await store.figure_summary(stations, period.first, period.last)
    finally:
        await store.close()
