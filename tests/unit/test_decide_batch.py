"""`lookup_keys` and `decide_batch` (core/batch.py): what a batch reads, and every decision of
it in arrival order, each seeing the ones before it."""

from __future__ import annotations

from dataclasses import replace

import orjson

from etong.core.batch import decide_batch, lookup_keys
from etong.core.enrich import HISTORY_WINDOW_S
from etong.core.outcome import Messages
from etong.core.records import BatchKeys, BatchLookup
from tests.decisions import NOW, ack_inbound, admit, context, counts, delivery, event
from tests.decisions import event_inbound as inbound


def _sorted(keys: BatchKeys) -> BatchKeys:
    """The keys with each list in order (the core builds them from sets)."""
    return replace(
        keys,
        event_ids=sorted(keys.event_ids),
        household_keys=sorted(keys.household_keys),
        address_keys=sorted(keys.address_keys),
        person_keys=sorted(keys.person_keys),
        delivery_ids=sorted(keys.delivery_ids),
    )


# ---- lookup_keys


def test_a_batch_of_only_rejections_reads_nothing() -> None:
    admitted = admit(inbound(event(), qos=0), ack_inbound("p-1001", "D1", "bogus"))
    assert lookup_keys(admitted, 600.0, NOW) is None


def test_a_batch_reads_each_key_once_and_the_payload_only_for_declined_acks() -> None:
    one, again = event("EV-00000001"), event("EV-00000001")
    other = event("EV-00000002", room="102")
    admitted = admit(
        inbound(one),
        inbound(again),
        inbound(other),
        ack_inbound("p-1001", "D1", "received"),
        ack_inbound("p-1001", "D2", "declined"),
    )
    k1, k2 = admitted[0].keys, admitted[2].keys
    assert k1 is not None and k2 is not None
    keys = lookup_keys(admitted, 600.0, NOW)
    assert keys is not None
    assert _sorted(keys) == (
        BatchKeys(
            event_ids=["EV-00000001", "EV-00000002"],
            household_keys=sorted({k1.household, k2.household}),
            household_since=NOW - 600.0,
            address_keys=sorted({k1.address, k2.address}),
            person_keys=sorted({*k1.persons, *k2.persons}),
            history_since=NOW - HISTORY_WINDOW_S,
            delivery_ids=["D1", "D2"],
            payload_for=frozenset({"D2"}),
        )
    )


def test_a_zero_dedup_window_reads_no_households() -> None:
    keys = lookup_keys(admit(inbound(event())), 0.0, NOW)
    assert keys is not None and keys.household_keys == []


# ---- decide_batch


def test_a_second_report_of_a_household_in_the_same_batch_is_a_duplicate_of_the_first() -> None:
    admitted = admit(
        inbound(event("EV-00000001")), inbound(event("EV-00000002", "ZS-017", "g-0232"))
    )
    out = decide_batch(admitted, BatchLookup(), context())
    assert [(e.event_id, e.status, e.duplicate_of) for e in out.write.events] == [
        ("EV-00000001", "accepted", None),
        ("EV-00000002", "duplicate", "EV-00000001"),
    ]
    assert [d.delivery_id for d in out.write.new_deliveries] == ["D1"]
    second = orjson.loads(out.write.receipts[1].payload)
    assert (second["status"], second["current_status"], second["delivery_id"]) == (
        "duplicate",
        "accepted",
        "D1",
    )


def test_with_a_zero_window_two_reports_of_a_household_are_both_accepted() -> None:
    admitted = admit(
        inbound(event("EV-00000001")), inbound(event("EV-00000002", "ZS-017", "g-0232"))
    )
    out = decide_batch(admitted, BatchLookup(), context(dedup_window_s=0.0))
    assert [e.status for e in out.write.events] == ["accepted", "accepted"]
    assert [d.delivery_id for d in out.write.new_deliveries] == ["D1", "D2"]


def test_an_ack_later_in_the_batch_applies_to_a_delivery_made_earlier_in_it() -> None:
    admitted = admit(inbound(event("EV-00000001")), ack_inbound("p-1001", "D1", "received"))
    out = decide_batch(admitted, BatchLookup(), context())
    assert [d.state for d in out.write.delivery_updates] == ["received"]
    assert [r.status for r in out.write.receipts] == ["accepted", "received"]
    assert out.counts == counts(Messages("event", "accepted"), Messages("ack", "received"))


def test_messages_are_decided_in_arrival_order_rejections_included() -> None:
    admitted = admit(
        inbound(event("EV-00000001")),
        inbound(event("EV-00000002", room="102"), qos=0),
        inbound(event("EV-00000003", room="103")),
    )
    out = decide_batch(admitted, BatchLookup(), context())
    assert [(r.event_id, r.status) for r in out.write.receipts] == [
        ("EV-00000001", "accepted"),
        ("EV-00000002", "rejected"),
        ("EV-00000003", "accepted"),
    ]
    assert [d.delivery_id for d in out.write.new_deliveries] == ["D1", "D2"]


def test_a_batch_decided_twice_from_the_same_givens_is_the_same_outcome() -> None:
    def run() -> object:
        admitted = admit(
            inbound(event("EV-00000001")),
            inbound(event("EV-00000002", "ZS-017", "g-0232")),
            ack_inbound("p-1001", "D7", "declined"),
        )
        lookup = BatchLookup(deliveries={"D7": delivery(delivery_id="D7")})
        return decide_batch(admitted, lookup, context())

    assert run() == run()
