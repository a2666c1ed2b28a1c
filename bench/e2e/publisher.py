"""The publisher process: the members' MQTT clients in a spawned child, driven by the parent.

They run apart so that receiving pushes never waits for the publishers' GIL and vice versa.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from e2e.errors import BenchError
from e2e.load import Report
from e2e.loopthread import LoopThread
from e2e.mqtt import MiniMqtt, close_clients, open_clients


async def publish_phase(
    clients: Sequence[MiniMqtt], reports: Sequence[Report], rate: float | None
) -> tuple[list[float], float]:
    """Publish `reports` (a member always on the same client, so each member's reports stay in
    order), at once or report i at `start + i / rate`; return the send times and when the
    last PUBACK came."""
    sent_at = [0.0] * len(reports)
    targets = [clients[member_index % len(clients)] for *_, member_index in reports]
    for client in clients:
        client.expect_acks(sum(1 for target in targets if target is client))
    clock = time.monotonic
    start = clock()
    for index, ((_, topic, payload, _), client) in enumerate(zip(reports, targets, strict=True)):
        if rate is not None:
            delay = start + index / rate - clock()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation
        sent_at[index] = clock()
        client.publish(topic, payload)
        if rate is None and index % 500 == 499:
            await asyncio.sleep(0)  # let PUBACKs in while the burst goes out
    for client in clients:
        await client.wait_acked()
    return sent_at, clock()


def publisher_main(
    conn: Connection, url: str, protocol: int, clients: int, phases: dict[str, list[Report]]
) -> None:
    """The publisher child: connect, then run phases on command until told to stop.

    Commands: `("run", phase, rate_or_None, timeout, count_or_None)` -> `("done", sent_at,
    last_puback_at)` (the first `count` reports of the phase, or all); `("stop",)`. Any
    failure is sent back as `("error", text)`.
    """
    runner = LoopThread("publisher")
    made: list[MiniMqtt] = []
    try:
        specs = [(f"bench-publisher-{os.getpid()}-{k}", (), None) for k in range(clients)]
        made = runner.call(open_clients(url, protocol, specs), 30, "connecting the publishers")
        conn.send(("ready",))
        while True:
            command = conn.recv()
            if command[0] == "stop":
                break
            _, phase, rate, timeout, count = command
            sent_at, last_ack = runner.call(
                publish_phase(made, phases[phase][:count], rate), timeout, f"publishing {phase}"
            )
            conn.send(("done", sent_at, last_ack))
    except Exception as exc:  # noqa: BLE001  # the parent reports it with its context
        lost = "; ".join(c.lost for c in made if c.lost)
        conn.send(("error", f"{type(exc).__name__}: {exc} {lost}".strip()))
    finally:
        with contextlib.suppress(BenchError):
            runner.call(close_clients(made), 10, "disconnecting the publishers")
        runner.stop()


class Publisher:
    """The publisher child process, driven from the parent."""

    def __init__(self, url: str, protocol: int, clients: int, phases: dict[str, list[Report]]):
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=publisher_main,
            args=(child, url, protocol, clients, phases),
            name="bench-publisher",
            daemon=True,
        )

    @property
    def pid(self) -> int | None:
        """The child's process id."""
        return self._process.pid

    def start(self, timeout: float = 60.0) -> None:
        """Start the child and wait until its clients are connected."""
        self._process.start()
        self._receive("start", timeout)

    def run(
        self, phase: str, rate: float | None, timeout: float, count: int | None = None
    ) -> tuple[list[float], float]:
        """Publish the phase's reports, or its first `count` (paced at `rate`, or at once);
        see `publish_phase`."""
        self._conn.send(("run", phase, rate, timeout, count))
        reply = self._receive(phase, timeout + 10)
        return reply[1], reply[2]

    def _receive(self, what: str, timeout: float) -> tuple[Any, ...]:
        if not self._conn.poll(timeout):
            raise BenchError(f"the publisher process did not finish {what!r} within {timeout} s")
        reply: tuple[Any, ...] = self._conn.recv()
        if reply[0] == "error":
            raise BenchError(f"the publisher process failed during {what!r}: {reply[1]}")
        return reply

    def stop(self) -> None:
        """Ask the child to disconnect and exit; kill it if it does not."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
