"""The topics one connection subscribes, kept across reconnects and changed while it runs.

Every CONNACK subscribes the whole current set again (SUBSCRIBE is idempotent, and with
Retain Handling 1 a subscription the session kept gets no retained replay). A persistent
session also keeps what we no longer want: topics dropped from the set while the connection
was down are unsubscribed once it is back, if the broker kept the session.
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Exchange(Protocol):
    """How the set reaches the broker: `etong.brokers.handshake.Handshake` in production."""

    async def subscribe(self, topics: list[str]) -> None:
        """SUBSCRIBE `topics` at QoS 1 and wait for the SUBACK."""

    async def unsubscribe(self, topics: list[str]) -> None:
        """UNSUBSCRIBE `topics` and wait for the UNSUBACK."""


class Subscriptions:
    """What the connection should be subscribed to, and what its session may still hold."""

    def __init__(self, exchange: Exchange) -> None:
        self._broker = exchange
        self._wanted: list[str] = []
        # Topics the broker's session may hold: added when their SUBSCRIBE is sent (a SUBACK
        # lost with the connection may still have been applied), removed on their UNSUBACK.
        self._in_session: set[str] = set()
        # One exchange at a time: a change made during a (re)subscribe waits its turn, then
        # sends only the difference.
        self._lock = asyncio.Lock()

    @property
    def topics(self) -> list[str]:
        """The current set, in the order it was given."""
        return list(self._wanted)

    def want(self, topics: list[str]) -> None:
        """Make `topics` the set; `after_connect` or `settle` tells the broker."""
        self._wanted = list(dict.fromkeys(topics))

    async def after_connect(self, session_present: bool) -> None:
        """Subscribe the whole set on a new connection; unsubscribe what the session kept."""
        async with self._lock:
            if not session_present:
                self._in_session.clear()  # a new session holds nothing
            await self._send(self._wanted, self._unwanted())
            await self._settle_locked()

    async def settle(self) -> None:
        """Subscribe what is new, unsubscribe what is gone, until the set holds still."""
        async with self._lock:
            await self._settle_locked()

    async def _settle_locked(self) -> None:
        # The set may change while we wait for an answer: go again until nothing differs.
        while True:
            new = [t for t in self._wanted if t not in self._in_session]
            gone = self._unwanted()
            if not new and not gone:
                return
            await self._send(new, gone)

    def _unwanted(self) -> list[str]:
        wanted = set(self._wanted)
        return sorted(t for t in self._in_session if t not in wanted)

    async def _send(self, new: list[str], gone: list[str]) -> None:
        if new:
            self._in_session.update(new)
            await self._broker.subscribe(new)
        if gone:
            await self._broker.unsubscribe(gone)
            self._in_session.difference_update(gone)
