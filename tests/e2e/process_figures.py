"""What a running process costs, read from /proc (Linux): CPU seconds, RSS, descriptors.

For the figures the scale test prints at rest (tests/e2e/test_cluster_scale.py); never
asserted on: they depend on the machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def descriptors(pid: int) -> int:
    """Open file descriptors (sockets included)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
