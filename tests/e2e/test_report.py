"""`etong report` over a store made by real traffic (DESIGN §10): the daemon as a process on a
private mosquitto, handhelds reporting, officers receiving and verifying, declining, or
staying silent; the report read from the store while the daemon runs."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.conftest import BridgeStarter
from tests.e2e.delivery_helpers import run_cli
from tests.e2e.helpers import Terminals
from tests.waiting import poll_until

pytestmark = pytest.mark.e2e


def _around_today(zone: str) -> list[str]:
    """A period from yesterday to tomorrow in the bridge's zone: the traffic of this test,
    whatever the day and even across a midnight while it runs."""
    today = datetime.now(ZoneInfo(zone)).date()
    return ["--from", str(today - timedelta(days=1)), "--to", str(today + timedelta(days=1))]


@pytest.fixture(params=["sqlite", "postgres"])
def store_section(request: pytest.FixtureRequest) -> dict[str, str]:
    """The daemon's `[store]`: its SQLite file, or a PostgreSQL database of this test's own."""
    if request.param == "sqlite":
        return {}
    return {"url": request.getfixturevalue("pg_url")}


def test_figures_of_live_traffic_while_the_daemon_runs(
    store_section: dict[str, str],  # first: its database outlives the daemon
    start_bridge: BridgeStarter,
    terminals: Terminals,
    tmp_path: Path,
) -> None:
    # One attempt per officer: a silent duty officer gives a delivery up within seconds.
    bridge = start_bridge(delivery={"max_attempts": 1, "ack_timeout_s": 1}, store=store_section)
    if store_section:  # on PostgreSQL the station's connections come up once its lease is held
        poll_until(
            lambda: '"partition_serving"' in bridge.log_path.read_text(encoding="utf-8"),
            timeout=20,
            what="the station's partition served",
        )
    terminals.officer("p-1001", auto_ack=("received", "verified"))
    terminals.officer("p-2002", auto_ack=("declined",))  # ZS-018's backup: "not mine"
    member = terminals.member("ZS-017", "g-0231")
    other = terminals.member("ZS-018", "g-0301")

    verified = [member.send(member.event(type="move_out")) for _ in range(3)]
    for event_id in verified:
        member.wait_for_receipt(event_id, "verified")
    member.send(member.event(event_id=verified[0], type="move_out"))  # a repeat
    member.wait_for_receipt(verified[0], "duplicate")
    given_up = [other.send(other.event(type="info_update")) for _ in range(2)]
    for event_id in given_up:  # declined → the duty officer p-9001, who never answers
        other.wait_for_receipt(event_id, "undeliverable", timeout=20)

    period = _around_today("Asia/Shanghai")
    done = run_cli(bridge.config_path, "report", *period, "--format", "json")
    assert done.returncode == 0, done.stderr
    [station] = json.loads(done.stdout)["stations"]
    assert station["reports"] == {
        "accepted": 5,
        "duplicate_id": 1,
        "duplicate_household": 0,
        "rejected": 0,
        "total": 6,
    }
    assert station["fates"] == {
        "received": 3,
        "verified": 3,
        "declined": 2,
        "escalated": 2,
        "undeliverable": 2,
        "resend": 0,
        "open": 0,
    }
    officers = {o["id"]: o for o in station["officers"]}
    assert (officers["p-1001"]["received"], officers["p-1001"]["verified"]) == (3, 3)
    assert officers["p-1001"]["to_verified"]["n"] == 3
    assert officers["p-1001"]["to_received"]["median_s"] < 60
    assert (officers["p-2002"]["declined"], officers["p-9001"]["undeliverable"]) == (2, 2)
    assert {m["id"]: m["reports"] for m in station["members"]} == {"g-0231": 4, "g-0301": 2}
    assert [g["id"] for g in station["silent_grids"]] == []
    assert "g-0001" in [m["id"] for m in station["silent_members"]]

    page = tmp_path / "figures.html"
    done = run_cli(bridge.config_path, "report", *period, "--format", "html", "--out", str(page))
    assert done.returncode == 0, done.stderr
    assert "庄市派出所" in page.read_text(encoding="utf-8")
