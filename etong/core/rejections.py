"""What a refused message leaves behind: a dead letter, a `rejected` receipt where the topic
names a member (DESIGN §3), a count and a log note; within a budget where nothing else bounds
it (`budget.py`)."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from etong.core.admission import Admitted
from etong.core.budget import DropReason, RejectionBudget
from etong.core.outcome import DeadLettersDropped, Messages, Outcome, Tally
from etong.core.records import DEAD_LETTER_PAYLOAD_CAP, DeadLetterKind, DeadLetterRecord
from etong.models import Event
from etong.pii import mask_text
from etong.textsafety import bounded_topic
from etong.topics import Topics


def reject(
    item: Admitted,
    out: Outcome,
    *,
    topics: Topics,
    at: str,
    now: float,
    max_payload_bytes: int,
    budgets: Mapping[DropReason, RejectionBudget],
) -> None:
    """Record the rejection of `item` (its `rejection` is set)."""
    assert item.rejection is not None
    # Ids in a topic are free text to a hostile client (a phone number as member id):
    # a reason travels to receipts, dead letters and the CLI, so it is masked too.
    reason = mask_text(item.rejection.reason)
    topic, msg = item.topic, item.inbound
    kind: DeadLetterKind = "bad_ack" if topic is not None and topic.kind == "ack" else "rejected"
    out.counts[Messages("ack" if kind == "bad_ack" else "event", "rejected")] += 1
    if topic is None or topic.kind == "ack":
        budget: DropReason = "bad_topic" if topic is None else "bad_ack"
        if not _within_budget(budgets[budget], budget, now, out):
            return
    event_id = event_id_hint(msg.payload, max_payload_bytes) if kind == "rejected" else None
    out.write.dead_letters.append(
        DeadLetterRecord(
            kind=kind,
            # Masked and cut to TOPIC_CAP at rest: a topic can be 64 KiB of anything.
            topic=bounded_topic(msg.topic, escape=False),
            payload=msg.payload[:DEAD_LETTER_PAYLOAD_CAP],
            reason=reason,
            event_id=event_id,
            delivery_id=None,
        )
    )
    if topic is not None and topic.kind == "event":
        out.receipt(
            topics,
            at,
            grid_id=topic.grid_id,
            member_id=topic.member_id,
            event_id=event_id,
            status="rejected",
            reason=reason,
        )
        security = item.rejection.security
        if security:
            out.counts[Tally.SECURITY_EVENTS] += 1
        out.note(
            "warning" if security else "info",
            "report_rejected",
            grid_id=topic.grid_id,
            member_id=topic.member_id,
            event_id=event_id,
            reason=reason,
            **({"security_event": True} if security else {}),
        )
    else:
        out.note(
            "warning", "message_rejected", topic=bounded_topic(msg.topic), reason=reason, kind=kind
        )


def _within_budget(budget: RejectionBudget, name: DropReason, now: float, out: Outcome) -> bool:
    """Whether a rejection no rate limit covers may cost a dead letter and a log line.

    Past the budget it is counted in etong_dead_letters_dropped, and once a minute one line
    says how many were suppressed.
    """
    verdict = budget.take(now)
    if verdict.report_suppressed:
        out.note(
            "warning",
            "message_rejected_suppressed",
            reason=name,
            suppressed=verdict.report_suppressed,
            detail=f"{verdict.report_suppressed} more suppressed",
        )
    if not verdict.keep:
        out.counts[DeadLettersDropped(name)] += 1
    return verdict.keep


def reject_reused_event_id(
    event: Event, reason: str, out: Outcome, *, topics: Topics, at: str
) -> None:
    """Another member's (or grid's) event id: `rejected` and a dead letter, not `duplicate`.

    No event row (the id is the other report's); the receipt names only the sender's own id.
    """
    topic = topics.events(event.grid_id, event.member_id)
    payload = orjson.dumps(event.model_dump(mode="json"))[:DEAD_LETTER_PAYLOAD_CAP]
    out.write.dead_letters.append(
        DeadLetterRecord("rejected", topic, payload, reason, event.event_id, None)
    )
    out.counts[Messages("event", "rejected")] += 1
    out.receipt(
        topics,
        at,
        grid_id=event.grid_id,
        member_id=event.member_id,
        event_id=event.event_id,
        status="rejected",
        reason=reason,
    )
    out.note(
        "warning",
        "report_event_id_reused",
        security_event=True,
        grid_id=event.grid_id,
        member_id=event.member_id,
        event_id=event.event_id,
    )


def event_id_hint(payload: bytes, max_bytes: int) -> str | None:
    """The event id of a rejected report, if one can be read safely, for the receipt."""
    if len(payload) > max_bytes:
        return None
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if isinstance(obj, dict):
        value = obj.get("event_id")
        if (
            isinstance(value, str)
            and 8 <= len(value) <= 64
            and all(c.isascii() and (c.isalnum() or c in "-_") for c in value)
        ):
            return value
    return None
