"""/metrics, /healthz and /readyz over a minimal HTTP/1.1 server on the event loop.

Three fixed GET endpoints for Prometheus and the on-call engineer's curl do not need a web
framework; this keeps the daemon's dependency set and start-up small.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

HealthCheck = Callable[[], tuple[bool, str]]


class HttpServer:
    """Serves the three endpoints; `ready()` decides /readyz, `metrics()` renders /metrics."""

    def __init__(self, host: str, port: int, *, ready: HealthCheck, metrics: Callable[[], bytes]):
        self._host = host
        self._port = port
        self._ready = ready
        self._metrics = metrics
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Bind and start serving."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop accepting and close."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            # Drain headers; we need none of them.
            while (line := await asyncio.wait_for(reader.readline(), 5)) not in (
                b"\r\n",
                b"\n",
                b"",
            ):
                if len(line) > 8192:
                    break
            parts = request_line.decode("latin-1").split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            status, ctype, body = self._route(method, path.split("?")[0])
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _route(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method != "GET":
            return "405 Method Not Allowed", "text/plain", b"only GET\n"
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4", self._metrics()
        if path == "/healthz":
            return "200 OK", "text/plain", b"ok\n"
        if path == "/readyz":
            ok, why = self._ready()
            return (
                ("200 OK" if ok else "503 Service Unavailable"),
                "text/plain",
                (why + "\n").encode(),
            )
        return "404 Not Found", "text/plain", b"not found\n"
