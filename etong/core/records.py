"""The bridge's record types: what a batch reads, decides and writes, as named values.

Pure (no I/O): the decisions (`etong/bridge.py`, `etong/core/delivery.py`, `etong/core/`) take
and return these, and every store implementation (`etong/store/`) reads and writes them. The
write records are NamedTuples so a store can hand them to `executemany` as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from etong.core.figure_records import FigureBatch
from etong.models import ReceiptStatus

# At most this much of a rejected message's payload is kept in its dead letter.
DEAD_LETTER_PAYLOAD_CAP = 8192

# The states a stored row can be in. The store's columns hold these strings; mypy holds the
# core to them, and a store reading a row hands back what the core had it write.
DeliveryState = Literal["pending", "received", "verified", "undeliverable"]
"""`deliveries.state`: waiting for an ack, acked (received or verified), or given up."""
EventStatus = Literal["accepted", "duplicate"]
"""`events.status`: a report pushed, or a repeat of one kept for its answer and for `trace`."""
DeadLetterKind = Literal["rejected", "bad_ack", "undeliverable"]
"""`dead_letters.kind`: a refused report, a refused ack, a delivery nobody acknowledged."""


@dataclass(slots=True)
class KnownEvent:
    """An event id the store has already seen."""

    event_id: str
    status: EventStatus
    duplicate_of: str | None
    grid_id: str
    member_id: str


@dataclass(slots=True)
class HistoryEntry:
    """An earlier accepted event, as enrichment sees it."""

    event_id: str
    type: str
    address_key: str
    received_at: float
    summary: dict[str, Any]


@dataclass(slots=True)
class Delivery:
    """One row of the delivery schedule."""

    delivery_id: str
    event_id: str
    grid_id: str
    member_id: str
    chain: list[str]
    step: int
    attempt: int
    state: DeliveryState
    next_due: float | None
    context: bytes
    published_attempt: int = 0
    acked_by: str | None = None
    payload: bytes = b""  # the event JSON; filled by the scheduler's page query

    @property
    def recipient(self) -> str:
        """The officer the delivery is currently pushed to."""
        return self.chain[self.step]

    @property
    def escalated_from(self) -> str | None:
        """The officer before the current one in the chain (None at the first step)."""
        return self.chain[self.step - 1] if self.step > 0 else None

    @property
    def pushed_to(self) -> list[str]:
        """Every officer this delivery has been pushed to so far (acks are accepted from these)."""
        return self.chain[: self.step + 1]


@dataclass(frozen=True, slots=True)
class BatchKeys:
    """What a batch looks up: keys, and how far back dedup and history look."""

    event_ids: Sequence[str]
    household_keys: Sequence[str]
    household_since: float
    address_keys: Sequence[str]
    person_keys: Sequence[str]
    history_since: float
    delivery_ids: Sequence[str]
    """Deliveries acked in the batch."""
    payload_for: frozenset[str] = frozenset()
    """Those of `delivery_ids` whose event payload is needed too (a `declined` ack re-pushes)."""


@dataclass(slots=True)
class BatchLookup:
    """What the store knows that a batch's decisions need; one read per batch."""

    known_events: dict[str, KnownEvent] = field(default_factory=dict)
    households: dict[str, str] = field(default_factory=dict)  # household_key -> event_id
    address_history: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    person_history: dict[str, list[HistoryEntry]] = field(default_factory=dict)
    deliveries: dict[str, Delivery] = field(default_factory=dict)
    event_deliveries: dict[str, Delivery] = field(default_factory=dict)
    """The delivery of each original a repeat names (event id -> delivery, no payload): a
    `duplicate` receipt tells the report's current state (DESIGN §2, end to end)."""


class EventRecord(NamedTuple):
    """An `events` row: a decided report (accepted, or kept as a duplicate for repeats)."""

    event_id: str
    type: str
    grid_id: str
    member_id: str
    status: EventStatus
    duplicate_of: str | None
    address_key: str
    household_key: str
    received_at: float  # unix seconds
    payload: bytes  # the validated event as pushed, JSON, serialised once
    summary: bytes  # what a history entry shows, JSON


class PersonSighting(NamedTuple):
    """An `event_persons` row: one person (by keyed hash) of an accepted report."""

    person_key: str
    event_id: str
    address_key: str
    received_at: float


class ReceiptRecord(NamedTuple):
    """A receipt to store before it is published (the store assigns its id)."""

    event_id: str | None
    topic: str
    status: ReceiptStatus
    payload: bytes


class DeadLetterRecord(NamedTuple):
    """A `dead_letters` row: what got stuck or was refused, and why."""

    kind: DeadLetterKind
    topic: str
    payload: bytes  # the raw message, at most DEAD_LETTER_PAYLOAD_CAP bytes
    reason: str
    event_id: str | None
    delivery_id: str | None


@dataclass(slots=True)
class BatchWrite:
    """Rows one batch adds or changes; written in one transaction."""

    events: list[EventRecord] = field(default_factory=list)
    event_persons: list[PersonSighting] = field(default_factory=list)
    new_deliveries: list[Delivery] = field(default_factory=list)
    delivery_updates: list[Delivery] = field(default_factory=list)
    receipts: list[ReceiptRecord] = field(default_factory=list)
    dead_letters: list[DeadLetterRecord] = field(default_factory=list)
    published_receipts: list[int] = field(default_factory=list)
    published_pushes: list[tuple[int, str]] = field(default_factory=list)  # (marker, id)
    closed_dead_letters: list[str] = field(default_factory=list)
    """Delivery ids resolved by a late ack: their open `undeliverable` dead letters close."""
    figures: FigureBatch = field(default_factory=FigureBatch)
    """The station figures' increments (DESIGN §10), written in the same transaction."""

    def is_empty(self) -> bool:
        """True when the batch changes nothing (no transaction needed)."""
        return not (
            self.events
            or self.event_persons
            or self.new_deliveries
            or self.delivery_updates
            or self.receipts
            or self.dead_letters
            or self.published_receipts
            or self.published_pushes
            or self.closed_dead_letters
        )


MARKER_STEP_WEIGHT = 1000
"""A step of the chain outweighs any attempt at it (`max_attempts` is at most 100)."""


def attempt_marker(step: int, attempt: int) -> int:
    """One integer ordering (step, attempt) pairs, for the `published_attempt` column.

    The stores compare the column with the same sum of the row's own columns
    (`etong.store.rows.CURRENT_MARKER_D`, built from `MARKER_STEP_WEIGHT`).
    """
    return step * MARKER_STEP_WEIGHT + attempt
