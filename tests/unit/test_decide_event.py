"""`decide_event` (core/events.py): accepted, a repeat answered, or another member's id refused."""

from __future__ import annotations

from datetime import date
from typing import Any

import orjson

from etong.core.delivery import receipt_payload
from etong.core.events import decide_event
from etong.core.keys import EventKeys
from etong.core.outcome import Messages, Outcome, Push
from etong.core.records import BatchLookup, KnownEvent, ReceiptRecord
from etong.models import Event
from tests.decisions import AT, CHAIN, NOW, TOPICS, admit, context, counts, delivery, event
from tests.decisions import event_inbound as inbound

RECEIPTS = TOPICS.receipts("ZS-017", "g-0231")


def _parsed(body: dict[str, Any]) -> tuple[Event, EventKeys]:
    (item,) = admit(inbound(body))
    assert item.event is not None and item.keys is not None, item.rejection
    return item.event, item.keys


def _decide(body: dict[str, Any], lookup: BatchLookup, **kw: Any) -> Outcome:
    out = Outcome()
    ev, keys = _parsed(body)
    retained = kw.pop("retained", False)
    decide_event(ev, keys, lookup, context(**kw), out, retained=retained)
    return out


def test_a_new_report_is_stored_pushed_to_the_grids_officer_and_accepted() -> None:
    body = event("EV-00000001", type="tenant_change")
    lookup = BatchLookup()
    out = _decide(body, lookup)
    (row,) = out.write.events
    (d,) = out.write.new_deliveries
    assert (row.event_id, row.status, row.received_at) == ("EV-00000001", "accepted", NOW)
    # The delivery as first pushed: the id the source gave, the chain of the day, due after
    # the first timeout times the fixed jitter.
    assert d == delivery(next_due=NOW + 33.0, context=d.context, payload=row.payload)
    assert out.pushes == [Push(d, None)]
    accepted = receipt_payload(
        event_id="EV-00000001", status="accepted", at=AT, officer_id="p-1001", delivery_id="D1"
    )
    assert out.write.receipts == [ReceiptRecord("EV-00000001", RECEIPTS, "accepted", accepted)]
    assert [c.registrar for c in out.cc_copies] == ["r-0001"]  # tenant changes go to r-0001
    assert out.counts == counts(Messages("event", "accepted"))
    assert [n.event for n in out.notes] == ["report_accepted"]
    assert lookup.known_events["EV-00000001"].status == "accepted"


def test_the_same_inputs_decide_the_same_outcome() -> None:
    body = event("EV-00000001")
    assert _decide(body, BatchLookup()) == _decide(body, BatchLookup())


def test_a_report_on_the_officers_absent_day_goes_to_the_backup_first() -> None:
    out = _decide(event(), BatchLookup(), day=date(2026, 12, 2))
    (d,) = out.write.new_deliveries
    assert d.chain == ["p-1002", "p-9001"]


def test_a_resent_report_gets_a_duplicate_receipt_with_its_current_state() -> None:
    body = event("EV-00000001")
    original = delivery(state="received", next_due=None, acked_by="p-1001")
    lookup = BatchLookup(
        known_events={
            "EV-00000001": KnownEvent("EV-00000001", "accepted", None, "ZS-017", "g-0231")
        },
        event_deliveries={"EV-00000001": original},
    )
    out = _decide(body, lookup)
    duplicate = receipt_payload(
        event_id="EV-00000001",
        status="duplicate",
        at=AT,
        duplicate_of="EV-00000001",
        officer_id="p-1001",
        delivery_id="D1",
        current_status="received",
    )
    assert out.write.receipts == [ReceiptRecord("EV-00000001", RECEIPTS, "duplicate", duplicate)]
    assert out.write.events == [] and out.write.new_deliveries == [] and out.pushes == []
    assert out.counts == counts(Messages("event", "duplicate"))


def test_a_second_report_of_a_household_is_kept_as_a_duplicate_naming_the_first() -> None:
    ev, keys = _parsed(event("EV-00000002", member_id="g-0232"))
    lookup = BatchLookup(households={keys.household: "EV-00000001"})
    out = Outcome()
    decide_event(ev, keys, lookup, context(), out)
    (row,) = out.write.events
    assert (row.status, row.duplicate_of) == ("duplicate", "EV-00000001")
    (receipt,) = out.write.receipts
    assert orjson.loads(receipt.payload)["duplicate_of"] == "EV-00000001"
    assert lookup.known_events["EV-00000002"] == KnownEvent(
        "EV-00000002", "duplicate", "EV-00000001", "ZS-017", "g-0232"
    )


def test_a_retained_copy_of_a_known_report_is_only_counted() -> None:
    lookup = BatchLookup(
        known_events={
            "EV-00000001": KnownEvent("EV-00000001", "accepted", None, "ZS-017", "g-0231")
        }
    )
    out = _decide(event("EV-00000001"), lookup, retained=True)
    assert out == Outcome(counts=counts(Messages("event", "retained_repeat")))


def test_another_members_event_id_is_refused_as_a_security_event_without_a_row() -> None:
    lookup = BatchLookup(
        known_events={
            "EV-00000001": KnownEvent("EV-00000001", "accepted", None, "ZS-017", "g-0232")
        }
    )
    out = _decide(event("EV-00000001"), lookup)
    assert out.write.events == [] and out.pushes == []
    assert [(d.kind, d.event_id) for d in out.write.dead_letters] == [("rejected", "EV-00000001")]
    (receipt,) = out.write.receipts
    assert receipt.status == "rejected"
    assert out.counts == counts(Messages("event", "rejected"))
    assert [(n.event, n.fields["security_event"]) for n in out.notes] == [
        ("report_event_id_reused", True)
    ]


def test_persons_of_an_accepted_report_are_recorded_by_keyed_hash() -> None:
    out = _decide(event(persons=2), BatchLookup())
    _, keys = _parsed(event(persons=2))
    assert [(p.person_key, p.received_at) for p in out.write.event_persons] == [
        (k, NOW) for k in keys.persons
    ]
    assert len(keys.persons) == 2 and CHAIN[0] == out.pushes[0].delivery.recipient


def test_a_retained_report_under_a_new_id_is_answered_even_if_its_household_is_known() -> None:
    """Only the broker's replay of a report we already hold stays silent; a new id is news."""
    ev, keys = _parsed(event("EV-00000002"))
    lookup = BatchLookup(households={keys.household: "EV-00000001"})
    out = Outcome()
    decide_event(ev, keys, lookup, context(), out, retained=True)
    assert [r.status for r in out.write.receipts] == ["duplicate"]
    assert out.counts == counts(Messages("event", "duplicate"))
