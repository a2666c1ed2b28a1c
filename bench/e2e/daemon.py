"""Contender B: the real `etong run` on a fresh SQLite store; the config every etong run of the
benchmark shares (the cluster's instances too)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml

from e2e.contender import Contender
from e2e.load import PREFIX
from e2e.measures import batch_totals
from e2e.pg_cluster import free_port
from e2e.plan import Plan, Settings

INSTANCE_ID = "etong-bench"


def etong_config(
    url: str,
    settings: Settings,
    plan: Plan,
    round_dir: Path,
    *,
    instance_id: str = INSTANCE_ID,
    store: Mapping[str, Any] | None = None,
    http_listen: str = "",
) -> dict[str, dict[str, Any]]:
    """The bench's `etong run` config: an SQLite store in `round_dir`, or `store`."""
    config = local_bridge_config(
        broker_url=url,
        store_path=round_dir / "etong.db",
        roster_path=plan.roster_path,
        instance_id=instance_id,
        topic_prefix=PREFIX,
        protocol=settings.protocol,
        overrides={
            # Nothing falls due during a round: every push is acked within seconds.
            "delivery": {"ack_timeout_s": 3600, "max_attempts": 3, "backoff_max_s": 3600},
            "limits": {"member_rate_per_min": 1_000_000},
            "http": {"listen": http_listen},
            "log": {"level": "warning", "format": "json"},
            "store": dict(store or {}),
        },
    )
    # Every instance of a cluster has the same broker.client_id (partition ids derive from it).
    config["broker"]["client_id"] = f"{INSTANCE_ID}-bridge"
    return config


def start_etong(
    url: str, settings: Settings, plan: Plan, round_dir: Path, source: Path | None = None
) -> Contender:
    """Start contender B, `etong run`, with a fresh SQLite store in `round_dir`; with
    `source`, the etong of that source tree instead (contender B0, `--compare-with`)."""
    config_path = round_dir / "etong.toml"
    port = free_port()
    config = etong_config(url, settings, plan, round_dir, http_listen=f"127.0.0.1:{port}")
    config_path.write_text(render_toml(config), "utf-8")
    env = {"PYTHONPATH": str(source)} if source is not None else None
    bridge = LocalBridge(config_path, log_path=round_dir / "etong.log", extra_env=env)
    bridge.start()
    try:
        bridge.wait_ready(timeout=30)
    except Exception:
        bridge.close()
        raise
    assert bridge.pid is not None

    def stop() -> dict[str, Any]:
        started = time.monotonic()
        try:
            code = bridge.sigterm(timeout=15)
            return {"exit_code": code, "stop_s": round(time.monotonic() - started, 3)}
        finally:
            bridge.close()

    return Contender(
        (bridge.pid,),
        stop,
        lambda: bridge.returncode,
        lambda: bridge.log_tail(30),
        batches=lambda: batch_totals([port]),
    )
