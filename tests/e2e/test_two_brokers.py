"""[officer_broker]: reports come in on one broker, pushes and acks go over another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import Terminals

pytestmark = pytest.mark.e2e


@pytest.fixture
def officer_mosquitto(tmp_path: Path) -> Iterator[LocalMosquitto]:
    broker = LocalMosquitto(tmp_path / "officer-mosquitto")
    broker.start()
    yield broker
    broker.kill()


def test_pushes_and_acks_go_through_the_officer_broker(
    start_bridge: BridgeStarter, terminals: Terminals, officer_mosquitto: LocalMosquitto
) -> None:
    start_bridge(officer_broker={"url": officer_mosquitto.url, "client_id": "etong-e2e-officer"})
    officer_side = Terminals(officer_mosquitto.url)
    try:
        officer = officer_side.officer("p-1001")
        member = terminals.member("ZS-017", "g-0231")
        event_id = member.send(member.event())
        push = officer.wait_for_push(event_id)
        assert push["event"]["event_id"] == event_id
        # The officer's auto-ack went to the officer broker; the receipt comes on the grid one.
        assert member.wait_for_receipt(event_id, "received")["officer_id"] == "p-1001"
    finally:
        officer_side.close()
