"""Keeping one broker connection up: retry a failed connect, reconnect after a drop, and back
off after a session takeover or a connection the broker keeps ending (DESIGN §6).

paho's automatic reconnect is off; this loop uses tenacity with backoff instead.

Two back-offs, for two different things:
- **A broker that does not answer** (refused, timed out, gone): attempts 0.2 s apart,
  doubling to RETRY_MAX_S = 2 s, plus up to RETRY_JITTER_S = 1 s of jitter
  (`connect_retry_wait_s`). So every connection of the bridge (the listener and the
  publisher of every partition, the instance's status connection) is connected again at
  most 3 s after the broker takes connections again, however long it was away. Before, the
  wait doubled to 30 s per connection: after a 15 s cut one partition's listener was back
  in 0.16 s and its publisher 13.6 s later. A refused connect costs the broker one SYN and
  one RST; the jitter spreads a whole cluster's returning connections over a second.
  The cluster's own bound (`core/broker_reach.py`) gives a partition up when its
  connections stay down for half a lease: this bound keeps a broker restart below it.
- **A broker that ends our session** (a takeover, DISCONNECT 0x8E, or a connection ended
  within FLAP_WINDOW_S of its CONNACK twice in a row): 2 s doubling to 120 s
  (`reconnect_backoff_s`). Another client with our id is a security event or a second
  owner; the wait lets the two drift apart, and in a cluster it gives the lease loop time
  to find a lost lease before a deposed owner could take the session back. A broker that
  restarts ends each connection once, long after its CONNACK, which is not a flap: the
  first bound applies.

While the publisher of a partition is down, its listener keeps taking reports and acking
them once committed: the pushes and receipts are in the store, unconfirmed, and paho sends
them when the publisher is back (or the next owner's re-publish pass does, if the partition
moves). With the 3 s bound the gap is shorter than a handheld's re-send timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable

from paho.mqtt.reasoncodes import ReasonCode
from tenacity import AsyncRetrying, retry_if_exception_type

from etong.brokers.handshake import TransientConnectError
from etong.logging import get_logger

log = get_logger(__name__)

# MQTT 5.0 §3.14.2.1: the broker's DISCONNECT reason code when another client connected with
# our client id [MQTT-3.1.4-3] and took the session. MQTT 3.1.1 has no DISCONNECT from the
# server: the broker just closes the socket, which looks like any other lost connection.
SESSION_TAKEN_OVER = 0x8E
# After a takeover, wait before taking the session back, longer each time: two clients with
# one id would otherwise kick each other off many times a second, and the reports queued for
# the bridge would go to whichever holds the session. The same backoff applies from the second
# connection in a row that the broker ends within FLAP_WINDOW_S of its CONNACK: brokers that
# do not say why (MQTT 3.1.1; mosquitto 2.0.11 sends no DISCONNECT on a takeover) end a taken
# session that way, and a connection the broker keeps dropping is not worth hammering either.
RECONNECT_BACKOFF_S = 2.0
RECONNECT_BACKOFF_MAX_S = 120.0
FLAP_WINDOW_S = 5.0
# Retrying a connect that failed: 0.2 s doubling to 2 s, plus up to 1 s (module docstring).
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 2.0
RETRY_JITTER_S = 1.0
HOLD_CHECK_S = 0.1  # how often a held reconnect asks again (`Reconnector`'s may_reconnect)


def connect_retry_wait_s(attempt: int, jitter: float) -> float:
    """The wait after the `attempt`-th failed connect in a row (1, 2, ...): RETRY_FIRST_S
    doubling to RETRY_MAX_S, plus `jitter` in [0, 1) times RETRY_JITTER_S."""
    doublings = min(max(0, attempt - 1), 16)
    return min(RETRY_MAX_S, RETRY_FIRST_S * float(2**doublings)) + jitter * RETRY_JITTER_S


def reconnect_backoff_s(drops_in_a_row: int, jitter: float) -> float:
    """The wait before reconnecting after the `drops_in_a_row`-th takeover or flap (1, 2, ...).

    Doubles from RECONNECT_BACKOFF_S up to RECONNECT_BACKOFF_MAX_S; `jitter` in [0, 1) adds up
    to a quarter, so two bridges misconfigured with one client id drift apart instead of
    colliding in step.
    """
    doublings = min(max(0, drops_in_a_row - 1), 16)
    base = min(RECONNECT_BACKOFF_MAX_S, RECONNECT_BACKOFF_S * float(2**doublings))
    return base * (1 + jitter / 4)


def _nothing() -> None:
    return None


def _always() -> bool:
    return True


class Reconnector:
    """Connects with retries, then reconnects whenever the connection drops, until `stop`.

    `connect_once` makes one attempt (CONNECT, CONNACK, SUBSCRIBE, SUBACK) and raises
    `TransientConnectError` or `OSError` for a failure worth retrying. The adapter reports
    each CONNACK with `link_up` and each drop of a ready connection with `dropped`.

    `may_reconnect` is asked after a drop, before the CONNECT: a cluster partition's says
    whether its lease is still held on the instance's own clock. A process resumed after a
    pause (SIGSTOP, a frozen VM) sees its connections dropped (the next owner took the
    sessions) in the same loop turn as its overdue lease check, and the reconnect would run
    first: paho sends CONNECT from an executor thread, which no later cancellation stops, and
    the broker would end the next owner's session (issue #17). So the reconnect waits,
    checking every HOLD_CHECK_S, until it is allowed or `stop` ends it.
    """

    def __init__(
        self,
        connect_once: Callable[[], Awaitable[None]],
        *,
        name: str,
        client_id: str,
        on_session_taken_over: Callable[[], None] | None = None,
        may_reconnect: Callable[[], bool] | None = None,
    ) -> None:
        self._connect_once = connect_once
        self._may_reconnect = may_reconnect or _always
        self._name = name
        self._client_id = client_id
        self._on_session_taken_over = on_session_taken_over or _nothing
        self.link_up_at = 0.0  # monotonic time of the last CONNACK
        self.drops_in_a_row = 0  # takeovers and short-lived connections, see FLAP_WINDOW_S
        self.delay_s = 0.0  # set by a takeover or a flap, used once by `supervise`
        self.disconnected = asyncio.Event()
        self.stopping = False
        self.reconnects = 0
        self.last_error: str | None = None
        """Why the last connect attempt failed, until one succeeds (for /readyz)."""
        self._supervisor: asyncio.Task[None] | None = None

    def link_up(self) -> None:
        """The broker accepted a connection (CONNACK): the flap window starts now."""
        self.link_up_at = time.monotonic()

    def dropped(self, reason_code: ReasonCode) -> None:
        """A ready connection ended: choose the wait before the next one.

        A takeover is a security event and backs off; so does a connection that keeps
        being dropped right after it was made (see RECONNECT_BACKOFF_S).
        """
        if time.monotonic() - self.link_up_at >= FLAP_WINDOW_S:
            self.drops_in_a_row = 0
        self.drops_in_a_row += 1
        jitter = random.random()
        if reason_code.value == SESSION_TAKEN_OVER:
            self.delay_s = reconnect_backoff_s(self.drops_in_a_row, jitter)
            event = "broker_session_taken_over"
            self._on_session_taken_over()
        elif self.drops_in_a_row >= 2:
            self.delay_s = reconnect_backoff_s(self.drops_in_a_row - 1, jitter)
            event = "broker_connection_flapping"  # a takeover, where the broker does not say
        else:
            return
        log.warning(
            event,
            security_event=True,
            broker=self._name,
            client_id=self._client_id,
            drops_in_a_row=self.drops_in_a_row,
            reconnect_in_s=round(self.delay_s, 1),
        )

    async def connect_with_retry(self) -> None:
        """Attempt `connect_once` until it succeeds or `stop` was called."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((TransientConnectError, OSError)),
            # Bounded (module docstring). A SIGTERM during these waits cancels them
            # (Daemon._unless_stopped); `stop` cancels them too.
            wait=lambda state: connect_retry_wait_s(state.attempt_number, random.random()),
            reraise=True,
        ):
            with attempt:
                if self.stopping:
                    return
                n = attempt.retry_state.attempt_number
                try:
                    await self._connect_once()
                except (TransientConnectError, OSError) as exc:
                    self.last_error = str(exc)
                    log.warning(
                        "broker_connect_failed", broker=self._name, attempt=n, error=str(exc)
                    )
                    raise
                self.last_error = None

    def start_supervising(self) -> None:
        """Reconnect from now on whenever `disconnected` is set."""
        self._supervisor = asyncio.create_task(self.supervise(), name=f"mqtt-{self._name}")

    async def supervise(self) -> None:
        """Wait for a drop, wait the backoff it earned, reconnect; until `stop`."""
        while not self.stopping:
            await self.disconnected.wait()
            if self.stopping:
                return
            self.reconnects += 1
            delay, self.delay_s = self.delay_s, 0.0
            if delay:
                await asyncio.sleep(delay)  # after a takeover or a flap: see RECONNECT_BACKOFF_S
            # A predicate over the lease's clock, not an event: polled (class docstring).
            while not self._may_reconnect():  # noqa: ASYNC110
                await asyncio.sleep(HOLD_CHECK_S)
            await self.connect_with_retry()

    async def stop(self) -> None:
        """No more attempts: a drop from now on is the adapter's own disconnect."""
        self.stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
