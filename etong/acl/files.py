"""Installing a rendered ACL: atomically, so a broker reloading at any moment reads a whole file.

The new text goes to a temporary file in the same folder (same file system, so the rename is
atomic), is flushed to disk, and is then renamed over the old one (POSIX rename(2): a reader
opens either the old file or the new one, never a mix). The folder is synced too, so after a
power loss the name points at a complete file. The mode is set explicitly (0640 by default:
the broker's group reads it; the umask of a hardened service would otherwise make it 0600).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

DEFAULT_MODE = 0o640


def write_atomically(path: Path, text: str, *, mode: int = DEFAULT_MODE) -> None:
    """Replace `path` with `text` (UTF-8) in one step; OSError when it cannot be written."""
    data = text.encode("utf-8")
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            os.fchmod(fd, mode)  # O_CREAT's mode is reduced by the umask; this is not
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    fsync_folder(path.parent)


def fsync_folder(folder: Path) -> None:
    """Sync a folder so a rename in it survives a power loss (where the file system can)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some file systems do not open folders; the rename itself already happened
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs a folder; the data itself was synced above
    finally:
        os.close(fd)


def acl_file_is_current(path: Path, text: str) -> bool:
    """Whether `path` holds exactly `text` (False when it is missing or unreadable)."""
    try:
        return path.read_bytes() == text.encode("utf-8")
    except OSError:
        return False


def sync_acl_file(path: Path, text: str) -> bool:
    """Write `text` to `path` unless it already holds it; True when the file was written.

    Writing only on a change keeps a watching broker (systemd's etong-acl.path) from reloading
    for nothing at every daemon start.
    """
    if acl_file_is_current(path, text):
        return False
    write_atomically(path, text)
    return True
