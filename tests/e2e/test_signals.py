"""SIGTERM at any moment of the daemon's life, as systemd sends it: exit code 0 within the
unit's stop timeout (issue 9, item 5). The daemon is a real process, as systemd runs it."""

from __future__ import annotations

import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etong.devkit.localbridge import LocalBridge
from etong.devkit.mosquitto import LocalMosquitto
from tests.e2e.conftest import ConfigWriter, close_and_show_logs
from tests.e2e.helpers import write_config

pytestmark = pytest.mark.e2e

UNIT_FILE = Path(__file__).parents[2] / "systemd" / "etong.service"
LAUNCH_DEADLINE_S = 20.0  # generous: interpreter start-up on a loaded CI machine


def _unit_stop_timeout_s() -> float:
    """`TimeoutStopSec` of the shipped systemd unit: systemd's SIGKILL comes after it."""
    found = re.search(r"^TimeoutStopSec=(\d+)$", UNIT_FILE.read_text(encoding="utf-8"), re.M)
    assert found, f"no TimeoutStopSec in {UNIT_FILE}"
    return float(found.group(1))


STOP_TIMEOUT_S = _unit_stop_timeout_s()


@pytest.fixture
def bridges(tmp_path: Path) -> Iterator[Callable[[Path, LocalMosquitto], LocalBridge]]:
    """Make daemon processes (`bridges(config, mosquitto)`); all killed at the end, with
    their log shown. The status watcher always uses `mosquitto`, whatever the config says."""
    made: list[LocalBridge] = []

    def make(config: Path, mosquitto: LocalMosquitto) -> LocalBridge:
        bridge = LocalBridge(config, log_path=tmp_path / "etong.log", monitor_url=mosquitto.url)
        made.append(bridge)
        return bridge

    yield make
    close_and_show_logs(made)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody takes it), not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


def _this_start_events(bridge: LocalBridge) -> list[str]:
    """The `event` of each log line the daemon wrote since its latest start."""
    text = bridge.log_path.read_text(encoding="utf-8", errors="replace")
    this_start = text.rsplit(f"=== etong run, start #{bridge.starts} ===", 1)[-1]
    return re.findall(r'"event":"([a-z_]+)"', this_start)


def _wait_until(condition: Callable[[], bool], bridge: LocalBridge, what: str) -> None:
    deadline = time.monotonic() + LAUNCH_DEADLINE_S
    while not condition():
        assert bridge.running, f"the daemon exited before {what}:\n{bridge.log_tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{bridge.log_tail()}"
        time.sleep(0.002)


def _catches_sigterm(pid: int) -> bool:
    """Whether the process has a handler for SIGTERM (bit 15 - 1 of its `SigCgt` mask)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except FileNotFoundError:
        return False
    found = re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)
    return found is not None and bool(int(found.group(1), 16) & (1 << (signal.SIGTERM - 1)))


def _has_logged(bridge: LocalBridge, lines: int) -> Callable[[], bool]:
    return lambda: len(_this_start_events(bridge)) >= lines


def _stopped_cleanly(bridge: LocalBridge) -> bool:
    events = _this_start_events(bridge)
    return "bridge_stopped" in events or "bridge_stopped_during_startup" in events


def test_sigterm_while_the_broker_connect_retries_exits_0(
    bridges: Callable[[Path, LocalMosquitto], LocalBridge],
    mosquitto: LocalMosquitto,
    closed_port: int,
    tmp_path: Path,
    roster_path: Path,
) -> None:
    config = write_config(
        tmp_path / "unreachable.toml",
        broker_url=f"mqtt://127.0.0.1:{closed_port}",
        roster_path=roster_path,
    )
    bridge = bridges(config, mosquitto)
    bridge.start()
    _wait_until(
        lambda: "broker_connect_failed" in _this_start_events(bridge), bridge, "a connect retry"
    )

    assert bridge.sigterm(timeout=STOP_TIMEOUT_S) == 0
    assert "bridge_stopped_during_startup" in _this_start_events(bridge)
    assert "bridge_ready" not in _this_start_events(bridge)


def test_sigterm_as_soon_as_the_handler_is_installed_exits_0(
    bridges: Callable[[Path, LocalMosquitto], LocalBridge],
    write_bridge_config: ConfigWriter,
    mosquitto: LocalMosquitto,
) -> None:
    bridge = bridges(write_bridge_config(), mosquitto)
    bridge.start()
    pid = bridge.pid
    assert pid is not None
    # Python leaves SIGTERM at its default until etong installs a handler; sending it
    # earlier would test the interpreter's start-up, not etong.
    _wait_until(lambda: _catches_sigterm(pid), bridge, "a SIGTERM handler")

    assert bridge.sigterm(timeout=STOP_TIMEOUT_S) == 0
    assert _stopped_cleanly(bridge), bridge.log_tail()


def test_sigterm_after_each_start_up_log_line_exits_0(
    bridges: Callable[[Path, LocalMosquitto], LocalBridge],
    write_bridge_config: ConfigWriter,
    mosquitto: LocalMosquitto,
) -> None:
    """A start logs broker_connected for each of its two connections (the first start
    broker_new_session before each too), then bridge_ready: a SIGTERM after the first,
    second and third line of a start lands at a different stage each time."""
    bridge = bridges(write_bridge_config(), mosquitto)
    for after_lines in (1, 2, 3):
        bridge.start()
        _wait_until(_has_logged(bridge, after_lines), bridge, f"{after_lines} log lines")
        assert bridge.sigterm(timeout=STOP_TIMEOUT_S) == 0, f"after {after_lines} lines"
        assert _stopped_cleanly(bridge), bridge.log_tail()
    # And the next start is a normal one: the interrupted starts left nothing in its way.
    bridge.start()
    bridge.wait_ready()
    assert bridge.sigterm(timeout=STOP_TIMEOUT_S) == 0
