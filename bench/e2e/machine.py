"""What the numbers were measured on (the machine) and with (the code)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import psutil

from etong.devkit.mosquitto import find_mosquitto


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mosquitto_version() -> str:
    try:
        out = subprocess.run(
            [find_mosquitto(), "-h"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].removeprefix("mosquitto version ").strip() if first else "unknown"


def _filesystem(path: Path) -> str:
    best = ""
    fstype = "unknown"
    for part in psutil.disk_partitions(all=True):
        if str(path).startswith(part.mountpoint) and len(part.mountpoint) > len(best):
            best, fstype = part.mountpoint, part.fstype
    return fstype


def code_info() -> dict[str, Any]:
    """Which etong was measured: the git commit, and whether etong/ had uncommitted changes."""
    root = Path(__file__).resolve().parents[2]  # bench/e2e/machine.py

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip()

    return {
        "git_head": git("rev-parse", "--short", "HEAD") or "unknown",
        "etong_uncommitted_changes": bool(git("status", "--porcelain", "--", "etong")),
    }


def machine_info(workdir: Path) -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mosquitto": _mosquitto_version(),
        "paho_mqtt": importlib.metadata.version("paho-mqtt"),
        "store_filesystem": _filesystem(workdir.resolve()),
    }
