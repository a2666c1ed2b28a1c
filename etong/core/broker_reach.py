"""When an owner that cannot reach the broker gives its partitions up (DESIGN §7, issue #17).

Pure: the cluster manager (`etong/cluster/manager.py`) notes, every `lease_s / 20`, since when
each held partition has had a connection down and since when the instance's own (status)
connection has been down, and asks `judge` what to do about it.

A lease says who may write a partition's rows; only the broker connections say whether the
owner can serve it. An owner whose database stays up renews its lease while it cannot take a
report or push one, and nobody else takes the station. So:

- **A partition is given up** (its sessions dropped, its lease released at once, not left to
  expire) when any of its connections has been down for GIVE_UP_AFTER of a lease: half of
  `lease_s`. Longer than a broker restart takes to be used again (a failed connect is retried
  at most 3 s apart, `brokers/reconnect.py`; with the default `lease_s = 10` that is inside
  5 s), so a restart of a broker every instance shares does not move partitions. Short enough
  that the station is served elsewhere well inside a lease of the cut: given up at
  `lease_s/2`, claimed by another instance at its next tick (at most `lease_s/4` later), its
  sessions and what queued in them taken over at once.
- **Every partition is given up** when the instance's own connection has been down that long:
  the instance, not one session, is cut off. A partition still starting (claimed, its
  sessions being made) is judged this way only: a session with a large backlog can take
  longer than the bound to subscribe, and giving it up would pass it from instance to
  instance (seen under load after a broker outage).
- **The instance stands aside** (it leaves the cluster's live set and claims nothing) while its
  own connection is down past the bound, and for one lease after it gave a partition up: the
  others then count one instance fewer, so their fair share grows and the next of them to
  tick claims what was given up (`core/balance.py`); and the cut instance does not claim back
  at its next tick what it could not serve. It rejoins, and balancing hands it its share, once
  its connection is up again and the lease has passed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

GIVE_UP_AFTER = 0.5
"""Of `lease_s`: how long a connection may stay down before its partition is given up."""
STAND_ASIDE_AFTER_GIVING_UP = 1.0
"""Of `lease_s`: how long an instance claims nothing after it gave a partition up."""


@dataclass(frozen=True, slots=True)
class Reach:
    """What to do about broker connections that are down."""

    give_up: tuple[str, ...] = ()
    """Partitions to drop (sessions) and release (lease), now, in order."""
    stand_aside: bool = False
    """Claim nothing and stay out of the live set (no heartbeat) this tick."""


def judge(
    *,
    now: float,
    lease_s: float,
    instance_down_since: float | None,
    partitions_down_since: Mapping[str, float | None],
    last_given_up_at: float | None,
) -> Reach:
    """The partitions to give up and whether to stand aside (see the module docstring).

    Instants are one monotonic clock's seconds: `instance_down_since` since when the instance's
    own connection has been down (None: up), `partitions_down_since` the same for each held
    partition (any of its connections down), `last_given_up_at` the last give-up (None: never).
    """
    limit = lease_s * GIVE_UP_AFTER
    cut_off = instance_down_since is not None and now - instance_down_since >= limit
    # Sorted after the choice, not before: at rest nothing is down, and the watch asks every
    # lease_s / 20 about every partition held (a province's share: ~390).
    give_up = tuple(
        sorted(
            partition
            for partition, since in partitions_down_since.items()
            if cut_off or (since is not None and now - since >= limit)
        )
    )
    recently = (
        last_given_up_at is not None
        and now - last_given_up_at < lease_s * STAND_ASIDE_AFTER_GIVING_UP
    )
    return Reach(give_up=give_up, stand_aside=cut_off or bool(give_up) or recently)
