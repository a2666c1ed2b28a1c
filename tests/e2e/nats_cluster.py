"""A private NATS cluster for the HA tests: three `nats-server` processes on free loopback
ports, routed to each other, each with JetStream and an MQTT listener (MQTT 3.1.1).

NATS keeps an MQTT client's session (its subscriptions, and the QoS 1 messages queued for
it) in JetStream streams and consumers. With three servers those are replicated on all three
(`stream_replicas = 3`), so a persistent session outlives the server it was made on: a client
that reconnects to another server of the cluster with the same client id gets its session
back, messages included. That is what etong needs of a broker cluster (docs/SCALING.md).

Nothing here touches the machine's own services: every port is a free ephemeral one, every
file is under the test's directory, and `close()` kills what it started even when the test
failed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from etong.devkit.mosquitto import free_port

NODES = 3


def nats_server_binary() -> str:
    """The nats-server executable; AssertionError saying how to get it when missing."""
    exe = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(exe).exists():
        raise AssertionError(
            "nats-server not found: apt-get install nats-server (scripts/install-test-deps)"
        )
    return exe


@dataclass
class NatsNode:
    """One server of the cluster: its ports, its files, its process when running."""

    name: str
    directory: Path
    client_port: int
    cluster_port: int
    mqtt_port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def mqtt_url(self) -> str:
        """mqtt://127.0.0.1:PORT of this server's MQTT listener."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def config(self) -> Path:
        """This server's configuration file."""
        return self.directory / "nats.conf"

    @property
    def log(self) -> Path:
        """Where this server writes its log."""
        return self.directory / "nats.log"

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self.process is not None and self.process.poll() is None


@dataclass
class NatsCluster:
    """Three NATS servers routed into one cluster, JetStream and MQTT on each."""

    directory: Path
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.exe = nats_server_binary()
        for number in range(1, NODES + 1):
            name = f"n{number}"
            folder = self.directory / name
            folder.mkdir(parents=True, exist_ok=True)
            self.nodes.append(NatsNode(name, folder, free_port(), free_port(), free_port()))
        for node in self.nodes:
            node.config.write_text(self._config_of(node), encoding="utf-8")

    def _config_of(self, node: NatsNode) -> str:
        routes = ", ".join(
            f"nats-route://127.0.0.1:{other.cluster_port}"
            for other in self.nodes
            if other is not node
        )
        return (
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.client_port}\n"
            "cluster {\n"
            "  name: etong-ha\n"
            f"  listen: 127.0.0.1:{node.cluster_port}\n"
            f"  routes: [{routes}]\n"
            "}\n"
            f'jetstream {{ store_dir: "{node.directory / "js"}" }}\n'
            "mqtt {\n"
            f"  listen: 127.0.0.1:{node.mqtt_port}\n"
            # Sessions and their QoS 1 messages on every server: one may die.
            "  stream_replicas: 3\n"
            # How long a QoS 1 message waits for its PUBACK before NATS sends it again.
            '  ack_wait: "5s"\n'
            # Far above a bridge's in-flight window (its Receive Maximum is 3.1.1's: none).
            "  max_ack_pending: 10000\n"
            "}\n"
        )

    @property
    def mqtt_urls(self) -> list[str]:
        """Every server's MQTT URL, in node order."""
        return [node.mqtt_url for node in self.nodes]

    def start(self, timeout: float = 90.0) -> None:
        """Start every server, then wait until each accepts an MQTT session: NATS makes its
        MQTT streams only once the cluster has elected a JetStream leader, and refuses or
        stalls a CONNECT until then."""
        for node in self.nodes:
            self.start_node(node)
        for node in self.nodes:
            self.wait_mqtt(node, timeout)
        for node in self.nodes:
            self.wait_session(node, timeout)

    def wait_session(self, node: NatsNode, timeout: float) -> None:
        """Wait until `node` answers a persistent-session CONNECT with a CONNACK of 0."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            last = _try_session(node.mqtt_port)
            if last == "":
                return
            time.sleep(0.2)  # polling the cluster's readiness with a deadline
        raise AssertionError(
            f"nats-server {node.name} accepted no MQTT session ({last}):\n{self.log_tail(node)}"
        )

    def start_node(self, node: NatsNode) -> None:
        """Start (or restart) one server."""
        assert not node.running, f"{node.name} is already running"
        node.starts += 1
        with node.log.open("ab") as out:
            out.write(f"\n=== nats-server {node.name}, start #{node.starts} ===\n".encode())
            out.flush()
            node.process = subprocess.Popen(
                [self.exe, "-c", str(node.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_mqtt(self, node: NatsNode, timeout: float) -> None:
        """Wait until `node`'s MQTT port accepts connections; fail with its log if it died."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.process is not None and node.process.poll() is not None:
                raise AssertionError(f"nats-server {node.name} exited:\n{self.log_tail(node)}")
            try:
                with socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)  # polling a port with a deadline, not a fixed wait
        raise AssertionError(
            f"nats-server {node.name}'s MQTT port did not open:\n{self.log_tail(node)}"
        )

    def kill(self, node: NatsNode) -> None:
        """kill -9 one server."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(timeout=10)

    def node_of_port(self, port: int) -> NatsNode:
        """The node whose MQTT listener is `port`."""
        return next(node for node in self.nodes if node.mqtt_port == port)

    def log_tail(self, node: NatsNode, lines: int = 30) -> str:
        """The end of one server's log, for failure messages."""
        try:
            text = node.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def close(self) -> None:
        """Kill every server (idempotent)."""
        for node in self.nodes:
            self.kill(node)


def _try_session(port: int) -> str:
    """One MQTT 3.1.1 CONNECT with a persistent session on `port`: "" when accepted, else
    why not. A raw packet, not a client library: this is a readiness probe."""
    client_id = b"etong-ha-probe"
    variable = b"\x00\x04MQTT\x04\x02\x00\x1e"  # 3.1.1, clean session off, keep-alive 30
    payload = len(client_id).to_bytes(2, "big") + client_id
    body = variable + payload
    packet = b"\x10" + bytes([len(body)]) + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.settimeout(10)
            sock.sendall(packet)
            answer = sock.recv(4)
            sock.sendall(b"\xe0\x00")  # DISCONNECT
    except OSError as exc:
        return str(exc)
    if len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0:
        return ""
    return f"CONNACK {answer.hex() or 'none'}"
