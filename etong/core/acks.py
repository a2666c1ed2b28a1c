"""What an officer's ack does to its delivery (DESIGN §2): the transition is `delivery.on_ack`;
here is the rest — an ack for an unknown delivery or from an officer it was not pushed to is a
security event and changes nothing."""

from __future__ import annotations

from etong.core.context import BatchContext
from etong.core.delivery import on_ack
from etong.core.outcome import Messages, Outcome, Tally
from etong.core.records import BatchLookup
from etong.core.route import duty_officer_or_none
from etong.models import Ack


def decide_ack(
    ack: Ack, officer_id: str, lookup: BatchLookup, ctx: BatchContext, out: Outcome
) -> None:
    """Apply `ack`, published on `officer_id`'s acks topic; `lookup` follows the change."""
    delivery = lookup.deliveries.get(ack.delivery_id)
    if delivery is None:
        out.counts[Messages("ack", "unknown_delivery")] += 1
        out.note(
            "warning",
            "ack_unknown_delivery",
            officer_id=officer_id,
            delivery_id=ack.delivery_id,
            security_event=True,
        )
        return
    step = on_ack(
        delivery,
        officer_id=officer_id,
        status=ack.status,
        duty_officer=duty_officer_or_none(ctx.roster, delivery.grid_id),
        policy=ctx.policy,
        now=ctx.now,
        rng=ctx.rng,
    )
    if step.security:
        out.counts[Tally.SECURITY_EVENTS] += 1
        out.counts[Messages("ack", "unauthorised")] += 1
        out.note(
            "warning",
            "ack_from_wrong_officer",
            security_event=True,
            officer_id=officer_id,
            delivery_id=delivery.delivery_id,
            pushed_to=delivery.pushed_to,
        )
        return
    out.counts[Messages("ack", ack.status)] += 1
    out.note(
        "debug",
        "ack",
        delivery_id=delivery.delivery_id,
        officer_id=officer_id,
        status=ack.status,
        state=step.delivery.state,
    )
    out.record_step(step, ctx.topics, ctx.at)
    lookup.deliveries[delivery.delivery_id] = step.delivery
    if delivery.event_id in lookup.event_deliveries:  # a repeat later in this batch
        lookup.event_deliveries[delivery.event_id] = step.delivery
