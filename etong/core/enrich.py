"""The push context an officer needs to act (DESIGN §3 enrichment), built by pure functions.

Inputs are the validated event, the roster, and the history the store returned for the
event's address and persons; the output is a plain dict, serialised once and stored with
the delivery so that every re-send carries exactly what the first push carried.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from etong.core.records import HistoryEntry
from etong.models import Event
from etong.roster import Roster

HISTORY_WINDOW_S = 30 * 86400
HISTORY_LIMIT = 5
# An address whose tenants changed this often in the window is worth a closer look.
HIGH_TURNOVER_COUNT = 3
TURNOVER_TYPES = frozenset({"tenant_change", "move_in"})


def event_summary(event: Event) -> dict[str, Any]:
    """What a history entry shows of an event (stored once, when the event is accepted)."""
    return {
        "event_id": event.event_id,
        "type": event.type,
        "reported_at": event.reported_at.isoformat(),
        "grid_id": event.grid_id,
        "member_id": event.member_id,
        "address": event.address.text,
        "persons": [p.name for p in event.persons],
    }


def flags_for(
    event: Event,
    address_key: str,
    address_history: Iterable[HistoryEntry],
    person_history: Iterable[HistoryEntry],
    now: float,
) -> list[str]:
    """`high_turnover` and `person_elsewhere` (DESIGN §3), over the last 30 days."""
    since = now - HISTORY_WINDOW_S
    flags: list[str] = []
    turnovers = sum(
        1 for h in address_history if h.received_at >= since and h.type in TURNOVER_TYPES
    )
    if event.type in TURNOVER_TYPES:
        turnovers += 1
    if turnovers >= HIGH_TURNOVER_COUNT:
        flags.append("high_turnover")
    if any(
        h.address_key != address_key and h.received_at >= since and h.event_id != event.event_id
        for h in person_history
    ):
        flags.append("person_elsewhere")
    return flags


def priority_for(event: Event, flags: list[str]) -> str:
    """`high` when something about the report deserves attention first, else `normal`."""
    if flags or len(event.persons) >= 5:
        return "high"
    return "normal"


def build_context(
    event: Event,
    roster: Roster,
    *,
    address_key: str,
    address_history: list[HistoryEntry],
    person_history: list[HistoryEntry],
    now: float,
) -> dict[str, Any]:
    """The push `context` (DESIGN §2)."""
    grid = roster.grids[event.grid_id]
    community = roster.communities[grid.community]
    station = roster.stations[community.station]
    member = roster.members.get(event.member_id)
    flags = flags_for(event, address_key, address_history, person_history, now)
    seen: set[str] = set()
    history: list[dict[str, Any]] = []
    # Same address first, then the same persons elsewhere; newest first, no repeats.
    for entry in [*address_history, *person_history]:
        if entry.event_id in seen or entry.event_id == event.event_id:
            continue
        seen.add(entry.event_id)
        item = dict(entry.summary)
        item["same_address"] = entry.address_key == address_key
        history.append(item)
        if len(history) >= HISTORY_LIMIT:
            break
    return {
        "grid": {"id": grid.id, "name": grid.name},
        "community": {"id": community.id, "name": community.name},
        "station": {"id": station.id, "name": station.name},
        "reporter": {
            "id": event.member_id,
            "name": member.name if member else None,
            "is_head": grid.head == event.member_id,
        },
        "history": history,
        "flags": flags,
        "priority": priority_for(event, flags),
    }
