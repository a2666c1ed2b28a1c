"""The durable store: the interface the daemon uses (`base.Store`) and its implementations.

- `base.py`           the `Store` interface (hot path, schedule, operations)
- `sqlite.py`         `SqliteStore`, the embedded default (WAL mode, one instance per file)
- `sqlite_batch.py`   its batch read and batch write (plain functions of a connection)
- `sqlite_admin.py`   its operators' queries (status, trace, dead letters, replay, purge)
- `sqlite_schema.py`  its migrations
- `files.py`          the files around it: private creation, lock file, backups, a vanished store
- `rows.py`           the delivery columns and record both stores read alike
- `postgres.py`       `PostgresStore`, shared by several instances (DESIGN §7): the `Store` and
                      the `LeaseStore`; `postgres_partition.py` a partition's fenced view;
                      `postgres_batch.py`, `postgres_schedule.py`, `postgres_admin.py`,
                      `postgres_leases.py`, `postgres_schema.py`, `postgres_connect.py` its parts
- `copy_sqlite.py`    `etong migrate-store`'s copy of an SQLite store into an empty PostgreSQL one

`open_store` picks the implementation for `[store]`; the record types that cross the
interface are in `etong/core/records.py`.
"""

from __future__ import annotations

import time

from etong.config import StoreSettings
from etong.crypto.kek import KekSource
from etong.store.base import ClusterStore, LeaseStore, Store
from etong.store.files import backup_store, lock_file_of, refuse_vanished_store
from etong.store.postgres import PostgresStore
from etong.store.postgres_leases import idle_in_transaction_ms
from etong.store.sqlite import SqliteStore
from etong.store.sqlite_schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "ClusterStore",
    "LeaseStore",
    "PostgresStore",
    "SqliteStore",
    "Store",
    "backup_store",
    "kek_source",
    "lock_file_of",
    "open_cluster_store",
    "open_store",
    "refuse_vanished_store",
    "unlock_store",
]


async def open_store(
    settings: StoreSettings,
    *,
    exclusive: bool = False,
    check_integrity: bool = False,
    application_name: str = "etong",
    unlock: bool = False,
) -> SqliteStore | PostgresStore:
    """Open the store `[store]` names: the SQLite file at `path`, or, when `url` is set, the
    PostgreSQL database, as a `PostgresStore` (both a `Store` and a `LeaseStore`).

    `exclusive` takes SQLite's lock file (one daemon per file); PostgreSQL has none, several
    instances share it by partition leases. `check_integrity`: see `SqliteStore.open` and
    `PostgresStore.open`. `application_name` names the connections in `pg_stat_activity`
    (the daemon passes its instance id). `unlock` (the daemon): read the key-encryption key
    and unlock the store's data keys (`unlock_store`), so it can seal and open values.
    """
    store: SqliteStore | PostgresStore
    if settings.url is not None:
        store = await PostgresStore.open(
            settings.url,
            password=settings.read_password(),
            check_integrity=check_integrity,
            application_name=application_name,
        )
    else:
        store = await SqliteStore.open(
            settings.path, exclusive=exclusive, check_integrity=check_integrity
        )
    await _unlock_or_close(unlock, store, settings)
    return store


async def _unlock_or_close(
    unlock: bool, store: SqliteStore | PostgresStore, settings: StoreSettings
) -> None:
    """Unlock `store` with its data keys when `unlock`; close it again if that fails."""
    if unlock:
        try:
            await unlock_store(store, settings)
        except BaseException:
            await store.close()
            raise


def kek_source(settings: StoreSettings) -> KekSource:
    """Where `[store]` says the key-encryption key comes from."""
    return KekSource(settings.resolved_kek_file, settings.key_command)


async def unlock_store(store: SqliteStore | PostgresStore, settings: StoreSettings) -> None:
    """Unlock `store` with the KEK `[store]` names (`KeyRefusedError`, exit 3, when missing or
    wrong); seals what a store from before DESIGN §9 kept in clear (progress in the log)."""
    await store.unlock(kek_source(settings), settings.cipher, time.time())


async def open_cluster_store(
    settings: StoreSettings,
    *,
    application_name: str = "etong",
    lease_s: float | None = None,
    unlock: bool = False,
) -> ClusterStore:
    """Open the PostgreSQL store `[store] url` names, shared by a cluster (DESIGN §7).

    `application_name` names the connections in `pg_stat_activity` (the daemon passes
    `etong/<instance_id>`, so an operator sees which instance holds which connection).
    With `lease_s` (the daemon's `cluster.lease_s`), the server ends a connection left idle
    inside a transaction for a quarter lease (`postgres_leases.idle_in_transaction_ms`).
    `unlock` (the daemon): as `open_store`'s.
    """
    if settings.url is None:
        raise ValueError("open_cluster_store needs [store] url")
    store = await PostgresStore.open(
        settings.url,
        password=settings.read_password(),
        check_integrity=True,
        application_name=application_name,
        idle_in_transaction_ms=None if lease_s is None else idle_in_transaction_ms(lease_s),
    )
    await _unlock_or_close(unlock, store, settings)
    return store
