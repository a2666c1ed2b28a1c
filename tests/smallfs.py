"""A small real filesystem for disk-full tests: a tmpfs mounted for the test, then removed.

`fill()` writes a filler file until the filesystem refuses (ENOSPC); `free()` deletes it.
Mounting needs root (CAP_SYS_ADMIN); `mount_small_fs` raises `MountNotPermittedError` otherwise,
and each test says what it does then.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


class MountNotPermittedError(Exception):
    """This machine does not let the test mount a filesystem."""


class SmallFilesystem:
    """A mounted tmpfs of a few MiB at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.filler = path / "filler"

    def fill(self) -> None:
        """Take every free block, so the next write that needs space fails with ENOSPC."""
        chunk = b"\0" * 65536
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while chunk:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk = chunk[: len(chunk) // 2]
        finally:
            os.close(fd)
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        """Give the space back."""
        self.filler.unlink()


@contextlib.contextmanager
def mount_small_fs(
    size_mib: int = 8, *, owner: tuple[int, int] | None = None
) -> Iterator[SmallFilesystem]:
    """A tmpfs of `size_mib` MiB, unmounted and removed afterwards even if the test fails.

    `owner` (uid, gid): whose its root is (the PostgreSQL server's, for a tablespace on it).
    """
    path = Path(tempfile.mkdtemp(prefix="etong-smallfs-"))
    options = f"size={size_mib}m,mode=0700"
    if owner is not None:
        options += f",uid={owner[0]},gid={owner[1]}"
    try:
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise MountNotPermittedError(
                result.stderr.strip() or f"mount exited {result.returncode}"
            )
        try:
            yield SmallFilesystem(path)
        finally:
            # Lazy: a process the test failed to stop must not leave the mount behind.
            subprocess.run(["umount", "-l", str(path)], check=True)
    finally:
        path.rmdir()
