"""A started contender, as a round sees it: its processes, its stop, its log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from e2e.measures import BatchTotals


@dataclass(frozen=True)
class Contender:
    """A started contender: its processes, how to stop it, whether it still runs (an exit
    code if not: the first nonzero one of several processes), and its log (for failure
    messages). A contender on PostgreSQL also names the server's processes that work for it:
    (its database's backends, the server's background processes), read again at every call."""

    pids: tuple[int, ...]
    stop: Callable[[], dict[str, Any]]
    exit_code: Callable[[], int | None]
    log: Callable[[], str]
    store_pids: Callable[[], tuple[list[int], list[int]]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    """What the start measured (a cluster: how long until every station was served, by whom)."""
    batches: Callable[[], BatchTotals] | None = None
    """etong: (inbound messages committed, store transactions) so far, from every process's
    /metrics (`etong_batch_size` sum and count)."""
