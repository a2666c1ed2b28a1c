"""The one failure policy: what every loop does with an error it meets.

Every long-running loop of the daemon — ingest and its drain, the re-send scheduler and its
re-publish pass, the retention purge, the gauges, the cluster's lease ticks — asks `classify`
what an error means, instead of deciding by itself which errors to catch. There are three
answers:

    error                     kind        what the loop does                        exit
    StoreConflictError        transient   decide the batch again at once            -
    StoreBusyError            transient   back off (1 s doubling to 30 s), retry    -
    StoreFullError            transient   back off, retry; /readyz "store full"     -
    StoreUnavailableError     transient   back off, retry from a new lookup         -
    LeaseLostError            lease lost  the partition's runner ends; abandoned    -
    ConfigError               fatal       the daemon stops                          2
    KeyRefusedError           fatal       the daemon stops                          3
    SealedValueError          fatal       the daemon stops, naming the row          3
    StoreRefusedError         fatal       the daemon stops                          3
    anything else             fatal       the daemon stops                          1

`StoreConflictError`: another partition took one of the batch's event ids first.
`StoreBusyError`: a deadlock victim, a serialization failure, a lock or statement timeout,
SQLite's write lock held by another process. `StoreFullError`: SQLITE_FULL, SQLSTATE class
53. `StoreUnavailableError`: the server unreachable, the connection lost, no answer in time.
`LeaseLostError`: a fenced write refused, the partition is another instance's now.
`KeyRefusedError`: the key-encryption key missing, unreadable or not the one the store's data
keys were wrapped with. `SealedValueError`: a due or acked delivery's sealed context or
payload does not open (moved from another row, altered): a restart would meet the same row,
so the daemon stops with exit 3 and the message names table, column and row, never the value
(a history entry that does not open is only left out and logged: `store.sealing`).
`StoreRefusedError`: damaged, vanished, another key, a newer schema.
Anything else:
`StoreFailedError` (a constraint, our SQL, a failing disk), `BrokerError`, a bug.

Nothing of a batch is acknowledged before its commit, so retrying a transient failure never
loses or doubles a report (DESIGN §3). A fatal error ends the task that met it; the task's
group cancels its siblings and the daemon exits with the row's code (systemd restarts it).
The first row that matches wins: the table is ordered from the most specific class.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from etong.errors import (
    ConfigError,
    EtongError,
    KeyRefusedError,
    LeaseLostError,
    SealedValueError,
    StoreBusyError,
    StoreConflictError,
    StoreFullError,
    StoreRefusedError,
    StoreUnavailableError,
)

# A transient failure is retried after 1 s, then 2, 4 ... at most 30 s apart: soon enough to
# resume promptly when the store returns, rare enough to cost nothing meanwhile.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 30.0

EXIT_ERROR = 1
EXIT_USAGE = 2  # an invalid config or roster
EXIT_STORE_REFUSED = 3  # systemd's RestartPreventExitStatus lists it: a restart cannot help


class Kind(enum.Enum):
    """What a loop does with an error."""

    TRANSIENT = "transient"
    """Retry the same work (nothing of it was kept), after `Verdict.first_delay_s`."""
    LEASE_LOST = "lease lost"
    """Stop serving the partition at once; its next owner receives what was not acked."""
    FATAL = "fatal"
    """Stop the daemon with `Verdict.exit_code` (systemd restarts it)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy's answer for one error."""

    kind: Kind
    reason: str
    """A short name for logs and metrics, e.g. "store_full"."""
    first_delay_s: float = RETRY_FIRST_S
    exit_code: int = EXIT_ERROR

    @property
    def transient(self) -> bool:
        """True when the loop should retry."""
        return self.kind is Kind.TRANSIENT


# Ordered: the first row whose class matches decides.
POLICY: tuple[tuple[type[BaseException], Verdict], ...] = (
    (StoreConflictError, Verdict(Kind.TRANSIENT, "store_conflict", first_delay_s=0.0)),
    (StoreBusyError, Verdict(Kind.TRANSIENT, "store_busy")),
    (StoreFullError, Verdict(Kind.TRANSIENT, "store_full")),
    (StoreUnavailableError, Verdict(Kind.TRANSIENT, "store_unavailable")),
    (LeaseLostError, Verdict(Kind.LEASE_LOST, "lease_lost")),
    (ConfigError, Verdict(Kind.FATAL, "config", exit_code=EXIT_USAGE)),
    (KeyRefusedError, Verdict(Kind.FATAL, "key_refused", exit_code=EXIT_STORE_REFUSED)),
    (SealedValueError, Verdict(Kind.FATAL, "sealed_value", exit_code=EXIT_STORE_REFUSED)),
    (StoreRefusedError, Verdict(Kind.FATAL, "store_refused", exit_code=EXIT_STORE_REFUSED)),
)
_OTHERWISE = Verdict(Kind.FATAL, "error", exit_code=EXIT_ERROR)


def classify(exc: BaseException) -> Verdict:
    """The policy's verdict on `exc` (the first matching row of `POLICY`, else fatal)."""
    for cls, verdict in POLICY:
        if isinstance(exc, cls):
            return verdict
    return _OTHERWISE


class Backoff:
    """The wait before the next retry of a transient failure: RETRY_FIRST_S doubling to
    RETRY_MAX_S, or none for a verdict that says retry at once; `reset()` after a success."""

    def __init__(self, first_s: float = RETRY_FIRST_S, max_s: float = RETRY_MAX_S) -> None:
        self._first = first_s
        self._max = max_s
        self._next = first_s

    def delay(self, verdict: Verdict) -> float:
        """The wait before retrying after `verdict`; each waiting retry doubles the next."""
        if verdict.first_delay_s <= 0:
            return 0.0
        delay, self._next = self._next, min(self._next * 2, self._max)
        return delay

    def reset(self) -> None:
        """A success: the next failure waits the first delay again."""
        self._next = self._first


class FatalError(EtongError):
    """A task met a fatal error; carries the exit code the daemon ends with (`etong.cli`)."""

    def __init__(self, where: str, error: BaseException) -> None:
        self.where = where
        self.error = error
        self.exit_code = classify(error).exit_code
        super().__init__(f"{where} failed: {error!r}")
