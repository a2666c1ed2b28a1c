"""A private PostgreSQL primary with a synchronous standby, for the HA tests: two servers
of this machine's PostgreSQL 15 binaries on free loopback ports, in a folder of their own.

Failover is the fixture's: `fail_over()` kills the primary (SIGKILL to the postmaster and
every process of it, as a lost machine would) and promotes the standby at once. Patroni does
the same with an election on top (etcd, a TTL before it acts); what the bridge meets is the
same: the primary's connections die, and a moment later the other server of its URL's host
list accepts writes. The election's delay is Patroni's `ttl` and `loop_wait`, which an
operator adds to the recovery times this test measures (docs/SCALING.md).

`synchronous_standby_names = '*'` and `synchronous_commit = on`: a COMMIT returns only once
the standby has the WAL, so no transaction the bridge saw committed (and acknowledged to the
broker) is lost by the failover.

PostgreSQL refuses to run as root: as root (CI), every server command runs as the `postgres`
user on a folder it owns outside the test's own (pytest's folders are root's, mode 0700).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from etong.devkit.mosquitto import free_port


def _server_binaries() -> Path:
    """The newest PostgreSQL server's binaries Debian installed (/usr/lib/postgresql/N/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise AssertionError(
            "PostgreSQL's server binaries are not installed: apt-get install postgresql "
            "(scripts/install-test-deps)"
        )
    return found[-1].parent


BIN = _server_binaries()


def _as_server_user(command: list[str]) -> list[str]:
    """`command` as the `postgres` user when we are root, else as ourselves."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(command: list[str], timeout: float = 120) -> str:
    done = subprocess.run(
        _as_server_user(command), capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@dataclass
class PgServer:
    """One server: its data folder and port."""

    name: str
    data: Path
    port: int

    @property
    def log(self) -> Path:
        """The server's log file (beside its data folder)."""
        return self.data.parent / f"{self.name}.log"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        _run([str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "start"])

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def kill9(self) -> None:
        """SIGKILL the postmaster and each of its processes: the machine is gone."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        children = subprocess.run(
            ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
        ).stdout.split()
        for each in [pid, *map(int, children)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(each, signal.SIGKILL)

    def stop(self) -> None:
        """Stop the server at once if it runs (teardown)."""
        if self.postmaster_pid() is not None and (self.data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user(
                    [str(BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"]
                ),
                capture_output=True,
                timeout=60,
                check=False,
            )
        self.kill9()


class PgPair:
    """A primary and its synchronous standby; `url(database)` names both, libpq's way."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="etong-ha-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self.primary = PgServer("primary", self.folder / "primary", free_port())
        self.standby = PgServer("standby", self.folder / "standby", free_port())
        self.promoted_at: float | None = None

    def url(self, database: str) -> str:
        """The store URL of `database`: both servers, writes only on the one that takes them."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}"
            f"/{database}?target_session_attrs=read-write"
        )

    def start(self) -> None:
        """Make the primary, copy it into a standby that streams from it synchronously, and
        wait until the primary reports the standby `sync`."""
        p = self.primary
        _run([str(BIN / "initdb"), "-D", str(p.data), "-U", "postgres", "--auth=trust",
              "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"])  # fmt: skip
        with (p.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                f"port = {p.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.folder}'\n"
                "wal_level = replica\n"
                "max_wal_senders = 4\n"
                "synchronous_standby_names = '*'\n"
                "synchronous_commit = on\n"
                # No crash of this machine is tested, only of the server: the page cache
                # survives a SIGKILL, so fsync only costs the shared disk time.
                "fsync = off\n"
                "shared_buffers = 32MB\n"
                "max_connections = 60\n"
            )
        p.start()
        _run([str(BIN / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(p.port), "-U", "postgres",
              "-D", str(self.standby.data), "-R", "-X", "stream", "--no-sync"])  # fmt: skip
        with (self.standby.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"port = {self.standby.port}\n")
        self.standby.start()
        self._wait_sync()

    def _wait_sync(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = _run([str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.primary.port),
                          "-U", "postgres", "-Atc",
                          "SELECT sync_state FROM pg_stat_replication"]).strip()  # fmt: skip
            if state == "sync":
                return
            time.sleep(0.1)  # polling the replication state with a deadline
        raise AssertionError(f"the standby is not synchronous ({state!r})")

    def create_database(self, name: str) -> None:
        """CREATE DATABASE on the primary."""
        _run([str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.primary.port), "-U",
              "postgres", "-c", f'CREATE DATABASE "{name}"'])  # fmt: skip

    def fail_over(self) -> None:
        """The primary dies; the standby is promoted and accepts writes."""
        self.primary.kill9()
        _run([str(BIN / "pg_ctl"), "-D", str(self.standby.data), "-w", "promote"])
        # The new primary has no standby of its own: with the old one's
        # synchronous_standby_names every COMMIT would wait for a standby that never comes.
        # Patroni (synchronous_mode, not strict) clears it the same way.
        _run([str(BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.standby.port), "-U",
              "postgres", "-c", "ALTER SYSTEM SET synchronous_standby_names = ''",
              "-c", "SELECT pg_reload_conf()"])  # fmt: skip
        self.promoted_at = time.time()

    async def is_primary(self, server: PgServer) -> bool:
        """Whether `server` answers and accepts writes."""
        conn = await asyncpg.connect(
            f"postgresql://postgres@127.0.0.1:{server.port}/postgres", timeout=5
        )
        try:
            return not await conn.fetchval("SELECT pg_is_in_recovery()")
        finally:
            await conn.close()

    def close(self) -> None:
        """Stop both servers and remove their folder (idempotent)."""
        try:
            self.primary.stop()
            self.standby.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
