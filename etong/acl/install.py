"""Putting the roster's ACL in force from the daemon: at start (an error is exit 2) and on
each roster reload (an error is logged loudly; the broker keeps the previous rules).

Two files: the ACL (patterns, so it changes only with the config) and, with `[acl]
password_file`, the terminals' password file (the roster's terminals: who may log in)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from etong.acl.files import sync_acl_file
from etong.acl.passwords import HashTally, sync_password_file
from etong.config import Settings
from etong.logging import get_logger

if TYPE_CHECKING:
    from etong.acl import AclFiles

log = get_logger(__name__)

# Past this many `$7$` lines, a reload while each of them has a session (connected, or away
# with a persistent one) stalls mosquitto over 1 s for the hashes alone (~90 µs each,
# docs/SCALING.md): the whole of what a reload may cost.
ITERATED_HASHES_WARNED = 10_000


def install_acl(settings: Settings, files: AclFiles) -> None:
    """Replace the ACL file and the terminals' password file atomically where they changed;
    the broker's own reload (systemd's etong-acl.path, or SIGHUP to mosquitto) then puts them
    in force. OSError if either cannot be written."""
    acl = settings.acl
    assert acl is not None
    if sync_acl_file(acl.path, files.acl):
        log.info("acl_written", path=str(acl.path), format=acl.format)
    if acl.credentials is None or acl.password_file is None:
        return
    tally = HashTally()
    if sync_password_file(acl.credentials, acl.password_file, files.terminals, tally):
        log.info(
            "terminal_passwords_written",
            path=str(acl.password_file),
            terminals=len(files.terminals),
        )
    warn_of_iterated_hashes(acl.credentials, tally)


def warn_of_iterated_hashes(credentials: Path, tally: HashTally) -> None:
    """One warning per write when many terminals' hashes are `$7$`: each costs mosquitto a
    PBKDF2 run per connected terminal at every reload."""
    if tally.iterated > ITERATED_HASHES_WARNED:
        log.warning(
            "terminal_passwords_slow_hash",
            path=str(credentials),
            iterated=tally.iterated,
            terminals=tally.lines,
            fix=(
                "hash terminals' random passwords with `mosquitto_passwd -H sha512` ($6$): "
                "each $7$ line costs every mosquitto reload ~90 us per terminal with a session "
                "(docs/OPERATIONS.md)"
            ),
        )


def install_acl_or_log(settings: Settings, files: AclFiles) -> None:
    """`install_acl` on a roster reload: a failure is logged as a security event."""
    try:
        install_acl(settings, files)
    except OSError as exc:
        # The bridge serves the new roster, but the broker still enforces the old one:
        # a removed member may still log in. Loud: check-config also warns of it.
        log.error(  # noqa: TRY400 - the OS error says it all; no traceback wanted
            "acl_write_failed", error=str(exc), security_event=True
        )
