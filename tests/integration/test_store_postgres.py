"""What only the PostgreSQL store has: migrations under a lock, the server's errors in etong's
words, the PII key's fingerprint, a lost race for an event id, receipt ids from a sequence.

Real databases on the test server (tests/postgres.py), one per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from etong.cli import main
from etong.config import parse_settings
from etong.core.keys import key_fingerprint
from etong.core.records import BatchKeys, BatchWrite, Delivery, EventRecord, ReceiptRecord
from etong.devkit.localbridge import render_toml
from etong.devkit.mosquitto import free_port
from etong.errors import (
    StoreConflictError,
    StoreError,
    StoreRefusedError,
    StoreUnavailableError,
)
from etong.store import PostgresStore, open_store
from etong.store.base import Fence
from etong.store.postgres_schema import REQUIRED_TABLES, SCHEMA_VERSION
from tests.postgres import Databases, url_of
from tests.sealing import unlocked


@pytest.fixture
async def store(pg_url: str, tmp_path: Path) -> AsyncIterator[PostgresStore]:
    opened = await unlocked(await PostgresStore.open(pg_url), tmp_path)
    try:
        yield opened
    finally:
        await opened.close()


async def _fetchval(url: str, sql: str) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _fetchval_int(url: str, sql: str) -> int:
    value = await _fetchval(url, sql)
    assert isinstance(value, int)
    return value


def _event(i: int) -> EventRecord:
    return EventRecord(
        f"E{i:06d}", "move_in", "G", "m", "accepted", None, "A", f"H{i}", 1.0, b"{}", b"{}"
    )


def _delivery(i: int) -> Delivery:
    return Delivery(f"D{i:06d}", f"E{i:06d}", "G", "m", ["o"], 0, 1, "pending", 5.0, b"{}")


# ---- schema --------------------------------------------------------------------------------


async def test_opening_again_migrates_nothing_and_the_schema_is_whole(pg_url: str) -> None:
    for _ in range(3):
        store = await PostgresStore.open(pg_url, check_integrity=True)
        assert await store.integrity_problems() == []
        await store.close()
    version = await _fetchval(pg_url, "SELECT value FROM meta WHERE key = 'schema_version'")
    assert version == str(SCHEMA_VERSION)


async def test_instances_opening_an_empty_database_at_once_migrate_it_once(
    pg_databases: Databases,
) -> None:
    async with pg_databases.database(empty=True) as url:
        stores = await asyncio.gather(*(PostgresStore.open(url, pool_size=1) for _ in range(5)))
        try:
            for store in stores:
                assert await store.integrity_problems() == []
        finally:
            for store in stores:
                await store.close()
        tables = await _fetchval(
            url, "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        )
        assert tables == len(REQUIRED_TABLES) + 1  # and meta


async def test_a_store_from_a_newer_etong_is_refused(pg_url: str) -> None:
    newer = SCHEMA_VERSION + 1
    await _fetchval(pg_url, f"UPDATE meta SET value = '{newer}' WHERE key = 'schema_version'")  # noqa: S608
    with pytest.raises(StoreError, match="newer"):
        await PostgresStore.open(pg_url)


async def test_a_damaged_schema_is_named_and_refused_where_the_daemon_checks(
    store: PostgresStore, pg_url: str
) -> None:
    await _fetchval(pg_url, "DROP TABLE receipts")
    assert await store.integrity_problems() == ["table receipts is missing"]
    with pytest.raises(StoreRefusedError, match="table receipts is missing"):
        await PostgresStore.open(pg_url, check_integrity=True)
    with pytest.raises(StoreError, match=r"cannot prepare the PostgreSQL store \(database "):
        await PostgresStore.open(pg_url)


# ---- reaching the server -------------------------------------------------------------------


async def test_a_server_that_does_not_answer_is_named_without_the_password() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailableError) as failed:
        await PostgresStore.open(f"postgresql://etong@127.0.0.1:{port}/etong", password="s3cret!")  # noqa: S106
    message = str(failed.value)
    assert f"database etong on 127.0.0.1:{port}" in message
    assert "s3cret" not in message


async def test_a_database_that_does_not_exist_is_named_with_how_to_create_it() -> None:
    with pytest.raises(StoreError) as failed:
        await PostgresStore.open(url_of("etong_t_no_such_database"))
    message = str(failed.value)
    assert "database etong_t_no_such_database on 127.0.0.1:5432 does not exist" in message
    assert "createdb" in message


async def test_open_store_opens_the_postgresql_store_when_url_is_set(
    pg_url: str, tmp_path: Path
) -> None:
    password = tmp_path / "store.password"
    password.write_text("unused-under-trust-auth\n", encoding="utf-8")
    settings = parse_settings(
        {"store": {"url": pg_url, "password_file": str(password)}},
        config_path=tmp_path / "etong.toml",
    )
    store = await open_store(settings.store, check_integrity=True, application_name="etong-7")
    try:
        assert isinstance(store, PostgresStore)
        assert store.path == Path(f"127.0.0.1:5432/{pg_url.rsplit('/', 1)[1]}")
        await store.ensure_partitions(["zs"])  # a LeaseStore too
        assert [lease.partition for lease in await store.leases()] == ["zs"]
        names = await _fetchval(
            pg_url,
            "SELECT string_agg(DISTINCT application_name, ',') FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        assert names == "etong-7"
    finally:
        await store.close()


async def test_the_store_plans_every_statement_with_its_values_and_without_jit(
    pg_url: str,
) -> None:
    # A generic plan of a batch's read scanned the whole dedup window (issue 23), and JIT
    # compiles for tens of ms: both are off on every connection the store's pool opens.
    store = await PostgresStore.open(pg_url, application_name="etong/planning-test")
    try:
        async with store.connection() as conn:
            assert await conn.fetchval("SHOW plan_cache_mode") == "force_custom_plan"
            assert await conn.fetchval("SHOW jit") == "off"
    finally:
        await store.close()


async def test_a_connection_the_server_ended_is_an_error_naming_the_store_and_the_pool_recovers(
    store: PostgresStore, pg_url: str
) -> None:
    taken, conn_ended = asyncio.Event(), asyncio.Event()

    async def held_connection() -> None:
        async with store.connection() as conn:
            await conn.execute("SELECT 1")
            taken.set()
            await conn_ended.wait()
            await conn.execute("SELECT 1")

    holder = asyncio.create_task(held_connection())
    await taken.wait()
    ended = await _fetchval_int(
        pg_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    assert ended >= 1
    conn_ended.set()
    with pytest.raises(StoreUnavailableError) as failed:
        await holder
    assert "lost the connection to the PostgreSQL store (database etong_t_" in str(failed.value)
    # The pool let go of the dead connection: the next calls work.
    write = BatchWrite(
        events=[_event(1)], receipts=[ReceiptRecord("E000001", "t", "accepted", b"{}")]
    )
    assert await store.write(write, now=1.0)
    assert (await store.counts())["events"] == 1


async def test_etong_status_reads_a_postgresql_store(
    store: PostgresStore, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await store.write(BatchWrite(events=[_event(1)], new_deliveries=[_delivery(1)]), now=1.0)
    config = tmp_path / "etong.toml"
    config.write_text(
        render_toml({"store": {"url": pg_url}, "http": {"listen": ""}}), encoding="utf-8"
    )
    assert await asyncio.to_thread(main, ["status", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "store:           intact (schema ok)" in out
    assert "deliveries_pending:      1" in out and "events:                  1" in out


async def test_etong_backup_points_a_postgresql_store_at_its_own_tools(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "etong.toml"
    config.write_text(render_toml({"store": {"url": pg_url}}), encoding="utf-8")
    args = ["backup", "--config", str(config), "--out", str(tmp_path / "copy.db")]
    assert await asyncio.to_thread(main, args) == 1
    assert "pg_dump" in capsys.readouterr().err
    assert not (tmp_path / "copy.db").exists()


# ---- the PII key ---------------------------------------------------------------------------


async def test_the_first_instance_records_its_key_and_another_key_is_refused(
    store: PostgresStore, pg_url: str
) -> None:
    key, other = b"k" * 32, b"x" * 32
    await store.check_key_fingerprint(key_fingerprint(key))
    await store.check_key_fingerprint(key_fingerprint(key))  # the same key: fine, again
    with pytest.raises(StoreRefusedError) as refused:
        await store.check_key_fingerprint(key_fingerprint(other))
    assert "Copy the key file from an instance already serving" in str(refused.value)
    recorded = await _fetchval(pg_url, "SELECT value FROM meta WHERE key = 'pii_key_fingerprint'")
    assert recorded == key_fingerprint(key)
    assert key.hex() not in str(recorded) and "k" * 32 not in str(recorded)


# ---- the write -----------------------------------------------------------------------------


async def test_an_event_id_another_partition_stored_first_refuses_the_whole_batch(
    store: PostgresStore,
) -> None:
    await store.ensure_partitions(["a", "b"])
    leases = [await store.claim(p, f"i-{p}", 30) for p in ("a", "b")]
    a, b = (
        store.partition_store(Fence(x.partition, "i-" + x.partition, x.epoch)) for x in leases if x
    )
    first = BatchWrite(events=[_event(1)], new_deliveries=[_delivery(1)])
    await a.write(first, now=1.0)
    # b decided on a lookup taken before a's commit: the same id looked new to it.
    late = BatchWrite(
        events=[_event(2), _event(1)],
        new_deliveries=[
            _delivery(2),
            Delivery("D-b", "E000001", "G2", "m2", ["o"], 0, 1, "pending", 5.0, b"{}"),
        ],
        receipts=[ReceiptRecord("E000001", "t", "accepted", b"{}")],
    )
    with pytest.raises(StoreConflictError) as refused:
        await b.write(late, now=2.0)
    assert refused.value.event_ids == ["E000001"]
    assert not (await store.trace("E000002"))["events"]  # nothing of the batch was kept
    assert [d["delivery_id"] for d in (await store.trace("E000001"))["deliveries"]] == ["D000001"]
    # Run again from its lookup, the batch sees the report that is now there.
    found = await b.lookup(BatchKeys(["E000001"], [], 0.0, [], [], 0.0, []))
    assert found.known_events["E000001"].grid_id == "G"


async def test_receipt_ids_come_back_in_the_batchs_order(store: PostgresStore) -> None:
    write = BatchWrite(
        receipts=[ReceiptRecord(None, f"t/{i:04d}", "rejected", b"{}") for i in range(300)]
    )
    first = await store.write(write, now=1.0)
    second = await store.write(write, now=2.0)
    assert first == sorted(first) and len(set(first)) == 300
    assert min(second) > max(first)
    rows = await store.unpublished_receipts(1000)
    assert [(rid, topic) for rid, topic, _ in rows] == [
        *zip(first, (f"t/{i:04d}" for i in range(300)), strict=True),
        *zip(second, (f"t/{i:04d}" for i in range(300)), strict=True),
    ]
    assert store.first_receipt_id_of_run == 1
    reopened = await PostgresStore.open(store.target.url)
    try:
        assert reopened.first_receipt_id_of_run == max(second) + 1
    finally:
        await reopened.close()
