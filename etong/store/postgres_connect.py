"""Reaching the PostgreSQL store: the URL's parts, the connection pool, and the driver's errors
in etong's words (a clear `StoreError` naming the server and database, never the password).

asyncpg was chosen by measurement (docs/BENCHMARKS.md, "PostgreSQL driver"). Its errors are
translated where they enter, and none leaves `etong.store`: SQLSTATE class 53 (insufficient
resources: 53100 disk full and its neighbours) is `StoreFullError`, so the shell waits and
retries as it does for a full SQLite disk; a refused or broken connection is
`StoreUnavailableError`; a deadlock victim, a serialization failure, a lock or statement
timeout is `StoreBusyError` (the server rolled the transaction back: run it again); anything
else (a constraint violated, a bug in our SQL) is `StoreFailedError`, which stops the daemon
(`etong.failures` decides what each means to a loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias
from urllib.parse import unquote, urlsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from etong.errors import (
    StoreBusyError,
    StoreError,
    StoreFailedError,
    StoreFullError,
    StoreUnavailableError,
)

# Quoted: asyncpg's classes are generic only in its stubs, not at run time.
Conn: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
"""A connection lent by the store's pool."""
Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

DEFAULT_PORT = 5432
CONNECT_TIMEOUT_S = 10.0
# How long any one statement may run before the server cancels it: far above what a batch
# takes (tens of ms), low enough that a stuck lock surfaces as an error, not a hung bridge.
# A takeover waits for a fenced write in hand (FOR SHARE), which this bounds too.
STATEMENT_TIMEOUT_MS = 60_000

# How the server plans the store's statements, on every connection of its pools (issue 23).
# - A custom plan for every execution. asyncpg prepares each statement, and after five runs
#   PostgreSQL may keep a generic plan, made without the parameters' values: for
#   `household_key = ANY($2) AND received_at >= $3` it scanned every accepted event of the
#   dedup window and filtered them (auto_explain in bench/e2e: 4,380 rows, 9 ms for one
#   batch's read, and growing with the window), where the values give an index lookup of the
#   batch's few keys. Planning each time costs well under a millisecond of server CPU.
# - No JIT: it compiles a statement whose estimated cost passes `jit_above_cost`, tens of
#   milliseconds that a batch of a few rows never earns back; an estimate from stale
#   statistics (a table that grew since its last ANALYZE) would trigger it on the hot path.
PLANNING_SETTINGS = {"plan_cache_mode": "force_custom_plan", "jit": "off"}


@dataclass(frozen=True, slots=True)
class Target:
    """Where the store is: the URL (no password: the config refuses one) and its parts.

    The URL may name several servers, libpq's way (`postgresql://etong@db1:5432,db2:5432/etong
    ?target_session_attrs=read-write`): the primary and its standbys. The driver then connects
    to the first that answers as asked, so after a failover the pool's new connections reach
    the promoted standby (docs/SCALING.md, "A PostgreSQL failover").
    """

    url: str
    hosts: tuple[tuple[str, int], ...]
    database: str
    user: str

    @classmethod
    def from_url(cls, url: str) -> Target:
        """The parts of a `postgresql://user@host:port[,host:port...]/database` URL (libpq's
        defaults)."""
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")
        user = unquote(netloc[0].partition(":")[0]) or "postgres"
        hosts = tuple(_host_and_port(piece) for piece in netloc[2].split(","))
        return cls(
            url=url,
            hosts=hosts,
            database=unquote(parts.path.lstrip("/")) or user,
            user=user,
        )

    @property
    def host(self) -> str:
        """The first server's host (the one the URL names first)."""
        return self.hosts[0][0]

    @property
    def port(self) -> int:
        """The first server's port."""
        return self.hosts[0][1]

    @property
    def servers(self) -> str:
        """`host:port`, or `host:port,host:port` for several, for messages."""
        return ",".join(f"{host}:{port}" for host, port in self.hosts)

    @property
    def where(self) -> str:
        """`database on host:port`, for messages."""
        return f"database {self.database} on {self.servers}"

    @property
    def path(self) -> Path:
        """The `Store.path` of this store: `host:port/database` (for messages and metrics)."""
        return Path(f"{self.servers}/{self.database}")


def _host_and_port(piece: str) -> tuple[str, int]:
    """One `host[:port]` of the URL's host list (an IPv6 address in brackets)."""
    parsed = urlsplit(f"//{piece}")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError as exc:
        raise StoreError(f"store.url has a bad port in {piece!r}: {exc}") from exc
    return parsed.hostname or "localhost", port


async def keep_session(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """The pool's reset on release: nothing beyond asyncpg's own rollback of a transaction
    left open. The default also runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` — one more round trip at every release, the most frequent statement of an idle
    province cluster — for session state the store never leaves behind: its settings are
    `SET LOCAL`, its cursors live in transactions, it LISTENs to nothing, and the one session
    advisory lock (sealing at start, postgres_sealing.py) is released in a `finally`."""


async def create_pool(
    target: Target,
    password: str | None,
    *,
    max_size: int,
    application_name: str,
    idle_in_transaction_ms: int | None = None,
) -> Pool:
    """A pool of connections to `target`; raises `StoreError` saying why it cannot be had.

    `idle_in_transaction_ms`: PostgreSQL's `idle_in_transaction_session_timeout` on every
    connection (None: the server's own, off by default)."""
    settings = {
        "application_name": application_name,
        "statement_timeout": str(STATEMENT_TIMEOUT_MS),
        **PLANNING_SETTINGS,
    }
    if idle_in_transaction_ms is not None:
        settings["idle_in_transaction_session_timeout"] = str(idle_in_transaction_ms)
    try:
        pool: Pool = await asyncpg.create_pool(
            target.url,
            password=password,
            min_size=1,
            max_size=max_size,
            timeout=CONNECT_TIMEOUT_S,
            # The pool's health check: a connection the server closed is replaced on acquire.
            max_inactive_connection_lifetime=300.0,
            server_settings=settings,
            reset=keep_session,
        )
    except asyncpg.InvalidCatalogNameError as exc:
        raise StoreError(
            f"the PostgreSQL {target.where} does not exist: create it (for example "
            f"`createdb -h {target.host} -p {target.port} -O {target.user} {target.database}`) "
            "or correct store.url"
        ) from exc
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise StoreError(
            f"the PostgreSQL server at {target.servers} refused user {target.user} "
            f"for database {target.database} ({exc}); check store.url and store.password_file"
        ) from exc
    except (OSError, TimeoutError, asyncpg.PostgresConnectionError) as exc:
        raise StoreUnavailableError(
            f"cannot reach the PostgreSQL store ({target.where}): {_reason(exc)}"
        ) from exc
    except asyncpg.OperatorInterventionError as exc:  # e.g. 57P03: starting up, shutting down
        raise StoreUnavailableError(
            f"the PostgreSQL server of the store ({target.where}) refused to connect: {exc}"
        ) from exc
    return pool


# The server gave up the statement or transaction because of another's locks: nothing of it
# was kept, and running it again may succeed. 40P01 deadlock_detected (the victim of a cycle,
# e.g. with the daily purge), 40001 serialization_failure, 55P03 lock_not_available
# (lock_timeout), 57014 query_canceled (statement_timeout).
_BUSY = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
)
RETRY_AT_ONCE_SQLSTATES = frozenset({"40P01", "40001"})
"""Busy errors a write runs again at once: the server broke a cycle, nothing waited long."""


def translate(target: Target, exc: BaseException) -> BaseException:
    """The etong error to raise for the driver's `exc` from a call on the store (`exc` itself
    when it is not the driver's: an error of ours raised inside the call)."""
    if isinstance(exc, asyncpg.InsufficientResourcesError):
        # 53100 disk_full is the one a full volume gives; 53000, 53200 out_of_memory, 53300
        # too_many_connections and 53400 configuration_limit_exceeded are the same kind: the
        # server cannot take the write now, it may later, and nothing of it was kept.
        detail = "no space left" if exc.sqlstate == "53100" else "insufficient resources"
        return StoreFullError(target.path, f"{detail}; SQLSTATE {exc.sqlstate}: {exc}")
    if isinstance(exc, _BUSY):
        return StoreBusyError(
            f"the PostgreSQL store ({target.where}) rolled the call back: {exc}",
            code=str(exc.sqlstate),
        )
    if _is_lost_connection(exc):
        return StoreUnavailableError(
            f"lost the connection to the PostgreSQL store ({target.where}): {_reason(exc)}; "
            "the pool reconnects at the next call"
        )
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        code = getattr(exc, "sqlstate", None)
        return StoreFailedError(
            f"the PostgreSQL store ({target.where}) failed a call"
            + (f" (SQLSTATE {code})" if code else "")
            + f": {exc}"
        )
    return exc


def _is_lost_connection(exc: BaseException) -> bool:
    if isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.OperatorInterventionError):  # 57P01 terminated, not 57014
        return not isinstance(exc, asyncpg.QueryCanceledError)
    # A connection the server closed while it sat in our hands between two statements: the
    # pool has already taken it back, and asyncpg says so on the next statement; or the
    # server's FATAL arrived first and the protocol still waits for a ReadyForQuery that will
    # never come (InternalClientError "another operation (2: error consume) is in progress").
    if isinstance(exc, asyncpg.InternalClientError):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and (
        "connection is closed" in str(exc) or "released back to the pool" in str(exc)
    )


def _reason(exc: BaseException) -> str:
    return "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
