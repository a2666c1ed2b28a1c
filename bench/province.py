"""A province on one broker and one bridge (issue 18): what the roster's size costs.

For each size (etong/devkit/roster_gen.py `SIZES`: sub-district, city, province) it generates a
roster and measures, each as a child process of its own (wall time, peak RSS from wait4):

- `etong acl`: time, peak RSS, the file's size and lines;
- the terminals' password file the bridge writes from the credentials (one line per terminal);
- mosquitto (private, on a free port) started with that ACL and password file: seconds until
  it accepts connections; then, with `--clients` terminals connected and one publishing QoS 1
  every 20 ms, a SIGHUP: the longest PUBACK wait from the signal on (the stall connected
  clients see) and whether every client is still connected;
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
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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


def one_hash() -> str:
    """A real mosquitto_passwd hash of PASSWORD (every terminal shares it: same parse cost)."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "p"
        subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "x", PASSWORD], check=True)
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


def start_broker(folder: Path, acl: Path, passwd: Path, timeout: float) -> tuple[Any, int, float]:
    """mosquitto with this ACL and password file; (process, port, seconds until it accepts)."""
    port = free_port()
    conf = folder / "mosquitto.conf"
    user = ["user root"] if os.geteuid() == 0 else []
    conf.write_text(
        "\n".join(
            [
                f"listener {port} 127.0.0.1",
                "allow_anonymous false",
                f"password_file {passwd}",
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
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, PASSWORD)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def reload_stall(process: Any, port: int, members: list[str], clients: int) -> dict[str, Any]:
    """SIGHUP under `clients` connected terminals, one publishing every 20 ms: the longest
    PUBACK wait from the signal on, and how many terminals were still connected after."""
    idle = [connect(port, user) for user in members[1 : clients + 1]]
    prober_id = members[0]
    prober = connect(port, prober_id)
    sent: dict[int, float] = {}
    waits: list[tuple[float, float]] = []
    lock = threading.Lock()

    def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        now = time.perf_counter()
        with lock:
            if mid in sent:
                waits.append((sent.pop(mid), now))

    prober.on_publish = on_publish
    deadline = time.perf_counter() + 10
    while not (prober.is_connected() and all(c.is_connected() for c in idle)):
        if time.perf_counter() > deadline:
            break
        time.sleep(0.05)
    topic = f"etong/v1/grid/G000000/member/{prober_id}/events"
    signalled = 0.0
    end = time.perf_counter() + 6
    while time.perf_counter() < end:
        info = prober.publish(topic, b"{}", qos=1)
        with lock:
            sent[info.mid] = time.perf_counter()
        if not signalled and time.perf_counter() > end - 5:
            signalled = time.perf_counter()
            process.send_signal(signal.SIGHUP)
        time.sleep(0.02)
    settle = time.perf_counter() + 120  # a slow reload answers late: wait for every PUBACK
    while time.perf_counter() < settle:
        with lock:
            if not sent:
                break
        time.sleep(0.05)
    with lock:
        after = [done - at for at, done in waits if done >= signalled]
        unanswered = len(sent)
    connected = sum(c.is_connected() for c in idle) + prober.is_connected()
    for client in [*idle, prober]:
        client.disconnect()
        client.loop_stop()
    return {
        "stall_s": max(after) if after else float("inf"),
        "median_puback_s": statistics.median(after) if after else float("inf"),
        "unanswered": unanswered,
        "connected_after": connected,
        "connected_before": len(idle) + 1,
    }


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
    """The terminals' password file, then mosquitto's start and a SIGHUP under load."""
    # Every member of the generator's roster is in a grid: the terminals are every id below.
    users = [m.decode() for m in _TERMINAL_ID.findall(roster_path.read_bytes())]
    credentials, passwd = folder / "credentials.passwd", folder / "terminals.passwd"
    write_credentials(credentials, users, one_hash())
    start, cpu = time.perf_counter(), time.process_time()
    sync_password_file(credentials, passwd, frozenset(users))
    emit(
        row,
        "password_file",
        {
            "s": time.perf_counter() - start,
            "cpu_s": time.process_time() - cpu,
            "bytes": passwd.stat().st_size,
            "users": len(users),
        },
    )

    process, port, started = start_broker(folder, acl_file, passwd, args.start_timeout)
    broker: dict[str, Any] = {"start_s": started}
    try:
        if started != float("inf"):
            broker["start_cpu_s"] = cpu_of(process.pid)
            members = [u for u in users if u.startswith("g-")]
            before = cpu_of(process.pid)
            broker.update(reload_stall(process, port, members, args.clients))
            broker["reload_window_cpu_s"] = cpu_of(process.pid) - before
    finally:
        process.kill()
        process.wait()
    emit(row, "mosquitto", broker)


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
    parser.add_argument("--clients", type=int, default=200, help="terminals connected at reload")
    parser.add_argument("--reloads", type=int, default=3)
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
    with tempfile.TemporaryDirectory(prefix="etong-province-") as tmp:
        work = args.workdir or Path(tmp)
        rows = []
        for size in args.sizes.split(","):
            rows.append(measure(size, work, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
