"""`etong simulate` against a real bridge: its config as the daemon reads it, and the handheld's
outbox rule (DESIGN §2, end to end) that the reference terminal keeps."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etong.config import without_env_overrides
from etong.devkit.localbridge import LocalBridge
from etong.devkit.messages import encode
from etong.devkit.mosquitto import LocalMosquitto, free_port
from etong.devkit.terminals import GridMemberTerminal, MonitorClient
from tests.e2e.helpers import INSTANCE_ID, TOPICS, Terminals, write_config

pytestmark = pytest.mark.e2e


def test_simulate_follows_the_broker_override_the_daemon_would_follow(
    bridge: LocalBridge, mosquitto: LocalMosquitto, roster_path: Path, tmp_path: Path
) -> None:
    # The file names a broker nobody listens on; only the override names the bridge's broker.
    config = write_config(
        tmp_path / "simulate.toml",
        broker_url=f"mqtt://127.0.0.1:{free_port()}",
        roster_path=roster_path,
    )
    env = {**without_env_overrides(os.environ), "ETONG_BROKER__URL": mosquitto.url}

    simulate = ("simulate", "--config", str(config), "--rate", "20", "--duration", "1")
    result = subprocess.run(
        [sys.executable, "-m", "etong", *simulate, "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"bridge {INSTANCE_ID} is online on {mosquitto.url}" in result.stdout, output
    assert "published 20 reports" in result.stdout, output
    assert "accepted 20" in result.stdout, output


def test_a_simulated_handheld_resends_an_unanswered_report_until_a_receipt_arrives(
    bridge: LocalBridge, mosquitto: LocalMosquitto, terminals: Terminals
) -> None:
    """DESIGN §2, end to end: the same payload again while the bridge is away; the first
    receipt ends the re-sends; the bridge answers the repeats as duplicates, one push only."""
    officer = terminals.officer("p-1001")
    watcher = MonitorClient(mosquitto.url, [TOPICS.events("ZS-017", "g-0231")])
    handheld = GridMemberTerminal(
        mosquitto.url, "ZS-017", "g-0231", topics=TOPICS, resend_after_s=0.5
    )
    with watcher, contextlib.closing(handheld):
        handheld.connect()
        bridge.sigterm()  # its persistent session keeps what arrives meanwhile
        event = handheld.event()
        event_id = handheld.send(event)

        # Re-sent unanswered: the watcher sees the same bytes at least twice.
        watcher.wait_until(lambda: len(watcher.messages) >= 2, 20, "a re-send")
        assert {m.raw for m in watcher.messages} == {encode(event)}
        assert handheld.waiting_for_receipt() == {event_id}

        bridge.restart()
        first = handheld.wait_for_receipt(event_id, "accepted", timeout=20)
        handheld.wait_for_receipt(event_id, "duplicate", timeout=20)

        assert handheld.waiting_for_receipt() == set()
        assert handheld.outbox is not None
        assert handheld.outbox.resends >= 1
        duplicate = next(r for r in handheld.receipts_for(event_id) if r["status"] == "duplicate")
        assert duplicate["duplicate_of"] == event_id
        officer.wait_for_push(event_id, timeout=20)
        deliveries = {push["delivery_id"] for push in officer.pushes_of(event_id)}
        assert deliveries == {first["delivery_id"]}
