"""paho's socket behind a read buffer and a write buffer: few syscalls per packet."""

from __future__ import annotations

import ssl
from typing import Any

READ_CHUNK = 65536


class BufferedSocket:
    """paho's socket, read in 64 KiB chunks and written once per loop turn.

    paho reads every packet with at least three `recv()` calls (the command byte, the
    remaining length a byte at a time, the body) and writes every packet with its own
    `send()`. Under load those syscalls were about a fifth of the bridge's CPU (py-spy).
    paho only calls `recv`, `send`, `pending`, `fileno`, `setblocking` and `close` on its
    socket; everything but the first three passes straight through.

    Writes are accepted into a buffer at once and flushed by the adapter; bytes still
    buffered when the connection drops are lost, which MQTT already allows for: QoS 1
    publishes stay in paho's queue until PUBACKed and are re-sent on reconnect, and an
    inbound message whose PUBACK is lost is delivered again (and deduplicated).

    `failure` keeps the error that ended the connection: paho turns it into a bare
    "connection lost", and a TLS rejection after the handshake is only visible here.
    """

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._rbuf = b""
        self._rpos = 0
        self._wbuf = bytearray()
        self.failure: OSError | None = None

    def recv(self, bufsize: int) -> bytes:
        """Up to `bufsize` bytes, from the buffer or one large read (errors pass to paho)."""
        if self._rpos >= len(self._rbuf):
            try:
                data = self._sock.recv(READ_CHUNK)
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise  # nothing to read yet: not a failure
            except OSError as exc:
                self.failure = exc
                raise
            if not data:
                return b""
            self._rbuf, self._rpos = data, 0
        start = self._rpos
        self._rpos = min(start + bufsize, len(self._rbuf))
        return self._rbuf[start : self._rpos]

    def pending(self) -> int:
        """Bytes readable without the selector: ours plus TLS's decrypted ones."""
        tls = self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0
        return len(self._rbuf) - self._rpos + tls

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Take all of `data` into the write buffer; `flush` sends it."""
        self._wbuf += data
        return len(data)

    def flush(self) -> bool:
        """Send what the buffer holds; True when it is empty."""
        while self._wbuf:
            try:
                sent = self._sock.send(self._wbuf)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return False
            except OSError as exc:
                # The connection is gone; the read side reports it to paho, which
                # reconnects and re-sends what was not acknowledged.
                self.failure = exc
                self._wbuf.clear()
                return True
            del self._wbuf[:sent]
        return True

    def close(self) -> None:
        """Send what is buffered (best effort: paho closes right after writing DISCONNECT)."""
        self.flush()
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)
