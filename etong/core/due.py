"""When a delivery falls due (its ack timeout passed): re-send, escalate or give up.

The rule itself is `delivery.on_due` (exponential backoff with jitter, `max_attempts` per
recipient, then the next officer of the chain, then undeliverable); this applies it to one
scheduler page of due deliveries.
"""

from __future__ import annotations

from collections.abc import Sequence

from etong.core import figures
from etong.core.context import BatchContext
from etong.core.delivery import on_due
from etong.core.outcome import Outcome
from etong.core.records import Delivery


def decide_due(due: Sequence[Delivery], ctx: BatchContext) -> Outcome:
    """The outcome of one page of due deliveries at `ctx.now`."""
    out = Outcome()
    for d in due:
        step = on_due(d, ctx.policy, ctx.now, ctx.rng)
        out.record_step(step, ctx.topics, ctx.at)
        if step.push:
            out.note(
                "debug",
                "delivery_resend",
                delivery_id=d.delivery_id,
                officer_id=step.delivery.recipient,
                attempt=step.delivery.attempt,
                escalated_from=step.escalated_from,
            )
    out.write.figures = figures.of_due(out, ctx)
    return out
