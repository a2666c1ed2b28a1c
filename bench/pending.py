"""Start-up time and memory of the daemon with 200,000 pending deliveries (issue #3).

    python bench/pending.py --count 200000 --json bench/results/pending-200000.json

The store is made the honest way: the real daemon runs against a private mosquitto with no
officer terminal connected, `--count` reports are published to it, and the benchmark waits
until the store holds that many pending deliveries (it reads the store, read-only, once a
second). Nothing is written into the store behind the daemon's back, except in step 4.

1. idle: the daemon on an empty store: start-up time, RSS.
2. fill: the `--count` reports go in (ack timeout 3600 s, so nothing falls due); how long
   that took; then SIGTERM.
3. pending, not due: the daemon restarted on that store; start-up time (process start to
   the retained `online` status), time to push a report published before the start, RSS over
   the first `--observe-s` seconds (it should page the schedule, not load it).
4. pending, overdue: every pending delivery's `next_due` is moved into the past with sqlite3
   while the daemon is stopped (as if the officers had been offline past every ack timeout),
   and the daemon is restarted with `ack_timeout_s = 1`; a watcher subscribed to every officer
   inbox counts the re-sends per second (the scheduler caps them at 500/s) while RSS is sampled.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml
from etong.devkit.mosquitto import LocalMosquitto

# This script runs as `python bench/pending.py`, so its folder is on sys.path: the e2e
# benchmark's package (bench/e2e/) is importable as `e2e`, and mypy sees it the same way.
from e2e.cli import exit_on_sigterm
from e2e.errors import BenchError
from e2e.load import PREFIX, BenchRoster, Report, bench_roster, make_reports
from e2e.loopthread import LoopThread
from e2e.machine import code_info, machine_info
from e2e.measures import RssSampler
from e2e.mqtt import MiniMqtt, close_clients, open_clients
from e2e.output import report

INSTANCE_ID = "etong-pending"
INBOX_FILTER = f"{PREFIX}/officer/+/inbox"
MIB = 2**20
MAX_FILL_RESTARTS = 10


# --- the daemon, started and watched ------------------------------------------------------


def write_config(
    directory: Path, url: str, roster_path: Path, delivery: Mapping[str, Any], protocol: int
) -> Path:
    """The daemon's config: store in `directory`, HTTP off, production log level (info)."""
    config = local_bridge_config(
        broker_url=url,
        store_path=directory / "etong.db",
        roster_path=roster_path,
        instance_id=INSTANCE_ID,
        topic_prefix=PREFIX,
        protocol=protocol,
        overrides={
            "delivery": dict(delivery),
            "limits": {"member_rate_per_min": 1_000_000},
            "http": {"listen": ""},
            "log": {"level": "info", "format": "json"},
        },
    )
    path = directory / "etong.toml"
    path.write_text(render_toml(config), encoding="utf-8")
    return path


class Watcher:
    """Subscribed to every officer inbox: counts pushes per second and finds probe reports."""

    def __init__(self, runner: LoopThread, url: str, protocol: int) -> None:
        self.pushes: list[float] = []
        self.attempts: Counter[int] = Counter()
        self.deliveries: set[str] = set()
        self.first_push: dict[str, float] = {}
        self._awaited: str | None = None
        self._found = threading.Event()
        self._runner = runner
        self._clients: list[MiniMqtt] = runner.call(
            open_clients(url, protocol, [("bench-inbox-watcher", [INBOX_FILTER], self._on_push)]),
            30,
            "connecting the inbox watcher",
        )

    def _on_push(self, topic: str, payload: bytes) -> None:
        at = time.monotonic()
        self.pushes.append(at)
        with contextlib.suppress(orjson.JSONDecodeError):
            push = orjson.loads(payload)
            self.attempts[int(push.get("attempt") or 0)] += 1
            self.deliveries.add(str(push.get("delivery_id")))
            event_id = str((push.get("event") or {}).get("event_id"))
            if event_id not in self.first_push:
                # Stored before `_awaited` is read; `wait_push` sets it before looking here.
                self.first_push[event_id] = at
                if event_id == self._awaited:
                    self._found.set()

    def wait_push(self, event_id: str, timeout: float) -> float | None:
        """When the first push of `event_id` arrived (monotonic), waiting up to `timeout`."""
        self._awaited = event_id
        if event_id not in self.first_push:
            self._found.wait(timeout)
        return self.first_push.get(event_id)

    def close(self) -> None:
        """Disconnect."""
        with contextlib.suppress(BenchError):
            self._runner.call(close_clients(self._clients), 10, "disconnecting the watcher")


class Daemon:
    """`etong run` as a subprocess, its RSS sampled from the moment it is spawned."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.bridge = LocalBridge(config_path, log_path=log_path)
        self.spawned_at = time.monotonic()
        self.bridge.start()
        assert self.bridge.pid is not None
        self.rss = RssSampler(self.bridge.pid)
        self.rss.start()
        self.online_at = 0.0

    def wait_online(self, timeout: float = 60.0) -> float:
        """Wait for the retained `online` status; return the start-up time in seconds."""
        self.bridge.wait_ready(timeout=timeout)
        self.online_at = time.monotonic()
        return self.online_at - self.spawned_at

    def stop(self) -> dict[str, Any]:
        """SIGTERM, and how long the graceful stop took."""
        self.rss.stop()
        return stop_daemon(self.bridge)

    def close(self) -> None:
        """Kill it if it still runs (failure paths)."""
        self.rss.stop()
        self.bridge.close()


def stop_daemon(bridge: LocalBridge) -> dict[str, Any]:
    """SIGTERM, and how long the graceful stop took."""
    started = time.monotonic()
    try:
        code = bridge.sigterm(timeout=20)
    finally:
        bridge.close()
    return {"exit_code": code, "stop_s": round(time.monotonic() - started, 3)}


def last_error(log_path: Path) -> str:
    """The daemon's last error-level log line (its `error` field where it has one)."""
    found = ""
    with contextlib.suppress(OSError):
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and record.get("level") in ("error", "critical"):
                    found = f"{record.get('event')}: {record.get('error') or record}"
    return found[:400]


def ready_log(log_path: Path) -> dict[str, Any]:
    """The daemon's own `bridge_ready` log line (its start-up time and what it republished)."""
    found: dict[str, Any] = {}
    with contextlib.suppress(OSError):
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict) and record.get("event") == "bridge_ready":
                    found = {k: v for k, v in record.items() if k not in ("roster", "event")}
    return found


# --- the store, read from outside -----------------------------------------------------------


def pending_count(store: Path) -> int:
    """Pending deliveries in the store (read-only; WAL lets us read while the daemon writes)."""
    if not store.exists():
        return 0
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT count(*) FROM deliveries WHERE state = 'pending'").fetchone()
        return int(row[0])
    except sqlite3.OperationalError:
        return 0  # the schema is not there yet
    finally:
        conn.close()


def make_all_overdue(store: Path, now: float) -> int:
    """Move every pending delivery's next send into the past (the daemon must be stopped)."""
    conn = sqlite3.connect(store, timeout=5)
    try:
        with conn:
            cur = conn.execute(
                "UPDATE deliveries SET next_due = ? WHERE state = 'pending'", (now - 60.0,)
            )
            return int(cur.rowcount)
    finally:
        conn.close()


# --- measuring ----------------------------------------------------------------------------


def rss_at(samples: Sequence[tuple[float, int]], marks: Sequence[float]) -> dict[str, float]:
    """The RSS (MiB) sampled closest after each mark (seconds since sampling began)."""
    out: dict[str, float] = {}
    for mark in marks:
        after = [rss for t, rss in samples if t >= mark]
        if after:
            out[f"{mark:g}s"] = round(after[0] / MIB, 1)
    return out


def per_second(times: Sequence[float], since: float, seconds: int) -> list[int]:
    """How many of `times` fell in each whole second after `since`."""
    buckets = [0] * seconds
    for t in times:
        index = int(t - since)
        if 0 <= index < seconds:
            buckets[index] += 1
    return buckets


@dataclass(frozen=True)
class Settings:
    """What the command line asked for."""

    count: int
    observe_s: int
    idle_s: int
    protocol: int
    workdir: Path
    fill_timeout_s: float


class PendingBench:
    """The four steps, sharing one broker, one publisher and one inbox watcher."""

    def __init__(self, settings: Settings, broker: LocalMosquitto, runner: LoopThread) -> None:
        self.settings = settings
        self.broker = broker
        self.runner = runner
        self.roster: BenchRoster = bench_roster()
        self.roster_path = settings.workdir / "roster.toml"
        self.roster_path.write_text(render_toml(self.roster.document), encoding="utf-8")
        rng = random.Random(3)
        self.reports = make_reports(self.roster, settings.count, rng)
        self.probes = iter(make_reports(self.roster, 8, rng))
        self.publisher: MiniMqtt = runner.call(
            open_clients(broker.url, settings.protocol, [("bench-pending-publisher", (), None)]),
            30,
            "connecting the publisher",
        )[0]
        self.store_dir = settings.workdir / "store"
        self.store_dir.mkdir()

    def close(self) -> None:
        """Disconnect the publisher."""
        with contextlib.suppress(BenchError):
            self.runner.call(close_clients([self.publisher]), 10, "disconnecting the publisher")

    def publish(self, reports: Sequence[Report], timeout: float) -> None:
        """Publish reports at QoS 1 and wait for the broker's PUBACKs."""

        async def go() -> None:
            self.publisher.expect_acks(len(reports))
            for index, (_, topic, payload, _) in enumerate(reports):
                self.publisher.publish(topic, payload)
                if index % 500 == 499:
                    await asyncio.sleep(0)  # lets PUBACKs in during the burst
            await self.publisher.wait_acked()

        self.runner.call(go(), timeout, f"publishing {len(reports)} reports")

    def observe(
        self, config: Path, log: Path, seconds: float, probe_timeout: float
    ) -> dict[str, Any]:
        """Start the daemon with a probe report waiting for it at the broker; for `seconds`
        from the spawn, sample its RSS and count the pushes on every officer inbox."""
        probe = next(self.probes)
        self.publish([probe], 10)  # waits in the daemon's persistent session at the broker
        watcher = Watcher(self.runner, self.broker.url, self.settings.protocol)
        daemon = Daemon(config, log)
        try:
            startup_s = daemon.wait_online()
            pushed_at = watcher.wait_push(probe[0], probe_timeout)
            remaining = daemon.spawned_at + seconds - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)  # the observation window itself
            code = daemon.bridge.returncode
            if code is None:
                stopped = daemon.stop()
            else:  # the daemon died during the window: a result in itself
                stopped = {"exit_code": code, "exited_early": True, "error": last_error(log)}
        finally:
            daemon.close()
            watcher.close()
        samples = daemon.rss.samples
        pushes = list(watcher.pushes)
        return {
            "startup_s": round(startup_s, 3),
            "first_push_s": (
                round(pushed_at - daemon.spawned_at, 3) if pushed_at is not None else None
            ),
            "rss_peak_mb": round(daemon.rss.peak_mb, 1),
            "rss_mb_at": rss_at(samples, [1, 2, 5, 10, 20, 30, 45, 60]),
            "rss_last_mb": round(samples[-1][1] / MIB, 1) if samples else None,
            "pushes_seen": len(pushes),
            "pushes_per_second": per_second(pushes, daemon.online_at, max(1, int(seconds))),
            "attempts_seen": dict(sorted(watcher.attempts.items())),
            "distinct_deliveries_seen": len(watcher.deliveries),
            "daemon_ready_log": ready_log(log),
            **stopped,
        }

    # -- the steps

    def idle(self) -> dict[str, Any]:
        """Step 1: the daemon on an empty store."""
        directory = self.settings.workdir / "idle"
        directory.mkdir()
        config = write_config(
            directory,
            self.broker.url,
            self.roster_path,
            {"ack_timeout_s": 3600, "backoff_max_s": 3600},
            self.settings.protocol,
        )
        # A first start creates the daemon's persistent session at the broker, so that the
        # probe of the measured start waits there for it (and Python's files are cached).
        primer = Daemon(config, directory / "etong.log")
        try:
            primer.wait_online()
            primer.stop()
        finally:
            primer.close()
        return self.observe(config, directory / "etong.log", self.settings.idle_s, 30)

    def fill(self) -> dict[str, Any]:
        """Step 2: `count` reports through the real daemon, nobody acking.

        Should the daemon exit before the store is full, the reports it had not acknowledged
        are still queued in its broker session: the exit is recorded (`daemon_exits`, with
        the daemon's own error line) and the daemon started again, up to a limit.
        """
        config = self._config({"ack_timeout_s": 3600, "backoff_max_s": 3600})
        store = self.store_dir / "etong.db"
        log = self.store_dir / "etong.log"
        exits: list[dict[str, Any]] = []
        peak_mb = 0.0
        daemon = Daemon(config, log)
        try:
            daemon.wait_online()
            t0 = time.monotonic()
            self.publish(self.reports, self.settings.fill_timeout_s)
            published = time.monotonic() - t0
            deadline = t0 + self.settings.fill_timeout_s
            while (count := self._wait_pending(daemon, store, deadline)) < self.settings.count:
                exits.append(
                    {
                        "after_s": round(time.monotonic() - t0, 1),
                        "pending": count,
                        "exit_code": daemon.bridge.returncode,
                        "error": last_error(log),
                    }
                )
                print(f"    the daemon exited while filling: {exits[-1]}", flush=True)
                if len(exits) > MAX_FILL_RESTARTS:
                    raise BenchError(f"the daemon exited {len(exits)} times: {exits}")
                peak_mb = max(peak_mb, daemon.rss.peak_mb)
                daemon.close()
                daemon = Daemon(config, log)
                daemon.wait_online()
            filled = time.monotonic() - t0
            stopped = daemon.stop()
        finally:
            daemon.close()
        return {
            "published_s": round(published, 1),
            "filled_s": round(filled, 1),
            "events_per_s": round(self.settings.count / filled, 1),
            "pending": count,
            "pending_after_stop": pending_count(store),
            "rss_peak_mb": round(max(peak_mb, daemon.rss.peak_mb), 1),
            "store_mb": round(_store_bytes(store) / MIB, 1),
            "daemon_exits": exits,
            **stopped,
        }

    def _wait_pending(self, daemon: Daemon, store: Path, deadline: float) -> int:
        """Pending deliveries once there are `count`, or as soon as the daemon has exited."""
        count = self.settings.count
        while True:
            seen = pending_count(store)
            if seen >= count or daemon.bridge.returncode is not None:
                return seen
            if time.monotonic() > deadline:
                raise BenchError(
                    f"the store holds {seen}/{count} pending deliveries after "
                    f"{self.settings.fill_timeout_s:.0f} s"
                )
            time.sleep(1.0)  # polling the store, with a deadline

    def _config(self, delivery: Mapping[str, Any]) -> Path:
        return write_config(
            self.store_dir, self.broker.url, self.roster_path, delivery, self.settings.protocol
        )

    def not_due(self) -> dict[str, Any]:
        """Step 3: restart on the full store; nothing is due."""
        config = self._config({"ack_timeout_s": 3600, "backoff_max_s": 3600})
        result = self.observe(config, self.store_dir / "etong.log", self.settings.observe_s, 30)
        result["pending_after"] = pending_count(self.store_dir / "etong.db")
        return result

    def overdue(self) -> dict[str, Any]:
        """Step 4: every pending delivery overdue; re-sends paced by the scheduler."""
        moved = make_all_overdue(self.store_dir / "etong.db", time.time())
        config = self._config({"ack_timeout_s": 1, "backoff_max_s": 10, "max_attempts": 3})
        result = self.observe(config, self.store_dir / "etong.log", self.settings.observe_s, 30)
        buckets: list[int] = result["pushes_per_second"]
        steady = buckets[1:] or buckets
        result["made_overdue"] = moved
        result["resends_per_s_mean"] = round(sum(steady) / max(1, len(steady)), 1)
        result["resends_per_s_max"] = max(buckets, default=0)
        return result


def _store_bytes(store: Path) -> int:
    return sum(p.stat().st_size for p in store.parent.glob(store.name + "*") if p.is_file())


def run(settings: Settings) -> dict[str, Any]:
    """The four steps; returns the JSON document."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    with contextlib.ExitStack() as stack:
        broker = LocalMosquitto(settings.workdir / "mosquitto")
        broker.start()
        stack.callback(broker.kill)
        runner = LoopThread("pending-bench")
        stack.callback(runner.stop)
        generated = time.monotonic()
        bench = PendingBench(settings, broker, runner)
        stack.callback(bench.close)
        print(f"generated {settings.count} reports in {time.monotonic() - generated:.1f} s")
        steps: dict[str, Any] = {}
        for name, step in (
            ("idle_empty_store", bench.idle),
            ("fill", bench.fill),
            ("pending_not_due", bench.not_due),
            ("pending_overdue", bench.overdue),
        ):
            steps[name] = step()
            print(f"  {name}: {_headline(steps[name])}", flush=True)
    return {
        "count": settings.count,
        **steps,
        "settings": {
            "observe_s": settings.observe_s,
            "idle_s": settings.idle_s,
            "protocol": settings.protocol,
            "resend_cap_per_s": 500,
            "how": "the store was filled by the real daemon from published reports; only "
            "step 4 edits it (next_due moved into the past with sqlite3, daemon stopped)",
        },
        "machine": machine_info(settings.workdir),
        "code": code_info(),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - t0, 1),
    }


def _headline(step: Mapping[str, Any]) -> str:
    keys = ("startup_s", "first_push_s", "rss_peak_mb", "filled_s", "resends_per_s_mean")
    return ", ".join(f"{k} {step[k]}" for k in keys if k in step)


def render_table(doc: Mapping[str, Any]) -> str:
    """The result as a readable table."""
    m = doc["machine"]
    fill = doc["fill"]
    rows: list[tuple[str, Mapping[str, Any]]] = [
        ("idle, empty store", doc["idle_empty_store"]),
        (f"{doc['count']} pending, none due", doc["pending_not_due"]),
        (f"{doc['count']} pending, all overdue", doc["pending_overdue"]),
    ]
    lines = [
        f"etong pending-deliveries benchmark: {doc['count']} pending deliveries",
        f"machine: {m['cpu_count']} x {m['cpu_model']}, Python {m['python']}, mosquitto "
        f"{m['mosquitto']}, store on {m['store_filesystem']}",
        f"store filled by the daemon in {fill['filled_s']} s ({fill['events_per_s']} reports/s),"
        f" {fill['store_mb']} MiB on disk; daemon peak RSS while filling {fill['rss_peak_mb']} MiB",
        *(
            [
                f"the daemon EXITED {len(fill['daemon_exits'])} time(s) while filling and was "
                f"restarted: {fill['daemon_exits']}"
            ]
            if fill["daemon_exits"]
            else []
        ),
        "",
        f"{'':34} {'start-up s':>10} {'1st push s':>10} {'peak RSS MiB':>12} "
        f"{'RSS @5s/@end MiB':>17} {'pushes/s mean (max)':>20}",
    ]
    for label, step in rows:
        at = step["rss_mb_at"]
        rss_pair = f"{at.get('5s', '-')}/{step['rss_last_mb']}"
        buckets = step["pushes_per_second"][1:] or step["pushes_per_second"]
        mean = sum(buckets) / max(1, len(buckets))
        pushes = f"{mean:.0f} ({max(step['pushes_per_second'], default=0)})"
        first = step["first_push_s"] if step["first_push_s"] is not None else "-"
        lines.append(
            f"{label:34} {step['startup_s']:>10} {first!s:>10} {step['rss_peak_mb']:>12} "
            f"{rss_pair:>17} {pushes:>20}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=200_000, help="pending deliveries to make")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("--observe-s", type=int, default=60, help="window after each restart")
    parser.add_argument("--idle-s", type=int, default=10, help="window for the empty store")
    parser.add_argument("--protocol", type=int, choices=(3, 5), default=5, help="MQTT version")
    parser.add_argument(
        "--fill-timeout-s",
        type=float,
        default=None,
        help="deadline for filling the store (default: 120 s + 1 s per 200 reports)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the broker, store and logs here")
    args = parser.parse_args(argv)
    if args.count < 1 or args.observe_s < 1 or args.idle_s < 1:
        parser.error("--count, --observe-s and --idle-s must be positive")
    return args


@contextlib.contextmanager
def _workdir(requested: Path | None) -> Iterator[Path]:
    if requested is not None:
        requested.mkdir(parents=True, exist_ok=True)
        yield requested.resolve()
        return
    path = Path(tempfile.mkdtemp(prefix="etong-pending-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0, or 1 with what went wrong."""
    args = parse_args(argv)
    exit_on_sigterm()
    with _workdir(args.workdir) as workdir:
        settings = Settings(
            count=args.count,
            observe_s=args.observe_s,
            idle_s=args.idle_s,
            protocol=args.protocol,
            workdir=workdir,
            fill_timeout_s=args.fill_timeout_s or 120 + args.count / 200,
        )
        try:
            doc = run(settings)
        except BenchError as exc:
            print(f"benchmark FAILED: {exc}", file=sys.stderr)
            return 1
    report(render_table(doc), doc, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
