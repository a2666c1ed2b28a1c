"""`etong migrate-store`: an SQLite store made by real batches, copied into a PostgreSQL store.

The SQLite store is filled by the bridge (tests/integration/conftest.py's harness): accepted
reports from two grids, acks, a rejected report under a grid the roster does not know, and a
delivery taken through its whole chain to a dead letter. Then the command copies it into a
database of the test's own and the two stores are compared: every count and every trace.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from etong.cli import main
from etong.core.keys import key_fingerprint
from etong.devkit.localbridge import render_toml
from etong.devkit.messages import make_event
from etong.store import PostgresStore, lock_file_of
from tests.integration.conftest import EXAMPLE_ROSTER, START_RFC3339, Harness, store_rows
from tests.sealing import unlocked

KEY = b"k" * 32  # the harness's PII key
MONTHLY = "SELECT month, station, type, measure, detail, bucket, n FROM figures_monthly"


async def _fill(h: Harness) -> list[str]:
    """Real batches into the harness's SQLite store; the event ids of the accepted reports."""
    accepted = []
    for i, (grid, member) in enumerate([("ZS-017", "g-0231"), ("ZS-018", "g-0241")] * 3):
        event = make_event(grid, member, rng=random.Random(i), reported_at=START_RFC3339)
        await h.send(f"etong/v1/grid/{grid}/member/{member}/events", event)
        accepted.append(str(event["event_id"]))
    [first, *_] = h.pushes("p-1001")
    acks = "etong/v1/officer/p-1001/acks"
    await h.send(acks, {"delivery_id": first["delivery_id"], "status": "received"})
    stray = make_event("ZS-099", "g-0231", rng=random.Random(99), reported_at=START_RFC3339)
    await h.send("etong/v1/grid/ZS-099/member/g-0231/events", stray)  # unknown grid: rejected
    for _ in range(6):  # the other deliveries go unacked to the end of their chains
        h.clock.advance(700)
        await h.bridge.run_due()
    return accepted


def _new_config(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "new" / "etong.toml"
    path.parent.mkdir()
    config: dict[str, Any] = {
        "store": {"url": url, "pii_key_file": str(path.parent / "pii.key")},
        "roster": {"path": str(EXAMPLE_ROSTER)},
        "http": {"listen": ""},
    }
    path.write_text(render_toml(config), encoding="utf-8")
    return path


async def _migrate(config: Path, source: Path) -> int:
    # `main` runs its own event loop: off this one's thread.
    args = ["migrate-store", "--config", str(config), "--from", str(source)]
    return await asyncio.to_thread(main, args)


async def test_migrate_store_copies_every_row_and_stamps_each_with_its_station(
    sqlite_harness_factory: Callable[..., Any],
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h: Harness = await sqlite_harness_factory()
    accepted = await _fill(h)
    counts = await h.store.counts()
    assert counts["dead_letters"] >= 2 and counts["deliveries_undeliverable"] >= 1
    monthly = set(await store_rows(h, MONTHLY))
    assert monthly  # the station figures' monthly rollup, written with the batches
    traces = {event_id: await h.store.trace(event_id) for event_id in accepted}
    await h.store.close()
    old = h.settings.store.path
    (old.parent / "pii.key").write_bytes(KEY)
    config = _new_config(tmp_path, pg_url)

    assert await _migrate(config, old) == 0

    out = capsys.readouterr().out
    assert f"events:         {counts['events']}" in out
    assert "row counts checked: equal on both sides" in out
    assert "warning: rows naming a grid or officer the roster does not know" in out
    new = await PostgresStore.open(pg_url)
    try:
        assert await new.counts() == counts
        for event_id, trace in traces.items():
            assert await new.trace(event_id) == trace
        await new.check_key_fingerprint(key_fingerprint(KEY))  # recorded: the same key passes
        # Sealed rows travel sealed, with their wrapped data keys: the old KEK opens them all.
        await unlocked(new, old.parent)
        async with new.connection() as db:
            sealed = [
                *[("events", "payload", r[0], r[1]) for r in await db.fetch(
                    "SELECT event_id, payload FROM events")],
                *[("deliveries", "context", r[0], r[1]) for r in await db.fetch(
                    "SELECT delivery_id, context FROM deliveries")],
                *[("dead_letters", "payload", r[0], r[1]) for r in await db.fetch(
                    "SELECT id, payload FROM dead_letters")],
            ]  # fmt: skip
        assert len(sealed) >= counts["events"] + counts["dead_letters"]
        for table, column, key, value in sealed:
            new.data_keys.open(table, column, key, value)  # raises if it does not
    finally:
        await new.close()
    conn = await asyncpg.connect(pg_url)
    try:
        stations = {
            table: {
                tuple(row)
                for row in await conn.fetch(f"SELECT DISTINCT station FROM {table}")  # noqa: S608
            }
            for table in ("deliveries", "receipts", "dead_letters")
        }
        unknown = await conn.fetchval(
            "SELECT count(*) FROM receipts WHERE station = '' AND topic LIKE '%/ZS-099/%'"
        )
        copied = {(r[0].isoformat(), *r[1:]) for r in await conn.fetch(MONTHLY)}
    finally:
        await conn.close()
    assert copied == monthly
    assert stations["deliveries"] == {("zhuangshi",)}
    assert stations["receipts"] == stations["dead_letters"] == {("zhuangshi",), ("",)}
    assert unknown == 1


async def test_migrate_store_refuses_a_store_a_daemon_holds_and_a_target_that_is_not_empty(
    sqlite_harness_factory: Callable[..., Any],
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h: Harness = await sqlite_harness_factory()
    await _fill(h)
    await h.store.close()
    old = h.settings.store.path
    (old.parent / "pii.key").write_bytes(KEY)
    config = _new_config(tmp_path, pg_url)
    fd = os.open(lock_file_of(old), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running daemon holds it
        assert await _migrate(config, old) == 1
        assert "a daemon is running on" in capsys.readouterr().err
    finally:
        os.close(fd)
    store = await PostgresStore.open(pg_url)
    try:
        assert (await store.counts())["events"] == 0  # nothing copied meanwhile
    finally:
        await store.close()

    assert await _migrate(config, old) == 0
    capsys.readouterr()
    assert await _migrate(config, old) == 1  # a second time: the target holds rows now
    assert "is not empty" in capsys.readouterr().err


async def test_migrate_store_refuses_when_the_new_instances_key_differs_from_the_old(
    sqlite_harness_factory: Callable[..., Any],
    pg_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h: Harness = await sqlite_harness_factory()
    await h.store.close()
    old = h.settings.store.path
    (old.parent / "pii.key").write_bytes(KEY)
    config = _new_config(tmp_path, pg_url)
    (config.parent / "pii.key").write_bytes(b"x" * 32)  # a key made by a new instance

    assert await _migrate(config, old) == 1
    assert "holds another key than" in capsys.readouterr().err
