"""Contenders A, W and WP: the naive republisher and the two wire relays, each a spawned child."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from e2e.baseline import republisher_main
from e2e.contender import Contender
from e2e.errors import BenchError
from e2e.load import PREFIX, TOPICS, BenchRoster
from e2e.paho_relay import paho_relay_main
from e2e.plan import Plan, Settings
from e2e.relay import Routes, relay_main


class ChildContender:
    """A contender that runs as a spawned child of this process (the republisher, the relay):
    `target(*args, ready)` sets `ready` once it is subscribed, then runs until terminated."""

    def __init__(self, what: str, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        context = multiprocessing.get_context("spawn")
        self.what = what
        self._ready = context.Event()
        self._process = context.Process(
            target=target, args=(*args, self._ready), name=f"bench-{what}", daemon=True
        )

    @property
    def pid(self) -> int:
        """The child's process id."""
        assert self._process.pid is not None
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until it is subscribed."""
        self._process.start()
        if not self._ready.wait(timeout):
            raise BenchError(f"the {self.what} was not subscribed within {timeout} s")

    def exit_code(self) -> int | None:
        """None while it runs."""
        return self._process.exitcode

    def stop(self) -> None:
        """Terminate it (it holds nothing worth a graceful stop)."""
        self._process.terminate()
        self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


def republisher(url: str, protocol: int, roster: BenchRoster) -> ChildContender:
    """Contender A, the naive republisher, not yet started."""
    inboxes = {grid: TOPICS.inbox(officer) for grid, officer in roster.officer_of.items()}
    return ChildContender("baseline republisher", republisher_main, (url, protocol, inboxes))


def wire_relay(url: str, protocol: int, roster: BenchRoster) -> ChildContender:
    """Contender W, the wire relay (`relay.py`), not yet started."""
    routes = Routes(PREFIX, dict(roster.officer_of), roster.contexts())
    return ChildContender("wire relay", relay_main, (url, protocol, routes))


def paho_relay(url: str, protocol: int, roster: BenchRoster) -> ChildContender:
    """Contender WP, the same relay with plain paho (`paho_relay.py`), not yet started."""
    routes = Routes(PREFIX, dict(roster.officer_of), roster.contexts())
    return ChildContender("plain-paho relay", paho_relay_main, (url, protocol, routes))


def start_child(child: ChildContender) -> Contender:
    """Start the republisher or the relay."""
    child.start()

    def stop() -> dict[str, Any]:
        child.stop()
        return {}

    return Contender((child.pid,), stop, child.exit_code, lambda: f"(the {child.what} has no log)")


def start_baseline(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
    """Start contender A, the naive republisher."""
    return start_child(republisher(url, settings.protocol, plan.roster))


def start_relay(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
    """Start contender W, the wire relay."""
    return start_child(wire_relay(url, settings.protocol, plan.roster))


def start_paho_relay(url: str, settings: Settings, plan: Plan, round_dir: Path) -> Contender:
    """Start contender WP, the plain-paho relay."""
    return start_child(paho_relay(url, settings.protocol, plan.roster))
