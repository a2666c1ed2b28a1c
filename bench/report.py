"""How long `etong report` takes on a province-sized PostgreSQL store (issue #21).

A year of a province: Zhejiang logged 12.1 million grid reports in 2022, ~33,000 a day,
across 1,178 police stations. This bench writes the daily aggregate such a year leaves
(`figures_daily`, what the report reads) straight into a fresh database with SQL, rather
than running 12 million reports through the bridge (days of machine time here): each day's
reports are drawn per station, grid, member, officer and type, with the outcomes, fates,
latency buckets, flags and registrar copies in the proportions written below, and stored as
the bridge would store them (one row per key, counts summed), and the monthly rollup
(`figures_monthly`) filled from them by the migration's own SQL. Then it times what
`etong report` does after loading its config: read the rows, build the figures (roster in
hand), render the page — for one station over a month in full detail, and for every station
over a month in the province view (`--detail summary`, the default for a province);
`--full` times every station in full detail too (minutes).

    .venv/bin/python bench/report.py --json bench/results/report-province.json
    .venv/bin/python bench/report.py --days 30 --reports-per-day 3000   # a quick look

The database (`etong_bench_report_<pid>`) is dropped at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from etong.report.build import build_report
from etong.report.period import Period
from etong.report.render_html import render_html
from etong.roster import Roster, build_roster
from etong.store import PostgresStore
from etong.store.postgres_schema import FILL_MONTHLY

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FIRST_DAY = date(2025, 1, 1)

# One day of reports as rows of the aggregate. `r` numbers the day's reports; the station,
# grid, member, officer and type follow from it (and the day), like hash-spread traffic;
# each measure's share is a fraction of the reports. Buckets: see figure_records.
DAY_SQL = """
WITH r AS (
    SELECT n,
           (n * 7919 + $2::int * 104729) % $3::int AS st,
           ((n * 31 + $2::int * 17) % $4::int) AS g,
           ((n * 13 + $2::int) % 6) AS m,
           (ARRAY['move_in', 'move_out', 'tenant_change', 'info_update'])
               [1 + (n * 11 + $2::int) % 4] AS t,
           (n * 2654435761 + $2::int * 97) % 1000 AS h
    FROM generate_series(1, $5::int) AS n
), k AS (
    SELECT $1::date AS day, 's' || lpad(st::text, 4, '0') AS station,
           's' || lpad(st::text, 4, '0') || '-g' || g AS grid,
           's' || lpad(st::text, 4, '0') || '-g' || g || '-m' || m AS member,
           's' || lpad(st::text, 4, '0') || '-p' || (g / 3) AS officer, t, h
    FROM r
), x AS (
    SELECT day, station, grid, member, officer, t, 'accepted' AS measure, '' AS detail,
           -1 AS bucket FROM k WHERE h < 900
    UNION ALL SELECT day, station, grid, member, '', t, 'duplicate_id', '', -1 FROM k
        WHERE h >= 900 AND h < 940
    UNION ALL SELECT day, station, grid, member, '', t, 'duplicate_household', '', -1 FROM k
        WHERE h >= 940 AND h < 970
    UNION ALL SELECT day, station, grid, member, '', t, 'rejected',
           'persons[' || (h % 5) || '].id_number: bad check digit', -1 FROM k WHERE h >= 970
    UNION ALL SELECT day, station, grid, member, officer, t, 'received', '', 2 + h % 8 FROM k
        WHERE h < 860
    UNION ALL SELECT day, station, grid, member, officer, t, 'verified', '', 8 + h % 7 FROM k
        WHERE h < 720
    UNION ALL SELECT day, station, grid, member, '', t, 'settled',
           (day + (h % 2)::int)::text, -1 FROM k WHERE h < 880
    UNION ALL SELECT day, station, grid, member, officer, t, 'resend', '', -1 FROM k
        WHERE h < 900 AND h % 5 = 0
    UNION ALL SELECT day, station, grid, member, officer, t, 'escalated', '', -1 FROM k
        WHERE h < 900 AND h % 20 = 1
    UNION ALL SELECT day, station, grid, member, officer, t, 'declined', '', -1 FROM k
        WHERE h < 900 AND h % 50 = 2
    UNION ALL SELECT day, station, grid, member, officer, t, 'undeliverable', '', -1 FROM k
        WHERE h < 900 AND h % 50 = 3
    UNION ALL SELECT day, station, grid, member, officer, t, 'flag', 'high_turnover', -1
        FROM k WHERE h < 900 AND h % 25 = 4
    UNION ALL SELECT day, station, grid, member, station || '-r', t, 'registrar_copy', '', -1
        FROM k WHERE h < 900 AND t IN ('move_in', 'tenant_change')
)
INSERT INTO figures_daily (day, station, grid, member, officer, type, measure, detail,
                           bucket, n)
SELECT day, station, grid, member, officer, t, measure, detail, bucket, count(*)
FROM x GROUP BY day, station, grid, member, officer, t, measure, detail, bucket
"""


def province_roster(stations: int, grids_per_station: int) -> Roster:
    """The bench's roster: the ids the generated rows use, names like a real one's."""
    doc: dict[str, list[dict[str, Any]]] = {
        "stations": [],
        "communities": [],
        "officers": [],
        "grids": [],
        "members": [],
    }
    for s in range(stations):
        sid = f"s{s:04d}"
        doc["stations"].append({"id": sid, "name": f"第{s}派出所", "duty_officer": f"{sid}-d"})
        doc["communities"].append(
            {"id": f"{sid}-c", "name": f"第{s}社区", "station": sid, "registrar": f"{sid}-r"}
        )
        officers = [f"{sid}-d", f"{sid}-r"] + [
            f"{sid}-p{i}" for i in range((grids_per_station + 2) // 3)
        ]
        doc["officers"] += [{"id": o, "name": f"民警{o[-3:]}", "station": sid} for o in officers]
        for g in range(grids_per_station):
            gid = f"{sid}-g{g}"
            members = [f"{gid}-m{m}" for m in range(6)]
            doc["grids"].append(
                {
                    "id": gid,
                    "name": f"网格{g}",
                    "community": f"{sid}-c",
                    "officer": f"{sid}-p{g // 3}",
                    "head": members[0],
                    "members": members,
                }
            )
            doc["members"] += [{"id": m, "name": f"网格员{m[-2:]}"} for m in members]
    return build_roster(doc, "bench")


async def generate(url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Write `args.days` days of the aggregate; rows, seconds, table size."""
    conn = await asyncpg.connect(url)
    started = time.perf_counter()
    try:
        for d in range(args.days):
            day = FIRST_DAY + timedelta(days=d)
            await conn.execute(
                DAY_SQL, day, d, args.stations, args.grids_per_station, args.reports_per_day
            )
            if d % 30 == 29:
                print(f"  generated {d + 1} days", file=sys.stderr)
        daily_s = time.perf_counter() - started
        await conn.execute(FILL_MONTHLY)
        await conn.execute("ANALYZE figures_daily")
        await conn.execute("ANALYZE figures_monthly")
        fill_s = time.perf_counter() - started - daily_s
    finally:
        await conn.close()
    return {
        "seconds": round(daily_s, 1),
        "monthly_fill_s": round(fill_s, 1),
        **await _sizes(url),
    }


async def _sizes(url: str) -> dict[str, Any]:
    """Rows and bytes (with indexes) of the daily aggregate and the monthly rollup."""
    conn = await asyncpg.connect(url)
    try:
        out: dict[str, Any] = {}
        for table, name in (("figures_daily", ""), ("figures_monthly", "monthly_")):
            out[f"{name}rows"] = await conn.fetchval(f"SELECT count(*) FROM {table}")  # noqa: S608
            out[f"{name}bytes"] = await conn.fetchval(f"SELECT pg_total_relation_size('{table}')")
        return out
    finally:
        await conn.close()


async def one_report(
    store: PostgresStore,
    roster: Roster,
    stations: list[str] | None,
    period: Period,
    *,
    detail: bool,
) -> dict[str, float]:
    """What `etong report --format html` does once its config and roster are loaded."""
    t0 = time.perf_counter()
    if detail:
        rows = await store.figures(stations, period.first, period.last)
    else:
        rows = await store.figure_summary(stations, period.first, period.last)
    t1 = time.perf_counter()
    shown = stations if stations is not None else sorted(roster.stations)
    report = build_report(
        rows,
        roster,
        shown,
        period,
        generated_at="bench",
        zone="Asia/Shanghai",
        with_total=stations is None,
        detail=detail,
    )
    t2 = time.perf_counter()
    page = render_html(report)
    t3 = time.perf_counter()
    return {
        "rows": len(rows),
        "read_s": t1 - t0,
        "build_s": t2 - t1,
        "render_s": t3 - t2,
        "total_s": t3 - t0,
        "page_bytes": len(page),
    }


async def measure(url: str, roster: Roster, args: argparse.Namespace) -> dict[str, Any]:
    """Medians of `--rounds` runs of each case, over the last full month generated."""
    last_day = FIRST_DAY + timedelta(days=args.days - 1)
    month_end = last_day.replace(day=1) - timedelta(days=1) if args.days > 31 else last_day
    period = Period(month_end.replace(day=1) if args.days > 31 else FIRST_DAY, month_end)
    store = await PostgresStore.open(url)
    out: dict[str, Any] = {"period": period.label()}
    try:
        cases: list[tuple[str, list[str] | None, bool]] = [
            ("one_station", ["s0042"], True),
            ("every_station", None, False),
        ]
        if args.full:
            cases.append(("every_station_full", None, True))
        for name, stations, detail in cases:
            rounds = 1 if name == "every_station_full" else args.rounds
            runs = [
                await one_report(store, roster, stations, period, detail=detail)
                for _ in range(rounds)
            ]
            out[name] = {key: round(statistics.median(r[key] for r in runs), 3) for key in runs[0]}
            out[name]["runs_total_s"] = [round(r["total_s"], 3) for r in runs]
            print(f"  {name}: {out[name]}", file=sys.stderr)
    finally:
        await store.close()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    database = args.reuse or f"etong_bench_report_{os.getpid()}"
    admin = await asyncpg.connect(args.admin_url)
    url = args.admin_url.rsplit("/", 1)[0] + "/" + database
    try:
        if args.reuse is None:
            await admin.execute(f'CREATE DATABASE "{database}"')
            await (await PostgresStore.open(url)).close()  # migrated
            print(f"generating {args.days} days into {database}", file=sys.stderr)
            generated = await generate(url, args)
        else:
            generated = await _generated(url)
        t0 = time.perf_counter()
        roster = province_roster(args.stations, args.grids_per_station)
        roster_s = time.perf_counter() - t0
        results = await measure(url, roster, args)
    finally:
        if not args.keep and args.reuse is None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return {
        "database": database,
        "reports": args.days * args.reports_per_day,
        "days": args.days,
        "stations": args.stations,
        "grids": args.stations * args.grids_per_station,
        "members": args.stations * args.grids_per_station * 6,
        "generated": generated,
        "roster_build_s": round(roster_s, 2),
        **results,
    }


async def _generated(url: str) -> dict[str, Any]:
    """What an earlier run left in the database `--reuse` names."""
    conn = await asyncpg.connect(url)
    try:
        if not await conn.fetchval("SELECT count(*) FROM figures_monthly"):
            await conn.execute(FILL_MONTHLY)  # kept from before the rollup existed
            await conn.execute("ANALYZE figures_monthly")
    finally:
        await conn.close()
    return {"reused": True, **await _sizes(url)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--reports-per-day", type=int, default=33_000)
    p.add_argument("--stations", type=int, default=1178)
    p.add_argument("--grids-per-station", type=int, default=72, help="85,000 in a province")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--admin-url", default=ADMIN_URL)
    p.add_argument("--full", action="store_true", help="also every station in full detail")
    p.add_argument("--keep", action="store_true", help="keep the database")
    p.add_argument("--reuse", default=None, metavar="DB", help="measure a kept database again")
    p.add_argument("--json", default=None, help="write the results here too")
    return p.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    found = asyncio.run(main(arguments))
    text = json.dumps(found, indent=2, ensure_ascii=False)
    print(text)
    if arguments.json:
        Path(arguments.json).write_text(text + "\n", encoding="utf-8")
