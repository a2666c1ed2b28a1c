"""A TCP relay the test controls, between one process and a server (a broker, a database), so
that the test can cut that process off while everything else keeps its connections.

It runs on an event loop of its own, on a daemon thread, so synchronous e2e tests drive it:
`cut()` stops listening (new connections are refused, as from a server that went away) and
closes every relayed connection on both sides (the process sees its connections end, the
server sees its clients go); `restore()` listens again on the same port. `close()` at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CALL_TIMEOUT_S = 10.0


class TcpProxy:
    """Relays 127.0.0.1:`port` to `upstream` until cut (see the module docstring)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[Any]] = set()
        self.connections = 0
        """Connections accepted so far (relayed or not)."""
        self.port = 0
        try:
            self._run(self._listen())
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CALL_TIMEOUT_S)

    async def _listen(self) -> None:
        # The first time on a port the system picks; after a cut, on the same port again.
        self._server = await asyncio.start_server(
            self._relay, "127.0.0.1", self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if (task := asyncio.current_task()) is not None:
            self._relays.add(task)
            task.add_done_callback(self._relays.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self._writers |= pair
        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self._writers -= pair

    def url(self, scheme: str = "mqtt") -> str:
        """The URL a client uses to go through the relay, e.g. `mqtt://127.0.0.1:41234`."""
        return f"{scheme}://127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Refuse new connections and close every relayed one, both sides."""

        async def cut() -> None:
            if self._server is not None:
                self._server.close()
                self._server = None
            for writer in list(self._writers):
                writer.close()

        self._run(cut())

    def restore(self) -> None:
        """Accept and relay connections again, on the same port."""
        self._run(self._listen())

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CALL_TIMEOUT_S)
        with contextlib.suppress(RuntimeError):
            self._loop.close()

    def close(self) -> None:
        """Cut, let every relay end, then stop the relay's loop and thread."""

        async def relays_ended() -> None:
            if self._relays:
                await asyncio.wait(set(self._relays), timeout=CALL_TIMEOUT_S / 2)

        try:
            self.cut()
            self._run(relays_ended())
        finally:
            self._stop_loop()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy `reader` into `writer` until either side ends; then close `writer`."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()
