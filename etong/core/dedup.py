"""The duplicate decision (DESIGN §3), a pure function over what the store returned.

An event id is the handheld's idempotency key, so the same id again is a re-send: `duplicate`.
But only from the handheld that sent it first. The same id from another member, or for another
grid, is no re-send: answering `duplicate` would drop that report (one member could suppress
another's by guessing or copying its id) and tell the sender what became of someone else's
report. It is `Reused`: rejected, with a reason that says nothing about the other report
(docs/SECURITY.md, "The event_id oracle").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from etong.core.records import BatchLookup, EventStatus


@dataclass(frozen=True, slots=True)
class Fresh:
    """Not seen before: push it."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Seen before. `duplicate_of` is the event that was pushed; `same_id` when the handheld
    simply sent the same event id again (a retry), rather than a second report of a household."""

    duplicate_of: str
    same_id: bool


@dataclass(frozen=True, slots=True)
class Reused:
    """The event id belongs to another member's (or another grid's) report: reject it."""

    reason: str = (
        "event_id: cannot be used by this member; every new report needs an event_id of its own"
    )


DedupDecision = Fresh | Duplicate | Reused


def household_dedup_on(window_s: float) -> bool:
    """Whether same-household reports are duplicates at all (`dedup.window_s`, DESIGN §3).

    A report is a household duplicate of an accepted one at most `window_s` seconds older
    (`household_since`). Reports of one batch share one instant, so an earlier report of the
    same batch is 0 s older: inside any positive window. A window of 0 turns household dedup
    off, keeping only event_id dedup, within a batch as across batches.
    """
    return window_s > 0


def household_since(now: float, window_s: float) -> float:
    """The oldest `received_at` a household duplicate's original may have (inclusive).

    The window is read from `now`, the batch's one instant: a report received exactly
    `window_s` ago still counts (the stores' queries fetch from this instant on, and
    `household_originals` holds the candidates to it again).
    """
    return now - window_s


class HouseholdCandidate(NamedTuple):
    """An accepted report of a household the store found: the candidates for its original."""

    household_key: str
    event_id: str
    received_at: float
    order: int
    """Insertion order in the store (SQLite's rowid, PostgreSQL's `seq`): the tie-break."""


def household_originals(candidates: Iterable[HouseholdCandidate], since: float) -> dict[str, str]:
    """The original each household names: household key -> event id (both stores use this).

    The earliest accepted report received at `since` or later; of reports received at the
    same instant (one batch's), the first stored. A store hands over what it read, in any
    order; the rule is here, not in its SQL.
    """
    best: dict[str, HouseholdCandidate] = {}
    for c in candidates:
        if c.received_at < since:
            continue
        held = best.get(c.household_key)
        if held is None or (c.received_at, c.order) < (held.received_at, held.order):
            best[c.household_key] = c
    return {key: c.event_id for key, c in best.items()}


def original_of(event_id: str, status: EventStatus, duplicate_of: str | None) -> str:
    """The report a stored event stands for: itself, or the original a duplicate names."""
    return duplicate_of if status == "duplicate" and duplicate_of else event_id


def originals_named(lookup: BatchLookup) -> set[str]:
    """The event ids whose delivery a batch's repeats may report (`event_deliveries`).

    Every known event's original and every household's: a store reads their deliveries in
    the same lookup, so a `duplicate` receipt can say where the original stands.
    """
    known = {
        original_of(k.event_id, k.status, k.duplicate_of) for k in lookup.known_events.values()
    }
    return known | set(lookup.households.values())


def decide(
    event_id: str,
    household_key: str,
    *,
    known_event: tuple[EventStatus, str | None] | None,
    household_event_id: str | None,
    reporter: tuple[str, str],
    known_reporter: tuple[str, str] | None,
) -> DedupDecision:
    """Decide whether an event is new.

    `known_event` is (status, duplicate_of) of a stored event with the same id, if any, and
    `known_reporter` its (grid_id, member_id); `reporter` is (grid_id, member_id) of this one.
    `household_event_id` is an accepted event with the same household key inside the dedup
    window, if any. The same event id always wins: it is the handheld's idempotency key, but
    only the reporter that used it first may repeat it (module docstring).
    """
    if known_event is not None and known_reporter is not None and known_reporter != reporter:
        return Reused()
    if known_event is not None:
        status, duplicate_of = known_event
        return Duplicate(duplicate_of=original_of(event_id, status, duplicate_of), same_id=True)
    if household_event_id is not None and household_event_id != event_id:
        return Duplicate(duplicate_of=household_event_id, same_id=False)
    return Fresh()
