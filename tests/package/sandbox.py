"""A machine with no network to install the package on: this one, copy-on-write.

Each `OfflineRoot.run` enters new network, mount and PID namespaces (`unshare`, as root), lays
an overlay over this machine's `/` whose writes go to the root's own folder, and runs a bash
script chrooted there. The network namespace has only loopback: a step that tries to reach a
registry (or anything off this machine) fails at once, it cannot quietly succeed. Installs are
real (`dpkg -i`, maintainer scripts, `adduser`) and this machine keeps none of them. Writes
persist from one `run` to the next, so an install, then an upgrade, then a downgrade see each
other's results. Whatever a script leaves running ends with its PID namespace.

Inside: a fresh /tmp and /run (no systemd: the maintainer scripts' no-systemd path), and the
release folder read-only at /release.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

# The chroot's environment: nothing of this machine's pyenv, pip settings or proxies.
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}

# Shell helpers every script gets: wait for a port or a command, with a deadline.
PRELUDE = r"""
set -euo pipefail
ip link set lo up
wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds, or fail
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then echo "timed out waiting for: $*" >&2; return 1; fi
        sleep 0.2
    done
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
"""


class OfflineRoot:
    """This machine's root, copy-on-write in `base`, with no network (see the module doc)."""

    def __init__(self, base: Path, release: Path) -> None:
        self.upper = base / "upper"
        self.work = base / "work"
        self.merged = base / "merged"
        for folder in (self.upper, self.work, self.merged):
            folder.mkdir(parents=True, exist_ok=True)
        self.release = release

    def _enter(self, script: str) -> list[str]:
        m = shlex.quote(str(self.merged))
        layers = f"lowerdir=/,upperdir={self.upper},workdir={self.work}"
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in CLEAN_ENV.items())
        setup = f"""
set -e
mount -t overlay overlay -o {shlex.quote(layers)} {m}
mount -t proc proc {m}/proc
mount --rbind /dev {m}/dev
mount -t tmpfs tmpfs {m}/tmp
mount -t tmpfs tmpfs {m}/run
mkdir -p {m}/release
mount --bind {shlex.quote(str(self.release))} {m}/release
mount -o remount,bind,ro {m}/release
exec chroot {m} /usr/bin/env -i {env} /bin/bash -c {shlex.quote(PRELUDE + script)}
"""
        return [
            "unshare", "--net", "--mount", "--pid", "--fork", "--propagation", "private",
            "--", "/bin/sh", "-c", setup,
        ]  # fmt: skip

    def run(self, script: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a bash script (`set -euo pipefail`) in the root; its result, whatever it is."""
        return subprocess.run(
            self._enter(script), capture_output=True, text=True, timeout=timeout, check=False
        )

    def check(self, script: str, timeout: float = 300) -> str:
        """Run a script that must succeed; its stdout."""
        result = self.run(script, timeout)
        assert result.returncode == 0, (
            f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        return result.stdout
