"""Data keys per calendar month (UTC), and the format of a sealed value.

Every value sealed at time t uses the data key of t's month; the store keeps each month's key
wrapped by the key-encryption key (`kek.py`) in its `data_keys` table, where every instance of
a cluster reads the same one. Deleting a month's row (`purge`, once the month is past the
retention window) makes every copy of that month's values unreadable: crypto-shredding.

A sealed value: b"\\xe7\\x01" (format 1), the month as 6 ASCII digits (YYYYMM), then the AEAD's
nonce, ciphertext and tag (`aead.py`); 36 bytes more than the value. The associated data is
the row's identity, "table.column/row key", so a value copied into another row, or into
another column of its own row, does not open.
"""

from __future__ import annotations

import calendar
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from etong.crypto.aead import KEY_BYTES, Aead, AeadError, CipherName
from etong.crypto.kek import Kek, KekSource
from etong.errors import KeyRefusedError, SealedValueError

MAGIC = b"\xe7\x01"
HEADER_BYTES = len(MAGIC) + 6


class MissingDataKeyError(SealedValueError):
    """A sealed value's month has no data key here: shredded, or made by another instance
    since this one read the keys (the PostgreSQL store reads them again once)."""

    def __init__(self, table: str, column: str, row_key: str, month: str) -> None:
        self.month = month
        super().__init__(table, column, row_key, f"no data key for month {month}")


def month_of(t: float) -> str:
    """The calendar month (UTC) of unix time `t`, as "YYYY-MM"."""
    tm = time.gmtime(t)
    return f"{tm.tm_year:04d}-{tm.tm_mon:02d}"


def month_after(month: str) -> str:
    """The month following `month` ("YYYY-MM")."""
    year, mon = int(month[:4]), int(month[5:7])
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


def month_end(month: str) -> float:
    """The first instant (unix seconds, UTC) after `month`."""
    nxt = month_after(month)
    return float(calendar.timegm((int(nxt[:4]), int(nxt[5:7]), 1, 0, 0, 0, 0, 0, 0)))


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A `data_keys` row: a month's data key, wrapped by the KEK whose id it names."""

    month: str
    cipher: CipherName
    wrapped: bytes
    kek_id: str
    created_at: float


class DataKeys:
    """The store's data keys, unwrapped in memory; seals and opens values with them.

    New months' keys use `cipher`; a month keeps the cipher its key was made with, so changing
    `[store] cipher` takes effect from the next new month on.
    """

    def __init__(self, kek: Kek, cipher: CipherName) -> None:
        self.kek = kek
        self.cipher: CipherName = cipher
        self._aeads: dict[str, Aead] = {}
        # The last sealing instant's month, header and key: a batch seals all its values at
        # one `now`, and the month's computation cost as much as the AES.
        self._last: tuple[float, bytes, Aead] | None = None

    @classmethod
    def unwrapped(
        cls, source: KekSource, cipher: CipherName, wrapped: Sequence[WrappedKey]
    ) -> DataKeys:
        """The store's `wrapped` data keys opened with the KEK from `source` (created only
        when the store holds no data key yet); `KeyRefusedError` when it is not theirs."""
        keys = cls(source.load(create=not wrapped), cipher)
        for row in wrapped:
            keys.add(row)
        return keys

    @property
    def months(self) -> frozenset[str]:
        """The months whose key is unwrapped here."""
        return frozenset(self._aeads)

    def add(self, row: WrappedKey) -> None:
        """Unwrap `row` and keep its key; `KeyRefusedError` when this KEK did not wrap it."""
        if row.kek_id != self.kek.id:
            raise KeyRefusedError(
                f"the data key of {row.month} is wrapped by key-encryption key {row.kek_id}, "
                f"and {self.kek.origin} is key {self.kek.id}: start with the key the store was "
                "written with, or finish its rotation (etong rotate-key)"
            )
        try:
            key = self.kek.unwrap(row.month, row.cipher, row.wrapped)
        except AeadError as exc:
            raise KeyRefusedError(
                f"{self.kek.origin} does not unwrap the data key of {row.month}: wrong key, or "
                "the data_keys row was altered"
            ) from exc
        self._aeads[row.month] = Aead(row.cipher, key)

    def forget_before(self, month: str) -> None:
        """Drop the keys of months before `month` (shredded from the store by a purge)."""
        for m in [m for m in self._aeads if m < month]:
            del self._aeads[m]
        self._last = None

    def new_key(self, month: str, now: float) -> WrappedKey:
        """A fresh data key for `month`, wrapped (the store inserts it unless another
        instance's got there first, then reads back whichever won)."""
        key = os.urandom(KEY_BYTES[self.cipher])
        wrapped = self.kek.wrap(month, self.cipher, key)
        return WrappedKey(month, self.cipher, wrapped, self.kek.id, now)

    def seal(self, table: str, column: str, row_key: object, value: bytes, at: float) -> bytes:
        """`value` sealed under the key of `at`'s month, bound to the row's identity."""
        last = self._last
        if last is None or last[0] != at:
            month = month_of(at)
            found = self._aeads.get(month)
            if found is None:
                raise MissingDataKeyError(table, column, str(row_key), month)
            last = self._last = (at, MAGIC + (month[:4] + month[5:7]).encode(), found)
        return last[1] + last[2].seal(value, _ad(table, column, row_key))

    def open(self, table: str, column: str, row_key: object, sealed: bytes) -> bytes:
        """The value sealed in this row's `column`; `SealedValueError` when it does not open."""
        sealed = bytes(sealed)
        if sealed[: len(MAGIC)] != MAGIC or len(sealed) < HEADER_BYTES:
            raise SealedValueError(table, column, str(row_key), "not a sealed value")
        digits = sealed[len(MAGIC) : HEADER_BYTES].decode("ascii", errors="replace")
        month = f"{digits[:4]}-{digits[4:]}"
        aead = self._aeads.get(month)
        if aead is None:
            raise MissingDataKeyError(table, column, str(row_key), month)
        try:
            return aead.open(sealed[HEADER_BYTES:], _ad(table, column, row_key))
        except AeadError as exc:
            raise SealedValueError(
                table, column, str(row_key), "moved from another row, or altered"
            ) from exc


def _ad(table: str, column: str, row_key: object) -> bytes:
    return f"{table}.{column}/{row_key}".encode()
