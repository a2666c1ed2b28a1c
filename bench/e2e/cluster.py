"""Contenders P1, P2, ...: that many `etong run` on one fresh PostgreSQL database, measured once
every station is served (`pg_cluster.cluster_served`)."""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from etong.devkit.localbridge import LocalBridge, render_toml
from etong.keyfile import load_or_create_key

from e2e.contender import Contender
from e2e.daemon import INSTANCE_ID, etong_config
from e2e.errors import BenchError
from e2e.measures import batch_totals
from e2e.pg_cluster import PgServer, Served, cluster_served, free_port, readiness
from e2e.plan import Plan, Settings


def cluster_starter(instances: int) -> Callable[[str, Settings, Plan, Path], Contender]:
    """The start of contender P`instances`: that many `etong run` on one fresh database."""

    def start(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
        return start_cluster(url, settings, plan, round_dir, instances)

    return start


def start_cluster(
    url: str, settings: Settings, plan: Plan, round_dir: Path, instances: int
) -> Contender:
    """Start `instances` `etong run` processes on a new database and wait until every station
    is served with balanced shares (`pg_cluster.cluster_served`)."""
    server = settings.store
    assert server is not None
    database = server.create()
    bridges, ports = _instances(
        url, settings, plan, round_dir, store_url=server.url_of(database), instances=instances
    )
    log = functools.partial(_log, bridges)
    exit_code = functools.partial(_exit_code, bridges)
    stop = functools.partial(_stop, bridges, server, database)
    try:
        started = time.monotonic()
        for bridge in bridges:
            bridge.start()
        for bridge in bridges:
            bridge.wait_ready(timeout=60)
        served = wait_served(
            server=server,
            database=database,
            plan=plan,
            bridges=bridges,
            ports=ports,
            exit_code=exit_code,
            log=log,
        )
        served_s = time.monotonic() - started
    except BaseException:
        with contextlib.suppress(Exception):
            stop()
        raise
    pids = tuple(b.pid for b in bridges if b.pid is not None)
    info = {
        "served_s": round(served_s, 3),
        "assignment": served.assignment,
        "database": database,
    }
    return Contender(
        pids,
        stop,
        exit_code,
        log,
        lambda: server.store_pids(database),
        info,
        batches=lambda: batch_totals(ports),
    )


def _instances(
    url: str, settings: Settings, plan: Plan, round_dir: Path, *, store_url: str, instances: int
) -> tuple[list[LocalBridge], list[int]]:
    """The instances, not yet started, each with its config file and /metrics port."""
    key_file = round_dir / "pii.key"
    load_or_create_key(key_file)  # one key for all, before any instance starts (DESIGN §7)
    bridges: list[LocalBridge] = []
    ports: list[int] = []
    for k in range(1, instances + 1):
        port = free_port()
        config = etong_config(
            url,
            settings,
            plan,
            round_dir,
            instance_id=f"{INSTANCE_ID}-{k}",
            store={"url": store_url, "pii_key_file": str(key_file)},
            http_listen=f"127.0.0.1:{port}",
        )
        config_path = round_dir / f"etong-{k}.toml"
        config_path.write_text(render_toml(config), encoding="utf-8")
        bridges.append(LocalBridge(config_path, log_path=round_dir / f"etong-{k}.log"))
        ports.append(port)
    return bridges, ports


def _log(bridges: Sequence[LocalBridge]) -> str:
    return "\n".join(f"[{b.instance_id}]\n{b.log_tail(15)}" for b in bridges)


def _exit_code(bridges: Sequence[LocalBridge]) -> int | None:
    codes = [b.returncode for b in bridges]
    exited = [c for c in codes if c is not None]
    return next((c for c in exited if c != 0), exited[0] if exited else None)


def _stop(bridges: Sequence[LocalBridge], server: PgServer, database: str) -> dict[str, Any]:
    started = time.monotonic()
    try:
        # All at once (none takes over what another hands over), and one SIGTERM each: a
        # second one that lands in the last moments of the interpreter's exit, once Python
        # has put the default handlers back, ends the process by the signal (exit -15).
        started_ones = [bridge for bridge in bridges if bridge.pid is not None]
        with concurrent.futures.ThreadPoolExecutor(max(1, len(started_ones))) as pool:
            codes = list(pool.map(lambda bridge: bridge.sigterm(timeout=30), started_ones))
        return {
            "exit_code": next((c for c in codes if c != 0), 0),
            "exit_codes": codes,
            "stop_s": round(time.monotonic() - started, 3),
        }
    finally:
        for bridge in bridges:
            bridge.close()
        server.drop(database)


def wait_served(
    *,
    server: PgServer,
    database: str,
    plan: Plan,
    bridges: Sequence[LocalBridge],
    ports: Sequence[int],
    exit_code: Callable[[], int | None],
    log: Callable[[], str],
    timeout: float = 90.0,
) -> Served:
    """Poll the leases and every instance's /readyz until the cluster serves every station."""
    deadline = time.monotonic() + timeout
    while True:
        owners = server.owners(database)
        ready = {b.instance_id: readiness(port) for b, port in zip(bridges, ports, strict=True)}
        served = cluster_served(plan.roster.stations, owners, ready)
        if served is not None:
            return served
        code = exit_code()
        if code is not None:
            raise BenchError(f"an instance exited with code {code} before serving; {log()}")
        if time.monotonic() >= deadline:
            raise BenchError(
                f"the cluster did not serve every station within {timeout:.0f} s: leases "
                f"{owners}, /readyz {ready}\n{log()}"
            )
        time.sleep(0.2)  # polling the database and /readyz, under the deadline above
