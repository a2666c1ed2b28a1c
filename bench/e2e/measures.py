"""Measuring the processes of a round: CPU seconds, peak RSS, other processes' share of the
machine, and etong's batch sizes from its /metrics."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import psutil

from etong.devkit.mosquitto import LocalMosquitto

RSS_SAMPLE_S = 0.1


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process (and its waited-for children) used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system + times.children_user + times.children_system)


class RssSampler:
    """Samples the RSS of some processes (together) every 100 ms on a thread; `peak_mb` is the
    largest sum seen."""

    def __init__(self, *pids: int) -> None:
        self._processes = [psutil.Process(pid) for pid in pids]
        self._stop = threading.Event()
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        while True:
            rss = 0
            for process in self._processes:
                with contextlib.suppress(psutil.Error):
                    rss += int(process.memory_info().rss)
            if rss:
                self.peak = max(self.peak, rss)
                self.samples.append((time.monotonic() - started, rss))
            if self._stop.wait(RSS_SAMPLE_S):
                return

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (safe to call twice)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __enter__(self) -> RssSampler:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def peak_mb(self) -> float:
        """The peak RSS in MiB."""
        return self.peak / 2**20


def mosquitto_pid(broker: LocalMosquitto) -> int | None:
    """The pid of `broker`'s process: our child running mosquitto with its config file."""
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            if str(broker.config_path) in child.cmdline():
                return int(child.pid)
    return None


@dataclass(frozen=True)
class BatchTotals:
    """What etong's /metrics counted so far: inbound messages committed, store transactions,
    and the seconds its batches spent in each stage (`etong_batch_stage_seconds`)."""

    messages: float = 0.0
    batches: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def mean_batch_since(self, before: BatchTotals) -> float:
        """Inbound messages per store transaction since `before`."""
        return (self.messages - before.messages) / max(1.0, self.batches - before.batches)

    def stage_ms_since(self, before: BatchTotals) -> dict[str, float]:
        """The mean milliseconds a batch spent in each stage since `before`."""
        batches = max(1.0, self.batches - before.batches)
        return {
            stage: 1000 * (seconds - before.stage_seconds.get(stage, 0.0)) / batches
            for stage, seconds in self.stage_seconds.items()
        }


_STAGE_SUM = re.compile(r'^etong_batch_stage_seconds_sum\{stage="(\w+)"\} (\S+)$')


def batch_totals(ports: Iterable[int]) -> BatchTotals:
    """`BatchTotals` over the etong processes whose /metrics listen on `ports`."""
    messages = batches = 0.0
    stages: dict[str, float] = {}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "etong_batch_size_sum":
                messages += float(value)
            elif name == "etong_batch_size_count":
                batches += float(value)
            elif match := _STAGE_SUM.match(line):
                stages[match[1]] = stages.get(match[1], 0.0) + float(match[2])
    return BatchTotals(messages, batches, stages)


def cpu_of(pids: Iterable[int | None]) -> float:
    """The CPU seconds used so far by these processes together (None and gone ones count 0)."""
    total = 0.0
    for pid in pids:
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                total += cpu_seconds(pid)
    return total


class CpuMeter:
    """The CPU seconds a set of processes used since the meter was made; the set is asked
    again at the end (a process started meanwhile counts from its start, one that ended
    meanwhile is lost: the store's connection pools grow under load, and rarely shrink)."""

    def __init__(self, pids: Callable[[], Iterable[int | None]]) -> None:
        self._pids = pids
        self._start = {pid: cpu_of([pid]) for pid in pids() if pid is not None}

    def seconds(self) -> float:
        """Since the meter was made."""
        now = {pid for pid in self._pids() if pid is not None} | set(self._start)
        return sum(max(0.0, cpu_of([pid]) - self._start.get(pid, 0.0)) for pid in now)


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine used so far (guest time is inside user)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


class ForeignLoad:
    """How much of the machine processes other than ours used while a phase ran.

    Other work on a shared machine (tests, other benchmarks) takes CPU from the contenders;
    a round where it did is not comparable, and the table says so.
    """

    def __init__(self, ours: Callable[[], Iterable[int | None]]) -> None:
        self._busy0 = machine_busy_seconds()
        self._ours = CpuMeter(ours)
        self._t0 = time.monotonic()

    def wall(self) -> float:
        """Seconds since the phase began."""
        return max(1e-9, time.monotonic() - self._t0)

    def share(self) -> float:
        """Their CPU seconds over the phase's wall time times the cpu count (0..1)."""
        wall = self.wall()
        theirs = (machine_busy_seconds() - self._busy0) - self._ours.seconds()
        return max(0.0, theirs) / (wall * (os.cpu_count() or 1))
