"""Who gets a registrar copy of a report (DESIGN §3), pure.

A community's floating-population registrar, where the roster names one, gets a copy
(`"cc": true`, no re-sends, no acks expected) of every `move_in` and `tenant_change` in its
community: the two changes that bring new residents to register. No copy when the registrar
is the report's first recipient anyway.
"""

from __future__ import annotations

from etong.roster import Roster

CC_EVENT_TYPES = frozenset({"move_in", "tenant_change"})


def registrar_for_grid(roster: Roster, grid_id: str) -> str | None:
    """The community's floating-population registrar, if the roster names one."""
    return roster.community_of(grid_id).registrar


def registrar_copy_for(
    roster: Roster, grid_id: str, event_type: str, first_recipient: str
) -> str | None:
    """The registrar who gets a copy of this report, or None."""
    registrar = registrar_for_grid(roster, grid_id)
    if registrar is None or event_type not in CC_EVENT_TYPES or registrar == first_recipient:
        return None
    return registrar
