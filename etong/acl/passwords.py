"""The terminals' password file, written from the roster: who may log in at all (DESIGN §8).

The ACL confines terminals by patterns and names none of them, so removing a member from the
roster must cut it off elsewhere: at the password store. The operator keeps every provisioned
terminal's credentials in one mosquitto password file (`[acl] credentials`, made with
`mosquitto_passwd -H sha512`; the bridge never sees a password, only its salted hash), and
the bridge writes `[acl] password_file`, the broker's terminal listener's file, with only the
lines whose user name the roster holds as a terminal (`rules.terminal_users`). At the
broker's reload (systemd's etong-acl.path) mosquitto re-reads it and disconnects every
connected client whose user is gone; a removed member cannot log in again, an added one can
at once.

The file is streamed (a province's is ~50 MB): filtered line by line into a temporary file
beside the target, fingerprinted on the way, and renamed over the target only when it differs,
so a broker is not reloaded for nothing. The user name is what precedes the first `:`.

The kept lines are tallied by hash kind on the way: mosquitto 2.0 re-checks the password of
every client that has a session (connected, or away with a persistent one) at each reload,
one hash per terminal while it serves nobody. mosquitto_passwd's default `$7$` (PBKDF2-SHA512,
101 iterations) costs ~90 µs a terminal there, `$6$` (one SHA-512) ~1 µs: a
province's terminals on `$7$` stall a reload for ~40 s (docs/SCALING.md). Terminals' passwords
are random secrets, which iterations do not make harder to guess (docs/SECURITY.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from etong.acl.files import DEFAULT_MODE, fsync_folder

_CHUNK = 1 << 20
_ITERATED = b"$7$"


@dataclass(slots=True)
class HashTally:
    """The password file's lines, and how many of them hold an iterated (`$7$`) hash."""

    lines: int = 0
    iterated: int = 0

    def count(self, line: bytes) -> None:
        self.lines += 1
        if line.partition(b":")[2].startswith(_ITERATED):
            self.iterated += 1


def kept_lines(lines: Iterable[bytes], users: frozenset[str]) -> Iterator[bytes]:
    """The password-file lines whose user name is in `users`, in their order (pure)."""
    for line in lines:
        user, colon, _ = line.partition(b":")
        if colon and user.decode("utf-8", "replace") in users:
            yield line if line.endswith(b"\n") else line + b"\n"


def sync_password_file(
    credentials: Path, target: Path, users: frozenset[str], tally: HashTally | None = None
) -> bool:
    """Make `target` hold the lines of `credentials` for `users`; True when it was rewritten.
    `tally`, when given, counts the kept lines by hash kind (whether rewritten or not).

    OSError when either file cannot be read or written (the old `target` then stays)."""
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, DEFAULT_MODE)
    try:
        with os.fdopen(fd, "wb") as out, credentials.open("rb") as source:
            os.fchmod(out.fileno(), DEFAULT_MODE)
            digest = hashlib.sha256()
            for line in kept_lines(source, users):
                out.write(line)
                digest.update(line)
                if tally is not None:
                    tally.count(line)
            out.flush()
            os.fsync(out.fileno())
        if _digest_of(target) == digest.digest():
            temporary.unlink()
            return False
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_folder(target.parent)
    return True


def _digest_of(path: Path) -> bytes | None:
    try:
        with path.open("rb") as existing:
            return _sha256(existing)
    except FileNotFoundError:
        return None


def _sha256(stream: IO[bytes]) -> bytes:
    digest = hashlib.sha256()
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.digest()
