"""The command line on a cluster's store: `status --json` lists partitions and instances, and
`check-config` refuses a roster whose escalation leaves a station (DESIGN §5, §7)."""

from __future__ import annotations

import copy
import subprocess
import sys
import time
from pathlib import Path

import orjson

from etong.config import parse_settings
from etong.devkit.localbridge import render_toml
from etong.store import open_cluster_store
from tests.rosters import stations_roster


def write_config(tmp_path: Path, url: str, roster: dict[str, object]) -> Path:
    (tmp_path / "roster.toml").write_text(render_toml(roster), encoding="utf-8")
    config = tmp_path / "etong.toml"
    config.write_text(
        f'[store]\nurl = "{url}"\npii_key_file = "pii.key"\n[cluster]\nlease_s = 10\n'
        '[roster]\npath = "roster.toml"\n[http]\nlisten = ""\n',
        encoding="utf-8",
    )
    return config


def etong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etong", *args], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip


LEASE_S = 3600
"""A lease long enough that a slow start of `etong status` cannot outlast it."""


async def test_status_json_lists_every_partition_its_owner_and_lease_expiry(
    tmp_path: Path, pg_url: str
) -> None:
    config = write_config(tmp_path, pg_url, stations_roster())
    settings = parse_settings({"store": {"url": pg_url}}, config_path=config)
    store = await open_cluster_store(settings.store)
    claimed_at = time.monotonic()
    try:
        await store.ensure_partitions(["s1", "s2", "s3"])
        await store.heartbeat("etong-7", LEASE_S)
        await store.claim("s2", "etong-7", LEASE_S)
    finally:
        await store.close()

    done = etong("status", "--json", "--config", str(config))
    # However slow this machine: the lease has run for at most this long when shown.
    elapsed = time.monotonic() - claimed_at

    assert done.returncode == 0, done.stderr  # the http endpoint is off: cannot tell, exit 0
    shown = orjson.loads(done.stdout)
    assert shown["instances"] == ["etong-7"]
    by_partition = {p["partition"]: p for p in shown["partitions"]}
    assert sorted(by_partition) == ["s1", "s2", "s3"]
    assert by_partition["s2"]["owner"] == "etong-7" and by_partition["s2"]["epoch"] == 1
    assert LEASE_S - elapsed - 1 <= by_partition["s2"]["expires_in_s"] <= LEASE_S
    assert by_partition["s2"]["lease_expires_at"].endswith("+08:00")
    assert by_partition["s1"]["owner"] is None and by_partition["s1"]["expires_in_s"] is None


def test_check_config_refuses_a_cross_station_backup_only_in_a_cluster(tmp_path: Path) -> None:
    roster = copy.deepcopy(stations_roster(stations=2))
    roster["officers"][0]["backup"] = "p-21"  # s1's officer backed up by one of s2
    config = write_config(tmp_path, "postgresql://postgres@127.0.0.1:5432/unused", roster)

    done = etong("check-config", "--config", str(config))

    assert done.returncode == 2
    assert "backup 'p-21' is of station s2" in done.stderr
    assert "escalation stays in the grid's station" in done.stderr
    sqlite = tmp_path / "sqlite.toml"
    sqlite.write_text('[roster]\npath = "roster.toml"\n[store]\npath = "e.db"\n', encoding="utf-8")
    assert etong("check-config", "--config", str(sqlite)).returncode == 0  # one instance: fine
