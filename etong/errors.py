"""The exceptions etong raises, under one root so callers can catch the family.

    EtongError
    ├── ConfigError      invalid configuration or roster; carries every problem found (exit 2)
    ├── BrokerError      the MQTT broker refused us or could not be reached
    └── StoreError       the store could not be opened, migrated or written
        ├── StoreFullError     a write was refused for lack of space (the daemon waits)
        ├── LeaseLostError     a partition's write was fenced off: its lease is no longer ours
        ├── StoreUnavailableError  the PostgreSQL server cannot be reached, or the connection
        │                          was lost in the middle of a call
        ├── StoreConflictError     a batch lost a race for an event id to another partition
        ├── StoreFailedError       the database driver raised what etong does not expect (a
        │                          violated constraint, a bug in our SQL, a failing disk)
        ├── StoreBusyError         the store rolled a call back to break a lock (deadlock
        │                          victim, serialization failure, lock or statement timeout,
        │                          SQLite's write lock held elsewhere); retrying may succeed
        ├── SealedValueError       a stored value did not open (moved to another row, altered,
        │                          or its month's data key shredded): reported, never served
        └── StoreRefusedError  the daemon will not run on this store (exit 3)
            ├── StoreCorruptError  it failed its integrity check
            ├── StoreMissingError  it vanished where one existed before
            └── KeyRefusedError    the key-encryption key is missing, unreadable or not the
                                   one the store's data keys were wrapped with

A bad *message* is never an exception that escapes: validation turns it into a
`Rejection` value (see `etong.core.validate`), which becomes a `rejected` receipt.
Third-party errors are translated where they enter (`raise BrokerError(...) from exc`); no
driver exception (asyncpg's, sqlite3's) leaves `etong.store`. What a loop does with each of
these is decided in one place: `etong.failures` (transient, lease lost, fatal).
"""

from __future__ import annotations


class EtongError(Exception):
    """Root of every error etong raises on purpose."""


class ConfigError(EtongError):
    """The configuration or the roster is invalid; `problems` lists every one found."""

    def __init__(self, problems: list[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))


class BrokerError(EtongError):
    """The MQTT broker could not be reached or refused the connection."""


class StoreError(EtongError):
    """The store could not be opened, migrated or written."""


class StoreFullError(StoreError):
    """A write was refused because the store's filesystem (or SQLite's page limit) is full.

    Nothing of the failed transaction was kept; the same work can be retried once there is
    space again (the bridge does, with a capped backoff).
    """

    def __init__(self, path: object, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"store full: {path} ({detail})")


class LeaseLostError(StoreError):
    """A partition's batch was refused because this instance no longer holds its lease.

    Raised by a fenced write (DESIGN §7) when the lease row's owner or epoch changed, or its
    expiry passed on the database's clock: nothing of the batch was kept, and the messages
    must not be acknowledged; the partition's new owner receives them again from the broker.
    """

    def __init__(self, partition: str, detail: str) -> None:
        self.partition = partition
        self.detail = detail
        super().__init__(f"lease lost: partition {partition} ({detail})")


class StoreUnavailableError(StoreError):
    """The PostgreSQL store cannot be reached, or the connection broke during a call.

    The message names the server and the database, never a password. The connection pool
    replaces a broken connection, so the next call may succeed. A write that failed this way
    may have committed or not (the COMMIT's answer was lost): run the batch again from its
    lookup, which sees what did commit, rather than writing the same rows again.
    """


class StoreConflictError(StoreError):
    """A batch was refused because another partition's batch took one of its event ids first.

    Between this batch's lookup and its write, an instance serving another station stored a
    report under the same event id (event ids are unique across the whole store). Nothing of
    the batch was kept; running it again from its lookup decides the report against the one
    now stored (another member's id: rejected; the same member's: a repeat).
    """

    def __init__(self, event_ids: list[str]) -> None:
        self.event_ids = list(event_ids)
        super().__init__(
            f"event id {event_ids[0]} (and {len(event_ids) - 1} more) stored meanwhile by "
            "another partition; nothing of the batch was kept, run it again from its lookup"
            if len(event_ids) > 1
            else f"event id {event_ids[0]} stored meanwhile by another partition; nothing of "
            "the batch was kept, run it again from its lookup"
        )


class StoreFailedError(StoreError):
    """The database raised an error etong has no better word for: a violated constraint, an
    SQL error, a failing disk. Its driver exception is the `__cause__`; the daemon stops on it
    (`etong.failures`: fatal), as retrying the same statement would fail the same way."""


class StoreBusyError(StoreError):
    """The store gave up a call because of another's locks; nothing of it was kept.

    A deadlock victim (SQLSTATE 40P01), a serialization failure (40001), a lock or statement
    timeout (55P03, 57014), or SQLite's write lock held by another process past its busy
    timeout. The same work can run again (`etong.failures` calls this transient).
    """

    def __init__(self, detail: str, *, code: str = "") -> None:
        self.detail = detail
        self.code = code
        """The SQLSTATE (PostgreSQL) or "SQLITE_BUSY" / "SQLITE_LOCKED"."""
        super().__init__(f"store busy: {detail}")


class StoreRefusedError(StoreError):
    """The daemon will not run on this store; restarting cannot fix it (exit code 3)."""


class StoreCorruptError(StoreRefusedError):
    """The store failed its integrity check (or is not an SQLite database at all)."""


class StoreMissingError(StoreRefusedError):
    """The store file is gone while the files that live beside it (key, lock) remain."""


class KeyRefusedError(StoreRefusedError):
    """The key-encryption key (DESIGN §9) is missing, unreadable, or does not unwrap the
    store's data keys: the daemon refuses to start (exit 3) rather than run half-working."""


class SealedValueError(StoreError):
    """A sealed value of the store did not open: copied from another row, altered, or sealed
    under a month's data key that was shredded. The message names the table, the column and
    the row's key, never the value."""

    def __init__(self, table: str, column: str, row_key: str, detail: str) -> None:
        self.table = table
        self.column = column
        self.row_key = row_key
        super().__init__(
            f"sealed value {table}.{column} of row {row_key} does not open ({detail}): "
            "not served; see docs/OPERATIONS.md, personal data at rest"
        )
