"""A private mosquitto for the demo, the e2e tests and the benchmarks, started on this
machine, watched, and stopped again.

`LocalMosquitto` runs a broker on a free 127.0.0.1 port with a config written into a folder
of its own (persistence, log), optionally with a second, TLS listener (`TlsListener`).
The daemon as a subprocess beside it is `etong.devkit.localbridge.LocalBridge`.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

from etong.errors import EtongError

_INSTALL_HINT = (
    "install it with `sudo apt-get install -y mosquitto` (Debian/Ubuntu), "
    "`sudo dnf install mosquitto` (Fedora) or `brew install mosquitto` (macOS)"
)
# Debian and Ubuntu install the broker in /usr/sbin, which is often not on a user's PATH.
_EXTRA_MOSQUITTO_DIRS = ("/usr/sbin", "/usr/local/sbin", "/opt/homebrew/sbin")


class LocalProcessError(EtongError):
    """A private broker or bridge process could not be found, started or stopped."""


def find_mosquitto() -> str:
    """Return the path of the `mosquitto` executable, from PATH or the usual sbin folders."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for folder in _EXTRA_MOSQUITTO_DIRS:
        candidate = Path(folder) / "mosquitto"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise LocalProcessError(f"the mosquitto broker is not installed: {_INSTALL_HINT}")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _free_port_other_than(taken: int) -> int:
    # Two probes in a row may be handed the same port; two listeners cannot share one.
    while (port := free_port()) == taken:
        pass
    return port


def tail(path: Path, lines: int = 30) -> str:
    """Return the last `lines` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ListenerAuth:
    """Who may connect to a listener and what each user may do, as mosquitto's per-listener
    `password_file` and `acl_file` (anonymous clients refused). `use_username_as_clientid`
    replaces a client's id by its user name, so no client can take over another's session."""

    password_file: Path
    acl_file: Path
    use_username_as_clientid: bool = False

    def config_lines(self) -> list[str]:
        """The lines of this listener's block (per_listener_settings must be on)."""
        lines = [
            "allow_anonymous false",
            f"password_file {self.password_file}",
            f"acl_file {self.acl_file}",
        ]
        if self.use_username_as_clientid:
            lines.append("use_username_as_clientid true")
        return lines


@dataclass(frozen=True)
class TlsListener:
    """The files of a TLS listener, as mosquitto's per-listener options of the same names.

    `require_certificate` asks every client for a certificate signed by `cafile` (mutual TLS);
    `auth` makes it a listener for known users only, each confined by the ACL.
    """

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False
    auth: ListenerAuth | None = None

    def config_lines(self, port: int) -> list[str]:
        """The mosquitto.conf block of a listener on `port` with these files."""
        return [
            f"listener {port} 127.0.0.1",
            f"cafile {self.cafile}",
            f"certfile {self.certfile}",
            f"keyfile {self.keyfile}",
            f"require_certificate {'true' if self.require_certificate else 'false'}",
            *(self.auth.config_lines() if self.auth is not None else []),
        ]


class LocalMosquitto:
    """A mosquitto broker of our own on 127.0.0.1, configured the way DESIGN §6 asks.

    Use it as a context manager, or call `start()` and `stop()`. `restart()` keeps the port,
    so clients and the bridge reconnect to the same URL and find their persistent sessions.

    With `tls`, the broker also listens with TLS on a second free port (`tls_port`,
    `tls_url`); the plain listener (`port`, `url`) stays, for clients that are not under test.
    `auth` confines the plain listener to the users of its password file (the shipped
    config's loopback listener for the bridge); with it or a TLS listener's `auth`,
    authentication is per listener (`per_listener_settings true`).
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        tls: TlsListener | None = None,
        auth: ListenerAuth | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.port = port if port is not None else free_port()
        self.tls = tls
        self.auth = auth
        self.tls_port = _free_port_other_than(self.port) if tls is not None else None
        self.config_path = self.directory / "mosquitto.conf"
        self.log_path = self.directory / "mosquitto.log"
        self.stderr_path = self.directory / "mosquitto.stderr"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The broker URL for clients and the bridge config, e.g. `mqtt://127.0.0.1:41883`."""
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        """The TLS listener's URL, e.g. `mqtts://127.0.0.1:41884`; only with `tls`."""
        if self.tls_port is None:
            raise LocalProcessError("this broker was made without a TLS listener")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def config_text(self) -> str:
        """The mosquitto.conf this broker runs with."""
        per_listener = self.auth is not None or (self.tls is not None and self.tls.auth)
        lines = [
            # Before any listener: the security options that follow each belong to one.
            *(["per_listener_settings true"] if per_listener else []),
            f"listener {self.port} 127.0.0.1",
            *(self.auth.config_lines() if self.auth is not None else ["allow_anonymous true"]),
            "persistence true",
            # The trailing slash matters: mosquitto concatenates it with the file name.
            f"persistence_location {self.directory}/",
            # The default snapshots the in-memory state every 30 minutes, so a restart would lose
            # every message queued since; one second keeps restarts in tests honest (DESIGN §6).
            "autosave_interval 1",
            # The default (1000) silently drops QoS 1 messages for a slow but connected client;
            # 0 means unlimited, which is what a no-loss bridge needs from its broker (DESIGN §6).
            "max_queued_messages 0",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            # Offline persistent sessions (the bridge's, an officer's) must outlive a test run.
            "persistent_client_expiration 1d",
            "set_tcp_nodelay true",
            f"log_dest file {self.directory}/mosquitto.log",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto 2 switches to the `mosquitto` user, which then cannot
            # write its persistence file or log into our (root-owned, 0700) temp folder.
            lines.append(f"user {getpass.getuser()}")
        if self.tls is not None and self.tls_port is not None:
            # Last: the lines after a `listener` line configure that listener.
            lines += self.tls.config_lines(self.tls_port)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and return once its port accepts connections."""
        if self.running:
            return
        executable = find_mosquitto()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text(), encoding="utf-8")
        with self.stderr_path.open("ab") as stderr:
            self._process = subprocess.Popen(
                [executable, "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # a Ctrl-C in the terminal goes to us, not the broker
            )
        self._wait_until_listening(self._process, timeout)

    def _wait_until_listening(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ports = [self.port] if self.tls_port is None else [self.port, self.tls_port]
        while not all(_port_accepts(port) for port in ports):
            if time.monotonic() > deadline:
                self.kill()
                raise LocalProcessError(
                    f"mosquitto did not listen on port {' and '.join(map(str, ports))} "
                    f"within {timeout:.0f} s; "
                    f"log tail:\n{self._log_tail()}"
                )
            # Waiting on the process doubles as the pause between probes and notices an early exit.
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=0.02)
                raise LocalProcessError(
                    f"mosquitto exited with code {code} while starting on port {self.port}; "
                    f"log tail:\n{self._log_tail()}"
                )

    def _log_tail(self) -> str:
        return f"{tail(self.stderr_path, 10)}\n{tail(self.log_path, 20)}"

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the broker with SIGTERM (it saves its persistence file then) and wait for it."""
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None
        return process.returncode

    def kill(self) -> None:
        """Stop the broker with SIGKILL: whatever it had not saved yet is gone."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        self._process = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def reload(self) -> None:
        """SIGHUP: mosquitto reads its password and ACL files again (what systemd's reload does)."""
        if self._process is None or self._process.poll() is not None:
            raise LocalProcessError("the broker is not running")
        self._process.send_signal(signal.SIGHUP)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop the broker gracefully and start it again on the same port."""
        self.stop(timeout)
        self.start(timeout)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
