"""Plain values for the core's top-level decisions: one instant, one day, the example roster,
an id source that counts and jitter that is fixed, so two outcomes compare as values."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from etong.clock import iso_from_unix
from etong.core.admission import Admission, Admitted, Inbound
from etong.core.budget import DropReason, RejectionBudget
from etong.core.context import BatchContext
from etong.core.delivery import Policy
from etong.core.keys import Keyer
from etong.core.outcome import CountKey
from etong.core.ratelimit import TokenBuckets
from etong.core.records import Delivery
from etong.devkit.messages import make_event
from etong.roster import Roster, load_roster
from etong.topics import Topics

ROSTER = load_roster(Path(__file__).parents[1] / "config" / "roster.example.toml")
ZONE = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 11, 30, 9, 5, tzinfo=ZONE).timestamp()
DAY = date(2026, 11, 30)  # p-1001 is present; absent 2026-12-01..05
AT = iso_from_unix(NOW, ZONE)
REPORTED_AT = "2026-11-30T09:00:00+08:00"
POLICY = Policy(ack_timeout_s=30, max_attempts=3, backoff_max_s=600)
TOPICS = Topics("etong/v1")
MAX_PAYLOAD = 16384
KEYER = Keyer(b"k" * 32)
JITTER = 0.5  # every backoff is its base times 1.1
CHAIN = ["p-1001", "p-1002", "p-9001"]  # grid ZS-017: officer, backup, duty officer


class FixedJitter:
    """Backoff jitter that is always `JITTER`."""

    def random(self) -> float:
        """The fixed draw."""
        return JITTER


class CountingIds:
    """Delivery ids D1, D2, ... in the order the decisions ask for them."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, now: float) -> str:
        """The next id (the instant is not part of it)."""
        self.n += 1
        return f"D{self.n}"


def budgets(per_minute: int = 60) -> dict[DropReason, RejectionBudget]:
    """Fresh rejection budgets of `per_minute` each."""
    return {"bad_topic": RejectionBudget(per_minute), "bad_ack": RejectionBudget(per_minute)}


def context(
    *, day: date = DAY, dedup_window_s: float = 600.0, roster: Roster = ROSTER, **kw: Any
) -> BatchContext:
    """The givens of a batch at NOW; `kw` replaces `budgets`."""
    return BatchContext(
        roster=roster,
        topics=TOPICS,
        policy=POLICY,
        dedup_window_s=dedup_window_s,
        max_payload_bytes=MAX_PAYLOAD,
        now=NOW,
        at=AT,
        day=day,
        rng=FixedJitter(),
        ids=CountingIds(),
        budgets=kw.get("budgets", budgets()),
    )


def admission(member_rate_per_min: int = 30) -> Admission:
    """Admission under the example roster's topics, with fresh member buckets."""
    return Admission(
        topics=TOPICS,
        keyer=KEYER,
        buckets=TokenBuckets(member_rate_per_min),
        max_payload_bytes=MAX_PAYLOAD,
        member_rate_per_min=member_rate_per_min,
        zone=ZONE,
    )


def event(
    event_id: str = "EV-00000001",
    grid_id: str = "ZS-017",
    member_id: str = "g-0231",
    *,
    room: str = "101",
    reported_at: str = REPORTED_AT,
    **kw: Any,
) -> dict[str, Any]:
    """A valid report at one household (building 3, unit 2, `room`), the same for a seed."""
    return make_event(
        grid_id,
        member_id,
        event_id=event_id,
        building="3",
        unit="2",
        room=room,
        reported_at=reported_at,
        rng=random.Random(7),
        **kw,
    )


def event_inbound(body: dict[str, Any], *, qos: int = 1, retain: bool = False) -> Inbound:
    """The report `body` as published on its member's events topic."""
    topic = TOPICS.events(body["grid_id"], body["member_id"])
    return Inbound(topic, orjson.dumps(body), qos, retain, None, 0.0)


def ack_inbound(officer_id: str, delivery_id: str, status: str = "received") -> Inbound:
    """An ack as published on `officer_id`'s acks topic."""
    payload = orjson.dumps({"delivery_id": delivery_id, "status": status})
    return Inbound(TOPICS.acks(officer_id), payload, 1, False, None, 0.0)


def admit(*messages: Inbound) -> list[Admitted]:
    """Messages admitted at NOW under the example roster, one admission for all."""
    gate = admission()
    return [gate.admit(m, NOW, ROSTER) for m in messages]


def delivery(**kw: Any) -> Delivery:
    """A pending delivery of report E1 to the grid's officer (step 0, attempt 1)."""
    fields: dict[str, Any] = {
        "delivery_id": "D1",
        "event_id": "EV-00000001",
        "grid_id": "ZS-017",
        "member_id": "g-0231",
        "chain": list(CHAIN),
        "step": 0,
        "attempt": 1,
        "state": "pending",
        "next_due": NOW,
        "context": b"{}",
        "payload": b'{"event_id":"EV-00000001"}',
    }
    fields.update(kw)
    return Delivery(**fields)


def counts(*keys: CountKey) -> Counter[CountKey]:
    """A Counter of each key once (twice when named twice)."""
    return Counter(keys)
