"""The parts of a real cluster for tests/e2e/test_cluster.py: three `etong run` processes on
one PostgreSQL database and one mosquitto, what the test reads from the database, the
instances' JSON logs, and a way to cut one instance off the database.

Everything here is driven from the synchronous test: the database is reached through a
private event loop on a thread of its own (`LoopThread`), so the test can poll the lease
rows while the daemons run, and a watcher (`LeaseHistory`) or a proxy (`DbProxy`) can run on
that loop beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import socket
import subprocess
import threading
from collections.abc import Coroutine, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml
from etong.devkit.mosquitto import free_port
from tests.e2e.helpers import TOPICS
from tests.tcp_proxy import pump
from tests.waiting import poll_until

T = TypeVar("T")

INSTANCE_IDS = ("etong-a", "etong-b", "etong-c")
CLIENT_ID = "etong-cluster"
"""`broker.client_id`, the same on every instance: partition sessions pass between them."""
LEASE_S = 5.0
"""`cluster.lease_s`: short, so that a takeover after a kill is a matter of seconds."""
ACK_TIMEOUT_S = 2.0


def timestamp(record: dict[str, Any]) -> float:
    """Unix seconds of a log record's ISO `timestamp` (UTC)."""
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()


def listen_port() -> int:
    """A free port on 127.0.0.1 below the kernel's ephemeral range, for a listener bound
    later: an instance binds its HTTP port only after loading the roster (half a minute for
    a province), and meanwhile the cluster's own thousand outgoing connections are handed
    ephemeral ports — a port from `free_port` was taken that way (EADDRINUSE at start)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(10_000, max(10_001, low))
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


# --- the database, from the test's side ----------------------------------------------------


class LoopThread:
    """An event loop on a daemon thread: the test's synchronous code runs coroutines on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="cluster-test-loop", daemon=True
        )
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule `coro` on the loop; its future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run `coro` on the loop and return its result."""
        return self.submit(coro).result(timeout)

    def close(self) -> None:
        """Stop the loop and its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One row of the `partitions` table, as the test reads it (times: database clock)."""

    partition: str
    owner: str | None
    epoch: int
    expires_at: float | None
    now: float

    @property
    def live(self) -> bool:
        """Owned and not expired at the instant of the read."""
        return self.owner is not None and self.expires_at is not None and self.expires_at > self.now


_LEASES = (
    "SELECT partition, owner, epoch, extract(epoch FROM expires_at)::float8, "
    "extract(epoch FROM clock_timestamp())::float8 FROM partitions ORDER BY partition"
)


class Database:
    """The test's own connections to the cluster's database (a small pool on `LoopThread`)."""

    def __init__(self, url: str, loop: LoopThread) -> None:
        self.url = url
        self._loop = loop

        async def connect() -> asyncpg.Pool[asyncpg.Record]:
            return await asyncpg.create_pool(url, min_size=1, max_size=3, timeout=10)

        self._pool = loop.run(connect())

    async def leases_async(self) -> list[LeaseRow]:
        """The lease rows (on the loop). Asked again once when the pool's connection was
        lost (a failover of the database under test: the next one reaches the new primary)."""
        try:
            rows = await self._pool.fetch(_LEASES)
        except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
            rows = await self._pool.fetch(_LEASES)
        return [LeaseRow(r[0], r[1], int(r[2]), r[3], r[4]) for r in rows]

    def leases(self) -> list[LeaseRow]:
        """The lease rows, by partition."""
        return self._loop.run(self.leases_async())

    def backends_of(self, application_name: str) -> int:
        """How many server processes serve connections named `application_name`."""
        return int(
            self._loop.run(
                self._pool.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    application_name,
                )
            )
        )

    def terminate(self, application_name: str) -> int:
        """End every server process serving connections named `application_name`."""
        return int(
            self._loop.run(
                self._pool.fetchval(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) "
                    "FROM pg_stat_activity WHERE application_name = $1",
                    application_name,
                )
            )
        )

    def close(self) -> None:
        """Close the pool."""
        self._loop.run(self._pool.close())


class LeaseHistory:
    """Watches the lease rows every 50 ms: the latest expiry each (partition, owner, epoch)
    reached, i.e. the instant its lease ran out if nobody renewed it after."""

    def __init__(self, database: Database, loop: LoopThread) -> None:
        self._database = database
        self._loop = loop
        self.expiry: dict[tuple[str, str, int], float] = {}

        async def start() -> asyncio.Task[None]:
            return asyncio.create_task(self._watch())

        self._task = loop.run(start())

    async def _watch(self) -> None:
        while True:
            for row in await self._database.leases_async():
                if row.owner is not None and row.expires_at is not None:
                    key = (row.partition, row.owner, row.epoch)
                    self.expiry[key] = max(self.expiry.get(key, -math.inf), row.expires_at)
            await asyncio.sleep(0.05)  # the watch's period, not a wait for an event

    def stop(self) -> dict[tuple[str, str, int], float]:
        """Stop watching; the expiries seen (a watch that failed raises here)."""

        async def stop() -> dict[tuple[str, str, int], float]:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            return dict(self.expiry)

        return self._loop.run(stop())


class DbProxy:
    """A TCP relay between one instance and PostgreSQL, so that the test can cut it off.

    `block()` stops listening: the instance's new connections are refused (ECONNREFUSED, as
    from a server that went away), and `Database.terminate` ends the ones it has. The
    server's own limits cannot do this for the `postgres` superuser, and the pool
    reconnects within milliseconds of a `pg_terminate_backend` alone, so a renewal could
    still slip through between two terminations. `unblock()` listens again on the same port.
    """

    def __init__(self, upstream_url: str, loop: LoopThread) -> None:
        parts = urlsplit(upstream_url)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._loop = loop
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        user = f"{parts.username}@" if parts.username else ""
        self.url = urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))
        loop.run(self._listen())

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    def block(self) -> None:
        """Refuse the instance's new connections."""

        async def stop_listening() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None

        self._loop.run(stop_listening())

    def unblock(self) -> None:
        """Accept connections again."""
        self._loop.run(self._listen())

    def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        self.block()

        async def drop() -> None:
            for writer in list(self._writers):
                writer.close()

        self._loop.run(drop())


# --- the instances' logs ------------------------------------------------------------------


class InstanceLog:
    """The JSON lines an instance wrote (across its restarts), read as they grow."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.records: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Every record so far (lines that are not JSON objects, such as tracebacks, skipped)."""
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as log:
            log.seek(self._offset)
            chunk = log.read()
            self._offset += len(chunk)
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()
            for line in lines:
                if line.startswith(b"{"):
                    with contextlib.suppress(ValueError):
                        self.records.append(json.loads(line))
        return self.records

    def find(self, event: str, *, since: float = 0.0, **fields: Any) -> list[dict[str, Any]]:
        """The records of `event` at or after `since` (unix s) whose fields match `fields`."""
        return [
            r
            for r in self.read()
            if r.get("event") == event
            and timestamp(r) >= since
            and all(r.get(k) == v for k, v in fields.items())
        ]


# --- the cluster --------------------------------------------------------------------------


@dataclass
class Instance:
    """One `etong run` process of the cluster, its config and its log."""

    id: str
    bridge: LocalBridge
    log: InstanceLog
    proxy: DbProxy | None = None

    @property
    def application_name(self) -> str:
        """What its database connections call themselves (pg_stat_activity)."""
        return f"etong/{self.id}"

    def wait_logged(
        self, event: str, *, since: float, timeout: float, **fields: Any
    ) -> dict[str, Any]:
        """Wait for the first record of `event` at or after `since` matching `fields`."""
        poll_until(
            lambda: bool(self.log.find(event, since=since, **fields)),
            timeout=timeout,
            what=f"{event} {fields} in {self.id}'s log",
        )
        return self.log.find(event, since=since, **fields)[0]


@dataclass(frozen=True, slots=True)
class Served:
    """A partition served again: by whom, under which epoch, when (unix s, its log's clock)."""

    partition: str
    instance: str
    epoch: int
    at: float


@dataclass
class Cluster:
    """Three instances on one database and one broker, the same roster; see the module doc."""

    directory: Path
    broker_url: str
    database_url: str
    roster_path: Path
    instances: dict[str, Instance] = field(default_factory=dict)
    loop: LoopThread = field(default_factory=LoopThread)
    database: Database | None = None
    protocol: int = 5
    """`broker.protocol` of every instance (3 for a NATS cluster: MQTT 3.1.1 only)."""
    monitor_url: str | None = None
    """Where the test watches each instance's status (default: `broker_url`)."""

    def __post_init__(self) -> None:
        try:
            self.database = Database(self.database_url, self.loop)
        except BaseException:
            self.loop.close()
            raise
        # One PII key for all (docs/SCALING.md): one file, made by whichever instance
        # starts first (they start at once, so its creation must be race-free).
        self.pii_key = self.directory / "pii.key"

    @property
    def db(self) -> Database:
        """The test's connections to the database."""
        assert self.database is not None
        return self.database

    def add(
        self, instance_id: str, *, through_proxy: bool = False, broker_url: str | None = None
    ) -> Instance:
        """Write an instance's config (its own folder, log and HTTP port) and make it;
        `broker_url` another way to the broker than the cluster's (a `TcpProxy`)."""
        folder = self.directory / instance_id
        folder.mkdir()
        proxy = DbProxy(self.database_url, self.loop) if through_proxy else None
        config = local_bridge_config(
            broker_url=broker_url or self.broker_url,
            store_path=Path("unused.db"),
            roster_path=self.roster_path,
            instance_id=instance_id,
            topic_prefix=TOPICS.prefix,
            protocol=self.protocol,
            overrides={
                "broker": {"client_id": CLIENT_ID},
                "store": {
                    "url": proxy.url if proxy is not None else self.database_url,
                    "pii_key_file": str(self.pii_key),
                },
                "cluster": {"lease_s": LEASE_S},
                "delivery": {"ack_timeout_s": ACK_TIMEOUT_S},
                "limits": {"member_rate_per_min": 1_000_000},
                "http": {"listen": f"127.0.0.1:{listen_port()}"},
            },
        )
        config_path = folder / "etong.toml"
        config_path.write_text(render_toml(config), encoding="utf-8")
        log_path = folder / "etong.log"
        bridge = LocalBridge(config_path, log_path=log_path, monitor_url=self.monitor_url)
        instance = Instance(instance_id, bridge, InstanceLog(log_path), proxy)
        self.instances[instance_id] = instance
        return instance

    def configure(
        self, *, through_proxy: Iterable[str] = (), broker_urls: Mapping[str, str] | None = None
    ) -> None:
        """Write the three instances' configs; those named in `through_proxy` reach the
        database through a `DbProxy` of their own, those in `broker_urls` the broker by
        the URL given."""
        proxied = set(through_proxy)
        urls = broker_urls or {}
        for instance_id in INSTANCE_IDS:
            self.add(
                instance_id,
                through_proxy=instance_id in proxied,
                broker_url=urls.get(instance_id),
            )

    def start(
        self, *, through_proxy: Iterable[str] = (), broker_urls: Mapping[str, str] | None = None
    ) -> None:
        """Start the three instances at once (they race for the first claims), wait until
        each is ready, and until each serves one partition (configured first if need be)."""
        if not self.instances:
            self.configure(through_proxy=through_proxy, broker_urls=broker_urls)
        for instance in self.instances.values():
            instance.bridge.start()
        for instance in self.instances.values():
            instance.bridge.wait_ready(timeout=30)
        self.wait_balanced()

    def running(self) -> list[Instance]:
        """The instances whose process is alive."""
        return [i for i in self.instances.values() if i.bridge.running]

    def serving(self, row: LeaseRow) -> bool:
        """Whether the row's owner logged `partition_serving` for its partition and epoch."""
        owner = self.instances.get(row.owner or "")
        return owner is not None and bool(
            owner.log.find("partition_serving", partition=row.partition, epoch=row.epoch)
        )

    def wait_balanced(self, timeout: float = 30.0) -> list[LeaseRow]:
        """Wait until every partition is held (live) and served by a running instance, each
        running instance holding its fair share; the rows then."""
        running = {i.id for i in self.running()}
        rows: list[LeaseRow] = []

        def balanced() -> bool:
            nonlocal rows
            rows = self.db.leases()
            share = math.ceil(len(rows) / max(1, len(running)))
            held = [r.owner for r in rows]
            return (
                all(r.live and r.owner in running and self.serving(r) for r in rows)
                and all(held.count(i) <= share for i in running)
                and (len(running) < len(rows) or all(held.count(i) == 1 for i in running))
            )

        poll_until(balanced, timeout=timeout, what=lambda: f"a balanced cluster; leases {rows}")
        return rows

    def wait_served_elsewhere(
        self, partition: str, *, above_epoch: int, not_by: str, timeout: float
    ) -> Served:
        """Wait for another instance's `partition_serving` of `partition` at a higher epoch."""
        found: list[Served] = []

        def served() -> bool:
            for instance in self.instances.values():
                if instance.id == not_by:
                    continue
                for r in instance.log.find("partition_serving", partition=partition):
                    if int(r["epoch"]) > above_epoch:
                        found.append(Served(partition, instance.id, int(r["epoch"]), timestamp(r)))
                        return True
            return False

        poll_until(
            served,
            timeout=timeout,
            what=lambda: (
                f"{partition} served by an instance other than {not_by} "
                f"above epoch {above_epoch}; leases {self.db.leases()}"
            ),
        )
        return found[0]

    def status(self, instance_id: str) -> dict[str, Any]:
        """`etong status --json` with `instance_id`'s config (exit 0: the daemon answered)."""
        bridge = self.instances[instance_id].bridge
        command = [bridge.python, "-m", "etong", "status", "--json", "--config"]
        done = subprocess.run(
            [*command, str(bridge.config_path)],
            env=bridge.env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        status: dict[str, Any] = json.loads(done.stdout)
        return status

    def claim_of(self, served: Served) -> dict[str, Any]:
        """The `partition_claimed` record behind a `Served`."""
        claims = self.instances[served.instance].log.find(
            "partition_claimed", partition=served.partition, epoch=served.epoch
        )
        assert claims, f"{served.instance} served {served.partition} without a claim"
        return claims[0]

    def close(self) -> None:
        """Kill every instance, print each log's tail, close the proxies and connections."""
        try:
            for instance in self.instances.values():
                instance.bridge.close()
                print(f"--- {instance.log.path} (tail) ---\n{instance.bridge.log_tail(40)}")
        finally:
            try:
                for instance in self.instances.values():
                    if instance.proxy is not None:
                        instance.proxy.close()
                if self.database is not None:
                    self.database.close()
            finally:
                self.loop.close()


def held_by(rows: Iterable[LeaseRow], instance_id: str) -> list[LeaseRow]:
    """The rows `instance_id` owns."""
    return [r for r in rows if r.owner == instance_id]
