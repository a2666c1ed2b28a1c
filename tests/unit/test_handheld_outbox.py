"""The handheld's outbox rule (DESIGN §2, end to end), as pure decisions over a given time."""

from __future__ import annotations

import pytest

from etong.devkit.outbox import HandheldOutbox


def test_nothing_is_due_before_the_timeout() -> None:
    outbox = HandheldOutbox(5.0)
    outbox.sent("e-00000001", b"{}", now=100.0)
    assert outbox.due(104.9) == []
    assert outbox.next_due() == 105.0


def test_an_unanswered_report_is_sent_again_with_the_same_payload() -> None:
    outbox = HandheldOutbox(5.0)
    outbox.sent("e-00000001", b'{"event_id":"e-00000001"}', now=100.0)
    assert outbox.due(105.0) == [("e-00000001", b'{"event_id":"e-00000001"}')]
    assert outbox.sends("e-00000001") == 2
    assert outbox.resends == 1


def test_the_wait_doubles_after_each_resend_up_to_the_cap() -> None:
    outbox = HandheldOutbox(5.0, max_interval_s=15.0)
    outbox.sent("e-00000001", b"{}", now=0.0)
    times = []
    now = 0.0
    for _ in range(4):
        now = outbox.next_due() or 0.0
        assert outbox.due(now)
        times.append(now)
    assert times == [5.0, 15.0, 30.0, 45.0]  # waits of 5, 10, 15 (capped), 15


def test_any_receipt_stops_the_resends() -> None:
    outbox = HandheldOutbox(5.0)
    outbox.sent("e-00000001", b"{}", now=0.0)
    outbox.sent("e-00000002", b"{}", now=0.0)
    assert outbox.answered("e-00000001")
    assert outbox.due(5.0) == [("e-00000002", b"{}")]
    assert outbox.waiting() == {"e-00000002"}
    assert not outbox.answered("e-00000001")  # a second receipt changes nothing


def test_sending_a_waiting_event_id_again_keeps_the_first_payload_and_schedule() -> None:
    outbox = HandheldOutbox(5.0)
    outbox.sent("e-00000001", b"first", now=0.0)
    outbox.sent("e-00000001", b"second", now=3.0)
    assert outbox.due(5.0) == [("e-00000001", b"first")]


def test_an_empty_outbox_has_nothing_due() -> None:
    outbox = HandheldOutbox(1.0)
    assert outbox.next_due() is None
    assert outbox.due(1e9) == []


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        HandheldOutbox(0)
