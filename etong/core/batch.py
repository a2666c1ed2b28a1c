"""One batch of inbound messages, decided: `lookup_keys` says what to read from the store,
`decide_batch` turns the admitted messages and the store's answer into an `Outcome`.

Pure: the shell reads the store with the keys, calls `decide_batch`, writes `outcome.write`
in one transaction, acknowledges the messages, then publishes and logs what the outcome says.
Messages are decided in arrival order, each seeing the ones before it in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from etong.core import dedup, figures
from etong.core.acks import decide_ack
from etong.core.admission import Admitted
from etong.core.context import BatchContext
from etong.core.enrich import HISTORY_WINDOW_S
from etong.core.events import decide_event
from etong.core.outcome import Outcome
from etong.core.records import BatchKeys, BatchLookup
from etong.core.rejections import reject


def lookup_keys(
    admitted: Sequence[Admitted], dedup_window_s: float, now: float
) -> BatchKeys | None:
    """What the batch's decisions need from the store, or None when they need nothing."""
    events = [(p.event, p.keys) for p in admitted if p.event is not None and p.keys is not None]
    acks = [p.ack for p in admitted if p.ack is not None]
    if not events and not acks:
        return None
    households = (
        list({keys.household for _, keys in events})
        if dedup.household_dedup_on(dedup_window_s)
        else []
    )
    return BatchKeys(
        event_ids=list({event.event_id for event, _ in events}),
        household_keys=households,
        household_since=dedup.household_since(now, dedup_window_s),
        address_keys=list({keys.address for _, keys in events}),
        person_keys=list({k for _, keys in events for k in keys.persons}),
        history_since=now - HISTORY_WINDOW_S,
        delivery_ids=list({ack.delivery_id for ack in acks}),
        # Only a `declined` ack pushes (to the duty officer), so only it needs the event.
        payload_for=frozenset(ack.delivery_id for ack in acks if ack.status == "declined"),
    )


def decide_batch(admitted: Sequence[Admitted], lookup: BatchLookup, ctx: BatchContext) -> Outcome:
    """Every decision of one batch, in arrival order (`lookup` is updated as they go)."""
    out = Outcome()
    for item in admitted:
        if item.rejection is not None:
            reject(
                item,
                out,
                topics=ctx.topics,
                at=ctx.at,
                now=ctx.now,
                max_payload_bytes=ctx.max_payload_bytes,
                budgets=ctx.budgets,
            )
        elif item.event is not None and item.keys is not None:
            decide_event(item.event, item.keys, lookup, ctx, out, retained=item.inbound.retain)
        elif item.ack is not None and item.topic is not None:
            decide_ack(item.ack, item.topic.officer_id, lookup, ctx, out)
    out.write.figures = figures.of_batch(admitted, out, ctx)
    return out
