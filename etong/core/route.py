"""Who gets a report: the escalation chain for a grid on a day (DESIGN §3), pure."""

from __future__ import annotations

from datetime import date

from etong.roster import Roster


def escalation_chain(roster: Roster, grid_id: str, day: date) -> list[str]:
    """Officers to try in order: the grid's officer, their backup, the station's duty officer.

    An officer absent on `day` is skipped (so an absent officer's grid goes straight to the
    backup). The duty officer is always last, absent or not: somebody must be asked before a
    report is declared undeliverable. Repeats are dropped (a backup may be the duty officer).
    """
    grid = roster.grids[grid_id]
    officer = roster.officers[grid.officer]
    candidates: list[str] = []
    if not roster.is_absent(officer.id, day):
        candidates.append(officer.id)
    if officer.backup and not roster.is_absent(officer.backup, day):
        candidates.append(officer.backup)
    candidates.append(duty_officer_for_grid(roster, grid_id))
    return list(dict.fromkeys(candidates))


def duty_officer_for_grid(roster: Roster, grid_id: str) -> str:
    """The duty officer of the station that covers the grid's community."""
    return roster.station_of(grid_id).duty_officer


def registrar_for_grid(roster: Roster, grid_id: str) -> str | None:
    """The community's floating-population registrar, if the roster names one."""
    return roster.community_of(grid_id).registrar


CC_EVENT_TYPES = frozenset({"move_in", "tenant_change"})
