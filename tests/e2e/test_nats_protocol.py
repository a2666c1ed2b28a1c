"""A broker that refuses MQTT 5 (NATS's MQTT listener speaks 3.1.1 only): the bridge says
which config key to change. A private nats-server on free loopback ports, the daemon as a
real process."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from etong.config import without_env_overrides
from etong.devkit.localbridge import render_toml
from etong.devkit.mosquitto import free_port

pytestmark = pytest.mark.e2e

ROSTER = Path(__file__).resolve().parents[2] / "config" / "roster.example.toml"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"nats-server exited: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)  # polling a port with a deadline, not a fixed wait
    pytest.fail(f"nats-server's MQTT port {port} did not open: {log.read_text(errors='replace')}")


@pytest.fixture
def nats_mqtt_url(tmp_path: Path) -> Iterator[str]:
    """mqtt://127.0.0.1:PORT of a private nats-server's MQTT listener (it needs JetStream)."""
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(exe).exists():
        pytest.fail("nats-server not found: apt-get install nats-server (install-test-deps)")
    mqtt_port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{free_port()}\n"
        "server_name: etong-test\n"
        f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
        f"mqtt {{ listen: 127.0.0.1:{mqtt_port} }}\n",
        encoding="utf-8",
    )
    log = tmp_path / "nats.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [exe, "-c", str(config)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_port(mqtt_port, process, log)
        yield f"mqtt://127.0.0.1:{mqtt_port}"
    finally:
        process.kill()
        process.wait(timeout=10)


def test_a_broker_refusing_mqtt_5_gets_the_advice_to_set_broker_protocol_3(
    tmp_path: Path, nats_mqtt_url: str
) -> None:
    config = tmp_path / "etong.toml"
    config.write_text(
        render_toml(
            {
                "broker": {"url": nats_mqtt_url, "protocol": 5},
                "store": {"path": "etong.db"},
                "roster": {"path": str(ROSTER)},
                "http": {"listen": ""},
                "log": {"format": "json"},
            }
        ),
        encoding="utf-8",
    )

    result = subprocess.run(
        [sys.executable, "-m", "etong", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=without_env_overrides(os.environ),  # this test's config, not an exported ETONG_*
    )

    assert result.returncode == 1, result.stdout + result.stderr
    assert (
        "broker refused us: Unsupported protocol version; set broker.protocol = 3 for brokers "
        "that only speak MQTT 3.1.1"
    ) in result.stderr
