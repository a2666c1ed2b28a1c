"""Reports that waited at the broker while the bridge was down are handled once, and acked."""

from __future__ import annotations

import pytest

from etong.devkit.localbridge import LocalBridge
from tests.e2e.conftest import BridgeStarter
from tests.e2e.helpers import Terminals

pytestmark = pytest.mark.e2e


def test_reports_queued_while_down_are_acked_and_not_redelivered_at_the_next_start(
    start_bridge: BridgeStarter, terminals: Terminals
) -> None:
    """Regression: acks for messages that came in the same read as the CONNACK were skipped,
    so the broker delivered them again at every later start (as `duplicate` receipts)."""
    bridge: LocalBridge = start_bridge()
    assert bridge.sigterm() == 0
    officer = terminals.officer("p-1001")
    member = terminals.member("ZS-017", "g-0231")
    queued = [member.send(member.event()) for _ in range(300)]
    member.wait_published(timeout=10)

    bridge.restart()
    bridge.wait_ready(timeout=20)
    for event_id in queued:
        member.wait_for_receipt(event_id, "accepted", timeout=20)
    assert bridge.sigterm() == 0

    bridge.restart()
    bridge.wait_ready(timeout=20)
    probe = member.send(member.event())
    officer.wait_for_push(probe)  # the bridge handles a member's messages in order
    for event_id in queued:
        assert member.statuses(event_id).count("accepted") >= 1
        assert "duplicate" not in member.statuses(event_id), event_id
