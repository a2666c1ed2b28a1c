"""`decide_due` (core/due.py): one scheduler page of due deliveries, as whole outcomes."""

from __future__ import annotations

from dataclasses import replace

from etong.core.delivery import receipt_payload
from etong.core.due import decide_due
from etong.core.figure_records import Fate, FigureBatch
from etong.core.outcome import Note, Outcome, Push, Tally
from etong.core.records import BatchWrite, DeadLetterRecord, ReceiptRecord
from tests.decisions import AT, DAY, NOW, TOPICS, context, counts, delivery

RECEIPTS = TOPICS.receipts("ZS-017", "g-0231")


def fates(measure: str, officer: str) -> FigureBatch:
    """The station figures of one page: delivery D1's `measure` by `officer`, now, today."""
    return FigureBatch(fates=[Fate("D1", measure, officer, NOW, DAY.isoformat())])


def test_an_empty_page_decides_nothing() -> None:
    assert decide_due([], context()) == Outcome()


def test_a_due_delivery_is_pushed_again_to_the_same_officer_after_a_longer_wait() -> None:
    out = decide_due([delivery(attempt=1)], context())
    # attempt 2 waits 30 s * 2, times 1.1 for the fixed jitter
    resent = delivery(attempt=2, next_due=NOW + 66.0)
    assert out == Outcome(
        write=BatchWrite(delivery_updates=[resent], figures=fates("resend", "p-1001")),
        pushes=[Push(resent, None)],
        notes=[
            Note(
                "debug",
                "delivery_resend",
                {
                    "delivery_id": "D1",
                    "officer_id": "p-1001",
                    "attempt": 2,
                    "escalated_from": None,
                },
            )
        ],
    )


def test_the_last_attempt_escalates_to_the_backup_and_tells_the_reporter() -> None:
    out = decide_due([delivery(attempt=3)], context())
    moved = delivery(step=1, attempt=1, next_due=NOW + 33.0)
    escalated = receipt_payload(
        event_id="EV-00000001",
        status="escalated",
        at=AT,
        officer_id="p-1002",
        delivery_id="D1",
    )
    assert out.write == BatchWrite(
        delivery_updates=[moved],
        receipts=[ReceiptRecord("EV-00000001", RECEIPTS, "escalated", escalated)],
        figures=fates("escalated", "p-1001"),
    )
    assert out.pushes == [Push(moved, "p-1001")]
    assert out.counts == counts()


def test_the_last_attempt_of_the_last_officer_gives_up_with_a_dead_letter() -> None:
    last = delivery(step=2, attempt=3)
    out = decide_due([last], context())
    given_up = replace(last, state="undeliverable", next_due=None)
    reason = "no officer acknowledged: 3 recipient(s) (p-1001, p-1002, p-9001), 3 attempt(s) each"
    undeliverable = receipt_payload(
        event_id="EV-00000001", status="undeliverable", at=AT, delivery_id="D1"
    )
    assert out == Outcome(
        write=BatchWrite(
            delivery_updates=[given_up],
            receipts=[ReceiptRecord("EV-00000001", RECEIPTS, "undeliverable", undeliverable)],
            dead_letters=[
                DeadLetterRecord(
                    "undeliverable", TOPICS.inbox("p-9001"), b"D1", reason, "EV-00000001", "D1"
                )
            ],
            figures=fates("undeliverable", "p-9001"),
        ),
        counts=counts(Tally.UNDELIVERABLE),
        notes=[
            Note(
                "warning",
                "delivery_undeliverable",
                {
                    "delivery_id": "D1",
                    "event_id": "EV-00000001",
                    "chain": ["p-1001", "p-1002", "p-9001"],
                    "reason": reason,
                },
            )
        ],
    )


def test_a_page_is_decided_in_order_one_step_per_delivery() -> None:
    out = decide_due([delivery(delivery_id="D1"), delivery(delivery_id="D2", attempt=3)], context())
    assert [(p.delivery.delivery_id, p.delivery.step, p.escalated_from) for p in out.pushes] == [
        ("D1", 0, None),
        ("D2", 1, "p-1001"),
    ]
    assert [d.delivery_id for d in out.write.delivery_updates] == ["D1", "D2"]
