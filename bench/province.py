"""A province on one broker and one bridge (issue 18): what the roster's size costs.

For each size (etong/devkit/roster_gen.py `SIZES`: sub-district, city, province) it generates a
roster and measures, each as a child process of its own (wall time, peak RSS from wait4):

- `etong acl`: time, peak RSS, the file's size and lines;
- the terminals' password file the bridge writes from the credentials (one line per terminal);
- mosquitto (private, on a free port) started with that ACL and password file (the
  credentials hashed `--hash 7`, mosquitto_passwd's default `$7$`, or `--hash 6`, `$6$`):
  seconds until it accepts connections; then, with `--clients` terminals holding a persistent
  session (bare sockets: CONNECT, CONNACK; kept connected, or gone with `--sessions offline`)
  and one more publishing QoS 1 every 20 ms, `--hups` SIGHUPs: for each, the longest PUBACK
  wait from the signal on (the stall every client sees) and the broker's CPU until it answered
  again; and whether every client is still connected. A comma list of `--clients` starts a
  broker for each (the descriptor limit is raised to the hard one: ~19,000 clients here);
  with `--auth dynsec` the terminals are in mosquitto's dynamic-security plugin instead
  (PBKDF2 of `--iterations`; the same ACL file), and before the SIGHUPs it also times the
  plugin's commands (a createClient, a deleteClient of a connected terminal: kicked? refused
  again?, `--batch` createClient in one message) and checks that the ACL's patterns still
  confine the users it authenticates (docs/SCALING.md);
- `etong check-config`: time and peak RSS;
- the roster loaded as the daemon loads it (`etong.roster.apart.load_apart`), in a process
  of its own: from the file (no cache: a child process parses and checks it, the daemon
  rebuilds the rows and writes the roster cache) and from the cache that left (a restart),
  `--repeats` times each, and once without a cache at all: time, the CPU of both, RSS after
  loading and after each of `--reloads` more loads (each replacing the last, keeping its
  unchanged rows), and the longest an asyncio loop's 10 ms ticker was held up while the load
  ran on the loop itself (`load_roster`, before issue 18) and as the daemon's SIGHUP runs it
  (a worker thread, `daemon.collector_paused`).

`--code DIR` runs `etong acl` and `check-config` from another checkout (say main before this
change) for a before/after table. Example:

    .venv/bin/python bench/province.py --sizes sub-district,city,province \\
        --json province.json

and the broker's reload against the terminals connected (bench/results/
province-broker-reload.json, docs/SCALING.md):

    .venv/bin/python bench/province.py --sizes province --stages mosquitto \\
        --clients 0,200,2000,10000,19000 --hash 7 --workdir /tmp/prov
"""

from __future__ import annotations

import argparse
import ast
import base64
import hashlib
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from etong.acl.passwords import sync_password_file
from etong.devkit.mosquitto import find_mosquitto, free_port
from etong.devkit.roster_gen import SIZES, write_roster

REPO = Path(__file__).resolve().parents[1]
PASSWORD = "bench-password"  # noqa: S105 - a throwaway broker's test terminals
BRIDGE = "etong"

_LOAD_CHILD = """
import asyncio, gc, resource, sys, time
from pathlib import Path
from etong.daemon import collector_paused, give_back_freed_memory
from etong.roster import load_roster
from etong.roster.apart import load_apart
from etong.roster.cache import RosterCache
path, reloads = Path(sys.argv[1]), int(sys.argv[2])
cache = RosterCache(Path(sys.argv[4])) if sys.argv[4] else None
roster = None
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
def replace():  # as the daemon's start and SIGHUP: the new roster in, the old one out
    global roster
    with collector_paused():
        loaded = load_apart(path, previous=roster, cache=cache)
    roster = loaded.roster
    give_back_freed_memory()
    return loaded.source, loaded.rows, loaded.reused  # not the roster: it must go when replaced
start = time.perf_counter(); cpu = time.process_time(); child_cpu = children_cpu()
first_source, rows, _ = replace()
load_s = time.perf_counter() - start; load_cpu_s = time.process_time() - cpu
load_child_cpu_s = children_cpu() - child_cpu
gc.collect(); after_load = rss_mb()
after_each, reload_s, sources, reused = [], [], [], []
for _ in range(reloads):
    start = time.perf_counter()
    source, _, kept = replace()
    reload_s.append(round(time.perf_counter() - start, 3))
    sources.append(source); reused.append(kept)
    gc.collect(); after_each.append(round(rss_mb(), 1))
async def blocked(apart):
    lags = []
    done = False
    async def ticker():
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.01)
            now = time.perf_counter(); lags.append(now - last - 0.01); last = now
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    if apart:  # the daemon's SIGHUP: a worker thread, the collector paused
        await asyncio.to_thread(replace)
    else:  # before issue 18: parsed on the loop
        load_roster(path)
    done = True
    await task
    return max(lags)
on_loop = asyncio.run(blocked(False)) if sys.argv[3] == "both" else None
apart = asyncio.run(blocked(True))
print({"source": first_source, "rows": rows, "load_s": load_s, "load_cpu_s": load_cpu_s,
       "load_child_cpu_s": load_child_cpu_s, "rss_after_load_mb": after_load,
       "rss_after_each_reload_mb": after_each, "reloads": reloads, "reload_s": reload_s,
       "reload_sources": sources, "rows_reused": reused,
       "loop_block_on_loop_s": on_loop, "loop_block_reload_s": apart})
"""


def run_child(argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Like `timed_child`, waiting with wait4 for the child's own peak RSS."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(child.stdout.read())),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(child.stderr.read())),  # type: ignore[union-attr]
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    for reader in readers:
        reader.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "rss_mb": usage.ru_maxrss / 1024,
        "rc": child.returncode,
        "out": b"".join(out_chunks),
        "err": b"".join(err_chunks),
    }


HASHES = {"7": "sha512-pbkdf2", "6": "sha512"}  # mosquitto_passwd -H: $7$ (its default), $6$


def one_hash(kind: str) -> str:
    """A real mosquitto_passwd hash of PASSWORD (every terminal shares it: same parse cost,
    same cost per check), `$7$...` (PBKDF2-SHA512, 101 iterations) or `$6$...` (one SHA-512)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p"
        subprocess.run(
            ["mosquitto_passwd", "-H", HASHES[kind], "-c", "-b", str(path), "x", PASSWORD],
            check=True,
        )
        return path.read_text().strip().split(":", 1)[1]


def write_credentials(path: Path, users: list[str], digest: str) -> None:
    with path.open("w") as out:
        for user in users:
            out.write(f"{user}:{digest}\n")


def write_config(folder: Path, roster: Path) -> Path:
    config = folder / "etong.toml"
    config.write_text(
        f'[broker]\nusername = "{BRIDGE}"\nclient_id = "etong-bench"\n'
        f'[roster]\npath = "{roster}"\n[store]\npath = "{folder}/etong.db"\n'
        f'[acl]\npath = "{folder}/etong.acl"\n'
    )
    return config


def start_broker(
    folder: Path, acl: Path, auth: list[str], timeout: float
) -> tuple[Any, int, float]:
    """mosquitto with this ACL and authentication (`password_file ...`, or the dynamic-security
    plugin's lines); (process, port, seconds until it accepts)."""
    port = free_port()
    conf = folder / "mosquitto.conf"
    user = ["user root"] if os.geteuid() == 0 else []
    conf.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "allow_anonymous false",
                *auth,
                f"acl_file {acl}",
                "use_username_as_clientid true",
                "max_queued_messages 100000",
                "log_dest none",
                *user,
            ]
        )
        + "\n"
    )
    start = time.perf_counter()
    process = subprocess.Popen([find_mosquitto(), "-c", str(conf)])
    while time.perf_counter() - start < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port, time.perf_counter() - start
        except OSError:
            time.sleep(0.01)
    return process, port, float("inf")


def connect(port: int, user: str) -> mqtt.Client:
    """A paho client; keepalive 0: a stall longer than 1.5 keepalives would have the broker
    drop it (and the timing with it)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, PASSWORD)
    client.connect("127.0.0.1", port, keepalive=0)
    client.loop_start()
    return client


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def connect_packet(user: str, persistent: bool) -> bytes:
    """An MQTT 3.1.1 CONNECT: user name and PASSWORD, keepalive 0 (the broker never times an
    idle one out), a persistent session (clean session 0) as terminals use, or a clean one."""
    flags = 0xC0 | (0 if persistent else 0x02)
    body = _string("MQTT") + bytes([4, flags, 0, 0]) + _string(user) + _string(user)
    body += _string(PASSWORD)
    length, encoded = len(body), b""
    while True:
        length, digit = divmod(length, 128)
        encoded += bytes([digit | (0x80 if length else 0)])
        if not length:
            return b"\x10" + encoded + body


_IP_BIND_ADDRESS_NO_PORT = 24  # Linux 4.2+, not named by Python's socket module before 3.12


def connect_lean(
    port: int, users: list[str], *, persistent: bool, stay: bool, batch: int = 64
) -> tuple[list[Any], int]:
    """Terminals as bare sockets: CONNECT sent, CONNACK read (thousands of paho clients with a
    thread each would measure Python, not the broker). With `stay` the sockets are kept open
    and returned; without, each sends DISCONNECT and closes at once (a persistent session
    stays behind with its credentials), so sessions are not bounded by descriptors. Source
    addresses 127.0.0.2 and up, 20,000 connections each, so ephemeral ports do not run out.
    Returns (the open sockets, how many were accepted)."""
    kept: list[socket.socket] = []
    accepted = 0
    for at in range(0, len(users), batch):
        opened = []
        for n, user in enumerate(users[at : at + batch], start=at):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(60)
            # The port is chosen at connect, for the whole address pair: a bind to port 0
            # alone searches the source address's ports and slows down as they fill.
            sock.setsockopt(socket.SOL_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((f"127.0.0.{2 + n // 20_000}", 0))
            sock.connect(("127.0.0.1", port))
            sock.sendall(connect_packet(user, persistent))
            opened.append(sock)
        for sock in opened:
            answer = b""
            while len(answer) < 4 and (chunk := sock.recv(4 - len(answer))):
                answer += chunk
            ok = answer[:1] == b"\x20" and answer[3:4] == b"\x00"
            accepted += ok
            if ok and stay:
                kept.append(sock)
                continue
            if ok:
                sock.sendall(b"\xe0\x00")  # DISCONNECT: the session stays, with its credentials
            sock.close()
    return kept, accepted


class Probe:
    """One more terminal publishing QoS 1 every 20 ms; the PUBACK waits it saw."""

    def __init__(self, port: int, user: str) -> None:
        self.client = connect(port, user)
        self.topic = f"etong/v1/grid/G000000/member/{user}/events"
        self.sent: dict[int, float] = {}
        self.waits: list[tuple[float, float]] = []  # (sent, answered)
        self.lock = threading.Lock()
        self.client.on_publish = self._answered
        deadline = time.perf_counter() + 10
        while not self.client.is_connected() and time.perf_counter() < deadline:
            time.sleep(0.05)

    def _answered(self, _c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        now = time.perf_counter()
        with self.lock:
            if mid in self.sent:
                self.waits.append((self.sent.pop(mid), now))

    def publish_for(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            self.publish()

    def publish(self) -> None:
        info = self.client.publish(self.topic, b"{}", qos=1)
        with self.lock:
            self.sent[info.mid] = time.perf_counter()
        time.sleep(0.02)

    def stalled_since(self, moment: float) -> bool:
        """Whether a publish sent at or before `moment` (or over 0.2 s ago) is unanswered."""
        now = time.perf_counter()
        with self.lock:
            return any(at <= moment or now - at > 0.2 for at in self.sent.values())

    def longest_wait(self, start: float, end: float) -> float:
        with self.lock:
            waits = [done - at for at, done in self.waits if done >= start and at <= end]
        return max(waits, default=float("inf"))


def dynsec_plugin() -> str:
    """mosquitto's dynamic-security plugin, where Debian's package puts it (any architecture),
    or SystemExit saying what to install."""
    found = sorted(Path("/usr/lib").glob("*/mosquitto_dynamic_security.so"))
    found += sorted(Path("/usr/lib").glob("mosquitto_dynamic_security.so"))
    if not found:
        raise SystemExit(
            "--auth dynsec: mosquitto_dynamic_security.so not found under /usr/lib "
            "(it comes with Debian's mosquitto package: apt-get install mosquitto)"
        )
    return str(found[0])


DYNSEC_ADMIN = "dynsec-admin"
DYNSEC_TOPIC = "$CONTROL/dynamic-security/v1"


def write_dynsec(path: Path, users: list[str], iterations: int) -> None:
    """The dynamic-security plugin's file: every user with PASSWORD as PBKDF2-HMAC-SHA512 of
    `iterations` (one salt for all: the same parse and the same cost per check), no role, and
    every default access false, so that its ACL check defers to the acl_file's patterns; and
    an admin whose role allows the control topic."""
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", PASSWORD.encode(), salt, iterations)
    secret = {
        "salt": base64.b64encode(salt).decode(),
        "password": base64.b64encode(digest).decode(),
        "iterations": iterations,
    }
    kinds = ("publishClientSend", "publishClientReceive", "subscribePattern")
    control = [{"acltype": k, "topic": "$CONTROL/dynamic-security/#", "allow": True} for k in kinds]
    defaults = ("publishClientSend", "publishClientReceive", "subscribe", "unsubscribe")
    config = {
        "clients": [
            *({"username": user, "roles": [], **secret} for user in users),
            {"username": DYNSEC_ADMIN, "roles": [{"rolename": "admin"}], **secret},
        ],
        "groups": [],
        "roles": [{"rolename": "admin", "acls": control}],
        "defaultACLAccess": dict.fromkeys(defaults, False),
    }
    path.write_text(json.dumps(config))


class Admin:
    """The plugin's admin: sends a control message, waits for its response."""

    def __init__(self, port: int) -> None:
        self.client = connect(port, DYNSEC_ADMIN)
        self.answered = threading.Event()
        self.responses: list[dict[str, Any]] = []
        self.client.on_message = self._response
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *_: subscribed.set()
        deadline = time.perf_counter() + 10
        while not self.client.is_connected() and time.perf_counter() < deadline:
            time.sleep(0.05)
        self.client.subscribe(f"{DYNSEC_TOPIC}/response", qos=1)
        subscribed.wait(10)

    def _response(self, _c: Any, _u: Any, message: Any) -> None:
        self.responses = json.loads(message.payload)["responses"]
        self.answered.set()

    def send(self, commands: list[dict[str, Any]]) -> None:
        self.answered.clear()
        self.client.publish(DYNSEC_TOPIC, json.dumps({"commands": commands}), qos=1)


def command_stall(
    process: Any, probe: Probe, admin: Admin, commands: list[dict[str, Any]]
) -> dict[str, Any]:
    """One control message under the probe's traffic: the longest PUBACK wait from its sending,
    the seconds until the plugin answered, the broker's CPU, the commands' errors."""
    probe.publish_for(0.5)
    cpu_before, sent = cpu_of(process.pid), time.perf_counter()
    admin.send(commands)
    while not admin.answered.is_set() and time.perf_counter() < sent + 600:
        probe.publish()
    answered = time.perf_counter()
    while probe.stalled_since(answered) and time.perf_counter() < answered + 60:
        probe.publish()
    return {
        "stall_s": probe.longest_wait(sent, time.perf_counter()),
        "answer_s": answered - sent,
        "cpu_s": cpu_of(process.pid) - cpu_before,
        "errors": [r["error"] for r in admin.responses if "error" in r],
    }


def dynsec_commands(
    process: Any,
    port: int,
    probe: Probe,
    idle: list[Any],
    *,
    members: list[str],
    repeats: int,
    batch: int,
) -> dict[str, Any]:
    """`repeats` times each: one createClient, one deleteClient of a terminal holding a session
    (kicked at once? refused at its reconnect?) and `batch` createClient in one message."""
    admin = Admin(port)
    runs: dict[str, list[dict[str, Any]]] = {"create": [], "delete": [], "create_batch": []}
    for n in range(repeats):
        new = {"command": "createClient", "username": f"new-{n}", "password": PASSWORD}
        runs["create"].append(command_stall(process, probe, admin, [new]))
        print(json.dumps({"create": runs["create"][-1]}), flush=True)  # a long run's progress
        gone = {"command": "deleteClient", "username": members[1 + n]}
        run = command_stall(process, probe, admin, [gone])
        if idle:  # connected: the plugin kicks it at once (the socket reads EOF)
            give_up = time.perf_counter() + 5
            while still_open(idle[n : n + 1]) and time.perf_counter() < give_up:
                time.sleep(0.01)
            run["kicked"] = not still_open(idle[n : n + 1])
        run["reconnect_refused"] = (
            connect_lean(port, members[1 + n : 2 + n], persistent=True, stay=False)[1] == 0
        )
        runs["delete"].append(run)
        print(json.dumps({"delete": run}), flush=True)
        if batch:
            many = [
                {"command": "createClient", "username": f"batch-{n}-{i}", "password": PASSWORD}
                for i in range(batch)
            ]
            runs["create_batch"].append(command_stall(process, probe, admin, many))
            print(json.dumps({"create_batch": runs["create_batch"][-1]}), flush=True)
    admin.client.disconnect()
    admin.client.loop_stop()
    figures: dict[str, Any] = {
        f"{kind}_{key}": spread(run[key] for run in these)
        for kind, these in runs.items()
        if these
        for key in ("stall_s", "answer_s", "cpu_s")
    }
    return {**figures, "runs": runs, "deleted": repeats, "batch": batch}


def reload_stall(
    process: Any,
    port: int,
    members: list[str],
    clients: int,
    *,
    sessions: str,
    hups: int,
    before: Callable[[Probe, list[Any]], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """`hups` SIGHUPs, 1 s apart, under `clients` terminals with a session (`sessions`:
    "connected", or "offline": connected with a persistent session, then gone), one more
    publishing every 20 ms: for each, the longest PUBACK wait from the signal on (the stall
    every client sees) and the broker's CPU seconds until it answered again; and how many
    terminals were still connected after. `before` measures something else first (with the
    probe and the open sockets)."""
    probe = Probe(port, members[0])  # first: paho's select() wants a descriptor below 1024
    start = time.perf_counter()
    stay = sessions == "connected"
    idle, accepted = connect_lean(port, members[1 : clients + 1], persistent=True, stay=stay)
    connect_s = time.perf_counter() - start
    first = before(probe, idle) if before else None
    stalls, cpus = [], []
    for _ in range(hups):
        probe.publish_for(1.0)
        cpu_before, signalled = cpu_of(process.pid), time.perf_counter()
        process.send_signal(signal.SIGHUP)
        probe.publish_for(0.5)  # mosquitto reloads at its loop's next turn
        give_up = signalled + 120
        while probe.stalled_since(signalled) and time.perf_counter() < give_up:
            probe.publish()
        stalls.append(probe.longest_wait(signalled, time.perf_counter()))
        cpus.append(cpu_of(process.pid) - cpu_before)  # the reload's (the probe's: ~0.01 s)
    give_up = time.perf_counter() + 5  # the last publishes' PUBACKs
    while probe.sent and time.perf_counter() < give_up:
        time.sleep(0.02)
    connected = probe.client.is_connected() + still_open(idle)
    probe.client.disconnect()
    probe.client.loop_stop()
    for sock in idle:
        sock.close()
    return {
        "clients": clients,
        "sessions": sessions,
        "connect_s": connect_s,
        "stall_s": statistics.median(stalls),
        "stalls_s": stalls,
        "reload_cpu_s": statistics.median(cpus),
        "reload_cpus_s": cpus,
        "unanswered": len(probe.sent),
        "connected_after": connected,
        "connected_before": len(idle) + 1,
        "sessions_before": accepted + 1,
        **({"commands": first} if first else {}),
    }


def still_open(socks: list[Any]) -> int:
    """How many of these sockets the broker has not closed (a closed one reads EOF)."""
    open_ = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            open_ += sock.recv(1) != b""
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    return open_


_TERMINAL_ID = re.compile(rb'^\[\[(?:officers|members)\]\]\nid = "([^"]+)"', re.MULTILINE)


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a running process has used: load-independent."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def emit(row: dict[str, Any], stage: str, values: dict[str, Any]) -> None:
    """Record one stage and print it at once (a long run leaves what it measured)."""
    row[stage] = values
    print(json.dumps({"size": row["size"], stage: values}, default=str), flush=True)


def measure(size_name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure for one size, stage by stage."""
    size = SIZES[size_name]
    folder = work / size_name
    folder.mkdir(parents=True, exist_ok=True)
    roster_path = folder / "roster.toml"
    counts = write_roster(roster_path, size.stations, size.grids)
    config = write_config(folder, roster_path)
    env = dict(os.environ, PYTHONPATH=str(args.code or REPO))
    row: dict[str, Any] = {"size": size_name}
    emit(row, "counts", counts.__dict__)

    stages = args.stages.split(",")
    acl_file = folder / "etong.acl"
    if "acl" in stages or not acl_file.exists():
        measure_acl(row, config, acl_file, env)
    if "mosquitto" in stages:
        measure_broker(row, folder, roster_path, acl_file, args)
    if "check" in stages:
        check = run_child(
            [sys.executable, "-m", "etong", "check-config", "--config", str(config)], env
        )
        emit(
            row,
            "check_config",
            {
                "s": check["s"],
                "cpu_s": check["cpu_s"],
                "rss_mb": check["rss_mb"],
                "rc": check["rc"],
            },
        )
    if "roster" in stages:
        measure_roster(row, size.grids, roster_path, args)
    return row


def measure_acl(row: dict[str, Any], config: Path, acl_file: Path, env: dict[str, str]) -> None:
    """`etong acl --out`: time, CPU, peak RSS, the file's size."""
    acl = run_child(
        [sys.executable, "-m", "etong", "acl", "--config", str(config), "--out", str(acl_file)], env
    )
    text = acl_file.read_bytes()
    emit(
        row,
        "acl",
        {
            "s": acl["s"],
            "cpu_s": acl["cpu_s"],
            "rss_mb": acl["rss_mb"],
            "bytes": len(text),
            "lines": text.count(b"\n"),
            "rc": acl["rc"],
        },
    )


def measure_broker(
    row: dict[str, Any], folder: Path, roster_path: Path, acl_file: Path, args: argparse.Namespace
) -> None:
    """The terminals' password file (or the dynamic-security plugin's file), then mosquitto's
    start and a SIGHUP under load (and with the plugin: its commands, and the ACL's confinement
    of the users it authenticates)."""
    # Every member of the generator's roster is in a grid: the terminals are every id below.
    users = [m.decode() for m in _TERMINAL_ID.findall(roster_path.read_bytes())]
    members = [u for u in users if u.startswith("g-")]
    dynsec = args.auth == "dynsec"
    credentials, passwd = folder / "credentials.passwd", folder / "terminals.passwd"
    pristine, dynsec_file = folder / "dynsec-start.json", folder / "dynsec.json"
    start, cpu = time.perf_counter(), time.process_time()
    if dynsec:
        write_dynsec(pristine, [*users, BRIDGE], args.iterations)
        written = {"bytes": pristine.stat().st_size, "iterations": args.iterations}
    else:
        write_credentials(credentials, users, one_hash(args.hash))
        start, cpu = time.perf_counter(), time.process_time()
        sync_password_file(credentials, passwd, frozenset(users))
        written = {"bytes": passwd.stat().st_size, "hash": f"${args.hash}$"}
    elapsed = {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu}
    emit(
        row,
        "dynsec_file" if dynsec else "password_file",
        {**elapsed, **written, "users": len(users)},
    )
    auth = [f"password_file {passwd}"]
    if dynsec:
        auth = [f"plugin {dynsec_plugin()}", f"plugin_opt_config_file {dynsec_file}"]
    for clients in [int(n) for n in str(args.clients).split(",")]:
        if dynsec:  # the commands of a run before rewrote it
            dynsec_file.write_bytes(pristine.read_bytes())
        process, port, started = start_broker(folder, acl_file, auth, args.start_timeout)
        broker: dict[str, Any] = {
            "start_s": started,
            **{k: v for k, v in written.items() if k != "bytes"},
        }
        try:
            if started != float("inf"):
                broker["start_cpu_s"] = cpu_of(process.pid)
                broker["rss_after_start_mb"] = rss_of(process.pid)["VmRSS"]
                before = None
                if dynsec:
                    broker["confinement"] = confinement(port, members[-2:])
                    before = partial(
                        dynsec_commands,
                        process,
                        port,
                        members=members,
                        repeats=args.hups,
                        batch=args.batch,
                    )
                broker.update(
                    reload_stall(
                        process,
                        port,
                        members,
                        clients,
                        sessions=args.sessions,
                        hups=args.hups,
                        before=before,
                    )
                )
                broker["rss_end_mb"] = rss_of(process.pid)
        finally:
            process.kill()
            process.wait()
        emit(row, "mosquitto", broker)


def rss_of(pid: int) -> dict[str, float]:
    """A running process's resident set now and at its peak, MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def confinement(port: int, pair: list[str]) -> dict[str, Any]:
    """The acl_file's patterns confine users the plugin authenticated: the bridge's receipt to
    terminal A reaches A, not B (subscribed to A's receipts and to #); B's report in A's name
    does not reach the bridge, A's own does; an unknown user is refused."""
    a, b = pair
    grid = "etong/v1/grid/G000000/member"
    got: dict[str, list[str]] = {a: [], b: [], BRIDGE: []}
    subscriptions = {
        a: [f"etong/v1/grid/+/member/{a}/receipts"],
        b: [f"etong/v1/grid/+/member/{a}/receipts", "#"],
        BRIDGE: ["etong/v1/grid/+/member/+/events"],
    }
    clients = {}
    for user, topics in subscriptions.items():
        client = connect(port, user)
        subscribed = threading.Event()
        client.on_subscribe = lambda *_, done=subscribed: done.set()
        client.on_message = lambda _c, _u, message, mine=got[user]: mine.append(message.topic)
        deadline = time.perf_counter() + 10
        while not client.is_connected() and time.perf_counter() < deadline:
            time.sleep(0.05)
        client.subscribe([(topic, 1) for topic in topics])
        subscribed.wait(10)
        clients[user] = client
    sent = [
        clients[BRIDGE].publish(f"{grid}/{a}/receipts", b"{}", qos=1),
        clients[b].publish(f"{grid}/{a}/events", b"{}", qos=1),
        clients[a].publish(f"{grid}/{a}/events", b"{}", qos=1),
    ]
    for info in sent:
        info.wait_for_publish(10)
    deadline = time.perf_counter() + 10
    while not (got[a] and got[BRIDGE]) and time.perf_counter() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # anything the ACL let through goes out with the two expected deliveries
    for client in clients.values():
        client.disconnect()
        client.loop_stop()
    return {
        "a_got_its_receipt": got[a] == [f"{grid}/{a}/receipts"],
        "b_got": got[b],
        "bridge_got": got[BRIDGE],
        "bridge_got_only_a": got[BRIDGE] == [f"{grid}/{a}/events"],
        "unknown_user_refused": connect_lean(port, ["nobody"], persistent=False, stay=False)[1]
        == 0,
    }


def measure_roster(
    row: dict[str, Any], grids: int, roster_path: Path, args: argparse.Namespace
) -> None:
    """The roster loaded as the daemon loads it, each load in a process of its own: from the
    file with no cache (a first start, or an edited roster), then from the cache it left (a
    restart), `--repeats` times each; then once with no cache at all, every reload from the
    file. Time, CPU, RSS, each reload's source and rows kept, the loop's hold-up."""
    both = "both" if grids <= args.on_loop_max_grids else "thread"
    cache = roster_path.with_name("roster-cache.bin")
    env = dict(os.environ, PYTHONPATH=str(REPO))

    def load(cache_arg: str) -> dict[str, Any]:
        argv = [sys.executable, "-c", _LOAD_CHILD, str(roster_path), str(args.reloads)]
        run = run_child([*argv, both, cache_arg], env)
        if run["rc"] != 0:
            raise RuntimeError(run["err"].decode(errors="replace"))
        # The last line: the loader logs (roster_cache_written) on stdout before it.
        figures: dict[str, Any] = ast.literal_eval(run["out"].decode().splitlines()[-1])
        figures["peak_rss_mb"] = run["rss_mb"]
        return figures

    runs: dict[str, list[dict[str, Any]]] = {"file": [], "cache": []}
    for _ in range(args.repeats):
        cache.unlink(missing_ok=True)
        runs["file"].append(load(str(cache)))
        runs["cache"].append(load(str(cache)))
    without_cache = load("")
    cache.unlink(missing_ok=True)
    for runs_of in runs.values():
        assert all(run["source"] == runs_of[0]["source"] for run in runs_of), runs_of
    emit(
        row,
        "roster",
        {
            **{
                f"{source}_{key}": spread(r[key] for r in these)
                for source, these in runs.items()
                for key in ("load_s", "load_cpu_s", "load_child_cpu_s", "rss_after_load_mb")
            },
            "runs": runs,
            "no_cache": without_cache,
        },
    )


def spread(values: Any) -> dict[str, float]:
    """Median, min and max, rounded."""
    numbers = sorted(values)
    return {
        "median": round(statistics.median(numbers), 3),
        "min": round(numbers[0], 3),
        "max": round(numbers[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="sub-district,city,province")
    parser.add_argument(
        "--clients",
        default="200",
        help="terminals with a session at the reload; a comma list runs a broker for each",
    )
    parser.add_argument(
        "--hash",
        choices=sorted(HASHES),
        default="7",
        help="the credentials' mosquitto_passwd hash: 7 ($7$, its default) or 6 ($6$, -H sha512)",
    )
    parser.add_argument(
        "--sessions",
        choices=["connected", "offline"],
        default="connected",
        help="the terminals stay connected, or leave a persistent session and go (no descriptor "
        "each: up to a province's terminals)",
    )
    parser.add_argument(
        "--auth",
        choices=["password_file", "dynsec"],
        default="password_file",
        help="terminals in a password file, or in mosquitto's dynamic-security plugin (then "
        "also: its createClient / deleteClient / --batch commands, --hups times each)",
    )
    parser.add_argument(
        "--iterations", type=int, default=101, help="dynsec's PBKDF2 iterations (its own: 101)"
    )
    parser.add_argument(
        "--batch", type=int, default=100, help="dynsec: createClient commands in one message"
    )
    parser.add_argument("--reloads", type=int, default=3)
    parser.add_argument("--hups", type=int, default=3, help="mosquitto reloads per broker")
    parser.add_argument("--repeats", type=int, default=3, help="roster loads of each kind")
    parser.add_argument(
        "--stages",
        default="acl,mosquitto,check,roster",
        help="which to measure (mosquitto reuses an earlier run's ACL in --workdir)",
    )
    parser.add_argument(
        "--on-loop-max-grids",
        type=int,
        default=10_000,
        help="measure the load on the loop too (what it held up before) up to this size",
    )
    parser.add_argument("--start-timeout", type=float, default=120.0)
    parser.add_argument("--code", type=Path, default=None, help="etong checkout for acl/check")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    # One descriptor per connected terminal, here and in the broker (which inherits it).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory(prefix="etong-province-") as tmp:
        work = args.workdir or Path(tmp)
        rows = []
        for size in args.sizes.split(","):
            rows.append(measure(size, work, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
