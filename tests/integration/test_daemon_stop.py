"""A stop during start-up, in process: asked for before the loop ran, or while the broker
connect is retrying; the daemon returns exit code 0 at once and closes what it opened.
(tests/e2e/test_signals.py does the same to the daemon as a real process, with signals.)"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from etong import cli
from etong.daemon import Daemon
from etong.devkit.mosquitto import free_port
from etong.stopsignal import STOP_SIGNALS, EarlyStop
from etong.store import SqliteStore
from tests.integration.conftest import make_settings
from tests.waiting import DEADLINE_S, wait_until


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@pytest.fixture
def restore_stop_handlers() -> Iterator[None]:
    """Put back this process's SIGTERM/SIGINT handlers after a test installed its own."""
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("restore_stop_handlers")
def test_early_stop_records_the_first_stop_signal() -> None:
    early = EarlyStop.install()
    assert not early.requested
    os.kill(os.getpid(), signal.SIGTERM)  # handled at the next bytecode boundary
    os.kill(os.getpid(), signal.SIGINT)
    assert early.requested
    assert early.signal == signal.SIGTERM


class _ParserReachedError(Exception):
    pass


@pytest.mark.usefixtures("restore_stop_handlers")
def test_etong_run_catches_sigterm_before_building_its_parser(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parser imports the config and command modules, the slow part of the launch: a
    SIGTERM then must be recorded already, not kill the process."""
    seen: dict[str, object] = {}

    def build_parser() -> None:
        seen["handler"] = signal.getsignal(signal.SIGTERM)
        raise _ParserReachedError

    monkeypatch.setattr(cli, "build_parser", build_parser)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with pytest.raises(_ParserReachedError):
        cli.main(["run", "--config", "/nonexistent/etong.toml"])
    assert isinstance(getattr(seen["handler"], "__self__", None), EarlyStop)

    # Other verbs keep Python's defaults (`etong status` is not a daemon).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    with pytest.raises(_ParserReachedError):
        cli.main(["status", "--config", "/nonexistent/etong.toml"])
    assert seen["handler"] == signal.SIG_DFL


async def test_a_stop_before_the_loop_ran_never_starts_serving(
    tmp_path: Path, closed_port: int
) -> None:
    settings = make_settings(tmp_path, broker={"url": f"mqtt://127.0.0.1:{closed_port}"})
    early = EarlyStop()
    early.signal = signal.SIGTERM  # as its handler records it

    code = await asyncio.wait_for(Daemon(settings, early_stop=early).run(), DEADLINE_S)

    assert code == 0
    assert not settings.store.path.exists(), "the store was opened after the stop"


async def test_a_stop_while_the_broker_connect_retries_ends_the_run_with_0(
    tmp_path: Path, closed_port: int
) -> None:
    http_port = free_port()
    settings = make_settings(
        tmp_path,
        broker={"url": f"mqtt://127.0.0.1:{closed_port}"},
        http={"listen": f"127.0.0.1:{http_port}"},
    )
    daemon = Daemon(settings)
    run = asyncio.create_task(daemon.run())
    try:
        await wait_until(
            lambda: run.done() or any(b.last_error for b in daemon._brokers),
            "a failed connect attempt",
        )
        assert not run.done(), run.result()
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0
    finally:
        run.cancel()

    # What start-up had opened is closed: the store's writer lock and the HTTP port are free.
    store = await SqliteStore.open(settings.store.path, exclusive=True)
    await store.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", http_port)


async def test_a_stop_while_waiting_for_a_silent_brokers_connack_ends_the_run_with_0(
    tmp_path: Path,
) -> None:
    """A broker that takes the TCP connection and never answers CONNECT (CONNACK waits up
    to 10 s per attempt): the stop does not wait for that."""
    accepted = asyncio.Event()
    silent: list[asyncio.StreamWriter] = []

    async def take_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)
        accepted.set()

    listener = await asyncio.start_server(take_and_say_nothing, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    daemon = Daemon(make_settings(tmp_path, broker={"url": f"mqtt://127.0.0.1:{port}"}))
    run = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(accepted.wait(), DEADLINE_S)
        daemon.request_stop()
        assert await asyncio.wait_for(run, DEADLINE_S) == 0
    finally:
        run.cancel()
        for writer in silent:
            writer.close()
        listener.close()
        await listener.wait_closed()
