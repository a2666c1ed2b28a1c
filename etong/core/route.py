"""Who gets a report: the escalation chain for a grid on a day (DESIGN §3), pure.

This is where the recipient is chosen when the grid's officer is absent that day: the chain
skips them, so the report goes straight to their backup.
"""

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


def duty_officer_or_none(roster: Roster, grid_id: str) -> str | None:
    """The grid's duty officer, or None when the grid has left the roster since (a delivery
    made before a reload can outlive its grid; nobody is left to hand a decline to)."""
    if grid_id not in roster.grids:
        return None
    return duty_officer_for_grid(roster, grid_id)
