"""Putting the roster's ACL in force from the daemon: at start (an error is exit 2) and on
each roster reload (an error is logged loudly; the broker keeps the previous rules).

Two files: the ACL (patterns, so it changes only with the config) and, with `[acl]
password_file`, the terminals' password file (the roster's terminals: who may log in)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from etong.acl.files import sync_acl_file
from etong.acl.passwords import sync_password_file
from etong.config import Settings
from etong.logging import get_logger

if TYPE_CHECKING:
    from etong.acl import AclFiles

log = get_logger(__name__)


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
    if sync_password_file(acl.credentials, acl.password_file, files.terminals):
        log.info(
            "terminal_passwords_written",
            path=str(acl.password_file),
            terminals=len(files.terminals),
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
