"""What a partition is (DESIGN §7): one police station, its topics, its client ids, its leases.

Pure: the cluster's shell (`etong/cluster/`) asks these rules which topics a partition's
connection subscribes to, which client ids it uses and whether a roster can be partitioned;
the store keeps the `Lease` rows and checks each `Fence`.

Why a station: escalation never leaves a station (DESIGN §3), so every officer a delivery can
be pushed to acknowledges on a topic the same partition subscribes to, and one owner decides
every step of a delivery without asking another instance.
"""

from __future__ import annotations

from dataclasses import dataclass

from etong.roster import Roster
from etong.topics import Topics


@dataclass(frozen=True, slots=True)
class Lease:
    """One partition's lease row, as read: who owns it, under which epoch, until when."""

    partition: str
    """The station id."""
    owner: str | None
    """The owner's `bridge.instance_id`; None when free (released or never taken)."""
    epoch: int
    """The fencing token: raised by one at every claim, so a deposed owner's writes fail."""
    expires_at: float | None
    """Unix seconds on the database's clock; for a free row, when it became free (released
    or expired); None when never taken."""

    def is_live(self, now: float) -> bool:
        """True while an owner holds it: not released and not expired at `now` (DB clock)."""
        return self.owner is not None and self.expires_at is not None and self.expires_at > now


@dataclass(frozen=True, slots=True)
class Fence:
    """What a partition's writes are checked against: this owner under this epoch."""

    partition: str
    owner: str
    epoch: int


def partition_client_id(client_id: str, station_id: str, *, publisher: bool = False) -> str:
    """The MQTT client id of a partition's connection: `{broker.client_id}-{station}[-pub]`.

    The same on every instance, so the partition's persistent session (and what queued in it
    while nobody owned the partition) passes to whoever takes the lease [MQTT-3.1.4-3].
    """
    suffix = "-pub" if publisher else ""
    return f"{client_id}-{station_id}{suffix}"


def instance_client_id(client_id: str, instance_id: str) -> str:
    """The client id of a cluster instance's own connection (its status and last will):
    `{broker.client_id}-{instance_id}-status`. Per instance, because every instance of a
    cluster shares `broker.client_id`, and two connections with one id take turns kicking
    each other off [MQTT-3.1.4-3]."""
    return f"{client_id}-{instance_id}-status"


def station_subscriptions(roster: Roster, station_id: str, topics: Topics) -> list[str]:
    """The topics a station's partition listens on: its grids' events, its officers' acks.

    One filter per grid (`{p}/grid/{grid}/member/+/events`) rather than per member: a member
    moved between grids of the station needs no new subscription, and the admission still
    refuses a member who is not in the grid (DESIGN §2).
    """
    grids = roster.grids_of_station.get(station_id, ())
    officers = roster.officers_of_station.get(station_id, ())
    return [f"{topics.prefix}/grid/{g}/member/+/events" for g in grids] + [
        topics.acks(o) for o in officers
    ]


def cross_station_problems(roster: Roster) -> list[str]:
    """Where a roster sends a station's deliveries outside it; [] when it can be partitioned.

    In a cluster an ack is read by the partition of the acking officer's station, and the
    delivery is owned by the partition of the grid's station: the two must be one. So every
    officer a delivery can reach (the grid's officer, the backups after it, the duty officer,
    the community's registrar) must be of the grid's station. One instance on SQLite only
    warns of a lent officer (`roster._station_mismatches`); a cluster refuses it.
    """
    problems: list[str] = []
    for grid in sorted(roster.grids.values(), key=lambda g: g.id):
        community = roster.communities[grid.community]
        station = community.station
        reach = [("officer", grid.officer), ("duty officer", roster.stations[station].duty_officer)]
        seen = {grid.officer}
        backup = roster.officers[grid.officer].backup
        while backup is not None and backup not in seen and backup in roster.officers:
            reach.append(("backup", backup))
            seen.add(backup)
            backup = roster.officers[backup].backup
        if community.registrar is not None:
            reach.append(("registrar", community.registrar))
        for role, officer_id in reach:
            officer = roster.officers.get(officer_id)
            if officer is not None and officer.station != station:
                problems.append(
                    f"grids[{grid.id}]: its {role} '{officer_id}' is of station "
                    f"{officer.station}, the grid of station {station}; in a cluster "
                    "(store.url) escalation stays in the grid's station (DESIGN §7)"
                )
    return problems
