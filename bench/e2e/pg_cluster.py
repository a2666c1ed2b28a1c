"""The PostgreSQL side of bench/e2e: a fresh database per round, and when every station of
the roster is served by the cluster's instances.

- `PgServer`: the server `--store URL` names. The URL's database is only where the bench
  connects to create and drop the rounds' databases (`etong_bench_<pid>_<n>`, each dropped when
  its round ends; one left by a killed run is dropped by the next run). What the store's
  processes on the server spend (its backends for the round's database, and the server's own
  background processes) is read from `pg_stat_activity`.
- `cluster_served`: every station owned by a live lease, each owner's `/readyz` saying it
  serves exactly the stations the database says it owns (connected and subscribed), and the
  shares balanced (no instance holds more than one station above another). Before that,
  reports could be published to a grid nobody subscribes to yet, and the counts of CPU per
  report would include hand-overs.

Imports nothing else of bench/e2e.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg

DATABASE_PREFIX = "etong_bench"
READY_PARTITIONS = re.compile(r"^ready \(partitions: (?P<held>[^)]*)\)")


class PgBenchError(Exception):
    """The PostgreSQL server could not do what the benchmark needs; the message says what."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for an instance's /readyz)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PgServer:
    """The PostgreSQL server of `--store URL` (the URL's database: where to connect as admin)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise PgBenchError(f"--store must be a postgresql://user@host:port/db URL, not {url!r}")
        self.admin_url = url
        self._parts = parts
        self._numbers = 0

    def url_of(self, database: str) -> str:
        """The URL of `database` on this server, as the admin URL's user."""
        return urlunsplit(self._parts._replace(path="/" + database))

    def _run(self, sql: str, *args: object, fetch: bool = False) -> list[asyncpg.Record]:
        async def go() -> list[asyncpg.Record]:
            try:
                conn = await asyncpg.connect(self.admin_url, timeout=10)
            except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
                raise PgBenchError(f"cannot reach PostgreSQL at {self.admin_url}: {exc}") from exc
            try:
                if fetch:
                    return list(await conn.fetch(sql, *args))
                await conn.execute(sql, *args)
                return []
            finally:
                await conn.close()

        return asyncio.run(go())

    def version(self) -> str:
        """The server's version, e.g. `15.20`."""
        return str(self._run("SHOW server_version", fetch=True)[0][0])

    def settings(self) -> dict[str, str]:
        """The server settings that decide a commit's cost."""
        rows = self._run(
            "SELECT name, setting FROM pg_settings WHERE name = ANY($1::text[])",
            ["synchronous_commit", "fsync", "wal_sync_method", "shared_buffers", "max_connections"],
            fetch=True,
        )
        return {str(r[0]): str(r[1]) for r in rows}

    def drop_leftovers(self) -> list[str]:
        """Drop the databases of bench runs whose process is gone; return their names."""
        dropped = []
        for row in self._run(
            "SELECT datname FROM pg_database WHERE datname LIKE $1",
            f"{DATABASE_PREFIX}\\_%",
            fetch=True,
        ):
            name = str(row[0])
            pid = name.split("_")[2] if name.count("_") >= 3 else ""
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                self.drop(name)
                dropped.append(name)
        return dropped

    def create(self) -> str:
        """A new, empty database for one round; returns its name."""
        self._numbers += 1
        name = f"{DATABASE_PREFIX}_{os.getpid()}_{self._numbers}"
        self.drop(name)
        self._run(f'CREATE DATABASE "{name}"')
        return name

    def drop(self, name: str) -> None:
        """Drop `name`, ending any session still connected to it."""
        self._run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def store_pids(self, database: str) -> tuple[list[int], list[int]]:
        """(the backends connected to `database`, the server's background processes)."""
        rows = self._run(
            "SELECT pid, datname, backend_type FROM pg_stat_activity WHERE pid <> pg_backend_pid()",
            fetch=True,
        )
        backends = [int(r[0]) for r in rows if r[1] == database]
        background = [int(r[0]) for r in rows if r[2] != "client backend" and r[1] is None]
        return backends, background

    def owners(self, database: str) -> dict[str, str | None]:
        """Each partition's owner by a live lease (None: free or expired), on the DB's clock."""

        async def go() -> dict[str, str | None]:
            conn = await asyncpg.connect(self.url_of(database), timeout=10)
            try:
                rows = await conn.fetch(
                    "SELECT partition, CASE WHEN expires_at > clock_timestamp() THEN owner END "
                    "FROM partitions"
                )
            finally:
                await conn.close()
            return {str(r[0]): r[1] for r in rows}

        try:
            return asyncio.run(go())
        except (OSError, TimeoutError, asyncpg.PostgresError):
            return {}  # not created yet (the first instance is still migrating)


def readiness(port: int) -> tuple[bool, str]:
    """An instance's /readyz: (ready, its text)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
            return True, resp.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode().strip()
    except OSError as exc:
        return False, f"no answer ({exc})"


def held_partitions(text: str) -> list[str] | None:
    """The partitions a ready instance serves, from its /readyz text; None if not that form."""
    match = READY_PARTITIONS.match(text)
    if match is None:
        return [] if text.startswith("ready (standby") else None
    return [p.strip() for p in match.group("held").split(",") if p.strip()]


@dataclass(frozen=True)
class Served:
    """What the cluster looked like when it served every station."""

    assignment: dict[str, list[str]]  # instance -> stations it serves


def cluster_served(
    stations: Sequence[str], owners: Mapping[str, str | None], ready: Mapping[str, tuple[bool, str]]
) -> Served | None:
    """The assignment once every station is owned and served and the shares are balanced
    (see the module docstring); None while not."""
    if sorted(owners) != sorted(stations) or any(o is None for o in owners.values()):
        return None
    assignment: dict[str, list[str]] = {}
    for instance, (ok, text) in ready.items():
        held = held_partitions(text) if ok else None
        if held is None:
            return None
        assignment[instance] = sorted(held)
    by_db: dict[str, list[str]] = {instance: [] for instance in ready}
    for station, owner in owners.items():
        if owner not in by_db:
            return None  # owned by an instance that is not ours (cannot be) or not started
        by_db[owner].append(station)
    if any(sorted(by_db[i]) != assignment[i] for i in ready):
        return None
    counts = [len(held) for held in assignment.values()]
    if max(counts) - min(counts) > 1:
        return None
    return Served(assignment)
