"""A SIGHUP's reload lets the replaced roster go (issue 18): nothing in the daemon keeps the
roster it started with. A province's roster is ~150 MB; the cluster scale test
(tests/e2e/test_cluster_scale.py with ETONG_SCALE_ROSTER=province) saw each instance grow
from 247 to 397 MB at its first reload, because `Daemon.run` held the first roster to the
end (for one log line)."""

from __future__ import annotations

import asyncio
import os
import signal
import weakref
from pathlib import Path
from typing import Any

from etong.brokers.fake import FakeBrokers
from etong.cluster.manager import ClusterManager
from etong.daemon import Daemon
from etong.devkit.localbridge import render_toml
from etong.roster import Roster
from tests.integration.conftest import make_settings
from tests.integration.test_daemon_lifecycle import restore_signal_handlers
from tests.rosters import stations_roster
from tests.waiting import DEADLINE_S, wait_until

__all__ = ["restore_signal_handlers"]  # a fixture this module's tests use


def serving_roster(daemon: Daemon) -> Roster | None:
    """The roster the daemon serves now: its bridge's, or its cluster manager's."""
    if isinstance(daemon.service, ClusterManager):
        return daemon.service.roster
    return daemon.bridge.roster if daemon.bridge is not None else None


async def reload_and_check_the_first_roster_goes(tmp_path: Path, **sections: Any) -> None:
    roster_path = tmp_path / "roster.toml"
    roster_path.write_text(render_toml(stations_roster(3)), encoding="utf-8")
    settings = make_settings(tmp_path, roster={"path": str(roster_path)}, **sections)
    daemon = Daemon(settings, broker_factory=FakeBrokers())
    run = asyncio.create_task(daemon.run())
    try:
        await wait_until(lambda: run.done() or daemon._readiness()[0], "the daemon to be ready")
        assert not run.done(), run
        started_with = serving_roster(daemon)
        assert started_with is not None
        first = weakref.ref(started_with)
        del started_with
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_until(
            lambda: serving_roster(daemon) not in (None, first()), "the reloaded roster"
        )
        await wait_until(lambda: first() is None, "the replaced roster to be freed")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0


async def test_one_instance_lets_the_replaced_roster_go(
    tmp_path: Path, restore_signal_handlers: None
) -> None:
    await reload_and_check_the_first_roster_goes(tmp_path)


async def test_a_cluster_instance_lets_the_replaced_roster_go(
    tmp_path: Path, restore_signal_handlers: None, pg_url: str
) -> None:
    await reload_and_check_the_first_roster_goes(
        tmp_path,
        store={"url": pg_url, "pii_key_file": str(tmp_path / "pii.key")},
        cluster={"lease_s": 5},
    )
