"""Broker authorization derived from the roster (DESIGN §8): who may read and write which topic.

    rules.py    roster + settings → `AclRules` (pure): one identity per terminal, plus the bridge
    render.py   `AclRules` → a mosquitto `acl_file` or an EMQX `acl.conf` (pure)
    files.py    writing the rendered file atomically, and comparing it with what is installed

`etong acl` prints or writes the file; the daemon rewrites it on every roster reload when
`[acl] path` is set, and `etong check-config` warns when the installed file is stale.
"""

from __future__ import annotations

from etong.acl.files import acl_file_is_current, sync_acl_file, write_atomically
from etong.acl.render import AclFormat, render
from etong.acl.rules import AclRules, Grant, Identity, derive_rules
from etong.config import Settings
from etong.roster import Roster

__all__ = [
    "AclFormat",
    "AclRules",
    "Grant",
    "Identity",
    "acl_file_is_current",
    "acl_text",
    "derive_rules",
    "render",
    "sync_acl_file",
    "write_atomically",
]


def acl_text(roster: Roster, settings: Settings, fmt: AclFormat) -> str:
    """The broker's file for `roster` under `settings`; ConfigError naming what is wrong."""
    return render(derive_rules(roster, settings), fmt)
