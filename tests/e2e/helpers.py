"""Shared pieces of the e2e tier: the test roster, config files, and a set of terminals.

The bridge runs as a real subprocess (`etong.localbroker.LocalBridge`, the e2e tier's
BridgeProcess) against a real mosquitto; the tests talk to it only over MQTT, as the
handhelds and officer terminals do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from etong.localbroker import LocalBridge, local_bridge_config, render_toml
from etong.simulate import GridMemberTerminal, OfficerTerminal
from etong.topics import Topics

BridgeProcess = LocalBridge
"""The daemon as a subprocess: start, wait_ready, sigterm, kill9, restart, log_tail."""

INSTANCE_ID = "etong-e2e"
TOPICS = Topics("etong/v1")

# The roster every e2e test runs with. p-2001 is away from yesterday to tomorrow, so whatever
# time zone the bridge takes "today" in, ZS-018's reports go straight to the backup p-2002.
GRID_OFFICER = {"ZS-017": "p-1001", "ZS-018": "p-2001"}
BACKUP = {"p-1001": "p-1002", "p-2001": "p-2002"}
DUTY_OFFICER = "p-9001"
REGISTRAR = "r-0001"


def e2e_roster(today: date) -> dict[str, Any]:
    """The e2e roster: one station, one community with a registrar, two grids, six officers."""
    away = {"from": today - timedelta(days=1), "to": today + timedelta(days=1)}
    station = "zhuangshi"
    return {
        "stations": [{"id": station, "name": "庄市派出所", "duty_officer": DUTY_OFFICER}],
        "communities": [
            {"id": "bgjy", "name": "北高教园社区", "station": station, "registrar": REGISTRAR}
        ],
        "officers": [
            {"id": "p-1001", "name": "郑向阳", "station": station, "backup": "p-1002"},
            {"id": "p-1002", "name": "王立新", "station": station},
            {
                "id": "p-2001",
                "name": "陈建国",
                "station": station,
                "backup": "p-2002",
                "absent": [away],
            },
            {"id": "p-2002", "name": "李海燕", "station": station},
            {"id": DUTY_OFFICER, "name": "值班民警", "station": station},
            {"id": REGISTRAR, "name": "周敏", "station": station},
        ],
        "grids": [
            {
                "id": "ZS-017",
                "name": "北高教园第17网格",
                "community": "bgjy",
                "officer": "p-1001",
                "head": "g-0001",
                "members": ["g-0001", "g-0231", "g-0232"],
            },
            {
                "id": "ZS-018",
                "name": "北高教园第18网格",
                "community": "bgjy",
                "officer": "p-2001",
                "head": "g-0301",
                "members": ["g-0301", "g-0302"],
            },
        ],
        "members": [
            {"id": "g-0001", "name": "吴海峰"},
            {"id": "g-0231", "name": "孙倩"},
            {"id": "g-0232", "name": "赵磊"},
            {"id": "g-0301", "name": "钱芳"},
            {"id": "g-0302", "name": "冯涛"},
        ],
    }


def write_roster(path: Path, roster: Mapping[str, Any]) -> Path:
    """Write a roster document as TOML and return its path."""
    path.write_text(render_toml(roster), encoding="utf-8")
    return path


def write_config(
    path: Path,
    *,
    broker_url: str,
    roster_path: Path,
    protocol: int = 5,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write a bridge config beside its store (relative path) and return its path."""
    config = local_bridge_config(
        broker_url=broker_url,
        # Relative on purpose: DESIGN §4 resolves it against the config file's folder.
        store_path=Path("etong.db"),
        roster_path=roster_path,
        instance_id=INSTANCE_ID,
        topic_prefix=TOPICS.prefix,
        protocol=protocol,
        overrides=overrides,
    )
    path.write_text(render_toml(config), encoding="utf-8")
    return path


class Terminals:
    """Grid-member and officer terminals of one test, all closed together at the end."""

    def __init__(self, broker_url: str, *, protocol: int = 5) -> None:
        self.broker_url = broker_url
        self.protocol = protocol
        self._open: list[GridMemberTerminal | OfficerTerminal] = []

    def member(
        self, grid_id: str, member_id: str, *, protocol: int | None = None
    ) -> GridMemberTerminal:
        """A connected handheld of `member_id` publishing for `grid_id`."""
        terminal = GridMemberTerminal(
            self.broker_url, grid_id, member_id, topics=TOPICS, protocol=protocol or self.protocol
        )
        terminal.connect()
        self._open.append(terminal)
        return terminal

    def officer(
        self,
        officer_id: str,
        *,
        auto_ack: Sequence[str] = ("received",),
        protocol: int | None = None,
    ) -> OfficerTerminal:
        """A connected officer terminal with a persistent session, acking as told."""
        terminal = OfficerTerminal(
            self.broker_url,
            officer_id,
            topics=TOPICS,
            auto_ack=auto_ack,
            protocol=protocol or self.protocol,
        )
        terminal.connect()
        self._open.append(terminal)
        return terminal

    def close(self) -> None:
        """Disconnect every terminal."""
        for terminal in self._open:
            terminal.close()
        self._open.clear()
