"""Putting the roster's ACL in force from the daemon: at start (an error is exit 2) and on
each roster reload (an error is logged loudly; the broker keeps the previous rules)."""

from __future__ import annotations

from etong.acl.files import sync_acl_file
from etong.config import Settings
from etong.logging import get_logger

log = get_logger(__name__)


def install_acl(settings: Settings, text: str) -> None:
    """Replace the ACL file atomically if it changed; the broker's own reload (systemd's
    etong-acl.path, or SIGHUP to mosquitto) then puts it in force. OSError if it cannot."""
    assert settings.acl is not None
    path = settings.acl.path
    if sync_acl_file(path, text):
        log.info("acl_written", path=str(path), format=settings.acl.format)


def install_acl_or_log(settings: Settings, text: str) -> None:
    """`install_acl` on a roster reload: a failure is logged as a security event."""
    try:
        install_acl(settings, text)
    except OSError as exc:
        # The bridge serves the new roster, but the broker still enforces the old one:
        # a removed member may still publish. Loud: check-config also warns of it.
        log.error(  # noqa: TRY400 - the OS error says it all; no traceback wanted
            "acl_write_failed", error=str(exc), security_event=True
        )
