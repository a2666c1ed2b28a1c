"""The broker's authorization rules, derived from the roster and the config (DESIGN §8), pure.

One identity per terminal, its MQTT user name the roster id; deny by default, so each
identity lists exactly the topics it may use, with no wildcard where the roster knows the id:

- a grid member publishes only `{p}/grid/ITS_GRID/member/ITS_ID/events` and reads only the
  `receipts` beside it;
- an officer reads only `{p}/officer/ITS_ID/inbox` and writes only `{p}/officer/ITS_ID/acks`;
- a registrar (an officer entry that only ever gets copies, which are never re-sent, so never
  acknowledged) reads only its inbox;
- the bridge's own user (`broker.username`, and `officer_broker.username` where set) reads
  events and acks and writes pushes and receipts, for every id, and its status topic
  `{p}/bridge/{instance_id}/status` (read too, so a health check with the bridge's
  credentials can watch it).

Whatever would let one identity act as another is a problem, not a rule: a roster id equal to
the bridge's user name, or to one of the bridge's client ids (with client ids bound to user
names, that terminal would take over the bridge's session), or a member id that is also an
officer id (one user name, two terminals' rights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from etong.config import BrokerSettings, Settings
from etong.core.partitions import instance_client_id, partition_client_id
from etong.errors import ConfigError
from etong.roster import Roster
from etong.topics import Topics

Role = Literal["bridge", "member", "officer", "registrar"]


@dataclass(frozen=True, slots=True)
class Grant:
    """One permission: `read` is subscribe and receive, `write` is publish."""

    access: Literal["read", "write", "readwrite"]
    topic: str


@dataclass(frozen=True, slots=True)
class Identity:
    """A broker user name and everything it may do; anything not listed is denied."""

    username: str
    role: Role
    grants: tuple[Grant, ...]


@dataclass(frozen=True, slots=True)
class AclRules:
    """The whole authorization, identities in a stable order (so a file can be compared)."""

    topic_prefix: str
    identities: tuple[Identity, ...]

    def identity(self, username: str) -> Identity | None:
        """The identity with this user name, or None (such a user may do nothing)."""
        return next((i for i in self.identities if i.username == username), None)


def derive_rules(roster: Roster, settings: Settings) -> AclRules:
    """The rules for `roster` under `settings`; ConfigError listing every problem found."""
    topics = Topics(settings.bridge.topic_prefix)
    problems = _identity_problems(roster, settings)
    if problems:
        raise ConfigError(problems, source=str(settings.config_path))
    identities = [
        *_bridge_identities(settings, topics),
        *_officer_identities(roster, topics),
        *_member_identities(roster, topics),
    ]
    return AclRules(topics.prefix, tuple(identities))


def bridge_client_ids(settings: Settings, roster: Roster | None = None) -> list[str]:
    """Every MQTT client id the bridge connects with: per broker, the listener and `-pub`;
    in a cluster (DESIGN §7) also each station's partition pair, `{client_id}-{station}`, and
    the instance's own status connection."""
    brokers = [settings.broker, *([settings.officer_broker] if settings.officer_broker else [])]
    ids = [cid for b in brokers for cid in (b.client_id, f"{b.client_id}-pub")]
    if settings.store.is_postgres:
        ids.append(instance_client_id(settings.broker.client_id, settings.bridge.instance_id))
    if settings.store.is_postgres and roster is not None:
        ids += [
            partition_client_id(b.client_id, station, publisher=publisher)
            for b in brokers
            for station in sorted(roster.stations)
            for publisher in (False, True)
        ]
    return ids


def _bridge_users(settings: Settings) -> dict[str, list[str]]:
    """Bridge user name → the sides ("grid", "officer") it connects for."""
    users: dict[str, list[str]] = {}
    officer: BrokerSettings | None = settings.officer_broker
    if settings.broker.username:
        users.setdefault(settings.broker.username, []).append("grid")
        if officer is None:
            users[settings.broker.username].append("officer")
    if officer is not None and officer.username:
        users.setdefault(officer.username, []).append("officer")
    return users


def _identity_problems(roster: Roster, settings: Settings) -> list[str]:
    problems: list[str] = []
    if not settings.broker.username:
        problems.append(
            "broker.username: not set; the ACL gives the bridge's rights to the bridge's "
            "user name, so the bridge must log in with one"
        )
    if settings.officer_broker is not None and not settings.officer_broker.username:
        problems.append("officer_broker.username: not set (see broker.username)")
    bridge_users = set(_bridge_users(settings))
    client_ids = set(bridge_client_ids(settings, roster))
    for table, ids in (("members", roster.members), ("officers", roster.officers)):
        for row_id in sorted(ids):
            if row_id in bridge_users:
                problems.append(f"{table}[{row_id}]: the id is the bridge's user name")
            if row_id in client_ids:
                problems.append(
                    f"{table}[{row_id}]: the id is one of the bridge's client ids; with client "
                    "ids bound to user names this terminal would take over the bridge's session"
                )
    for member_id in sorted(set(roster.members) & set(roster.officers)):
        problems.append(
            f"members[{member_id}]: also an officer id; each terminal needs a user name of its own"
        )
    return problems


def _bridge_identities(settings: Settings, topics: Topics) -> list[Identity]:
    status = Grant("readwrite", topics.status(settings.bridge.instance_id))
    side_grants = {
        "grid": [
            Grant("read", topics.events_filter),
            Grant("write", topics.receipts("+", "+")),
        ],
        "officer": [Grant("read", topics.acks_filter), Grant("write", topics.inbox("+"))],
    }
    return [
        Identity(username, "bridge", (*[g for side in sides for g in side_grants[side]], status))
        for username, sides in _bridge_users(settings).items()
    ]


def _officer_identities(roster: Roster, topics: Topics) -> list[Identity]:
    registrars = _registrar_only(roster)
    identities: list[Identity] = []
    for officer_id in sorted(roster.officers):
        inbox = Grant("read", topics.inbox(officer_id))
        if officer_id in registrars:
            identities.append(Identity(officer_id, "registrar", (inbox,)))
        else:
            acks = Grant("write", topics.acks(officer_id))
            identities.append(Identity(officer_id, "officer", (inbox, acks)))
    return identities


def _registrar_only(roster: Roster) -> set[str]:
    """Officer entries named as a registrar and in no escalation chain (DESIGN §3).

    A chain holds a grid's officer, that officer's backup and the station's duty officer;
    only those are ever pushed a delivery that wants an ack. Copies to registrars do not.
    """
    registrars = {c.registrar for c in roster.communities.values() if c.registrar}
    in_chains = {g.officer for g in roster.grids.values()}
    in_chains |= {o.backup for o in roster.officers.values() if o.backup}
    in_chains |= {s.duty_officer for s in roster.stations.values()}
    return registrars - in_chains


def _member_identities(roster: Roster, topics: Topics) -> list[Identity]:
    # A member listed in no grid (a roster warning) cannot report, so it gets no rights.
    return [
        Identity(
            member_id,
            "member",
            (
                Grant("write", topics.events(grid_id, member_id)),
                Grant("read", topics.receipts(grid_id, member_id)),
            ),
        )
        for member_id, grid_id in sorted(
            roster.grid_of_member.items(), key=lambda item: (item[1], item[0])
        )
        if member_id in roster.members
    ]
