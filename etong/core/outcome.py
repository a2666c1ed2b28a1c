"""What a decision comes to: rows to write, what to publish after the commit, counts for
/metrics and notes for the log. The core fills an `Outcome`; the shell carries it out.

Decisions never log or count themselves (that is I/O): they say what to log and what to
count, and `etong/bridge.py` does it after the commit, so a test can read both off the value.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, NamedTuple

from etong.core.budget import DropReason
from etong.core.delivery import Step, receipt_payload
from etong.core.records import BatchWrite, DeadLetterRecord, Delivery, ReceiptRecord
from etong.models import ReceiptStatus
from etong.topics import Topics

LogLevel = Literal["debug", "info", "warning"]
NoteEvent = Literal[
    "report_accepted",
    "report_duplicate",
    "report_rejected",
    "report_event_id_reused",
    "message_rejected",
    "message_rejected_suppressed",
    "ack",
    "ack_unknown_delivery",
    "ack_from_wrong_officer",
    "delivery_resend",
    "delivery_undeliverable",
]
"""Every log event a decision can ask for: a misspelt one fails mypy, not a dashboard."""

MessageKind = Literal["event", "ack"]
MessageOutcome = Literal[
    "accepted",  # events
    "duplicate",
    "retained_repeat",
    "rejected",  # both
    "received",  # acks, by status
    "verified",
    "declined",
    "unknown_delivery",
    "unauthorised",
]


# What a decision counts. Each kind of key is one metric, and `etong/bridge.py` maps every kind
# with `assert_never`, so a new kind without a metric, or a misspelt label, fails mypy instead
# of being skipped at run time.
@dataclass(frozen=True, slots=True)
class Messages:
    """etong_messages{kind, outcome}: an inbound message, by what became of it."""

    kind: MessageKind
    outcome: MessageOutcome


@dataclass(frozen=True, slots=True)
class DeadLettersDropped:
    """etong_dead_letters_dropped{reason}: a rejection past its budget, counted, not written."""

    reason: DropReason


class Tally(Enum):
    """Counts without labels."""

    UNDELIVERABLE = "undeliverable"  # etong_undeliverable
    SECURITY_EVENTS = "security_events"  # etong_security_events


CountKey = Messages | DeadLettersDropped | Tally


class Note(NamedTuple):
    """A log line to write: level, event name, fields (already free of personal data)."""

    level: LogLevel
    event: NoteEvent
    fields: dict[str, Any]


class Push(NamedTuple):
    """A delivery to push now (its current recipient and attempt)."""

    delivery: Delivery
    escalated_from: str | None


class CcCopy(NamedTuple):
    """A registrar's copy of a report: pushed once, never re-sent, no ack expected."""

    registrar: str
    event_json: bytes
    context_json: bytes
    event_id: str


@dataclass(slots=True)
class Outcome:
    """One batch's (or one scheduler page's) decisions, as values.

    Receipts are stored (`write.receipts`) and published in that same order once committed.
    """

    write: BatchWrite = field(default_factory=BatchWrite)
    pushes: list[Push] = field(default_factory=list)
    cc_copies: list[CcCopy] = field(default_factory=list)
    counts: Counter[CountKey] = field(default_factory=Counter)
    notes: list[Note] = field(default_factory=list)

    def note(self, level: LogLevel, event: NoteEvent, **fields: Any) -> None:
        """Say what to log."""
        self.notes.append(Note(level, event, fields))

    def receipt(
        self,
        topics: Topics,
        at: str,
        *,
        grid_id: str,
        member_id: str,
        event_id: str | None,
        status: ReceiptStatus,
        **fields: Any,
    ) -> None:
        """A receipt to the reporting member, stored then published (DESIGN §2)."""
        payload = receipt_payload(event_id=event_id, status=status, at=at, **fields)
        topic = topics.receipts(grid_id, member_id)
        self.write.receipts.append(ReceiptRecord(event_id, topic, status, payload))

    def record_step(self, step: Step, topics: Topics, at: str) -> None:
        """A delivery transition: its row, its receipts, its push, its dead letter."""
        d = step.delivery
        self.write.delivery_updates.append(d)
        for status, officer_id in step.receipts:
            self.receipt(
                topics,
                at,
                grid_id=d.grid_id,
                member_id=d.member_id,
                event_id=d.event_id,
                status=status,
                officer_id=officer_id,
                delivery_id=d.delivery_id,
            )
        if step.push:
            self.pushes.append(Push(d, step.escalated_from))
        if step.closes_dead_letter:
            self.write.closed_dead_letters.append(d.delivery_id)
        if step.dead_letter:
            self.write.dead_letters.append(
                DeadLetterRecord(
                    kind="undeliverable",
                    topic=topics.inbox(d.recipient),
                    payload=d.delivery_id.encode(),
                    reason=step.dead_letter,
                    event_id=d.event_id,
                    delivery_id=d.delivery_id,
                )
            )
            self.counts[Tally.UNDELIVERABLE] += 1
            self.note(
                "warning",
                "delivery_undeliverable",
                delivery_id=d.delivery_id,
                event_id=d.event_id,
                chain=d.chain,
                reason=step.dead_letter,
            )
