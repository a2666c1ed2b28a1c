"""/metrics, /healthz and /readyz over aiohttp's low-level HTTP/1.1 server on the event loop.

aiohttp parses the requests (a maintained parser with bounded line and field sizes); this
module adds what an endpoint reachable by anyone on the network needs on top of it:

- a request line over `MAX_REQUEST_LINE_BYTES` is answered 414, a header field over
  `MAX_FIELD_BYTES` or more than `MAX_HEADERS` headers 431 (aiohttp answers both 400 and logs
  a traceback; RFC 9110 §15.5.15, RFC 6585 §5), with one log line, never a traceback;
- a connection lives at most `REQUEST_DEADLINE_S`: a client that trickles its request (or
  does not read the answer) is disconnected then, whatever it sends meanwhile;
- at most `MAX_CONNECTIONS` connections are served at once; one more is answered 503 and
  closed at once, so the scrapes already in progress keep working.

Every answer closes its connection (`Connection: close`), as the hand-written server this
replaced did: a scrape every 15 s gains nothing from keep-alive, and no idle connection then
holds one of the `MAX_CONNECTIONS` places.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

from etong.logging import get_logger

log = get_logger(__name__)

HealthCheck = Callable[[], tuple[bool, str]]

# Our paths are a few bytes and Prometheus, curl and probes send short requests; 8190 is
# aiohttp's (and, at 8 KiB, nginx's) default, generous for any of them.
MAX_REQUEST_LINE_BYTES = 8190
MAX_FIELD_BYTES = 8190
# Prometheus sends 5 headers, curl 3, a browser about 15; aiohttp's 128 is for web apps.
MAX_HEADERS = 32
# A scraper sends its request in one packet and reads a few tens of KiB back: milliseconds on
# a healthy network. 5 s is far above that and well below Prometheus's default 10 s scrape
# timeout, so a slow client is cut off before it costs anything and a real scrape never is.
REQUEST_DEADLINE_S = 5.0
# One or two Prometheus servers, a load balancer's probe and a few engineers' curl need a
# handful; 64 leaves room for all of them while keeping a flood of connections to a bounded
# number of file descriptors and buffers (the daemon's default limit is 1024 descriptors,
# which the store and the MQTT connections share).
MAX_CONNECTIONS = 64
# How long `stop()` lets a request in hand finish (each lasts at most REQUEST_DEADLINE_S).
STOP_GRACE_S = 2.0
# Refusals, cut-off and bad requests are logged at most this often, with a count: a client
# looping on them must not turn into a log line each (issue 9, item 7: bounded logs).
LOG_INTERVAL_S = 60.0

_REFUSAL_BODY = b"too many connections\n"
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nServer: etong\r\n"
    b"Content-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s"
    % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


@dataclass(frozen=True)
class HttpLimits:
    """The endpoint's bounds; the module constants unless a test asks for smaller ones."""

    max_request_line_bytes: int = MAX_REQUEST_LINE_BYTES
    max_field_bytes: int = MAX_FIELD_BYTES
    max_headers: int = MAX_HEADERS
    request_deadline_s: float = REQUEST_DEADLINE_S
    max_connections: int = MAX_CONNECTIONS


@dataclass
class _ThrottledLog:
    """Logs an event at most once per LOG_INTERVAL_S, with how many happened meanwhile."""

    clock: Callable[[], float] = time.monotonic
    counts: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def event(self, name: str, **fields: Any) -> None:
        """Count one `name` event; log it (with the count since the last line) when due."""
        self.counts[name] = self.counts.get(name, 0) + 1
        now = self.clock()
        if now - self.last.get(name, -LOG_INTERVAL_S) >= LOG_INTERVAL_S:
            log.warning(name, count=self.counts.pop(name), period_s=LOG_INTERVAL_S, **fields)
            self.last[name] = now


class HttpServer:
    """Serves the three endpoints; `ready()` decides /readyz, `metrics()` renders /metrics."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ready: HealthCheck,
        metrics: Callable[[], bytes],
        limits: HttpLimits | None = None,
    ):
        self._host = host
        self._port = port
        self._ready = ready
        self._metrics = metrics
        self._limits = limits or HttpLimits()
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when configured with port 0)."""
        assert self._site is not None
        return self._site.port

    @property
    def connections(self) -> int:
        """How many connections are open now (refused ones included until they close)."""
        server = self._runner.server if self._runner is not None else None
        return len(server.connections) if server is not None else 0

    async def start(self) -> None:
        """Bind and start serving."""
        server = _LimitedServer(self._handle, self._limits, _ThrottledLog())
        self._runner = web.ServerRunner(server, shutdown_timeout=STOP_GRACE_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self._site = site

    async def stop(self) -> None:
        """Stop accepting and close every connection."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        status, ctype, body = self._route(request.method, request.raw_path.split("?")[0])
        headers = {"Content-Type": ctype, "Server": "etong"}
        if status == 405:
            headers["Allow"] = "GET"  # RFC 9110 §15.5.6: a 405 names the allowed methods
        response = web.Response(status=status, body=body, headers=headers)
        response.force_close()
        return response

    def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", self._metrics()
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ok, why = self._ready()
            return (200 if ok else 503), "text/plain", (why + "\n").encode()
        return 404, "text/plain", b"not found\n"


class _LimitedServer(web.Server):
    """aiohttp's low-level server, making a `_LimitedRequestHandler` per connection."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Any],
        limits: HttpLimits,
        throttled_log: _ThrottledLog,
    ) -> None:
        self.limits = limits
        self.throttled_log = throttled_log
        self._handler_kwargs: dict[str, Any] = {
            "max_line_size": limits.max_request_line_bytes,
            "max_field_size": limits.max_field_bytes,
            "max_headers": limits.max_headers,
            # The connection deadline below bounds every connection; aiohttp's own idle
            # timer would only add a second clock for the same thing.
            "keepalive_timeout": 0,
            "access_log": None,  # as before: no access log (a scrape every 15 s would flood it)
        }
        super().__init__(handler, **self._handler_kwargs)
        self._own_loop = asyncio.get_running_loop()

    def __call__(self) -> _LimitedRequestHandler:
        return _LimitedRequestHandler(self, loop=self._own_loop, **self._handler_kwargs)


class _LimitedRequestHandler(web.RequestHandler):
    """One connection: refused over the cap, cut at the deadline, parse errors as 414/431."""

    def __init__(self, server: _LimitedServer, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self._server = server
        self._deadline: asyncio.TimerHandle | None = None
        self._bytes_seen = 0
        self._request_line_bytes: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # registers it in the server's `connections`
        limits = self._server.limits
        if len(self._server.connections) > limits.max_connections:
            self._server.throttled_log.event(
                "http_connection_refused", max_connections=limits.max_connections
            )
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(_REFUSAL)
            self.force_close()  # closes once the refusal is flushed
            return
        self._deadline = asyncio.get_running_loop().call_later(
            limits.request_deadline_s, self._deadline_passed
        )

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _deadline_passed(self) -> None:
        # No 408: a client still sending its request after 5 s is not reading answers either,
        # and closing is what aiohttp and nginx do with a request that takes too long to read.
        self._server.throttled_log.event(
            "http_connection_cut", deadline_s=self._server.limits.request_deadline_s
        )
        self.force_close()

    def data_received(self, data: bytes) -> None:
        # Where the request line ends, so that a too-long line can be told from a too-long
        # header: aiohttp raises one LineTooLong for both.
        if self._request_line_bytes is None:
            newline = data.find(b"\n")
            if newline >= 0:
                self._request_line_bytes = self._bytes_seen + newline
            self._bytes_seen += len(data)
        super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse: 414, 431 or 400, one log line, no traceback."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        status, text = self._parse_error_status(exc)
        # The exception's text quotes the client's bytes: log the kind only.
        self._server.throttled_log.event(
            "http_bad_request", status=status, error=type(exc).__name__
        )
        response = web.Response(status=status, text=text, headers={"Server": "etong"})
        response.force_close()
        return response

    def _parse_error_status(self, exc: HttpProcessingError) -> tuple[int, str]:
        if isinstance(exc, LineTooLong):
            line = self._request_line_bytes
            if line is None or line > self._server.limits.max_request_line_bytes:
                return 414, "request line too long\n"
            return 431, "header field too large\n"
        # aiohttp has no exception class of its own for this one; tests/integration/
        # test_http.py notices if its wording changes.
        if "Too many headers" in exc.message:
            return 431, "too many header fields\n"
        return 400, "bad request\n"
