"""What `etong --version` says: the release and the git commit it was built from.

`scripts/package` writes a `_build_info` module (`VERSION`, `COMMIT`) beside this one in the tree it
packages, so an installed etong names its build without git. A checkout has no such file and
asks git (`git describe`, with `-dirty` for uncommitted changes); anything else says "unknown".
"""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path
from typing import NamedTuple

from etong import __version__

UNKNOWN = "unknown"
GENERATED_MODULE = "etong._build_info"
# Where a checkout's etong/ sits: the folder holding .git.
CHECKOUT = Path(__file__).resolve().parent.parent


class BuildInfo(NamedTuple):
    """The version of this etong and the commit it was built from."""

    version: str
    commit: str

    def line(self) -> str:
        """The `etong --version` line."""
        return f"etong {self.version} (commit {self.commit})"


def build_info(checkout: Path = CHECKOUT) -> BuildInfo:
    """The packaged build's record, else the checkout's version and git commit."""
    try:
        generated = importlib.import_module(GENERATED_MODULE)
    except ImportError:
        return BuildInfo(__version__, git_commit(checkout))
    return BuildInfo(str(generated.VERSION), str(generated.COMMIT))


def git_commit(checkout: Path) -> str:
    """`git describe --always --dirty` of `checkout`, or "unknown" when it is not a git
    checkout (an installed etong's site-packages may sit inside someone else's) or git is
    missing."""
    if not (checkout / ".git").exists():
        return UNKNOWN
    try:
        result = subprocess.run(
            ["git", "-C", str(checkout), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    described = result.stdout.strip()
    return described if result.returncode == 0 and described else UNKNOWN
