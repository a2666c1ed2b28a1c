"""`reject` (core/rejections.py): what a refused message leaves behind, as whole outcomes."""

from __future__ import annotations

import orjson

from etong.core.admission import Admitted, Inbound
from etong.core.budget import DropReason, RejectionBudget
from etong.core.delivery import receipt_payload
from etong.core.outcome import DeadLettersDropped, Messages, Note, Outcome
from etong.core.records import BatchWrite, DeadLetterRecord, ReceiptRecord
from etong.core.rejections import reject
from etong.core.validate import Rejection
from tests.decisions import (
    AT,
    MAX_PAYLOAD,
    NOW,
    TOPICS,
    admit,
    budgets,
    counts,
    event,
    event_inbound,
)

REASON = "persons[0].id_number: check digit does not match"


def _reject(msg: Inbound, spend: dict[DropReason, RejectionBudget] | None = None) -> Outcome:
    (item,) = admit(msg)
    assert item.rejection is not None
    out = Outcome()
    reject(
        item,
        out,
        topics=TOPICS,
        at=AT,
        now=NOW,
        max_payload_bytes=MAX_PAYLOAD,
        budgets=spend or budgets(),
    )
    return out


def test_a_refused_report_gets_a_dead_letter_and_a_rejected_receipt_with_its_event_id() -> None:
    body = event("EV-00000007", persons=[{"name": "李四", "id_number": "110101199003078888"}])
    msg = event_inbound(body)
    out = _reject(msg)
    (letter,) = out.write.dead_letters
    reason = letter.reason
    assert reason.startswith("persons[0].id_number")
    topic = TOPICS.receipts("ZS-017", "g-0231")
    receipt = receipt_payload(event_id="EV-00000007", status="rejected", at=AT, reason=reason)
    assert out == Outcome(
        write=BatchWrite(
            receipts=[ReceiptRecord("EV-00000007", topic, "rejected", receipt)],
            dead_letters=[
                DeadLetterRecord("rejected", msg.topic, msg.payload, reason, "EV-00000007", None)
            ],
        ),
        counts=counts(Messages("event", "rejected")),
        notes=[
            Note(
                "info",
                "report_rejected",
                {
                    "grid_id": "ZS-017",
                    "member_id": "g-0231",
                    "event_id": "EV-00000007",
                    "reason": reason,
                },
            )
        ],
    )


def test_an_unreadable_report_gets_a_rejected_receipt_without_an_event_id() -> None:
    msg = Inbound(TOPICS.events("ZS-017", "g-0231"), b"not json", 1)
    out = _reject(msg)
    (receipt,) = out.write.receipts
    assert receipt.event_id is None and receipt.status == "rejected"
    assert orjson.loads(receipt.payload)["event_id"] is None


def test_a_message_on_a_foreign_topic_gets_a_dead_letter_and_no_receipt() -> None:
    msg = Inbound("etong/v1/elsewhere", b"x", 1)
    out = _reject(msg)
    reason = "topic is not an etong events or acks topic"
    assert out == Outcome(
        write=BatchWrite(
            dead_letters=[DeadLetterRecord("rejected", msg.topic, b"x", reason, None, None)]
        ),
        counts=counts(Messages("event", "rejected")),
        notes=[
            Note(
                "warning",
                "message_rejected",
                {"topic": "etong/v1/elsewhere", "reason": reason, "kind": "rejected"},
            )
        ],
    )


def test_a_bad_ack_is_a_bad_ack_dead_letter_counted_as_an_ack() -> None:
    msg = Inbound(TOPICS.acks("p-1001"), b"{}", 1)
    out = _reject(msg)
    assert [d.kind for d in out.write.dead_letters] == ["bad_ack"]
    assert out.write.receipts == []
    assert out.counts == counts(Messages("ack", "rejected"))


def test_past_its_budget_a_foreign_topic_is_only_counted() -> None:
    spend = budgets(per_minute=1)
    _reject(Inbound("etong/v1/elsewhere", b"x", 1), spend)
    out = _reject(Inbound("etong/v1/elsewhere", b"y", 1), spend)
    assert out == Outcome(
        counts=counts(Messages("event", "rejected"), DeadLettersDropped("bad_topic"))
    )


def test_a_phone_number_as_member_id_is_masked_in_the_stored_reason_and_topic() -> None:
    """Ids in a topic are free text to a hostile client; the log masks its own fields."""
    phone = "13812345678"
    topic = f"etong/v1/grid/ZS-017/member/{phone}/events"
    item = Admitted(
        Inbound(topic, b"x", 1),
        TOPICS.parse(topic),
        rejection=Rejection(f"member_id: member '{phone}' does not belong to grid 'ZS-017'"),
    )
    out = Outcome()
    reject(
        item, out, topics=TOPICS, at=AT, now=NOW, max_payload_bytes=MAX_PAYLOAD, budgets=budgets()
    )
    (letter,) = out.write.dead_letters
    (receipt,) = out.write.receipts
    assert phone not in letter.reason and phone not in letter.topic
    assert phone not in orjson.loads(receipt.payload)["reason"]
