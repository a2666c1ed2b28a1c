"""Since when this instance's broker connections have been down, judged by
`core/broker_reach.judge`: which partitions the instance gives up, and whether it stands aside.

Every `lease_s / 20` the cluster manager tells it, for each partition it holds, whether all of
the partition's connections are up; this module keeps the instants (a monotonic clock) and logs
when the instance stands aside or rejoins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from etong.core.broker_reach import Reach, judge
from etong.logging import get_logger

log = get_logger(__name__)


class ReachWatch:
    """The down-since instants of one instance's connections, and the verdict on them."""

    def __init__(
        self,
        lease_s: float,
        *,
        broker_up: Callable[[], bool],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """`broker_up` says whether the instance's own (status) connection is up now."""
        self._lease_s = lease_s
        self._broker_up = broker_up
        self._monotonic = monotonic
        self._own_down_since: float | None = None
        self._down_since: dict[str, float | None] = {}
        self._last_given_up_at: float | None = None
        self.standing_aside = False
        """Claim nothing and leave the live set (see core/broker_reach.py)."""

    def look(self, held: Mapping[str, bool]) -> Reach:
        """Note what is down now among `held` (partition → whether all its connections are
        up), and judge. The partitions the verdict gives up count as given up now."""
        now = self._monotonic()
        if self._broker_up():
            self._own_down_since = None
        elif self._own_down_since is None:
            self._own_down_since = now
        down_since = self._down_since
        self._down_since = {
            partition: None if up else (down_since.get(partition) or now)
            for partition, up in held.items()
        }
        reach = judge(
            now=now,
            lease_s=self._lease_s,
            instance_down_since=self._own_down_since,
            partitions_down_since=self._down_since,
            last_given_up_at=self._last_given_up_at,
        )
        if reach.give_up:
            self._last_given_up_at = now
        if reach.stand_aside != self.standing_aside:
            self.standing_aside = reach.stand_aside
            log.warning(
                "cluster_standing_aside" if reach.stand_aside else "cluster_rejoining",
                broker_reachable=self._own_down_since is None,
            )
        return reach

    def down_for(self, partition: str) -> float:
        """How long `partition`'s connections (or the instance's own) have been down, s."""
        since = self._down_since.get(partition) or self._own_down_since
        return 0.0 if since is None else self._monotonic() - since
