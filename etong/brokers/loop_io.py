"""paho's socket watched by the asyncio loop instead of paho's network thread (DESIGN §6).

paho's socket callbacks (`on_socket_open`, `on_socket_close`, `on_socket_register_write`)
become `add_reader`/`add_writer` on the event loop, and the loop's keepalive ticker
(`keepalive.py`, one task for every connection) calls `loop_misc()` about once a second, so
every paho callback runs on the loop thread and needs no locks (paho
`examples/loop_asyncio.py`, Home Assistant's MQTT client). `connect()` blocks (DNS, TCP, TLS
handshake) and runs in an executor; the socket callbacks it triggers there hop back to the
loop with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from etong.brokers.buffered_socket import BufferedSocket
from etong.brokers.keepalive import KeepaliveTicker, ticker

# paho calls it with (client, userdata, socket).
SocketCallback = Callable[[Any, Any, Any], None]


def set_nodelay(sock: Any) -> None:
    """Turn Nagle's algorithm off on a broker connection (paho 2.x never does).

    We already write once per loop turn (BufferedSocket), so Nagle has nothing left to
    coalesce; it only holds a small packet (a PUBACK, a push) back until the peer's delayed
    ACK, up to 40 ms on Linux, on every exchange that waits for an answer (mosquitto #433).
    A socket that has no TCP layer (a Unix socket) keeps its defaults.
    """
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class LoopIO:
    """Reads and writes one paho client's socket from the running event loop."""

    def __init__(self, client: mqtt.Client, name: str) -> None:
        self._client = client
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._fd: int | None = None
        self._buffered: BufferedSocket | None = None
        # The error that ended the last connection, for the disconnect's log line.
        self._socket_failure: OSError | None = None
        self._write_scheduled = False
        self._reading_paused = False
        self._ticker: KeepaliveTicker | None = None
        client.on_socket_open = self.threadsafe(self._socket_open)
        client.on_socket_close = self.threadsafe(self._socket_close)
        client.on_socket_register_write = self.threadsafe(self._register_write)
        client.on_socket_unregister_write = self.threadsafe(self._unregister_write)

    def start(self) -> None:
        """Bind to the running loop and join its keepalive ticker."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._ticker = ticker()
        self._ticker.add(self, self._name, self._client.loop_misc)

    async def close(self) -> None:
        """Leave the keepalive ticker and stop watching the socket."""
        if self._ticker is not None:
            self._ticker.discard(self)
            self._ticker = None
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None

    def take_failure(self) -> OSError | None:
        """The socket error that ended the last connection, once (None for a clean close)."""
        failure, self._socket_failure = self._socket_failure, None
        return failure

    def threadsafe(self, fn: Callable[[Any], None]) -> SocketCallback:
        """Wrap a paho socket callback so it always runs on the loop thread, in order."""

        def callback(client: Any, userdata: Any, sock: Any) -> None:
            assert self._loop is not None
            if self._loop.is_closed():
                # paho's Client.__del__ closes its sockets whenever the collector gets to it,
                # from whatever thread; with the loop gone there is no reader left to remove.
                return
            if threading.get_ident() == self._loop_thread:
                fn(sock)
            else:
                self._loop.call_soon_threadsafe(fn, sock)

        return callback

    # ---- paho's socket callbacks (loop thread) ----------------------------------------

    def _socket_open(self, sock: Any) -> None:
        assert self._loop is not None
        if sock.fileno() < 0:
            return  # closed again before this deferred callback ran (connect failed)
        self._fd = sock.fileno()
        set_nodelay(sock)
        # paho reads and writes through whatever `_sock` is; see BufferedSocket for why.
        self._buffered = BufferedSocket(sock)
        self._client._sock = self._buffered  # private, but paho has no public hook for this
        self._reading_paused = False  # a new connection starts reading
        self._loop.add_reader(self._fd, self._read)

    def _socket_close(self, sock: Any) -> None:
        assert self._loop is not None
        if self._buffered is not None and self._buffered.failure is not None:
            self._socket_failure = self._buffered.failure
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = None
        self._buffered = None

    def _register_write(self, sock: Any) -> None:
        # paho has packets to send. The socket is nearly always writable, so write on the
        # next loop turn rather than wait a selector round trip for the writable event.
        assert self._loop is not None
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write)

    def _unregister_write(self, sock: Any) -> None:
        # Nothing to do: `_write` decides whether to watch for writability, because our
        # buffer, not paho's queue, is what may still hold unsent bytes.
        return

    # ---- flow control -----------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading inbound messages (flow control): TCP backpressure holds the rest."""
        if not self._reading_paused and self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
        self._reading_paused = True

    def resume_reading(self) -> None:
        """Read again; bytes already buffered are handled on the next loop turn."""
        if not self._reading_paused:
            return
        self._reading_paused = False
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._read)
            self._loop.call_soon(self._read)

    # ---- reading, writing, timers (loop thread) ---------------------------------------

    def _read(self) -> None:
        buffered = self._buffered
        if buffered is None or self._reading_paused:
            return
        self._client.loop_read()
        # Drain whatever is already buffered (ours, or TLS's decrypted bytes): the selector
        # will not report those again.
        while buffered is self._buffered and buffered.pending() and not self._reading_paused:
            self._client.loop_read()

    def _write(self) -> None:
        self._write_scheduled = False
        buffered = self._buffered
        if buffered is None or self._fd is None or self._loop is None:
            return
        self._client.loop_write()
        if self._fd is None:
            return  # paho closed the socket while writing (DISCONNECT sent, or an error)
        if buffered.flush():
            self._loop.remove_writer(self._fd)
        else:
            self._loop.add_writer(self._fd, self._write)
