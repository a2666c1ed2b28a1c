"""Broker authorization derived from the roster (DESIGN §8): who may read and write which topic.

    rules.py      settings → `AclRules` (pure): the bridge's users by name, terminals by
                  pattern, checked against the roster; and the roster's terminal user names
    render.py     `AclRules` → a mosquitto `acl_file` or an EMQX `acl.conf` (pure)
    files.py      writing the rendered file atomically, and comparing it with what is installed
    passwords.py  the terminals' password file: the roster's lines of the operator's credentials
    install.py    putting both in force from the daemon

`etong acl` prints or writes the file; the daemon rewrites it (and, with `[acl] password_file`,
the terminals' password file) at start and on every roster reload when `[acl]` is set, and
`etong check-config` warns when the installed file is stale.
"""

from __future__ import annotations

from dataclasses import dataclass

from etong.acl.files import acl_file_is_current, sync_acl_file, write_atomically
from etong.acl.render import AclFormat, render
from etong.acl.rules import AclRules, Grant, Identity, derive_rules, terminal_users
from etong.config import Settings
from etong.roster import Roster

__all__ = [
    "AclFiles",
    "AclFormat",
    "AclRules",
    "Grant",
    "Identity",
    "acl_file_is_current",
    "acl_files",
    "acl_text",
    "derive_rules",
    "render",
    "sync_acl_file",
    "terminal_users",
    "write_atomically",
]


def acl_text(roster: Roster, settings: Settings, fmt: AclFormat) -> str:
    """The broker's file for `roster` under `settings`; ConfigError naming what is wrong."""
    return render(derive_rules(roster, settings), fmt)


@dataclass(frozen=True, slots=True)
class AclFiles:
    """What the daemon puts in force for one roster: the ACL's text, and the user names the
    terminals' password file keeps."""

    acl: str
    terminals: frozenset[str]


def acl_files(roster: Roster, settings: Settings, fmt: AclFormat) -> AclFiles:
    """`acl_text` and the roster's terminal user names; ConfigError naming what is wrong."""
    return AclFiles(acl_text(roster, settings, fmt), terminal_users(roster))
