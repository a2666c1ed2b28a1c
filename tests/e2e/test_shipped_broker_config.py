"""config/mosquitto.conf as shipped, run by a real mosquitto with only its paths and ports moved
into this test's folder: the loopback listener takes the bridge's user only, the terminals'
TLS listener takes terminals only, nobody anonymous, and client ids are bound to user names.

Each line the test rewrites must be in the shipped file as written, so a change to the file's
listeners or paths fails here rather than going unnoticed.
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from etong.devkit.client import BrokerLogin, MqttClient, tls_context
from etong.devkit.messages import encode, make_event
from etong.devkit.mosquitto import find_mosquitto, free_port, tail
from etong.devkit.terminals import MonitorClient
from tests.e2e.helpers import TOPICS, e2e_roster, write_config, write_roster
from tests.e2e.test_broker_acl import make_password_file
from tests.pki import make_tls_files

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "mosquitto.conf"
BRIDGE_USER = "etong"
BRIDGE_CLIENT_ID = "etong-e2e-bridge"


@dataclass
class Shipped:
    """The shipped broker config running in this test's folder."""

    bridge_port: int
    terminal_port: int
    ca_file: Path
    passwords: dict[str, str]
    log_path: Path

    def bridge_login(self) -> BrokerLogin:
        return BrokerLogin(BRIDGE_USER, self.passwords[BRIDGE_USER])

    def terminal_login(self, user: str) -> BrokerLogin:
        return BrokerLogin(user, self.passwords[user], ca_file=self.ca_file)


def _moved(lines: dict[str, str]) -> str:
    """The shipped text with `lines` (whole lines, each present) replaced."""
    text = SHIPPED.read_text(encoding="utf-8").splitlines()
    missing = [line for line in lines if line not in text]
    assert not missing, f"config/mosquitto.conf no longer has {missing}"
    moved = [lines.get(line, line) for line in text]
    if os.geteuid() == 0:  # mosquitto would switch to its own user, who cannot read tmp_path
        moved.append(f"user {getpass.getuser()}")
    return "\n".join(moved) + "\n"


def _wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        assert process.poll() is None, f"mosquitto exited:\n{tail(log)}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            assert time.monotonic() < deadline, f"mosquitto did not listen:\n{tail(log)}"
            time.sleep(0.05)


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[Shipped]:
    pki = make_tls_files(tmp_path / "pki")
    roster = write_roster(tmp_path / "roster.toml", e2e_roster(date.today()))
    passwords = {user: secrets.token_urlsafe(12) for user in ("g-0231", "g-0001", "p-1001")}
    terminals = make_password_file(tmp_path / "passwd.terminals", passwords)
    passwords[BRIDGE_USER] = secrets.token_urlsafe(12)
    bridge = make_password_file(tmp_path / "passwd.bridge", {BRIDGE_USER: passwords[BRIDGE_USER]})
    config = write_config(
        tmp_path / "etong.toml",
        broker_url="mqtt://127.0.0.1:1883",
        roster_path=roster,
        overrides={"broker": {"username": BRIDGE_USER}},
    )
    acl = tmp_path / "etong.acl"
    subprocess.run(
        [sys.executable, "-m", "etong", "acl", "--config", str(config), "--out", str(acl)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    bridge_port, terminal_port = free_port(), free_port()
    while terminal_port == bridge_port:
        terminal_port = free_port()
    log = tmp_path / "mosquitto.log"
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        _moved(
            {
                "listener 1883 127.0.0.1": f"listener {bridge_port} 127.0.0.1",
                "listener 8883": f"listener {terminal_port} 127.0.0.1",
                "password_file /etc/mosquitto/passwd.bridge": f"password_file {bridge}",
                "password_file /etc/mosquitto/etong-acl/passwd.terminals": (
                    f"password_file {terminals}"
                ),
                "acl_file /etc/mosquitto/etong-acl/etong.acl": f"acl_file {acl}",
                "certfile /etc/mosquitto/certs/server.crt": f"certfile {pki.server_cert}",
                "keyfile /etc/mosquitto/certs/server.key": f"keyfile {pki.server_key}",
                "persistence_location /var/lib/mosquitto/": f"persistence_location {tmp_path}/",
                "log_dest stdout": f"log_dest file {log}",
            },
        ),
        encoding="utf-8",
    )
    with (tmp_path / "mosquitto.stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)], stdout=stderr, stderr=stderr
        )
    try:
        _wait_for_port(process, bridge_port, log)
        _wait_for_port(process, terminal_port, log)
        yield Shipped(bridge_port, terminal_port, pki.ca_cert, passwords, log)
    finally:
        process.kill()
        process.wait()
        print(f"--- mosquitto.log ---\n{tail(log, 40)}")


def _connack(port: int, login: BrokerLogin | None, client_id: str = "probe") -> str:
    """The broker's CONNACK reason code for one connection attempt."""
    answered = threading.Event()
    codes: list[str] = []

    def on_connect(*args: object) -> None:
        codes.append(str(args[3]))
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if login is not None and login.username is not None:
        client.username_pw_set(login.username, login.password)
    if login is not None and login.ca_file is not None:
        client.tls_set_context(tls_context(login.settings_for(f"mqtts://127.0.0.1:{port}", 5)))
    client.on_connect = on_connect
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        assert answered.wait(10), "no CONNACK"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


def test_each_listener_takes_only_its_own_users_and_nobody_anonymous(shipped: Shipped) -> None:
    tls_anonymous = BrokerLogin(ca_file=shipped.ca_file)
    bridge_on_tls = BrokerLogin(BRIDGE_USER, shipped.passwords[BRIDGE_USER], shipped.ca_file)
    member_on_loopback = BrokerLogin("g-0231", shipped.passwords["g-0231"])

    assert _connack(shipped.bridge_port, shipped.bridge_login()) == "Success"
    assert _connack(shipped.terminal_port, shipped.terminal_login("g-0231")) == "Success"
    assert _connack(shipped.bridge_port, None) == "Not authorized"
    assert _connack(shipped.terminal_port, tls_anonymous) == "Not authorized"
    assert _connack(shipped.bridge_port, member_on_loopback) == "Not authorized"
    assert _connack(shipped.terminal_port, bridge_on_tls) == "Not authorized"


def test_a_terminal_asking_for_the_bridges_client_id_gets_its_own_and_only_its_topics(
    shipped: Shipped,
) -> None:
    url = f"mqtt://127.0.0.1:{shipped.bridge_port}"
    bridge = MonitorClient(
        url, [TOPICS.events_filter], client_id=BRIDGE_CLIENT_ID, login=shipped.bridge_login()
    )
    bridge.connect()
    try:
        other = make_event("ZS-017", "g-0001")
        own = make_event("ZS-017", "g-0231")
        # mosquitto 2.0 disconnects a client after a denied publish: one connection for each.
        for topic, event in ((TOPICS.events("ZS-017", "g-0001"), other), (None, own)):
            member = MqttClient(
                f"mqtts://127.0.0.1:{shipped.terminal_port}",
                BRIDGE_CLIENT_ID,
                login=shipped.terminal_login("g-0231"),
            )
            member.connect()
            try:
                member.publish(topic or TOPICS.events("ZS-017", "g-0231"), encode(event))
                member.wait_published(10)
            finally:
                member.close()
        bridge.wait_for(lambda _t, p, _r: isinstance(p, dict) and p["event_id"] == own["event_id"])

        log = shipped.log_path.read_text(encoding="utf-8")
        assert "as g-0231 (p5" in log  # the id it asked for was replaced by its user name
        assert f"Client {BRIDGE_CLIENT_ID} already connected" not in log
        with bridge._cond:
            seen = {m.payload["event_id"] for m in bridge.messages if isinstance(m.payload, dict)}
        assert seen == {own["event_id"]}
    finally:
        bridge.close()
