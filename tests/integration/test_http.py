"""The HTTP endpoint over a real loopback socket: its three answers and each of its limits.

Clients are raw `asyncio.open_connection` sockets, so a test sends exactly the bytes an
attacker would (an over-long line, a trickle) and reads exactly what comes back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import structlog

from etong.http import (
    LOG_INTERVAL_S,
    MAX_FIELD_BYTES,
    MAX_HEADERS,
    MAX_REQUEST_LINE_BYTES,
    HttpLimits,
    HttpServer,
    _ThrottledLog,
)

# Every wait in these tests ends by this deadline (a generous one: a loaded CI machine).
TEST_DEADLINE_S = 10.0
METRICS_BODY = b"# TYPE etong_up gauge\netong_up 1.0\n"

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
ServerFactory = Callable[..., Awaitable[HttpServer]]


class Readiness:
    """What /readyz answers; a test flips it."""

    def __init__(self) -> None:
        self.ok, self.why = True, "ready"

    def __call__(self) -> tuple[bool, str]:
        return self.ok, self.why


@pytest.fixture
async def serve() -> AsyncIterator[ServerFactory]:
    """Start HttpServers on free loopback ports (`await serve(limits=...)`); all stopped at
    the end, and every client connection a test opened is closed."""
    async with AsyncExitStack() as stack:

        async def start(
            limits: HttpLimits | None = None, ready: Readiness | None = None
        ) -> HttpServer:
            server = HttpServer(
                "127.0.0.1",
                0,
                ready=ready or Readiness(),
                metrics=lambda: METRICS_BODY,
                limits=limits,
            )
            await server.start()
            stack.push_async_callback(server.stop)
            return server

        yield start


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[HttpServer], Awaitable[Streams]]]:
    """Open raw client connections to a server; all closed at the end."""
    writers: list[asyncio.StreamWriter] = []

    async def open_to(server: HttpServer) -> Streams:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writers.append(writer)
        return reader, writer

    yield open_to
    for writer in writers:
        writer.close()


async def _exchange(server: HttpServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` on a fresh connection; the status, headers and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TEST_DEADLINE_S)  # to EOF: it closes
    finally:
        writer.close()
    return _parse(raw)


def _parse(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _get(path: str, *headers: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\n" + b"".join(headers) + b"\r\n"


async def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + TEST_DEADLINE_S
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def _closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes (raises TimeoutError if it never does)."""
    return await asyncio.wait_for(reader.read(), TEST_DEADLINE_S)


# --- the three endpoints, as they answered before aiohttp ----------------------------------


async def test_metrics_answers_the_prometheus_text_format(serve: ServerFactory) -> None:
    server = await serve()
    status, headers, body = await _exchange(server, _get("/metrics"))
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4"
    assert headers["connection"] == "close"
    assert body == METRICS_BODY


async def test_healthz_and_readyz_answer_plain_text(serve: ServerFactory) -> None:
    readiness = Readiness()
    server = await serve(ready=readiness)
    status, headers, body = await _exchange(server, _get("/healthz"))
    assert (status, headers["content-type"], body) == (200, "text/plain", b"ok\n")
    status, headers, body = await _exchange(server, _get("/readyz?verbose=1"))
    assert (status, headers["content-type"], body) == (200, "text/plain", b"ready\n")
    readiness.ok, readiness.why = False, "broker disconnected: grid"
    status, _, body = await _exchange(server, _get("/readyz"))
    assert (status, body) == (503, b"broker disconnected: grid\n")


async def test_unknown_paths_are_404_and_other_methods_405(serve: ServerFactory) -> None:
    server = await serve()
    status, _, body = await _exchange(server, _get("/nope"))
    assert (status, body) == (404, b"not found\n")
    status, headers, body = await _exchange(server, b"POST /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
    assert (status, headers["allow"], body) == (405, "GET", b"only GET\n")
    status, _, _ = await _exchange(server, b"DELETE /nope HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status == 405


# --- bounded request line and headers --------------------------------------------------------


@pytest.fixture
def aiohttp_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """aiohttp's own log records (where it would put a traceback of a parse error)."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    return caplog


def _no_traceback_logged(caplog: pytest.LogCaptureFixture) -> bool:
    return not [r for r in caplog.records if r.name.startswith("aiohttp") or r.exc_info]


async def test_a_request_line_over_the_limit_is_414_without_a_traceback(
    serve: ServerFactory, aiohttp_records: pytest.LogCaptureFixture
) -> None:
    server = await serve()
    path = "/" + "a" * MAX_REQUEST_LINE_BYTES
    status, _, body = await _exchange(server, _get(path))
    assert (status, body) == (414, b"request line too long\n")
    # 64 KiB and more, the size that raised in the hand-written server.
    status, _, _ = await _exchange(server, _get("/" + "b" * 70_000))
    assert status == 414
    assert _no_traceback_logged(aiohttp_records)
    # The server is unharmed.
    assert (await _exchange(server, _get("/healthz")))[0] == 200


async def test_a_request_line_just_under_the_limit_is_answered(serve: ServerFactory) -> None:
    server = await serve()
    path = "/" + "a" * (MAX_REQUEST_LINE_BYTES - len("GET / HTTP/1.1"))
    assert (await _exchange(server, _get(path)))[0] == 404


async def test_a_header_over_the_limit_is_431_without_a_traceback(
    serve: ServerFactory, aiohttp_records: pytest.LogCaptureFixture
) -> None:
    server = await serve()
    big = b"X-Big: " + b"v" * (MAX_FIELD_BYTES + 1) + b"\r\n"
    status, _, body = await _exchange(server, _get("/metrics", big))
    assert (status, body) == (431, b"header field too large\n")
    huge = b"X-Huge: " + b"v" * 70_000 + b"\r\n"
    assert (await _exchange(server, _get("/metrics", huge)))[0] == 431
    long_name = b"X-" + b"n" * (MAX_FIELD_BYTES + 1) + b": v\r\n"
    assert (await _exchange(server, _get("/metrics", long_name)))[0] == 431
    assert _no_traceback_logged(aiohttp_records)


async def test_too_many_headers_is_431(
    serve: ServerFactory, aiohttp_records: pytest.LogCaptureFixture
) -> None:
    server = await serve()
    many = [b"X-H%d: v\r\n" % i for i in range(MAX_HEADERS + 1)]
    status, _, body = await _exchange(server, _get("/metrics", *many))
    assert (status, body) == (431, b"too many header fields\n")
    assert _no_traceback_logged(aiohttp_records)
    # Well within the limit is fine (with Host, MAX_HEADERS - 2 fields: aiohttp's pure-Python
    # parser, under AIOHTTP_NO_EXTENSIONS, counts the request line and the blank line too).
    assert (await _exchange(server, _get("/metrics", *many[: MAX_HEADERS - 3])))[0] == 200


async def test_a_request_aiohttp_cannot_parse_is_400(serve: ServerFactory) -> None:
    server = await serve()
    status, _, body = await _exchange(server, b"NOT HTTP AT ALL\r\n\r\n")
    assert (status, body) == (400, b"bad request\n")


# --- the deadline for a whole request ------------------------------------------------------


async def test_a_client_trickling_its_request_is_cut_off_at_the_deadline(
    serve: ServerFactory, connect: Callable[[HttpServer], Awaitable[Streams]]
) -> None:
    server = await serve(HttpLimits(request_deadline_s=0.5))
    reader, writer = await connect(server)
    trickle = _get("/metrics", *[b"X-Slow-%d: v\r\n" % i for i in range(10_000)])
    closed = False
    # One byte per tick, for as long as the server keeps listening; each tick also looks
    # for the server's EOF.
    for byte in trickle:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            closed = True
            break
        try:
            data = await asyncio.wait_for(reader.read(100), 0.02)
        except TimeoutError:
            continue
        assert data == b"", "the server answered a request that was never finished"
        closed = True
        break
    assert closed, "the server let the trickle run to its end"
    await _connections_drop_to(server, 0)


async def test_a_client_that_sends_nothing_is_closed_at_the_deadline(
    serve: ServerFactory, connect: Callable[[HttpServer], Awaitable[Streams]]
) -> None:
    server = await serve(HttpLimits(request_deadline_s=0.3))
    reader, _ = await connect(server)
    assert await _closed_by_server(reader) == b""


async def _connections_drop_to(server: HttpServer, count: int) -> None:
    await _wait_until(lambda: server.connections == count, f"{count} open connections")


# --- the cap on connections ----------------------------------------------------------------


async def test_connections_over_the_cap_are_refused_and_those_under_it_served(
    serve: ServerFactory, connect: Callable[[HttpServer], Awaitable[Streams]]
) -> None:
    # A long deadline: the idle connections must outlive the test's checks.
    server = await serve(HttpLimits(max_connections=3, request_deadline_s=60))
    held = [await connect(server) for _ in range(2)]
    await _connections_drop_to(server, 2)

    # Under the cap: a scrape on the third place is served.
    assert (await _exchange(server, _get("/healthz")))[0] == 200
    await _connections_drop_to(server, 2)

    held.append(await connect(server))
    await _connections_drop_to(server, 3)
    refused_reader, _ = await connect(server)
    status, headers, body = _parse(await _closed_by_server(refused_reader))
    assert (status, headers["retry-after"], body) == (503, "1", b"too many connections\n")

    # The connections in place keep working: each still gets its answer.
    for reader, writer in held:
        writer.write(_get("/metrics"))
        await writer.drain()
        status, _, body = _parse(await _closed_by_server(reader))
        assert (status, body) == (200, METRICS_BODY)
    await _connections_drop_to(server, 0)
    assert (await _exchange(server, _get("/healthz")))[0] == 200


async def test_stop_closes_connections_in_hand(
    serve: ServerFactory, connect: Callable[[HttpServer], Awaitable[Streams]]
) -> None:
    server = await serve(HttpLimits(request_deadline_s=60))
    reader, writer = await connect(server)
    writer.write(b"GET /metrics HTTP/1.1\r\n")  # half a request
    await writer.drain()
    await _connections_drop_to(server, 1)
    await asyncio.wait_for(server.stop(), TEST_DEADLINE_S)
    assert await _closed_by_server(reader) == b""


# --- what reaches the log -------------------------------------------------------------------


def test_refusals_and_bad_requests_are_logged_once_a_minute_with_a_count() -> None:
    now = [1000.0]
    throttled = _ThrottledLog(clock=lambda: now[0])
    with structlog.testing.capture_logs() as logged:
        for _ in range(5):
            throttled.event("http_bad_request", status=431)
        now[0] += LOG_INTERVAL_S - 1
        throttled.event("http_bad_request", status=431)
        throttled.event("http_connection_refused")  # another kind has its own minute
        now[0] += 1
        throttled.event("http_bad_request", status=414)
    assert [(e["event"], e["count"], e.get("status")) for e in logged] == [
        ("http_bad_request", 1, 431),
        ("http_connection_refused", 1, None),
        ("http_bad_request", 6, 414),
    ]
