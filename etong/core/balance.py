"""Which partitions an instance should take or hand over, from the lease rows (DESIGN §7).

Pure: `plan` is a function of the leases, the live instances and the database's clock; the
cluster manager (`etong/cluster/manager.py`) calls it once per tick and carries it out.

The rules, and why:
- **Fair share** is ceil(partitions / live instances). An instance claims free or expired
  partitions until it owns its share; it does not take more, so a second instance finds work.
- **Hand-over, one at a time.** An instance above its share releases one partition per tick,
  and only while another live instance owns less than its share and so will take it. A new
  instance therefore gets its share in a few ticks with no storm: nothing is ever taken from
  a live owner, and at most one partition per instance is in hand-over at once.
- **No partition left unserved.** A partition free for longer than one lease period (its
  expected taker did not take it: stuck, or gone without a goodbye) is claimed by anyone,
  whatever its share; balance is restored by hand-overs later.
- **Spread the first claims.** Each instance tries free partitions in its own order
  (rendezvous hashing of instance and partition), so instances starting together mostly
  try different partitions instead of all racing for the first.
- **A bounded number of claims per tick** (`most`): each claim starts a partition's broker
  sessions, so a lone instance starting with a province's 1,178 free stations takes them a
  batch at a time, over a few ticks, instead of opening thousands of connections at once;
  partitions abandoned longest (an owner's death) come first, then the fair share.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from etong.core.partitions import Lease

CLAIMS_PER_TICK = 100
"""The most partitions one tick claims (see `plan`'s `most`): a province's cold start in a few
ticks (1,178 stations over three instances: 4 ticks each), a dead owner's share in one or two."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do this tick: partitions to try to claim, in order, and to hand over."""

    claim: tuple[str, ...] = ()
    release: tuple[str, ...] = ()


def fair_share(partitions: int, live_instances: int) -> int:
    """The most partitions one instance should own: ceil(partitions / instances alive)."""
    return math.ceil(partitions / max(1, live_instances))


def preference(instance_id: str, partition: str) -> bytes:
    """This instance's rank for a partition (rendezvous hashing): lower is tried first."""
    return hashlib.blake2b(f"{instance_id}\0{partition}".encode(), digest_size=8).digest()


def plan(
    leases: Sequence[Lease],
    *,
    me: str,
    live: Sequence[str],
    owned: Sequence[str],
    now: float,
    lease_s: float,
    most: int = CLAIMS_PER_TICK,
) -> Plan:
    """The claims and hand-overs for instance `me` (see the module docstring).

    `owned` is what this instance serves now (its own record; a lease row may lag it), `live`
    the instances whose heartbeat is current (`me` among them), `now` the database's clock;
    at most `most` claims.
    """
    alive = set(live) | {me}
    share = fair_share(len(leases), len(alive))
    mine = set(owned)
    # One pass, one liveness check a row: a tick plans over every station's row (a province:
    # 1,178), so this is most of an idle instance's planning.
    held_by_others: list[Lease] = []
    free: list[Lease] = []
    for lease in leases:
        if lease.partition not in mine:
            (held_by_others if lease.is_live(now) else free).append(lease)
    holders = Counter(lease.owner for lease in held_by_others)
    holders[me] = len(mine)
    free.sort(key=lambda lease: preference(me, lease.partition))
    room = max(0, share - len(mine))
    # Free for longer than a lease: whoever should have taken it did not; take it anyway.
    # (A row never taken has no expiry to judge by: only shares claim it.)
    abandoned = sorted(
        (
            lease
            for lease in free
            if lease.expires_at is not None and now - lease.expires_at > lease_s
        ),
        key=lambda lease: lease.expires_at or 0.0,
    )
    first = [lease.partition for lease in abandoned]
    taken = set(first)
    claim = (first + [lease.partition for lease in free[:room] if lease.partition not in taken])[
        :most
    ]
    if claim or len(mine) <= share:
        return Plan(claim=tuple(claim))
    under = any(holders[other] < share for other in alive if other != me)
    if not under:
        return Plan()
    # Hand over the partition this instance likes least, so two instances never pass one
    # back and forth: the other, taking it, ranks it by its own preference.
    give = max(mine, key=lambda p: preference(me, p))
    return Plan(release=(give,))
