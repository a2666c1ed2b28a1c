"""The daemon as a real process on a store in trouble: a full disk, a deleted store.

The full disk is a real tmpfs of a few MiB that the test mounts and fills (tests/smallfs.py);
that needs root (CAP_SYS_ADMIN), which CI's container has. Where it is missing the test is
skipped, saying so; tests/integration/test_store_full.py covers the same logic with SQLite's
page limit on a real file.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etong.devkit.localbridge import LocalBridge
from etong.devkit.mosquitto import free_port
from tests.e2e.conftest import ConfigWriter
from tests.e2e.helpers import Terminals
from tests.smallfs import MountNotPermittedError, SmallFilesystem, mount_small_fs

pytestmark = pytest.mark.e2e
WAIT_S = 30.0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback test URL
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {WAIT_S} s waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def small_fs() -> Iterator[SmallFilesystem]:
    try:
        with mount_small_fs(8) as fs:
            yield fs
    except MountNotPermittedError as exc:
        # Not a skip: a full disk under the daemon as a process is what this proves, and
        # CI (root) can mount. Without the privilege, say so as a failure.
        pytest.fail(
            f"cannot mount a tmpfs here ({exc}): run the e2e tier as root (CI does); "
            "tests/integration/test_store_full.py covers the logic without mounting"
        )


@pytest.fixture
def bridges() -> Iterator[list[LocalBridge]]:
    started: list[LocalBridge] = []
    yield started
    for bridge in started:
        bridge.close()
        print(f"--- {bridge.log_path} (tail) ---\n{bridge.log_tail(60)}")


def test_a_full_disk_stops_intake_says_why_and_resumes_when_space_returns(
    small_fs: SmallFilesystem,
    write_bridge_config: ConfigWriter,
    terminals: Terminals,
    bridges: list[LocalBridge],
    tmp_path: Path,
) -> None:
    port = free_port()
    store = small_fs.path / "etong.db"
    config = write_bridge_config(http={"listen": f"127.0.0.1:{port}"}, store={"path": str(store)})
    bridge = LocalBridge(config, log_path=tmp_path / "etong.log")
    bridges.append(bridge)
    bridge.start()
    bridge.wait_ready(timeout=20)
    member = terminals.member("ZS-017", "g-0231")
    first = [member.send(member.event()) for _ in range(3)]
    member.wait_for_all(first, ["accepted"])

    small_fs.fill()
    later = [member.send(member.event()) for _ in range(20)]
    _wait_for(lambda: _get(f"http://127.0.0.1:{port}/readyz")[0] == 503, "/readyz 503")
    reason = f"store full: {store} (no space left)"
    assert _get(f"http://127.0.0.1:{port}/readyz") == (503, reason + "\n")
    assert "etong_store_full 1.0" in _get(f"http://127.0.0.1:{port}/metrics")[1]
    status = subprocess.run(
        [sys.executable, "-m", "etong", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert status.returncode == 0  # it runs: degraded, not down
    assert f"daemon:          {reason}" in status.stdout
    assert not any(member.receipts_for(e) for e in later)  # nothing taken meanwhile
    assert bridge.running

    small_fs.free()
    member.wait_for_all(later, ["accepted"], timeout=WAIT_S)  # the retry backoff is <= 30 s
    assert _get(f"http://127.0.0.1:{port}/readyz") == (200, "ready\n")
    assert "etong_store_full 0.0" in _get(f"http://127.0.0.1:{port}/metrics")[1]
    assert bridge.sigterm() == 0

    log = bridge.log_path.read_text(encoding="utf-8")
    assert log.count('"event":"store_full"') == 1, "one line per change of state, not per try"
    assert log.count('"event":"store_writable"') == 1
    with sqlite3.connect(store) as db:
        stored = {row[0] for row in db.execute("SELECT event_id FROM events")}
    assert stored == set(first + later)  # nothing lost


def test_a_deleted_store_is_refused_until_the_operator_asks_for_a_new_one(
    write_bridge_config: ConfigWriter, bridges: list[LocalBridge], tmp_path: Path
) -> None:
    config = write_bridge_config()
    bridge = LocalBridge(config, log_path=tmp_path / "etong.log")
    bridges.append(bridge)
    bridge.start()
    bridge.wait_ready(timeout=20)
    assert bridge.sigterm() == 0
    store = tmp_path / "etong.db"
    for path in (store, tmp_path / "etong.db-wal", tmp_path / "etong.db-shm"):
        path.unlink(missing_ok=True)

    bridge.start()
    _wait_for(lambda: not bridge.running, "the daemon to refuse")
    assert bridge.returncode == 3
    assert "etong run --new-store" in bridge.log_tail(5)
    assert not store.exists()

    again = LocalBridge(config, log_path=tmp_path / "etong.log", run_args=["--new-store"])
    bridges.append(again)
    again.start()
    again.wait_ready(timeout=20)
    assert store.exists()
    assert again.sigterm() == 0
