"""The duplicate decision (DESIGN §3), a pure function over what the store returned.

An event id is the handheld's idempotency key, so the same id again is a re-send: `duplicate`.
But only from the handheld that sent it first. The same id from another member, or for another
grid, is no re-send: answering `duplicate` would drop that report (one member could suppress
another's by guessing or copying its id) and tell the sender what became of someone else's
report. It is `Reused`: rejected, with a reason that says nothing about the other report
(docs/SECURITY.md, "The event_id oracle").
"""

from __future__ import annotations

from dataclasses import dataclass

from etong.core.records import EventStatus


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
        original = duplicate_of if status == "duplicate" and duplicate_of else event_id
        return Duplicate(duplicate_of=original, same_id=True)
    if household_event_id is not None and household_event_id != event_id:
        return Duplicate(duplicate_of=household_event_id, same_id=False)
    return Fresh()
