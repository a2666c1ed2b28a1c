"""The etong daemon as a private subprocess, and the small TOML files it needs.

`LocalBridge` runs `python -m etong run --config PATH` and knows it is ready when the bridge's
retained status says `online` (DESIGN §2). `render_toml` and `local_bridge_config` write the
config and roster files for a private run.

Only the wire contract, the command line and the config loader are used here: nothing imports
the daemon.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from etong.config import load_settings, without_env_overrides
from etong.devkit.client import BrokerLogin
from etong.devkit.mosquitto import LocalProcessError, tail
from etong.devkit.terminals import MonitorClient
from etong.topics import Topics

# --- TOML files for the bridge -----------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string: the same quotes and escapes.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    bare = key and all(ch.isascii() and (ch.isalnum() or ch in "-_") for ch in key)
    return key if bare else json.dumps(key, ensure_ascii=False)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, Mapping) for v in value)


def render_toml(document: Mapping[str, Any]) -> str:
    """Write a config or roster document as TOML.

    Top-level mappings become `[tables]`, top-level lists of mappings `[[arrays of tables]]`;
    anything nested deeper is written inline. That covers the config and roster formats.
    """
    out: list[str] = []
    for key, value in document.items():
        if not isinstance(value, Mapping) and not _is_table_array(value):
            out.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, value in document.items():
        if isinstance(value, Mapping):
            out.append(f"\n[{_toml_key(key)}]")
            out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        elif _is_table_array(value):
            for table in value:
                out.append(f"\n[[{_toml_key(key)}]]")
                out.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items())
    return "\n".join(out).lstrip("\n") + "\n"


def local_bridge_config(
    *,
    broker_url: str,
    store_path: Path,
    roster_path: Path,
    instance_id: str = "etong-local",
    topic_prefix: str = "etong/v1",
    protocol: int = 5,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """A bridge config (DESIGN §4) for a private run: short timeouts, no HTTP, JSON logs.

    `overrides` replaces keys section by section, e.g. `{"delivery": {"ack_timeout_s": 1}}`.
    """
    config: dict[str, dict[str, Any]] = {
        "bridge": {"instance_id": instance_id, "topic_prefix": topic_prefix},
        "broker": {"url": broker_url, "client_id": f"{instance_id}-bridge", "protocol": protocol},
        "store": {"path": str(store_path)},
        "roster": {"path": str(roster_path)},
        "delivery": {
            "ack_timeout_s": 2,
            "max_attempts": 3,
            "backoff_max_s": 10,
            "message_expiry_s": 3600,
        },
        "dedup": {"window_s": 86400},
        # Demos and tests send bursts from a few members; the production default (120/min)
        # would reject most of them.
        "limits": {"max_payload_bytes": 65536, "member_rate_per_min": 1_000_000},
        "http": {"listen": ""},
        "retention": {"days": 180},
        "log": {"level": "info", "format": "json"},
    }
    for section, keys in (overrides or {}).items():
        config.setdefault(section, {}).update(keys)
    return config


# --- the bridge daemon as a subprocess ---------------------------------------------------


class LocalBridge:
    """The etong daemon as a subprocess: `python -m etong run --config PATH`.

    The daemon gets this process's environment without its `ETONG_<SECTION>__<KEY>` config
    overrides, plus `extra_env` (which may hold overrides of its own).

    Ready means the bridge published `online` on its retained status topic after this start;
    a status left over from an earlier run (the same broker, a killed daemon) does not count.
    The status is watched at the config's broker URL, or at `monitor_url` when given: the
    same broker's plain listener, for a bridge that connects with TLS the watcher cannot use;
    `monitor_login` when that listener wants a user name (the bridge's: its ACL lets it read
    its own status).
    """

    def __init__(
        self,
        config_path: Path,
        *,
        log_path: Path | None = None,
        python: str = sys.executable,
        extra_env: Mapping[str, str] | None = None,
        monitor_url: str | None = None,
        run_args: Sequence[str] = (),
        monitor_login: BrokerLogin | None = None,
    ) -> None:
        self.config_path = Path(config_path)
        self.run_args = list(run_args)  # extra `etong run` options, e.g. --new-store
        self.log_path = log_path or self.config_path.with_name("etong.log")
        self.python = python
        self.extra_env = dict(extra_env or {})
        # A private daemon goes by its config file (and `extra_env`), never by ETONG_* overrides
        # someone exported for a real bridge: those could point it at that bridge's broker or
        # store. Its config is read as the daemon reads it, so both wait on the same topics.
        self.env = {
            **without_env_overrides(os.environ),
            **self.extra_env,
            "PYTHONUNBUFFERED": "1",
        }
        settings = load_settings(self.config_path, environ=self.env)
        self.broker_url = settings.broker.url
        self.monitor_url = monitor_url or self.broker_url
        self.protocol = settings.broker.protocol
        self.monitor_login = monitor_login
        self.instance_id = settings.bridge.instance_id
        self.topics = Topics(settings.bridge.topic_prefix)
        self._process: subprocess.Popen[bytes] | None = None
        self._monitor: MonitorClient | None = None
        self._started_at = 0.0
        self._first_message = 0
        self.starts = 0
        self.stopped_by_us = False
        """Whether the last exit was asked for (sigterm, kill9, close) rather than a crash."""

    @property
    def status_topic(self) -> str:
        """The bridge's retained status topic."""
        return self.topics.status(self.instance_id)

    @property
    def pid(self) -> int | None:
        """The daemon's process id while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def returncode(self) -> int | None:
        """The daemon's exit code once it exited, else None."""
        return self._process.poll() if self._process is not None else None

    @property
    def running(self) -> bool:
        """Whether the daemon process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Spawn the daemon; its stdout and stderr go to `log_path` (appended across restarts)."""
        if self.running:
            raise LocalProcessError("the bridge is already running")
        if self._monitor is None:
            # Subscribe before spawning, so the fresh `online` cannot slip past unseen.
            self._monitor = MonitorClient(
                self.monitor_url,
                [self.status_topic],
                protocol=self.protocol,
                login=self.monitor_login,
            )
            self._monitor.connect()
        self.stopped_by_us = False
        # Only status messages from here on can speak for this run.
        self._first_message = self._monitor.message_count
        self._started_at = time.time()
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n=== etong run, start #{self.starts} ===\n".encode())
            log.flush()
            command = [self.python, "-m", "etong", "run", "--config", str(self.config_path)]
            self._process = subprocess.Popen(
                [*command, *self.run_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config_path.parent,
                env=self.env,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 20.0) -> None:
        """Wait for this run's retained `online` status; raise with the daemon's log if not."""
        monitor = self._monitor
        process = self._process
        if monitor is None or process is None:
            raise LocalProcessError("the bridge was not started")
        deadline = time.monotonic() + timeout
        since = self._first_message
        while not monitor.has(self._is_fresh_online, since=since):
            if process.poll() is not None:
                raise LocalProcessError(
                    f"the bridge exited with code {process.returncode} before it was ready; "
                    f"log tail:\n{tail(self.log_path, 40)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LocalProcessError(
                    f"the bridge did not publish `online` on {self.status_topic} within "
                    f"{timeout:.0f} s; log tail:\n{tail(self.log_path, 40)}"
                )
            # Bounded waits, so that a daemon that dies is noticed within a quarter second.
            monitor.wait_for(
                self._is_fresh_online, timeout=min(0.25, remaining), since=since, raise_=False
            )

    def _is_fresh_online(self, topic: str, payload: Any, retained: bool) -> bool:
        if topic != self.status_topic or not isinstance(payload, dict):
            return False
        if payload.get("status") != "online":
            return False
        if not retained:
            return True  # published live after this start, hence by this run
        # Retained copies come on (re)subscribing, e.g. after a broker restart: only a status
        # stamped after this start is this run's.
        return _timestamp(payload.get("at")) >= self._started_at - 0.5

    def status(self) -> dict[str, Any] | None:
        """The latest status message seen on the status topic (retained or live)."""
        monitor = self._monitor
        if monitor is None:
            return None
        latest = monitor.latest(self.status_topic)
        return latest if isinstance(latest, dict) else None

    def wait_status(self, status: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait until the latest status message says `status` and return it."""
        monitor = self._monitor
        if monitor is None:
            raise LocalProcessError("the bridge was not started")

        def latest_is(topic: str, payload: Any, retained: bool) -> bool:
            latest = monitor.latest(self.status_topic)
            return isinstance(latest, dict) and latest.get("status") == status

        monitor.wait_for(latest_is, timeout=timeout)
        latest = monitor.latest(self.status_topic)
        assert isinstance(latest, dict)
        return latest

    def sighup(self) -> None:
        """Ask the daemon to reload its roster."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGHUP)

    def sigterm(self, timeout: float = 10.0) -> int:
        """Stop the daemon gracefully; return its exit code, or raise if it overstays `timeout`."""
        process = self._process
        if process is None:
            raise LocalProcessError("the bridge was not started")
        if process.poll() is None:
            self.stopped_by_us = True
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise LocalProcessError(
                f"the bridge did not exit within {timeout:.0f} s of SIGTERM (killed it); "
                f"log tail:\n{tail(self.log_path, 40)}"
            ) from None

    def kill9(self) -> None:
        """Kill the daemon with SIGKILL, as a crash or the OOM killer would."""
        process = self._process
        if process is not None and process.poll() is None:
            self.stopped_by_us = True
            process.kill()
            process.wait()

    def restart(self, ready_timeout: float = 20.0) -> None:
        """Start the daemon again (stopping it first if it runs) and wait until it is ready."""
        if self.running:
            self.sigterm()
        self.start()
        self.wait_ready(ready_timeout)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the daemon wrote."""
        return tail(self.log_path, lines)

    def close(self) -> None:
        """Kill the daemon if it still runs and disconnect the status watcher."""
        self.kill9()
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _timestamp(value: Any) -> float:
    """Seconds since the epoch of an RFC 3339 time, or 0 when it is missing or unreadable."""
    if not isinstance(value, str):
        return 0.0
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
