"""One keepalive timer per event loop for every paho connection on it.

paho expects `loop_misc()` about once a second (keepalive pings, a PINGRESP overdue). One
task per connection did that, and a cluster instance holding a province's share has ~800
connections: 800 timers woke the loop 800 times a second with nothing to do, most of an idle
instance's CPU (docs/SCALING.md). One task per loop calls every connection in turn instead.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable

from etong.logging import get_logger

log = get_logger(__name__)

TICK_S = 1.0

Misc = Callable[[], object]
"""A connection's `loop_misc`."""


class KeepaliveTicker:
    """Calls each registered connection's `loop_misc` every TICK_S, from one task."""

    def __init__(self) -> None:
        self._connections: dict[int, tuple[str, Misc]] = {}  # id(owner) -> (name, misc)
        self._task: asyncio.Task[None] | None = None

    def add(self, owner: object, name: str, misc: Misc) -> None:
        """Tick `owner`'s `misc` from now on (starts the task with the first connection)."""
        self._connections[id(owner)] = (name, misc)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="mqtt-keepalive")

    def discard(self, owner: object) -> None:
        """Stop ticking `owner`'s connection (the task ends with the last one)."""
        self._connections.pop(id(owner), None)
        if not self._connections and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            for name, misc in list(self._connections.values()):
                try:
                    misc()
                except Exception:  # one connection's fault stays its own
                    # paho reports a lost connection through its callbacks, not by raising;
                    # an error here is a bug in one connection: the others keep their pings.
                    log.exception("mqtt_keepalive_failed", broker=name)


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, KeepaliveTicker] = (
    weakref.WeakKeyDictionary()
)


def ticker() -> KeepaliveTicker:
    """The running loop's ticker."""
    loop = asyncio.get_running_loop()
    found = _tickers.get(loop)
    if found is None:
        found = _tickers[loop] = KeepaliveTicker()
    return found
