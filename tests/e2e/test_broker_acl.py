"""Terminals confined at a real mosquitto by the ACL `etong acl` derives from the roster (issue 12).

The broker is set up as config/mosquitto.conf ships it: a TLS listener for terminals (the
password file the bridge writes from the roster out of every provisioned terminal's
credentials, the generated acl_file of patterns, `use_username_as_clientid true`) and a
loopback listener for the bridge (a password file holding only the bridge's user, the same
acl_file). Certificates and passwords are made per test. No ACL line names a terminal: a roster
change reaches the broker through the terminals' password file alone.

"Nothing arrives" is proved against a positive control on the same path, so each test can
fail: a denied publish is followed by an allowed one, and a `spy` holding the bridge's
credentials (subscribed as the bridge is) sees the allowed one; mosquitto routes a publish
before it PUBACKs it and delivers to one subscriber in order, so had the denied one passed, the
spy would have seen it first. Likewise a denied subscription is checked only once an allowed
message published after the forbidden one has arrived on the same connection.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from etong.devkit.client import BrokerLogin, MqttClient, tls_context
from etong.devkit.localbridge import LocalBridge
from etong.devkit.messages import encode, make_event
from etong.devkit.mosquitto import ListenerAuth, LocalMosquitto, TlsListener, free_port, tail
from etong.devkit.terminals import GridMemberTerminal, MonitorClient, OfficerTerminal
from tests.e2e.helpers import INSTANCE_ID, TOPICS, e2e_roster, write_config, write_roster
from tests.pki import make_tls_files

pytestmark = pytest.mark.e2e

BRIDGE_USER = "etong"
BRIDGE_CLIENT_ID = f"{INSTANCE_ID}-bridge"  # local_bridge_config's client id
NEW_MEMBER = "g-0299"  # has a password from the start, joins ZS-017 in the reload test
WAIT_S = 15.0


def make_password_file(path: Path, passwords: Mapping[str, str]) -> Path:
    """A mosquitto password file made with `mosquitto_passwd -b`, as an operator would."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    for number, (user, password) in enumerate(passwords.items()):
        create = ["-c"] if number == 0 else []
        subprocess.run([tool, *create, "-b", str(path), user, password], check=True, timeout=30)
    return path


@dataclass
class Confined:
    """A broker confined by the generated ACL, the bridge on it, and the clients of one test."""

    broker: LocalMosquitto
    bridge: LocalBridge
    roster_doc: dict[str, Any]
    roster_path: Path
    acl_path: Path
    password_path: Path
    passwords: dict[str, str]
    ca_file: Path
    http_port: int
    clients: list[MqttClient] = field(default_factory=list)

    def login(self, user: str) -> BrokerLogin:
        return BrokerLogin(user, self.passwords[user], ca_file=self.ca_file)

    def _open(self, client: MqttClient) -> Any:
        self.clients.append(client)
        client.connect()
        return client

    def member(self, grid_id: str, member_id: str, **kw: Any) -> GridMemberTerminal:
        """A handheld on the terminals' TLS listener, logged in as `member_id`."""
        terminal = GridMemberTerminal(
            self.broker.tls_url,
            grid_id,
            member_id,
            topics=TOPICS,
            login=self.login(member_id),
            **kw,
        )
        return self._open(terminal)  # type: ignore[no-any-return]

    def officer(self, officer_id: str, *, also: tuple[str, ...] = (), **kw: Any) -> OfficerTerminal:
        """An officer terminal on the TLS listener; `also` subscribes to more topic filters."""
        terminal = OfficerTerminal(
            self.broker.tls_url, officer_id, topics=TOPICS, login=self.login(officer_id), **kw
        )
        terminal.subscriptions.extend(also)
        return self._open(terminal)  # type: ignore[no-any-return]

    def listener(self, user: str, filters: list[str], **kw: Any) -> MonitorClient:
        """A terminal that only subscribes (and may publish by hand)."""
        client = MonitorClient(self.broker.tls_url, filters, login=self.login(user), **kw)
        return self._open(client)  # type: ignore[no-any-return]

    def spy(self) -> MonitorClient:
        """What the bridge would see: the bridge's credentials on the loopback listener."""
        client = MonitorClient(
            self.broker.url,
            [TOPICS.events_filter, TOPICS.acks_filter, TOPICS.status(INSTANCE_ID)],
            login=BrokerLogin(BRIDGE_USER, self.passwords[BRIDGE_USER]),
        )
        return self._open(client)  # type: ignore[no-any-return]

    def broker_log(self) -> str:
        return self.broker.log_path.read_text(encoding="utf-8", errors="replace")

    def bridge_events(self, name: str) -> list[dict[str, Any]]:
        return [r for r in _log_records(self.bridge) if r.get("event") == name]

    def metric(self, name: str, labels: str) -> float | None:
        url = f"http://127.0.0.1:{self.http_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
        return None


def _log_records(bridge: LocalBridge) -> list[dict[str, Any]]:
    lines = bridge.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def _terminal_passwords(roster_doc: Mapping[str, Any]) -> dict[str, str]:
    users = [m["id"] for m in roster_doc["members"]] + [o["id"] for o in roster_doc["officers"]]
    return {user: secrets.token_urlsafe(12) for user in [*users, NEW_MEMBER]}


def _generate_acl(config: Path, acl: Path) -> None:
    """`etong acl --out`, as the install steps in docs/OPERATIONS.md run it."""
    subprocess.run(
        [sys.executable, "-m", "etong", "acl", "--config", str(config), "--out", str(acl)],
        check=True,
        timeout=60,
        capture_output=True,
    )


@pytest.fixture
def confined(tmp_path: Path) -> Iterator[Confined]:
    """The whole confined system of one test; everything is stopped at the end."""
    pki = make_tls_files(tmp_path / "pki")
    roster_doc = e2e_roster(date.today())
    roster_path = write_roster(tmp_path / "roster.toml", roster_doc)
    passwords = _terminal_passwords(roster_doc)
    # Every provisioned terminal (NEW_MEMBER too); the bridge writes the broker's file from it.
    credentials = make_password_file(tmp_path / "credentials.passwd", passwords)
    terminal_passwd = tmp_path / "acl" / "terminals.passwd"
    passwords[BRIDGE_USER] = secrets.token_urlsafe(12)
    bridge_passwd = make_password_file(
        tmp_path / "bridge.passwd", {BRIDGE_USER: passwords[BRIDGE_USER]}
    )
    (tmp_path / "bridge.password").write_text(passwords[BRIDGE_USER] + "\n", encoding="utf-8")
    acl = tmp_path / "acl" / "etong.acl"
    acl.parent.mkdir()
    terminal_passwd.touch()  # empty until the bridge's first start writes it
    broker = LocalMosquitto(
        tmp_path / "mosquitto",
        auth=ListenerAuth(bridge_passwd, acl),
        tls=TlsListener(
            cafile=pki.ca_cert,
            certfile=pki.server_cert,
            keyfile=pki.server_key,
            auth=ListenerAuth(terminal_passwd, acl, use_username_as_clientid=True),
        ),
    )
    http_port = free_port()
    config = write_config(
        tmp_path / "etong.toml",
        broker_url=broker.url,
        roster_path=roster_path,
        overrides={
            "broker": {"username": BRIDGE_USER, "password_file": "bridge.password"},
            "acl": {
                "path": str(acl),
                "credentials": str(credentials),
                "password_file": str(terminal_passwd),
            },
            "http": {"listen": f"127.0.0.1:{http_port}"},
        },
    )
    _generate_acl(config, acl)
    bridge = LocalBridge(
        config,
        log_path=tmp_path / "etong.log",
        monitor_login=BrokerLogin(BRIDGE_USER, passwords[BRIDGE_USER]),
    )
    system = Confined(
        broker,
        bridge,
        roster_doc,
        roster_path,
        acl,
        terminal_passwd,
        passwords,
        pki.ca_cert,
        http_port,
    )
    try:
        broker.start()
        bridge.start()
        bridge.wait_ready(timeout=20)
        # What systemd's etong-acl.path does once the bridge has written the terminals' file.
        _wait(lambda: terminal_passwd.stat().st_size > 0, "the terminals' password file")
        _reload_broker(system)
        yield system
    finally:
        for client in system.clients:
            client.close()
        bridge.close()
        print(f"--- etong.log (tail) ---\n{bridge.log_tail(60)}")
        print(f"--- mosquitto.log (tail) ---\n{tail(broker.log_path, 40)}")
        broker.kill()


def _wait(condition: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} not seen within {timeout:.0f} s"
        time.sleep(0.05)


def _topics_seen(client: MqttClient) -> set[str]:
    with client._cond:
        return {m.topic for m in client.messages}


def _event_ids_seen(client: MqttClient) -> set[str]:
    with client._cond:
        return {
            str(m.payload.get("event_id"))
            for m in client.messages
            if isinstance(m.payload, dict) and "event_id" in m.payload
        }


def _marker(spy: MonitorClient, member: GridMemberTerminal) -> str:
    """An allowed report after the forbidden ones: once the spy has it, anything the broker had
    let through before it would have reached the spy too."""
    event_id = member.send(member.event())
    spy.wait_for(lambda topic, payload, _r: _is_event(payload, event_id), timeout=WAIT_S)
    member.wait_for_receipt(event_id, "accepted", timeout=WAIT_S)
    return event_id


def _is_event(payload: Any, event_id: str) -> bool:
    return isinstance(payload, dict) and payload.get("event_id") == event_id


# ---------------------------------------------------------------------------- the tests


def test_the_bridge_works_end_to_end_through_the_confined_broker(confined: Confined) -> None:
    officer = confined.officer("p-1001", auto_ack=("received", "verified"))
    registrar = confined.officer("r-0001", auto_ack=())
    member = confined.member("ZS-017", "g-0231")

    event_id = member.send(member.event(type="move_in"))

    assert officer.wait_for_push(event_id)["event"]["event_id"] == event_id
    member.wait_for_receipt(event_id, "verified", timeout=WAIT_S)
    assert member.statuses(event_id) == ["accepted", "received", "verified"]
    registrar.wait_until(lambda: bool(registrar.pushes), WAIT_S, "the registrar's copy")
    assert registrar.push_payloads()[0]["cc"] is True


def test_a_member_cannot_read_any_inbox_or_another_members_receipts(confined: Confined) -> None:
    officer = confined.officer("p-1001")
    neighbour = confined.member("ZS-017", "g-0001")
    own_receipts = TOPICS.receipts("ZS-017", "g-0231")
    snoop = confined.listener(
        "g-0231",
        [
            own_receipts,
            TOPICS.inbox("p-1001"),
            TOPICS.inbox("+"),
            TOPICS.receipts("ZS-017", "g-0001"),
            TOPICS.receipts("+", "+"),
            TOPICS.everything(),
        ],
    )
    neighbours = neighbour.send(neighbour.event())
    neighbour.wait_for_receipt(neighbours, "accepted", timeout=WAIT_S)
    officer.wait_for_push(neighbours)

    own = make_event("ZS-017", "g-0231")
    snoop.publish(TOPICS.events("ZS-017", "g-0231"), encode(own))
    # The positive control: the snoop's own receipt arrives, published after both pushes and
    # the neighbour's receipt on the same bridge connection.
    snoop.wait_for(lambda t, p, _r: t == own_receipts and _is_event(p, own["event_id"]), WAIT_S)
    officer.wait_for_push(own["event_id"])

    assert _topics_seen(snoop) == {own_receipts}
    assert _event_ids_seen(snoop) == {own["event_id"]}


def test_a_member_cannot_publish_for_others_on_acks_or_on_the_bridge_status(
    confined: Confined,
) -> None:
    spy = confined.spy()
    forged: dict[str, Any] = {
        TOPICS.events("ZS-017", "g-0001"): make_event("ZS-017", "g-0001"),  # same grid
        TOPICS.events("ZS-018", "g-0301"): make_event("ZS-018", "g-0301"),
        TOPICS.acks("p-1001"): {"delivery_id": "01FORGEDACK0000000000000", "status": "verified"},
        TOPICS.status(INSTANCE_ID): {"status": "offline", "at": "forged"},
    }

    answers = {
        topic: _publish_once(confined, "g-0231", topic, encode(message), retain="status" in topic)
        for topic, message in forged.items()
    }
    marker = _marker(spy, confined.member("ZS-017", "g-0231"))

    assert set(answers.values()) == {"Not authorized"}  # MQTT 5 PUBACK reason code 0x87
    assert _topics_seen(spy) == {TOPICS.events("ZS-017", "g-0231"), TOPICS.status(INSTANCE_ID)}
    assert _event_ids_seen(spy) == {marker}
    with spy._cond:
        statuses = [m.payload for m in spy.messages if m.topic == TOPICS.status(INSTANCE_ID)]
    assert statuses and all(s["status"] == "online" and s["at"] != "forged" for s in statuses)
    assert not confined.bridge_events("ack_unknown_delivery")


def _publish_once(
    confined: Confined, user: str, topic: str, payload: bytes, *, retain: bool = False
) -> str:
    """Publish at QoS 1 on a connection of its own; return the broker's PUBACK reason code.

    mosquitto 2.0 answers a denied publish with PUBACK 0x87 and then closes the connection,
    so each forgery gets a connection (closed before the user's next one: client ids are
    user names on the terminals' listener).
    """
    answered = threading.Event()
    codes: list[str] = []

    def on_publish(*args: Any) -> None:
        codes.append(str(args[3]))
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, confined.passwords[user])
    tls_url = confined.broker.tls_url
    client.tls_set_context(tls_context(confined.login(user).settings_for(tls_url, 5)))
    client.on_publish = on_publish
    client.connect("127.0.0.1", confined.broker.tls_port or 0)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain)
        assert answered.wait(WAIT_S), f"no PUBACK for {topic}"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


def test_what_the_patterns_let_through_the_bridge_refuses_as_a_security_event(
    confined: Confined,
) -> None:
    """The broker's patterns name the terminal's own id, not its grid or its role: a member
    publishing under its own id in another grid's topic, and a registrar acking on its own
    acks topic, pass the broker and are refused by the bridge from the roster (DESIGN §8)."""
    spy = confined.spy()
    officer = confined.officer("p-1001", auto_ack=())
    registrar = confined.officer("r-0001", auto_ack=())
    member = confined.member("ZS-017", "g-0001")
    copied = member.send(member.event(type="move_in"))
    delivery_id = officer.wait_for_push(copied)["delivery_id"]
    registrar.wait_until(lambda: bool(registrar.pushes), WAIT_S, "the registrar's copy")
    registrar.close()  # the forged ack goes on a connection of its own (same client id)
    elsewhere = make_event("ZS-018", "g-0231")
    receipts_elsewhere = TOPICS.receipts("ZS-018", "g-0231")
    snoop = confined.listener("g-0231", [receipts_elsewhere])

    snoop.publish(TOPICS.events("ZS-018", "g-0231"), encode(elsewhere))
    rejected = snoop.wait_for(
        lambda t, p, _r: t == receipts_elsewhere and _is_event(p, elsewhere["event_id"]), WAIT_S
    )
    answer = _publish_once(
        confined,
        "r-0001",
        TOPICS.acks("r-0001"),
        encode({"delivery_id": delivery_id, "status": "declined"}),
    )
    spy.wait_for(lambda t, _p, _r: t == TOPICS.acks("r-0001"), WAIT_S)

    def refused_acks() -> list[dict[str, Any]]:
        return confined.bridge_events("ack_unknown_delivery") + confined.bridge_events(
            "ack_from_wrong_officer"
        )

    _wait(lambda: bool(refused_acks()), "the refused ack")

    assert answer == "Success"  # the broker cannot tell a registrar from an officer
    assert rejected is not None and rejected.payload["status"] == "rejected"
    assert "does not belong to grid 'ZS-018'" in rejected.payload["reason"]
    refusals = [e for e in confined.bridge_events("report_rejected") if e["grid_id"] == "ZS-018"]
    assert [e["security_event"] for e in refusals] == [True]
    assert [(e["officer_id"], e["security_event"]) for e in refused_acks()] == [("r-0001", True)]
    assert officer.pushed_event_ids() == {copied}  # nothing handed on by the registrar's ack
    assert elsewhere["event_id"] not in officer.pushed_event_ids()


def test_an_officer_cannot_read_another_officers_inbox_or_ack_its_deliveries(
    confined: Confined,
) -> None:
    spy = confined.spy()
    p1001 = confined.officer("p-1001", auto_ack=())  # never acks: only a forgery could
    # p-2001 is away, so ZS-018's reports go to p-2002, the curious officer here.
    p2002 = confined.officer("p-2002", also=(TOPICS.inbox("p-1001"), TOPICS.inbox("+")))
    reporter = confined.member("ZS-017", "g-0231")
    other_reporter = confined.member("ZS-018", "g-0301")

    theirs = reporter.send(reporter.event())
    delivery_id = p1001.wait_for_push(theirs)["delivery_id"]
    p2002.disconnect()  # its session stays; the forgeries go on connections of their own
    answers = [
        _publish_once(
            confined,
            "p-2002",
            TOPICS.acks("p-1001"),
            encode({"delivery_id": delivery_id, "status": status}),
        )
        for status in ("received", "verified")
    ]
    p2002.reconnect()
    mine = other_reporter.send(other_reporter.event())
    p2002.wait_for_push(mine)  # and acks it on its own acks topic (auto_ack)
    other_reporter.wait_for_receipt(mine, "received", timeout=WAIT_S)
    spy.wait_for(lambda t, _p, _r: t == TOPICS.acks("p-2002"), WAIT_S)
    # A later receipt to the same reporter: any receipt a forged ack caused came before it.
    later = reporter.send(reporter.event())
    reporter.wait_for_receipt(later, "accepted", timeout=WAIT_S)

    assert answers == ["Not authorized", "Not authorized"]
    assert p2002.pushed_event_ids() == {mine}  # the other officer's push never came
    assert TOPICS.acks("p-1001") not in _topics_seen(spy)
    assert reporter.statuses(theirs) == ["accepted"]


def test_no_terminal_can_take_over_the_bridges_client_ids_or_another_terminals(
    confined: Confined,
) -> None:
    victim = confined.member("ZS-017", "g-0231")
    intruders = {
        "g-0001": BRIDGE_CLIENT_ID,
        "g-0301": f"{BRIDGE_CLIENT_ID}-pub",
        "g-0302": "g-0231",  # another terminal's id (= its user name on this listener)
    }
    for user, client_id in intruders.items():
        confined.listener(user, [], client_id=client_id)

    event_id = victim.send(victim.event())
    victim.wait_for_receipt(event_id, "accepted", timeout=WAIT_S)

    log = confined.broker_log()
    for client_id in intruders.values():
        assert f"Client {client_id} already connected" not in log
    assert not confined.bridge_events("broker_disconnected")
    assert not confined.bridge_events("broker_session_taken_over")
    assert confined.metric("etong_session_taken_over_total", 'broker="grid"') == 0.0
    # The check above can fail: the same user name again (a cloned handheld) does take over.
    confined.listener("g-0231", [], client_id="anything")
    _wait(lambda: "Client g-0231 already connected" in confined.broker_log(), "the takeover")


def test_the_bridge_backs_off_when_someone_keeps_taking_its_session(confined: Confined) -> None:
    """Only the bridge's own credentials reach its client ids (a stolen password, or a second
    instance configured with the same id). mosquitto 2.0.11 ends the taken connection without
    a DISCONNECT (newer brokers send reason 0x8E, tests/unit/test_session_takeover.py), so
    the bridge sees its connection dropped right after each reconnect, and waits longer each
    time instead of kicking the intruder off many times a second."""
    intruder = MqttClient(
        confined.broker.url,
        BRIDGE_CLIENT_ID,
        persistent=True,  # keep the session: what was queued for the bridge stays queued
        login=BrokerLogin(BRIDGE_USER, confined.passwords[BRIDGE_USER]),
    )
    confined.clients.append(intruder)
    intruder.connect()  # and paho reconnects it 1-2 s after each time the bridge takes it back

    def backoffs() -> list[dict[str, Any]]:
        events = confined.bridge_events("broker_connection_flapping")
        events += confined.bridge_events("broker_session_taken_over")
        return sorted((e for e in events if e["broker"] == "grid"), key=lambda e: e["timestamp"])

    _wait(lambda: len(backoffs()) >= 2, "two backoffs", timeout=40)
    intruder.close()

    first, second = backoffs()[:2]
    assert first["security_event"] is True
    assert 2.0 <= first["reconnect_in_s"] < second["reconnect_in_s"]
    assert _seconds_between(first["timestamp"], second["timestamp"]) >= first["reconnect_in_s"]
    member = confined.member("ZS-017", "g-0231")
    event_id = member.send(member.event())
    member.wait_for_receipt(event_id, "accepted", timeout=WAIT_S + second["reconnect_in_s"])


def _seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def test_a_roster_reload_cuts_off_a_removed_member_and_lets_a_new_one_in_without_restarts(
    confined: Confined,
) -> None:
    """No ACL line names a member: the reload changes only the terminals' password file, and
    mosquitto's reload of it disconnects the removed member and admits the new one."""
    spy = confined.spy()
    colleague = confined.member("ZS-017", "g-0001")
    removed = confined.member("ZS-017", "g-0232")
    before = removed.send(removed.event())
    removed.wait_for_receipt(before, "accepted", timeout=WAIT_S)  # it works until the reload
    assert _refused_login(confined, NEW_MEMBER)  # provisioned, but not in the roster yet
    acl_before = confined.acl_path.read_bytes()
    broker_pid, bridge_pid = confined.broker.pid, confined.bridge.pid

    _reload_with(confined, remove="g-0232", add=NEW_MEMBER)

    _wait(lambda: not removed._client.is_connected(), "the removed member's disconnection")
    assert _refused_login(confined, "g-0232")  # and it cannot come back
    assert confined.acl_path.read_bytes() == acl_before  # the rules did not change
    _marker(spy, colleague)  # everyone else carries on
    newcomer = confined.member("ZS-017", NEW_MEMBER)
    accepted = newcomer.send(newcomer.event())
    newcomer.wait_for_receipt(accepted, "accepted", timeout=WAIT_S)
    assert (confined.broker.pid, confined.bridge.pid) == (broker_pid, bridge_pid)
    assert confined.broker.running and confined.bridge.running


def _refused_login(confined: Confined, user: str) -> bool:
    """Whether the terminals' listener refuses `user`'s right password (CONNACK "Not
    authorized"); a positive control: the same call for a roster member returns False."""
    answered = threading.Event()
    codes: list[str] = []

    def on_connect(*args: Any) -> None:
        codes.append(str(args[3]))
        answered.set()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, confined.passwords[user])
    tls_url = confined.broker.tls_url
    client.tls_set_context(tls_context(confined.login(user).settings_for(tls_url, 5)))
    client.on_connect = on_connect
    client.connect("127.0.0.1", confined.broker.tls_port or 0)
    client.loop_start()
    try:
        assert answered.wait(WAIT_S), f"no CONNACK for {user}"
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0] == "Not authorized"


def test_a_roster_member_logs_in_where_a_stranger_is_refused(confined: Confined) -> None:
    assert not _refused_login(confined, "g-0231")
    assert _refused_login(confined, NEW_MEMBER)


def _reload_with(confined: Confined, *, remove: str, add: str) -> None:
    """Edit the roster, SIGHUP the bridge, wait for its new terminals' password file, then
    SIGHUP mosquitto (what systemd/etong-acl.path does) and wait until it has reloaded."""
    doc = confined.roster_doc
    grid = next(g for g in doc["grids"] if g["id"] == "ZS-017")
    grid["members"] = [m for m in grid["members"] if m != remove] + [add]
    doc["members"] = [m for m in doc["members"] if m["id"] != remove] + [
        {"id": add, "name": "新来的"}
    ]
    write_roster(confined.roster_path, doc)
    confined.bridge.sighup()

    def rewritten() -> bool:
        users = {line.split(":", 1)[0] for line in confined.password_path.read_text().split()}
        return add in users and remove not in users

    _wait(rewritten, "the rewritten terminals' password file")
    _reload_broker(confined)
    assert confined.bridge_events("terminal_passwords_written")


def _reload_broker(confined: Confined) -> None:
    reloads = confined.broker_log().count("Reloading config")
    confined.broker.reload()
    _wait(lambda: confined.broker_log().count("Reloading config") > reloads, "mosquitto's reload")
