"""The durable store: the interface the daemon uses (`base.Store`) and its implementations.

- `base.py`           the `Store` interface (hot path, schedule, operations)
- `sqlite.py`         `SqliteStore`, the embedded default (WAL mode, one instance per file)
- `sqlite_batch.py`   its batch read and batch write (plain functions of a connection)
- `sqlite_admin.py`   its operators' queries (status, trace, dead letters, replay, purge)
- `sqlite_schema.py`  its migrations
- `files.py`          the files around it: private creation, lock file, backups, a vanished store

`open_store` picks the implementation for `[store]`; the record types that cross the
interface are in `etong/core/records.py`.
"""

from __future__ import annotations

from etong.config import StoreSettings
from etong.store.base import ClusterStore, Store
from etong.store.files import backup_store, lock_file_of, refuse_vanished_store
from etong.store.sqlite import SqliteStore
from etong.store.sqlite_schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "ClusterStore",
    "SqliteStore",
    "Store",
    "backup_store",
    "lock_file_of",
    "open_cluster_store",
    "open_store",
    "refuse_vanished_store",
]


async def open_store(
    settings: StoreSettings, *, exclusive: bool = False, check_integrity: bool = False
) -> Store:
    """Open the store `[store]` names (see `SqliteStore.open` for the flags)."""
    return await SqliteStore.open(
        settings.path, exclusive=exclusive, check_integrity=check_integrity
    )


async def open_cluster_store(settings: StoreSettings) -> ClusterStore:
    """Open the PostgreSQL store `[store] url` names, shared by a cluster (DESIGN §7)."""
    from etong.store.postgres import PostgresStore  # noqa: PLC0415 - asyncpg only when used

    return await PostgresStore.open(settings)
