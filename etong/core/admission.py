"""The first look at an inbound message, before the store is read (pure, cheapest first).

Topic → QoS → (acks) the ack's fields, or (reports) the member's rate limit → the report's
fields → the roster's say on the reporter. Each message comes out `Admitted` with either its
parsed event or ack, or the `Rejection` that stops it; nothing here raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple
from zoneinfo import ZoneInfo

from etong.core.keys import EventKeys, Keyer
from etong.core.ratelimit import TokenBuckets
from etong.core.validate import Rejection, parse_ack, parse_event
from etong.models import Ack, Event
from etong.roster import Roster
from etong.topics import InboundTopic, Topics


class Inbound(NamedTuple):
    """What the core needs of an inbound message (the shell keeps the message to ack it)."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    correlation_data: bytes | None = None
    arrived_s: float = 0.0  # monotonic seconds when it arrived: the rate limit's clock


@dataclass(slots=True)
class Admitted:
    """One inbound message after admission: an event with its keys, an ack, or a rejection."""

    inbound: Inbound
    topic: InboundTopic | None
    event: Event | None = None
    keys: EventKeys | None = None
    ack: Ack | None = None
    rejection: Rejection | None = None
    over_rate_limit: bool = False


@dataclass(frozen=True, slots=True)
class Admission:
    """The rules and state admission applies: topics, limits, the member buckets, keys."""

    topics: Topics
    keyer: Keyer
    buckets: TokenBuckets
    max_payload_bytes: int
    member_rate_per_min: int
    zone: ZoneInfo

    def admit(self, msg: Inbound, now: float, roster: Roster) -> Admitted:
        """Admit one message at wall-clock `now` under `roster`."""
        topic = self.topics.parse(msg.topic)
        item = Admitted(msg, topic)
        if topic is None:
            item.rejection = Rejection("topic is not an etong events or acks topic")
        elif msg.qos != 1:
            # All traffic is QoS 1 (DESIGN §2): at QoS 0 the broker forgets a report it could
            # not hand over, so a terminal sending one must be told, not silently served.
            item.rejection = Rejection("qos: publish reports and acks at QoS 1", "qos")
        elif topic.kind == "ack":
            self._admit_ack(item)
        elif not self.buckets.allow(topic.member_id, msg.arrived_s):
            item.over_rate_limit = True
            item.rejection = Rejection(
                f"rate limit: at most {self.member_rate_per_min} reports per minute per member"
            )
        else:
            self._admit_event(item, topic, now, roster)
        return item

    def _admit_ack(self, item: Admitted) -> None:
        result = parse_ack(
            item.inbound.payload,
            max_payload_bytes=self.max_payload_bytes,
            correlation_data=item.inbound.correlation_data,
        )
        if isinstance(result, Rejection):
            item.rejection = result
        else:
            item.ack = result

    def _admit_event(self, item: Admitted, topic: InboundTopic, now: float, roster: Roster) -> None:
        result = parse_event(
            item.inbound.payload,
            topic_grid_id=topic.grid_id,
            topic_member_id=topic.member_id,
            max_payload_bytes=self.max_payload_bytes,
            now=datetime.fromtimestamp(now, self.zone),
        )
        if isinstance(result, Rejection):
            item.rejection = result
            return
        item.rejection = check_reporter(result, roster)
        if item.rejection is None:
            item.event = result
            item.keys = self.keyer.event_keys(result)


def check_reporter(event: Event, roster: Roster) -> Rejection | None:
    """The roster's say: the grid exists and the member belongs to it (DESIGN §2).

    Either refusal is a security event: the broker lets a terminal publish under its own id in
    any grid's topic (its rules are patterns, DESIGN §8), so this is where a member writing
    another grid's topic, or an id that is no member's, is caught."""
    if event.grid_id not in roster.grids:
        return Rejection(f"grid_id: unknown grid '{event.grid_id}'", "grid_id", security=True)
    if not roster.member_in_grid(event.member_id, event.grid_id):
        return Rejection(
            f"member_id: member '{event.member_id}' does not belong to grid '{event.grid_id}'",
            "member_id",
            security=True,
        )
    return None
