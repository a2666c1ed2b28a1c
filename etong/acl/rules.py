"""The broker's authorization rules, derived from the config and checked against the roster
(DESIGN §8), pure.

The rules name each identity once, whatever the roster's size (a province has ~0.5 million
handhelds): the bridge's own users (`broker.username`, and `officer_broker.username` where set)
by name, and every terminal through patterns in which the broker puts the connecting user name
(`USER` below: mosquitto's `%u`, EMQX's `${username}`). Deny by default; a terminal, its MQTT
user name its roster id, may

- publish only on `{p}/grid/+/member/ITS_ID/events` and read only the `receipts` beside it;
- read only `{p}/officer/ITS_ID/inbox` and write only `{p}/officer/ITS_ID/acks`;

and the bridge's users read events and acks and write pushes and receipts for every id, and
every instance's status topic `{p}/bridge/+/status` (read too, so a health check with the
bridge's credentials can watch it; every instance, so whichever instance of a cluster wrote the
file, none is locked out of its own).

What a pattern cannot tell apart, the bridge refuses by the roster, as a security event: a
member publishing under another grid's id (the roster check: the member must belong to the
topic's grid), an officer or member id on the other kind's topics (no such member or officer),
a registrar's ack (copies are never acknowledged: an ack for a delivery not pushed to that
officer). Who is a terminal at all is the password store's business, not these rules': the
bridge writes the terminals' password file from the roster (`etong.acl.passwords`), so a
member removed from the roster cannot log in, and is disconnected when the broker reloads.

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

Role = Literal["bridge"]
# Where a pattern's topic holds the connecting client's user name; the renderers write it as the
# broker spells it (mosquitto `%u`, EMQX `${username}`). A roster id never holds a `%`.
USER = "%u"


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
    """The whole authorization: the bridge's users by name, terminals by pattern."""

    topic_prefix: str
    identities: tuple[Identity, ...]
    patterns: tuple[Grant, ...] = ()

    def identity(self, username: str) -> Identity | None:
        """The bridge's identity with this user name, or None."""
        return next((i for i in self.identities if i.username == username), None)

    def grants_for(self, username: str) -> set[Grant]:
        """What `username` may do, as the broker reads the file: its own grants, if it is one
        of the bridge's users, and every pattern with its name put in."""
        own = self.identity(username)
        patterns = {Grant(g.access, g.topic.replace(USER, username)) for g in self.patterns}
        return patterns | set(own.grants if own is not None else ())


def derive_rules(roster: Roster, settings: Settings) -> AclRules:
    """The rules under `settings`, once `roster` is checked against them; ConfigError listing
    every problem found. The rules themselves do not depend on the roster."""
    topics = Topics(settings.bridge.topic_prefix)
    problems = _identity_problems(roster, settings)
    if problems:
        raise ConfigError(problems, source=str(settings.config_path))
    return AclRules(topics.prefix, tuple(_bridge_identities(settings, topics)), _patterns(topics))


def terminal_users(roster: Roster) -> frozenset[str]:
    """The user names that may log in as terminals: every officer entry, and every member
    listed in a grid (a member in no grid, a roster warning, cannot report)."""
    members = {m for grid in roster.grids.values() for m in grid.members if m in roster.members}
    return frozenset(members | set(roster.officers))


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
    status = Grant("readwrite", topics.status("+"))
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


def _patterns(topics: Topics) -> tuple[Grant, ...]:
    return (
        Grant("write", topics.events("+", USER)),
        Grant("read", topics.receipts("+", USER)),
        Grant("read", topics.inbox(USER)),
        Grant("write", topics.acks(USER)),
    )
