"""The failure policy's table (`etong/failures.py`), row by row, and the store's translation of
driver errors into the errors the table knows — plain values, no database.
tests/integration/test_failure_policy.py meets the same rows with real failures."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from etong.errors import (
    BrokerError,
    ConfigError,
    KeyRefusedError,
    LeaseLostError,
    SealedValueError,
    StoreBusyError,
    StoreConflictError,
    StoreCorruptError,
    StoreError,
    StoreFailedError,
    StoreFullError,
    StoreMissingError,
    StoreUnavailableError,
)
from etong.failures import (
    EXIT_ERROR,
    EXIT_STORE_REFUSED,
    EXIT_USAGE,
    RETRY_FIRST_S,
    RETRY_MAX_S,
    Backoff,
    FatalError,
    Kind,
    classify,
)
from etong.store.postgres_connect import Target, translate
from etong.store.sqlite import SqliteStore

TARGET = Target.from_url("postgresql://etong@db.example:5432/etong")


@pytest.mark.parametrize(
    ("error", "kind", "reason", "waits", "exit_code"),
    [
        (StoreConflictError(["E1"]), Kind.TRANSIENT, "store_conflict", False, EXIT_ERROR),
        (StoreBusyError("deadlock", code="40P01"), Kind.TRANSIENT, "store_busy", True, EXIT_ERROR),
        (StoreFullError("/s", "no space left"), Kind.TRANSIENT, "store_full", True, EXIT_ERROR),
        (StoreUnavailableError("gone"), Kind.TRANSIENT, "store_unavailable", True, EXIT_ERROR),
        (LeaseLostError("s1", "epoch 3"), Kind.LEASE_LOST, "lease_lost", True, EXIT_ERROR),
        (ConfigError(["roster.path: missing"]), Kind.FATAL, "config", True, EXIT_USAGE),
        (KeyRefusedError("wrong KEK"), Kind.FATAL, "key_refused", True, EXIT_STORE_REFUSED),
        (
            SealedValueError("deliveries", "context", "D2", "moved from another row"),
            Kind.FATAL,
            "sealed_value",
            True,
            EXIT_STORE_REFUSED,
        ),
        (StoreCorruptError("damaged"), Kind.FATAL, "store_refused", True, EXIT_STORE_REFUSED),
        (StoreMissingError("vanished"), Kind.FATAL, "store_refused", True, EXIT_STORE_REFUSED),
        (StoreFailedError("no such table"), Kind.FATAL, "error", True, EXIT_ERROR),
        (StoreError("closed"), Kind.FATAL, "error", True, EXIT_ERROR),
        (BrokerError("refused"), Kind.FATAL, "error", True, EXIT_ERROR),
        (KeyError("a bug"), Kind.FATAL, "error", True, EXIT_ERROR),
    ],
)
def test_every_row_of_the_table_says_what_a_loop_does(
    error: BaseException, kind: Kind, reason: str, waits: bool, exit_code: int
) -> None:
    verdict = classify(error)
    assert (verdict.kind, verdict.reason, verdict.exit_code) == (kind, reason, exit_code)
    assert verdict.transient is (kind is Kind.TRANSIENT)
    assert (verdict.first_delay_s > 0) is waits


def test_the_backoff_doubles_to_its_cap_and_starts_again_after_a_success() -> None:
    backoff, wait = Backoff(), classify(StoreUnavailableError("gone"))
    delays = [backoff.delay(wait) for _ in range(7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert (delays[0], delays[-1]) == (RETRY_FIRST_S, RETRY_MAX_S)
    assert backoff.delay(classify(StoreConflictError(["E1"]))) == 0.0  # at once, no doubling
    backoff.reset()
    assert backoff.delay(wait) == RETRY_FIRST_S


def test_a_fatal_error_carries_its_rows_exit_code_and_where_it_struck() -> None:
    fatal = FatalError("task purge", StoreCorruptError("damaged"))
    assert fatal.exit_code == EXIT_STORE_REFUSED
    assert "task purge failed" in str(fatal) and "damaged" in str(fatal)
    assert FatalError("task ingest", StoreFailedError("x")).exit_code == EXIT_ERROR


@pytest.mark.parametrize(
    ("driver_error", "translated", "code"),
    [
        (asyncpg.DeadlockDetectedError("deadlock detected"), StoreBusyError, "40P01"),
        (asyncpg.SerializationError("could not serialize"), StoreBusyError, "40001"),
        (asyncpg.LockNotAvailableError("lock timeout"), StoreBusyError, "55P03"),
        (asyncpg.QueryCanceledError("statement timeout"), StoreBusyError, "57014"),
        (asyncpg.AdminShutdownError("terminating connection"), StoreUnavailableError, None),
        (asyncpg.DiskFullError("could not extend file"), StoreFullError, None),
        (asyncpg.UniqueViolationError("duplicate key"), StoreFailedError, None),
        (asyncpg.UndefinedTableError("no such table"), StoreFailedError, None),
    ],
)
def test_no_postgresql_driver_error_leaves_the_store_untranslated(
    driver_error: Exception, translated: type[StoreError], code: str | None
) -> None:
    out = translate(TARGET, driver_error)
    assert type(out) is translated
    assert "db.example:5432" in str(out)
    if code is not None:
        assert isinstance(out, StoreBusyError) and out.code == code


def test_an_error_of_ours_inside_a_store_call_passes_through_unchanged() -> None:
    ours = LeaseLostError("s1", "epoch 2")
    assert translate(TARGET, ours) is ours


def _sqlite_error(code: int, message: str) -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError(message)
    exc.sqlite_errorcode = code
    return exc


@pytest.mark.parametrize(
    ("code", "translated"),
    [
        (sqlite3.SQLITE_BUSY, StoreBusyError),
        (sqlite3.SQLITE_LOCKED, StoreBusyError),
        (sqlite3.SQLITE_FULL, StoreFullError),
        (sqlite3.SQLITE_CORRUPT, StoreFailedError),
        (sqlite3.SQLITE_ERROR, StoreFailedError),
    ],
)
def test_no_sqlite_error_of_a_write_leaves_the_store_untranslated(
    code: int, translated: type[StoreError], tmp_path: Path
) -> None:
    # `_write_failed` reads only the store's path and sets `full`: no database needed.
    store = SqliteStore.__new__(SqliteStore)
    store.path = tmp_path / "etong.db"
    store.full = None
    out = store._write_failed(_sqlite_error(code, "database is locked"))
    assert type(out) is translated
    assert (store.full is out) is (translated is StoreFullError)
