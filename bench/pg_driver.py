"""asyncpg against psycopg 3 (async) on the PostgreSQL store's batch path (issue 11).

    python bench/pg_driver.py --rounds 3 --batches 15 --json bench/results/pg-driver.json

One batch is what `SqliteStore.write` commits for ~500 reports, in one transaction: 500
events (~1 KB payload), 750 person rows, 500 deliveries, 500 receipts whose ids come back,
50 delivery updates (acks), the PUBACKs of the previous batch (500 pushes, 500 receipts) and
5 dead letters; and the batch's one read (`lookup`): 500 event ids, 500 household keys,
500 address keys, 750 person keys, 50 deliveries (5 with their event's payload).

Each driver runs two ways of sending the rows: `executemany` (asyncpg: one prepared
statement, all Bind/Execute before one Sync; psycopg: pipeline mode) and `unnest`, one
statement per table with an array per column. The database is created for the run on the
local server (trust auth, `--dsn`), filled with `--prefill` batches first so indexes have
depth, and dropped after. Rounds alternate the drivers (A, B, A, B, ...); each figure is
the median over every timed batch of that contender, with the min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from etong.store.postgres_schema import MIGRATIONS, split_sql

BATCH = 500


@dataclass
class Batch:
    """The rows of one batch, as columns (unnest) and as rows (executemany)."""

    events: list[tuple[Any, ...]] = field(default_factory=list)
    persons: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    updates: list[tuple[Any, ...]] = field(default_factory=list)
    receipts: list[tuple[Any, ...]] = field(default_factory=list)
    dead_letters: list[tuple[Any, ...]] = field(default_factory=list)
    pushed: list[tuple[int, str]] = field(default_factory=list)
    published: list[int] = field(default_factory=list)
    # the lookup's keys
    event_ids: list[str] = field(default_factory=list)
    households: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    person_keys: list[str] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    acked_with_payload: list[str] = field(default_factory=list)


def make_batch(n: int, rng: random.Random, prior: list[str], now: float) -> Batch:
    """Batch number `n`: new reports, acks of deliveries of earlier batches (`prior`)."""
    b = Batch()
    payload = orjson.dumps({"x": "y" * 900})
    for i in range(BATCH):
        eid = f"E{n:05d}-{i:04d}-{rng.getrandbits(64):016x}"
        addr = f"A{rng.randrange(40_000):05d}"
        hh = f"H{rng.getrandbits(64):016x}"
        b.events.append(
            (eid, "move_in", "G", "m", "accepted", None, addr, hh, now, payload, b'{"s":1}')
        )
        persons = [f"P{rng.randrange(200_000):06d}" for _ in range(1 + i % 2)]
        b.persons.extend((p, eid, addr, now) for p in persons)
        did = "D" + eid[1:]
        b.deliveries.append(
            (did, eid, "G", "m", '["o1","o2"]', 0, 1, "pending", now + 30, payload, None, now, now)
        )
        b.receipts.append((eid, "etong/v1/grid/G/member/m/receipts", "accepted", payload[:300]))
        b.event_ids.append(eid)
        b.households.append(hh)
        b.addresses.append(addr)
        b.person_keys.extend(persons)
        b.pushed.append((1, did))
    for did in rng.sample(prior, min(50, len(prior))):
        b.updates.append(('["o1","o2"]', 0, 1, "received", None, "o1", now, did))
        b.acked.append(did)
    b.acked_with_payload = b.acked[:5]
    b.dead_letters = [("rejected", "t", b"x" * 500, "bad", None, None, now)] * 5
    return b


def columns(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(c) for c in zip(*rows, strict=True)] if rows else []


# ---- the SQL, in both parameter styles ----------------------------------------------------

EV_COLS = (
    "event_id, type, grid_id, member_id, status, duplicate_of, address_key, household_key, "
    "received_at, payload, summary"
)
EV_TYPES = "text,text,text,text,text,text,text,text,float8,bytea,bytea"
DL_COLS = (
    "delivery_id, event_id, grid_id, member_id, chain, step, attempt, state, next_due, "
    "context, acked_by, created_at, updated_at"
)
DL_TYPES = "text,text,text,text,text,int4,int4,text,float8,bytea,text,float8,float8"


def mark(style: str, i: int) -> str:
    """The `i`-th (1-based) parameter: `$i` for asyncpg, `%s` for psycopg."""
    return f"${i}" if style == "$" else "%s"


def unnest(types: str, style: str) -> str:
    names = types.split(",")
    return ", ".join(f"{mark(style, i + 1)}::{t}[]" for i, t in enumerate(names))


def sql_unnest(style: str) -> dict[str, str]:
    def p(i: int) -> str:
        return mark(style, i)

    return {
        "events": f"INSERT INTO events ({EV_COLS}) SELECT * FROM unnest({unnest(EV_TYPES, style)}) "
        "ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        "persons": "INSERT INTO event_persons (person_key, event_id, address_key, received_at) "
        f"SELECT * FROM unnest({unnest('text,text,text,float8', style)})",
        "deliveries": f"INSERT INTO deliveries ({DL_COLS}) SELECT * FROM "
        f"unnest({unnest(DL_TYPES, style)})",
        "updates": "UPDATE deliveries d SET chain = u.c, step = u.s, attempt = u.a, state = u.st, "
        "next_due = u.nd, acked_by = u.ab, updated_at = u.ua FROM unnest("
        f"{unnest('text,int4,int4,text,float8,text,float8,text', style)}) "
        "AS u(c, s, a, st, nd, ab, ua, id) WHERE d.delivery_id = u.id",
        "pushed": "UPDATE deliveries d SET published_attempt = GREATEST(d.published_attempt, u.m) "
        f"FROM (SELECT id, max(m) AS m FROM unnest({unnest('int4,text', style)}) AS x(m, id) "
        "GROUP BY id) u WHERE d.delivery_id = u.id",
        "published": f"UPDATE receipts SET published = true WHERE id = ANY({p(1)}::int8[])",
        "receipts": "INSERT INTO receipts (event_id, topic, status, payload, created_at) "
        f"SELECT r.*, c.at FROM unnest({unnest('text,text,text,bytea', style)}) "
        f"AS r(e, t, s, pl) CROSS JOIN (SELECT {p(5)}::float8) AS c(at) RETURNING id",
        "dead_letters": "INSERT INTO dead_letters (kind, topic, payload, reason, event_id, "
        "delivery_id, created_at) SELECT * FROM "
        f"unnest({unnest('text,text,bytea,text,text,text,float8', style)})",
    }


def sql_rows(style: str) -> dict[str, str]:
    def marks(n: int) -> str:
        return ",".join(mark(style, i + 1) for i in range(n))

    def p(i: int) -> str:
        return mark(style, i)

    return {
        "events": f"INSERT INTO events ({EV_COLS}) VALUES ({marks(11)}) "
        "ON CONFLICT (event_id) DO NOTHING",
        "persons": "INSERT INTO event_persons (person_key, event_id, address_key, received_at) "
        f"VALUES ({marks(4)})",
        "deliveries": f"INSERT INTO deliveries ({DL_COLS}) VALUES ({marks(13)})",
        "updates": f"UPDATE deliveries SET chain = {p(1)}, step = {p(2)}, attempt = {p(3)}, "
        f"state = {p(4)}, next_due = {p(5)}, acked_by = {p(6)}, updated_at = {p(7)} "
        f"WHERE delivery_id = {p(8)}",
        "pushed": "UPDATE deliveries SET published_attempt = GREATEST(published_attempt, "
        f"{p(1)}) WHERE delivery_id = {p(2)}",
        "published": f"UPDATE receipts SET published = true WHERE id = ANY({p(1)}::int8[])",
        "receipts": sql_unnest(style)["receipts"],  # ids must come back: one statement
        "dead_letters": "INSERT INTO dead_letters (kind, topic, payload, reason, event_id, "
        f"delivery_id, created_at) VALUES ({marks(7)})",
    }


def lookup_sql(style: str) -> list[str]:
    def p(i: int) -> str:
        return mark(style, i)

    return [
        "SELECT event_id, status, duplicate_of, grid_id, member_id FROM events "
        f"WHERE event_id = ANY({p(1)}::text[])",
        "SELECT household_key, event_id FROM events WHERE status = 'accepted' AND "
        f"household_key = ANY({p(1)}::text[]) AND received_at >= {p(2)} ORDER BY received_at",
        "SELECT event_id, type, address_key, received_at, summary FROM events WHERE status = "
        f"'accepted' AND address_key = ANY({p(1)}::text[]) AND received_at >= {p(2)} "
        "ORDER BY received_at DESC",
        "SELECT p.person_key, e.event_id, e.type, e.address_key, e.received_at, e.summary "
        "FROM event_persons p JOIN events e ON e.event_id = p.event_id WHERE p.person_key = "
        f"ANY({p(1)}::text[]) AND p.received_at >= {p(2)} AND e.status = 'accepted' "
        "ORDER BY p.received_at DESC",
        "SELECT d.delivery_id, d.event_id, d.chain, d.step, d.attempt, d.state, d.next_due, "
        "d.context, e.payload FROM deliveries d JOIN events e ON e.event_id = d.event_id "
        f"WHERE d.delivery_id = ANY({p(1)}::text[])",
        "SELECT delivery_id, event_id, chain, step, attempt, state, next_due, context "
        f"FROM deliveries WHERE delivery_id = ANY({p(1)}::text[])",
    ]


def lookup_args(b: Batch) -> list[tuple[Any, ...]]:
    others = [d for d in b.acked if d not in b.acked_with_payload]
    return [
        (b.event_ids,),
        (b.households, 0.0),
        (b.addresses, 0.0),
        (b.person_keys, 0.0),
        (b.acked_with_payload,),
        (others,),
    ]


# ---- the contenders -----------------------------------------------------------------------


class Contender:
    """One driver and one way of sending rows."""

    name = ""

    async def open(self, dsn: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def write(self, b: Batch, now: float) -> list[int]:
        """The batch's transaction; the receipts' ids."""
        raise NotImplementedError

    async def lookup(self, b: Batch) -> int:
        """The batch's read; how many rows came back."""
        raise NotImplementedError


class Asyncpg(Contender):
    def __init__(self, *, unnest_rows: bool) -> None:
        self.unnest_rows = unnest_rows
        self.name = "asyncpg " + ("unnest" if unnest_rows else "executemany")
        self.sql = sql_unnest("$") if unnest_rows else sql_rows("$")
        self.look = lookup_sql("$")

    async def open(self, dsn: str) -> None:
        self.conn = await asyncpg.connect(dsn)

    async def close(self) -> None:
        await self.conn.close()

    async def write(self, b: Batch, now: float) -> list[int]:
        c, s = self.conn, self.sql
        async with c.transaction():
            if self.unnest_rows:
                await c.fetch(s["events"], *columns(b.events))
                await c.execute(s["persons"], *columns(b.persons))
                await c.execute(s["deliveries"], *columns(b.deliveries))
                if b.updates:
                    await c.execute(s["updates"], *columns(b.updates))
                await c.execute(s["pushed"], *columns(b.pushed))
                await c.execute(s["dead_letters"], *columns(b.dead_letters))
            else:
                await c.executemany(s["events"], b.events)
                await c.executemany(s["persons"], b.persons)
                await c.executemany(s["deliveries"], b.deliveries)
                if b.updates:
                    await c.executemany(s["updates"], b.updates)
                await c.executemany(s["pushed"], b.pushed)
                await c.executemany(s["dead_letters"], b.dead_letters)
            if b.published:
                await c.execute(s["published"], b.published)
            rows = await c.fetch(s["receipts"], *columns(b.receipts), now)
        return sorted(r[0] for r in rows)

    async def lookup(self, b: Batch) -> int:
        n = 0
        for sql, args in zip(self.look, lookup_args(b), strict=True):
            n += len(await self.conn.fetch(sql, *args))
        return n


class Psycopg(Contender):
    def __init__(self, *, unnest_rows: bool) -> None:
        self.unnest_rows = unnest_rows
        self.name = "psycopg " + ("unnest" if unnest_rows else "executemany")
        self.sql = sql_unnest("%") if unnest_rows else sql_rows("%")
        self.look = lookup_sql("%")

    async def open(self, dsn: str) -> None:
        self.conn = await psycopg.AsyncConnection.connect(dsn, prepare_threshold=0)

    async def close(self) -> None:
        await self.conn.close()

    async def write(self, b: Batch, now: float) -> list[int]:
        s = self.sql
        async with self.conn.transaction(), self.conn.cursor(binary=True) as cur:
            if self.unnest_rows:
                await cur.execute(s["events"], columns(b.events))
                await cur.execute(s["persons"], columns(b.persons))
                await cur.execute(s["deliveries"], columns(b.deliveries))
                if b.updates:
                    await cur.execute(s["updates"], columns(b.updates))
                await cur.execute(s["pushed"], columns(b.pushed))
                await cur.execute(s["dead_letters"], columns(b.dead_letters))
            else:
                await cur.executemany(s["events"], b.events)
                await cur.executemany(s["persons"], b.persons)
                await cur.executemany(s["deliveries"], b.deliveries)
                if b.updates:
                    await cur.executemany(s["updates"], b.updates)
                await cur.executemany(s["pushed"], b.pushed)
                await cur.executemany(s["dead_letters"], b.dead_letters)
            if b.published:
                await cur.execute(s["published"], (b.published,))
            await cur.execute(s["receipts"], [*columns(b.receipts), now])
            rows = await cur.fetchall()
        return sorted(r[0] for r in rows)

    async def lookup(self, b: Batch) -> int:
        n = 0
        async with self.conn.cursor(binary=True) as cur:
            for sql, args in zip(self.look, lookup_args(b), strict=True):
                await cur.execute(sql, args)
                n += len(await cur.fetchall())
        return n


# ---- the run ------------------------------------------------------------------------------


async def make_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Wall and this process's CPU milliseconds of `fn()` (the driver's share of the work)."""
    start, cpu = time.perf_counter(), time.process_time()
    await fn()
    return (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000


async def write_into(ids: list[int], c: Contender, b: Batch, now: float) -> None:
    ids.extend(await c.write(b, now))


def summary(ms: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(ms), 2),
        "min_ms": round(min(ms), 2),
        "max_ms": round(max(ms), 2),
        "n": len(ms),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    name = f"etong_bench_driver_{os.getpid()}"
    base = args.dsn.rstrip("/")
    await make_database(f"{base}/postgres", name)
    dsn = f"{base}/{name}"
    results: dict[str, dict[str, list[float]]] = {}
    try:
        conn = await asyncpg.connect(dsn)
        for statement in split_sql(MIGRATIONS[0]):
            await conn.execute(statement)
        await conn.close()
        rng = random.Random(1)
        prior: list[str] = []
        filler = Asyncpg(unnest_rows=True)
        await filler.open(dsn)
        now = 1_800_000_000.0
        for n in range(args.prefill):
            b = make_batch(n, rng, prior, now)
            await filler.write(b, now)
            prior.extend(d[0] for d in b.deliveries)
        await filler.close()
        contenders: list[Contender] = [
            Asyncpg(unnest_rows=False),
            Psycopg(unnest_rows=False),
            Asyncpg(unnest_rows=True),
            Psycopg(unnest_rows=True),
        ]
        n = args.prefill
        last_ids: list[int] = []
        for _ in range(args.rounds):
            for c in contenders:
                await c.open(dsn)
                times = results.setdefault(
                    c.name, {"write": [], "lookup": [], "write_cpu": [], "lookup_cpu": []}
                )
                for i in range(args.batches + 1):  # the first of each round warms up
                    b = make_batch(n, rng, prior, now)
                    b.published = last_ids
                    n += 1
                    t_look = await timed(functools.partial(c.lookup, b))
                    ids: list[int] = []
                    t_write = await timed(functools.partial(write_into, ids, c, b, now))
                    last_ids = ids
                    prior.extend(d[0] for d in b.deliveries)
                    if i:
                        for key, (wall, cpu) in (("lookup", t_look), ("write", t_write)):
                            times[key].append(wall)
                            times[key + "_cpu"].append(cpu)
                await c.close()
    finally:
        await drop_database(f"{base}/postgres", name)
    return {
        "batch_reports": BATCH,
        "prefill_batches": args.prefill,
        "rounds": args.rounds,
        "batches_per_round": args.batches,
        "versions": {"asyncpg": asyncpg.__version__, "psycopg": psycopg.__version__},
        "server": "PostgreSQL 15, 127.0.0.1, trust auth, synchronous_commit default (on)",
        "results": {
            name: {k: summary(v) for k, v in times.items()} for name, times in results.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--prefill", type=int, default=40)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = asyncio.run(run(args))
    text = orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
