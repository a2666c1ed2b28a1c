"""The roster and the load: a generated roster and every report, encoded before any timing.

Every contender gets the same load: grid members publish valid, distinct reports at QoS 1, and
one officer terminal per grid acks every push it receives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import orjson

from etong.devkit.messages import encode, make_event, make_name
from etong.topics import Topics

from e2e.errors import BenchError

PREFIX = "etong/v1"


TOPICS = Topics(PREFIX)


EVENTS_FILTER = f"{PREFIX}/grid/+/member/+/events"


RECEIPTS_FILTER = f"{PREFIX}/grid/+/member/+/receipts"


STATION_ID = "zhuangshi"


COMMUNITY_ID = "bgjy"


COMMUNITY_NAME = "北高教园社区"


# A report as it travels to the publisher process: (event_id, topic, payload, member index).
# Plain tuples: they pickle into a spawned child without importing anything of ours by name.
Report = tuple[str, str, bytes, int]


@dataclass(frozen=True)
class BenchRoster:
    """The generated roster: its TOML document and the ids the load needs."""

    document: dict[str, Any]
    members: tuple[tuple[str, str], ...]  # (grid_id, member_id)
    officer_of: dict[str, str]  # grid_id -> the grid's officer
    community_of: dict[str, str]  # grid_id -> the name of its community (for addresses)
    station_of: dict[str, str]  # grid_id -> its station (a partition in a cluster)

    @property
    def officers(self) -> list[str]:
        """The grid officers (the ones with terminals in the benchmark)."""
        return sorted(set(self.officer_of.values()))

    @property
    def stations(self) -> list[str]:
        """The station ids."""
        return sorted(set(self.station_of.values()))

    def contexts(self) -> dict[str, bytes]:
        """Per grid, a push context shaped like etong's (the wire relay sends it)."""
        names = {t["id"]: t["name"] for t in self.document["stations"]}
        grids = {t["id"]: t for t in self.document["grids"]}
        return {
            grid_id: orjson.dumps(
                {
                    "grid": {"id": grid_id, "name": grids[grid_id]["name"]},
                    "community": {"id": grids[grid_id]["community"], "name": community},
                    "station": {
                        "id": self.station_of[grid_id],
                        "name": names[self.station_of[grid_id]],
                    },
                    "reporter": None,
                    "history": [],
                    "flags": [],
                    "priority": "normal",
                }
            )
            for grid_id, community in self.community_of.items()
        }


def bench_roster(grids: int = 10, stations: int = 1, seed: int = 7) -> BenchRoster:
    """`stations` stations, each with one community, a backup officer and a duty officer;
    `grids` grids dealt round-robin over them, each with one officer (none absent) and 3-5
    members. Every escalation chain stays in its station (a cluster refuses one that leaves
    it: DESIGN §7). With one station: the roster of issue #5's figures, plus the backup."""
    if not 1 <= stations <= grids:
        raise BenchError(f"--stations must be from 1 to --grids ({grids}), not {stations}")
    rng = random.Random(seed)
    station_tables, community_tables, officers = _stations(stations, rng)
    grid_tables: list[dict[str, Any]] = []
    member_tables: list[dict[str, Any]] = []
    members: list[tuple[str, str]] = []
    officer_of: dict[str, str] = {}
    community_of: dict[str, str] = {}
    station_of: dict[str, str] = {}
    for g in range(1, grids + 1):
        s = (g - 1) % stations  # round-robin: every station gets the same share of grids
        station, community = station_tables[s], community_tables[s]
        grid_id = f"ZS-{g:03d}"
        officer_id = f"p-{1000 + g}"
        officer_of[grid_id] = officer_id
        community_of[grid_id] = community["name"]
        station_of[grid_id] = station["id"]
        officers.append(
            {
                "id": officer_id,
                "name": make_name(rng),
                "station": station["id"],
                "backup": f"p-8{s + 1:03d}",
            }
        )
        # 3, 4 or 5 members by the grid's place in its station: every station gets the same
        # count (with one station: 4, 5, 3, 4, ... as in issue #5's figures).
        size = 3 + ((g - 1) // stations + 1) % 3
        ids = [f"g-{g:03d}{m}" for m in range(1, size + 1)]
        grid_tables.append(
            {
                "id": grid_id,
                "name": f"北高教园第{g}网格",
                "community": community["id"],
                "officer": officer_id,
                "head": ids[0],
                "members": ids,
            }
        )
        member_tables.extend({"id": member_id, "name": make_name(rng)} for member_id in ids)
        members.extend((grid_id, member_id) for member_id in ids)
    document = {
        "stations": station_tables,
        "communities": community_tables,
        "officers": officers,
        "grids": grid_tables,
        "members": member_tables,
    }
    return BenchRoster(document, tuple(members), officer_of, community_of, station_of)


def _stations(
    stations: int, rng: random.Random
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The station, community and officer tables of `stations` stations: one community, a duty
    officer and a backup officer each (names drawn from `rng` first, as the grids draw next)."""
    station_tables: list[dict[str, Any]] = []
    community_tables: list[dict[str, Any]] = []
    officers: list[dict[str, Any]] = []
    for s in range(1, stations + 1):
        station_id = STATION_ID if stations == 1 else f"{STATION_ID}-{s}"
        suffix = "" if stations == 1 else f"-{s}"
        duty, backup = f"p-9{s:03d}", f"p-8{s:03d}"  # p-9001: issue #5's duty officer
        station_tables.append(
            {"id": station_id, "name": f"庄市派出所{suffix}", "duty_officer": duty}
        )
        community_tables.append(
            {"id": COMMUNITY_ID + suffix, "name": COMMUNITY_NAME + suffix, "station": station_id}
        )
        officers.append({"id": duty, "name": "值班民警", "station": station_id})
        officers.append({"id": backup, "name": make_name(rng), "station": station_id})
    return station_tables, community_tables, officers


def make_reports(roster: BenchRoster, count: int, rng: random.Random) -> list[Report]:
    """`count` valid, distinct reports spread evenly over the roster's members, pre-encoded.

    Random persons make every household distinct, so none is a duplicate; addresses are drawn
    from one community's ~40,000 rooms, so the history lookups find earlier reports.
    """
    reports: list[Report] = []
    for i in range(count):
        member_index = i % len(roster.members)
        grid_id, member_id = roster.members[member_index]
        event = make_event(
            grid_id,
            member_id,
            persons=1 + i % 3,
            community_name=roster.community_of[grid_id],
            rng=rng,
        )
        topic = TOPICS.events(grid_id, member_id)
        reports.append((str(event["event_id"]), topic, encode(event), member_index))
    return reports
