"""What the daemon serves, in one shape: `Service`, done by a single instance or a cluster.

The daemon's lifecycle (signals, start-up stages, READY, the stop) is the same whichever way
the bridge is served; what differs is behind this small protocol:

- `SingleInstance`: one `BridgeRunner` over the whole roster, on an SQLite file; its ingest
  and scheduler run in the daemon's own task group, so their failure stops the daemon.
- `etong.cluster.manager.ClusterManager`: on PostgreSQL, the partitions this instance holds,
  one runner each (DESIGN §7), its lease loop a task in the daemon's group.
"""

from __future__ import annotations

from typing import Protocol

from etong.roster import Roster
from etong.runner import BridgeRunner
from etong.tasks import TaskSet


class Service(Protocol):
    """The bridges in service, started, reloaded and stopped by the daemon."""

    def runners(self) -> list[BridgeRunner]:
        """The bridges in service now (for /metrics and readiness)."""

    def start(self, tasks: TaskSet) -> None:
        """Start the service's tasks in the daemon's group (a failure stops the daemon)."""

    async def stop(self, deadline: float) -> None:
        """Graceful stop by the monotonic `deadline`: drain, acknowledge, hand over."""

    async def replace_roster(self, roster: Roster) -> None:
        """Serve a reloaded roster."""

    def readiness(self) -> tuple[bool, str]:
        """The service's own say on /readyz once the connections and the store are fine."""

    def ready_fields(self) -> dict[str, object]:
        """Fields of the `bridge_ready` log line that describe this service."""


class SingleInstance:
    """One bridge over the whole roster (SQLite): the `Service` of a lone instance."""

    def __init__(self, runner: BridgeRunner) -> None:
        self.runner = runner

    def runners(self) -> list[BridgeRunner]:
        """The one runner."""
        return [self.runner]

    def start(self, tasks: TaskSet) -> None:
        """Ingest and the scheduler as tasks of the daemon's group."""
        self.runner.tasks = tasks
        self.runner.start_tasks()

    async def stop(self, deadline: float) -> None:
        """Finish the batch in hand, commit and ack what is queued, record the PUBACKs (the
        daemon's other tasks are cancelled with the runner's: they share the group)."""
        await self.runner.drain_and_stop_tasks(deadline)

    async def replace_roster(self, roster: Roster) -> None:
        """The bridge's decisions, then the listeners' topics."""
        await self.runner.replace_roster(roster)

    def readiness(self) -> tuple[bool, str]:
        """Nothing more to wait for once the connections are up and the store writable."""
        return True, "ready"

    def ready_fields(self) -> dict[str, object]:
        """Nothing to add: a lone instance serves everything."""
        return {}
