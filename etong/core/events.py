"""What becomes of a valid report: a repeat answered with its current state, another
member's id refused, or accepted and pushed down its escalation chain (DESIGN §3)."""

from __future__ import annotations

from typing import Any

import orjson

from etong.core import dedup
from etong.core.context import BatchContext
from etong.core.delivery import first_push, report_state
from etong.core.enrich import build_context, event_summary
from etong.core.keys import EventKeys
from etong.core.outcome import CcCopy, Messages, Outcome, Push
from etong.core.records import (
    BatchLookup,
    Delivery,
    EventRecord,
    EventStatus,
    HistoryEntry,
    KnownEvent,
    PersonSighting,
)
from etong.core.registrar import registrar_copy_for
from etong.core.rejections import reject_reused_event_id
from etong.core.route import escalation_chain
from etong.models import Event


def decide_event(
    event: Event,
    keys: EventKeys,
    lookup: BatchLookup,
    ctx: BatchContext,
    out: Outcome,
    *,
    retained: bool = False,
) -> None:
    """Decide one report; `lookup` is updated so later reports of the batch see this one."""
    known = lookup.known_events.get(event.event_id)
    decision = dedup.decide(
        event.event_id,
        keys.household,
        known_event=(known.status, known.duplicate_of) if known else None,
        household_event_id=lookup.households.get(keys.household),
        reporter=(event.grid_id, event.member_id),
        known_reporter=(known.grid_id, known.member_id) if known else None,
    )
    if isinstance(decision, dedup.Reused):
        reject_reused_event_id(event, decision.reason, out, topics=ctx.topics, at=ctx.at)
    elif isinstance(decision, dedup.Duplicate):
        if retained and decision.same_id:
            # The broker's retained copy, replayed at a (re-)subscribe: the member did not
            # send it again, so it gets no second receipt (acked, counted, nothing else).
            out.counts[Messages("event", "retained_repeat")] += 1
        else:
            _answer_repeat(event, keys, decision, lookup=lookup, ctx=ctx, out=out)
    else:
        _accept(event, keys, lookup, ctx, out)


def _answer_repeat(
    event: Event,
    keys: EventKeys,
    decision: dedup.Duplicate,
    *,
    lookup: BatchLookup,
    ctx: BatchContext,
    out: Outcome,
) -> None:
    """A `duplicate` receipt carrying where the original stands (DESIGN §2, end to end)."""
    if not decision.same_id:
        # Kept, so the same event id sent again gets the same answer, and for `trace`.
        out.write.events.append(
            _event_row(
                event,
                keys,
                "duplicate",
                decision.duplicate_of,
                now=ctx.now,
                summary=event_summary(event),
            )
        )
        lookup.known_events[event.event_id] = KnownEvent(
            event.event_id, "duplicate", decision.duplicate_of, event.grid_id, event.member_id
        )
    original = lookup.event_deliveries.get(decision.duplicate_of)
    current, officer = report_state(original) if original else (None, None)
    out.receipt(
        ctx.topics,
        ctx.at,
        grid_id=event.grid_id,
        member_id=event.member_id,
        event_id=event.event_id,
        status="duplicate",
        duplicate_of=decision.duplicate_of,
        officer_id=officer,
        delivery_id=original.delivery_id if original else None,
        current_status=current,
    )
    out.counts[Messages("event", "duplicate")] += 1
    out.note(
        "debug",
        "report_duplicate",
        event_id=event.event_id,
        duplicate_of=decision.duplicate_of,
        same_id=decision.same_id,
    )


def _accept(
    event: Event, keys: EventKeys, lookup: BatchLookup, ctx: BatchContext, out: Outcome
) -> None:
    """Store the report, make its delivery, push it, copy the registrar, tell the member."""
    summary = event_summary(event)
    row = _event_row(event, keys, "accepted", None, now=ctx.now, summary=summary)
    person_history = [h for k in keys.persons for h in lookup.person_history.get(k, [])]
    context = build_context(
        event,
        ctx.roster,
        address_key=keys.address,
        address_history=lookup.address_history.get(keys.address, []),
        person_history=person_history,
        now=ctx.now,
    )
    context_json = orjson.dumps(context)
    chain = escalation_chain(ctx.roster, event.grid_id, ctx.day)
    delivery = _first_delivery(event, chain, row.payload, context_json, ctx)
    out.write.events.append(row)
    out.write.event_persons.extend(
        PersonSighting(k, event.event_id, keys.address, ctx.now) for k in keys.persons
    )
    out.write.new_deliveries.append(delivery)
    out.pushes.append(Push(delivery, None))
    _remember_in_batch(event, keys, summary, delivery=delivery, lookup=lookup, ctx=ctx)
    registrar = registrar_copy_for(ctx.roster, event.grid_id, event.type, chain[0])
    if registrar is not None:
        out.cc_copies.append(CcCopy(registrar, row.payload, context_json, event.event_id))
    out.receipt(
        ctx.topics,
        ctx.at,
        grid_id=event.grid_id,
        member_id=event.member_id,
        event_id=event.event_id,
        status="accepted",
        officer_id=delivery.recipient,
        delivery_id=delivery.delivery_id,
    )
    out.counts[Messages("event", "accepted")] += 1
    out.note(
        "debug",
        "report_accepted",
        event_id=event.event_id,
        grid_id=event.grid_id,
        member_id=event.member_id,
        delivery_id=delivery.delivery_id,
        officer_id=delivery.recipient,
        flags=context["flags"],
    )


def _first_delivery(
    event: Event, chain: list[str], payload: bytes, context_json: bytes, ctx: BatchContext
) -> Delivery:
    """The report's delivery as first pushed: step 0 of `chain`, due again after a timeout."""
    return first_push(
        Delivery(
            delivery_id=ctx.ids(ctx.now),
            event_id=event.event_id,
            grid_id=event.grid_id,
            member_id=event.member_id,
            chain=chain,
            step=0,
            attempt=1,
            state="pending",
            next_due=None,
            context=context_json,
            payload=payload,  # the validated event as pushed, serialised once
        ),
        ctx.policy,
        ctx.now,
        ctx.rng,
    )


def _remember_in_batch(
    event: Event,
    keys: EventKeys,
    summary: dict[str, Any],
    *,
    delivery: Delivery,
    lookup: BatchLookup,
    ctx: BatchContext,
) -> None:
    """Later reports of this batch must see this one: dedup, history, its delivery."""
    lookup.known_events[event.event_id] = KnownEvent(
        event.event_id, "accepted", None, event.grid_id, event.member_id
    )
    if dedup.household_dedup_on(ctx.dedup_window_s):
        lookup.households.setdefault(keys.household, event.event_id)
    entry = HistoryEntry(event.event_id, event.type, keys.address, ctx.now, summary)
    lookup.address_history.setdefault(keys.address, []).insert(0, entry)
    for k in keys.persons:
        lookup.person_history.setdefault(k, []).insert(0, entry)
    lookup.deliveries[delivery.delivery_id] = delivery
    lookup.event_deliveries[event.event_id] = delivery


def _event_row(
    event: Event,
    keys: EventKeys,
    status: EventStatus,
    duplicate_of: str | None,
    *,
    now: float,
    summary: dict[str, Any],
) -> EventRecord:
    """The `events` row of a decided report."""
    return EventRecord(
        event_id=event.event_id,
        type=event.type,
        grid_id=event.grid_id,
        member_id=event.member_id,
        status=status,
        duplicate_of=duplicate_of,
        address_key=keys.address,
        household_key=keys.household,
        received_at=now,
        payload=orjson.dumps(event.model_dump(mode="json")),
        summary=orjson.dumps(summary),
    )
