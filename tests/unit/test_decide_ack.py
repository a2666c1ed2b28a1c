"""`decide_ack` (core/acks.py): what an officer's ack does, as whole outcomes."""

from __future__ import annotations

from etong.core.acks import decide_ack
from etong.core.delivery import receipt_payload
from etong.core.outcome import Messages, Note, Outcome, Push, Tally
from etong.core.records import BatchLookup, BatchWrite, ReceiptRecord
from etong.models import Ack
from tests.decisions import AT, NOW, TOPICS, context, counts, delivery

RECEIPTS = TOPICS.receipts("ZS-017", "g-0231")


def _lookup(**kw: object) -> BatchLookup:
    d = delivery(**kw)
    return BatchLookup(deliveries={d.delivery_id: d})


def test_an_ack_for_an_unknown_delivery_is_a_security_note_and_changes_nothing() -> None:
    out, lookup = Outcome(), BatchLookup()
    decide_ack(Ack(delivery_id="D9", status="received"), "p-1001", lookup, context(), out)
    assert out == Outcome(
        counts=counts(Messages("ack", "unknown_delivery")),
        notes=[
            Note(
                "warning",
                "ack_unknown_delivery",
                {"officer_id": "p-1001", "delivery_id": "D9", "security_event": True},
            )
        ],
    )
    assert lookup == BatchLookup()


def test_an_ack_from_an_officer_it_was_not_pushed_to_counts_as_a_security_event() -> None:
    out, lookup = Outcome(), _lookup()
    decide_ack(Ack(delivery_id="D1", status="received"), "p-1002", lookup, context(), out)
    assert out == Outcome(
        counts=counts(Tally.SECURITY_EVENTS, Messages("ack", "unauthorised")),
        notes=[
            Note(
                "warning",
                "ack_from_wrong_officer",
                {
                    "security_event": True,
                    "officer_id": "p-1002",
                    "delivery_id": "D1",
                    "pushed_to": ["p-1001"],
                },
            )
        ],
    )
    assert lookup == _lookup()


def test_received_closes_the_delivery_and_tells_the_reporter_who_has_it() -> None:
    out, lookup = Outcome(), _lookup()
    decide_ack(Ack(delivery_id="D1", status="received"), "p-1001", lookup, context(), out)
    closed = delivery(state="received", next_due=None, acked_by="p-1001")
    payload = receipt_payload(
        event_id="EV-00000001", status="received", at=AT, officer_id="p-1001", delivery_id="D1"
    )
    assert out == Outcome(
        write=BatchWrite(
            delivery_updates=[closed],
            receipts=[ReceiptRecord("EV-00000001", RECEIPTS, "received", payload)],
        ),
        counts=counts(Messages("ack", "received")),
        notes=[
            Note(
                "debug",
                "ack",
                {
                    "delivery_id": "D1",
                    "officer_id": "p-1001",
                    "status": "received",
                    "state": "received",
                },
            )
        ],
    )
    assert lookup.deliveries["D1"] == closed  # a later ack of the batch sees it closed


def test_declined_hands_the_delivery_to_the_duty_officer() -> None:
    out, lookup = Outcome(), _lookup()
    decide_ack(Ack(delivery_id="D1", status="declined"), "p-1001", lookup, context(), out)
    moved = delivery(chain=["p-1001", "p-9001"], step=1, next_due=NOW + 33.0)
    assert out.write.delivery_updates == [moved]
    assert out.pushes == [Push(moved, "p-1001")]
    assert [(r.status, r.topic) for r in out.write.receipts] == [
        ("declined", RECEIPTS),
        ("escalated", RECEIPTS),
    ]
    assert out.counts == counts(Messages("ack", "declined"))


def test_a_repeated_received_ack_changes_nothing_but_is_counted() -> None:
    out, lookup = Outcome(), _lookup(state="received", next_due=None, acked_by="p-1001")
    decide_ack(Ack(delivery_id="D1", status="received"), "p-1001", lookup, context(), out)
    assert out.write == BatchWrite(
        delivery_updates=[delivery(state="received", next_due=None, acked_by="p-1001")]
    )
    assert out.pushes == [] and out.counts == counts(Messages("ack", "received"))


def test_an_ack_updates_the_delivery_a_later_repeat_of_the_batch_reports() -> None:
    d = delivery()
    lookup = BatchLookup(deliveries={"D1": d}, event_deliveries={"EV-00000001": d})
    decide_ack(Ack(delivery_id="D1", status="verified"), "p-1001", lookup, context(), Outcome())
    assert lookup.event_deliveries["EV-00000001"].state == "verified"
