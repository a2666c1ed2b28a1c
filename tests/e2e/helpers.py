"""Shared pieces of the e2e tier: the test roster, config files, and a set of terminals.

The bridge runs as a real subprocess (`etong.devkit.localbridge.LocalBridge`, the e2e tier's
BridgeProcess) against a real mosquitto; the tests talk to it only over MQTT, as the
handhelds and officer terminals do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from etong.devkit.demo_scenario import demo_roster
from etong.devkit.localbridge import LocalBridge, local_bridge_config, render_toml
from etong.devkit.terminals import GridMemberTerminal, OfficerTerminal
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
    """The demo's roster with two grids: ZS-017 (p-1001) and ZS-018 (p-2001, away)."""
    return demo_roster(today, grids=("ZS-017", "ZS-018"))


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
