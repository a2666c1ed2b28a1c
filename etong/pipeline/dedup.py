"""The duplicate decision (DESIGN §3), a pure function over what the store returned."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Fresh:
    """Not seen before: push it."""


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Seen before. `duplicate_of` is the event that was pushed; `same_id` when the handheld
    simply sent the same event id again (a retry), rather than a second report of a household."""

    duplicate_of: str
    same_id: bool


DedupDecision = Fresh | Duplicate


def household_dedup_on(window_s: float) -> bool:
    """Whether same-household reports are duplicates at all (`dedup.window_s`, DESIGN §3).

    A report is a household duplicate of an accepted one less than `window_s` seconds older.
    Reports of one batch share one instant, so an earlier report of the same batch is 0 s
    older: inside any positive window, and outside a window of 0, which therefore keeps
    only event_id dedup, within a batch as across batches.
    """
    return window_s > 0


def decide(
    event_id: str,
    household_key: str,
    *,
    known_event: tuple[str, str | None] | None,
    household_event_id: str | None,
) -> DedupDecision:
    """Decide whether an event is new.

    `known_event` is (status, duplicate_of) of a stored event with the same id, if any;
    `household_event_id` is an accepted event with the same household key inside the dedup
    window, if any. The same event id always wins: it is the handheld's idempotency key.
    """
    if known_event is not None:
        status, duplicate_of = known_event
        original = duplicate_of if status == "duplicate" and duplicate_of else event_id
        return Duplicate(duplicate_of=original, same_id=True)
    if household_event_id is not None and household_event_id != event_id:
        return Duplicate(duplicate_of=household_event_id, same_id=False)
    return Fresh()


Outcome = Literal["accepted", "duplicate", "rejected"]
