"""The event_id oracle closed, through the bridge and the store (docs/SECURITY.md).

A report that reuses another member's event id is `rejected` and kept as a dead letter: it is
not taken for a re-send of that report (which would drop it, and answer with that report's
state), and the other report stays as it was. The member who sent the id first still gets
`duplicate` when it re-sends. Deliveries are counted over every inbox, so which officer is on duty
today (the example roster has absences) does not matter here.
"""

from __future__ import annotations

import random
from typing import Any

from etong.core.dedup import Reused
from etong.devkit.messages import make_event
from tests.integration.conftest import START_RFC3339, Harness

A_EVENTS = "etong/v1/grid/ZS-017/member/g-0231/events"
B_EVENTS = "etong/v1/grid/ZS-017/member/g-0232/events"
OTHER_GRID_EVENTS = "etong/v1/grid/ZS-018/member/g-0241/events"


def _report(grid_id: str, member_id: str, seed: int, **fields: Any) -> dict[str, Any]:
    fields.setdefault("reported_at", START_RFC3339)  # the harness clock's start, not today
    return make_event(grid_id, member_id, rng=random.Random(seed), **fields)


def _pushes(harness: Harness) -> list[dict[str, Any]]:
    """Deliveries pushed to any officer (the registrar's copies of a move-in left out)."""
    return [push for push in harness.broker.on("/inbox") if not push["cc"]]


async def test_another_members_report_under_a_known_event_id_is_rejected_not_duplicate(
    harness: Harness,
) -> None:
    first = _report("ZS-017", "g-0231", 1)
    await harness.send(A_EVENTS, first)
    copycat = _report("ZS-017", "g-0232", 2, event_id=first["event_id"])

    await harness.send(B_EVENTS, copycat)

    [receipt] = harness.receipts("g-0232")
    assert receipt["status"] == "rejected"
    assert receipt["reason"] == Reused().reason
    assert receipt["event_id"] == first["event_id"]  # the sender's own id, nothing more
    assert receipt["duplicate_of"] is None and receipt["officer_id"] is None
    assert len(_pushes(harness)) == 1
    [dead] = [d for d in await harness.store.dead_letters() if d["topic"] == B_EVENTS]
    assert dead["kind"] == "rejected" and dead["event_id"] == first["event_id"]
    trace = await harness.store.trace(first["event_id"])
    assert [(e["member_id"], e["status"]) for e in trace["events"]] == [("g-0231", "accepted")]


async def test_the_first_reporter_resending_after_a_copycat_still_gets_duplicate(
    harness: Harness,
) -> None:
    first = _report("ZS-017", "g-0231", 1)
    await harness.send(A_EVENTS, first)
    await harness.send(B_EVENTS, _report("ZS-017", "g-0232", 2, event_id=first["event_id"]))

    await harness.send(A_EVENTS, first)

    statuses = [(r["status"], r["duplicate_of"]) for r in harness.receipts("g-0231")]
    assert statuses == [("accepted", None), ("duplicate", first["event_id"])]
    assert len(_pushes(harness)) == 1


async def test_a_known_event_id_from_another_grid_in_the_same_batch_is_rejected(
    harness: Harness,
) -> None:
    first = _report("ZS-017", "g-0231", 1)
    harness.broker.inject(A_EVENTS, first)
    harness.broker.inject(
        OTHER_GRID_EVENTS, _report("ZS-018", "g-0241", 3, event_id=first["event_id"])
    )
    await harness.flush()

    assert [r["status"] for r in harness.receipts("g-0231")] == ["accepted"]
    assert [r["status"] for r in harness.receipts("g-0241", grid="ZS-018")] == ["rejected"]
    assert len(_pushes(harness)) == 1
