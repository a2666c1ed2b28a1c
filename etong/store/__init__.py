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

from etong.config import StoreSettings
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
    "lock_file_of",
    "open_cluster_store",
    "open_store",
    "refuse_vanished_store",
]


async def open_store(
    settings: StoreSettings,
    *,
    exclusive: bool = False,
    check_integrity: bool = False,
    application_name: str = "etong",
) -> SqliteStore | PostgresStore:
    """Open the store `[store]` names: the SQLite file at `path`, or, when `url` is set, the
    PostgreSQL database, as a `PostgresStore` (both a `Store` and a `LeaseStore`).

    `exclusive` takes SQLite's lock file (one daemon per file); PostgreSQL has none, several
    instances share it by partition leases. `check_integrity`: see `SqliteStore.open` and
    `PostgresStore.open`. `application_name` names the connections in `pg_stat_activity`
    (the daemon passes its instance id).
    """
    if settings.url is not None:
        return await PostgresStore.open(
            settings.url,
            password=settings.read_password(),
            check_integrity=check_integrity,
            application_name=application_name,
        )
    return await SqliteStore.open(
        settings.path, exclusive=exclusive, check_integrity=check_integrity
    )


async def open_cluster_store(
    settings: StoreSettings,
    *,
    application_name: str = "etong",
    lease_s: float | None = None,
) -> ClusterStore:
    """Open the PostgreSQL store `[store] url` names, shared by a cluster (DESIGN §7).

    `application_name` names the connections in `pg_stat_activity` (the daemon passes
    `etong/<instance_id>`, so an operator sees which instance holds which connection).
    With `lease_s` (the daemon's `cluster.lease_s`), the server ends a connection left idle
    inside a transaction for a quarter lease (`postgres_leases.idle_in_transaction_ms`).
    """
    if settings.url is None:
        raise ValueError("open_cluster_store needs [store] url")
    return await PostgresStore.open(
        settings.url,
        password=settings.read_password(),
        check_integrity=True,
        application_name=application_name,
        idle_in_transaction_ms=None if lease_s is None else idle_in_transaction_ms(lease_s),
    )
