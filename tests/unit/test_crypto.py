"""The cipher and the keys of personal data at rest (DESIGN §9): both AEADs, the KEK's sources
and wrapping, a month's data key, and a sealed value bound to its row."""

from __future__ import annotations

import calendar
import os
import sys
from pathlib import Path

import pytest

from etong.crypto.aead import CIPHERS, KEY_BYTES, Aead, AeadError, CipherName
from etong.crypto.kek import Kek, KekSource
from etong.crypto.keys import (
    DataKeys,
    MissingDataKeyError,
    month_after,
    month_end,
    month_of,
)
from etong.errors import KeyRefusedError, SealedValueError

ID_NUMBER = "330211198809013088"
JAN_2026 = float(calendar.timegm((2026, 1, 15, 12, 0, 0)))
DEC_2026 = float(calendar.timegm((2026, 12, 31, 23, 59, 59)))


@pytest.fixture(params=CIPHERS)
def cipher(request: pytest.FixtureRequest) -> CipherName:
    name: CipherName = request.param
    return name


def test_a_value_opens_with_its_key_and_associated_data(cipher: CipherName) -> None:
    aead = Aead(cipher, os.urandom(KEY_BYTES[cipher]))
    sealed = aead.seal(ID_NUMBER.encode(), b"events.payload/E1")
    assert ID_NUMBER.encode() not in sealed
    assert len(sealed) == len(ID_NUMBER) + 28
    assert aead.open(sealed, b"events.payload/E1") == ID_NUMBER.encode()


def test_two_seals_of_one_value_differ(cipher: CipherName) -> None:
    aead = Aead(cipher, os.urandom(KEY_BYTES[cipher]))
    assert aead.seal(b"same", b"ad") != aead.seal(b"same", b"ad")  # a fresh nonce each time


def test_another_key_does_not_open_it(cipher: CipherName) -> None:
    sealed = Aead(cipher, os.urandom(KEY_BYTES[cipher])).seal(b"secret", b"ad")
    with pytest.raises(AeadError):
        Aead(cipher, os.urandom(KEY_BYTES[cipher])).open(sealed, b"ad")


def test_other_associated_data_does_not_open_it(cipher: CipherName) -> None:
    aead = Aead(cipher, os.urandom(KEY_BYTES[cipher]))
    sealed = aead.seal(b"secret", b"events.payload/E1")
    with pytest.raises(AeadError):
        aead.open(sealed, b"events.payload/E2")


@pytest.mark.parametrize("where", [0, 12, -1], ids=["nonce", "ciphertext", "tag"])
def test_a_changed_byte_does_not_open(cipher: CipherName, where: int) -> None:
    aead = Aead(cipher, os.urandom(KEY_BYTES[cipher]))
    sealed = bytearray(aead.seal(b"secret value", b"ad"))
    sealed[where] ^= 0x01
    with pytest.raises(AeadError):
        aead.open(bytes(sealed), b"ad")


def test_a_truncated_value_does_not_open(cipher: CipherName) -> None:
    aead = Aead(cipher, os.urandom(KEY_BYTES[cipher]))
    with pytest.raises(AeadError):
        aead.open(aead.seal(b"x", b"ad")[:20], b"ad")


def test_a_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="16-byte"):
        Aead("sm4-gcm", os.urandom(32))


def test_months_are_utc_calendar_months() -> None:
    assert month_of(JAN_2026) == "2026-01"
    assert month_of(DEC_2026) == "2026-12"
    assert month_after("2026-12") == "2027-01"
    assert month_after("2026-01") == "2026-02"
    assert month_end("2026-12") == calendar.timegm((2027, 1, 1, 0, 0, 0))
    assert month_of(month_end("2026-12") - 0.001) == "2026-12"


def _keys(cipher: CipherName = "aes-256-gcm", kek: Kek | None = None) -> DataKeys:
    keys = DataKeys(kek or Kek(os.urandom(32), "test"), cipher)
    keys.add(keys.new_key("2026-01", JAN_2026))
    return keys


def test_a_sealed_value_opens_only_in_its_own_row_and_column(cipher: CipherName) -> None:
    keys = _keys(cipher)
    sealed = keys.seal("events", "payload", "E1", ID_NUMBER.encode(), JAN_2026)
    assert keys.open("events", "payload", "E1", sealed) == ID_NUMBER.encode()
    for table, column, key in (
        ("events", "payload", "E2"),
        ("events", "summary", "E1"),
        ("deliveries", "context", "E1"),
    ):
        with pytest.raises(SealedValueError) as caught:
            keys.open(table, column, key, sealed)
        assert f"{table}.{column} of row {key}" in str(caught.value)
        assert ID_NUMBER not in str(caught.value)


def test_a_value_of_a_month_without_a_key_is_refused_naming_the_month() -> None:
    keys = _keys()
    with pytest.raises(MissingDataKeyError) as caught:
        keys.seal("events", "payload", "E1", b"x", DEC_2026)
    assert caught.value.month == "2026-12"
    sealed = keys.seal("events", "payload", "E1", b"x", JAN_2026)
    keys.forget_before("2026-02")  # shredded by a purge
    with pytest.raises(MissingDataKeyError):
        keys.open("events", "payload", "E1", sealed)


def test_a_clear_value_is_not_taken_for_a_sealed_one() -> None:
    with pytest.raises(SealedValueError, match="not a sealed value"):
        _keys().open("events", "payload", "E1", b'{"event_id": "E1"}')


def test_a_data_key_unwraps_only_with_its_kek_and_in_its_month() -> None:
    kek = Kek(os.urandom(32), "test")
    keys = DataKeys(kek, "sm4-gcm")
    row = keys.new_key("2026-01", JAN_2026)
    other = DataKeys(Kek(os.urandom(32), "another"), "sm4-gcm")
    with pytest.raises(KeyRefusedError, match="wrapped by key-encryption key"):
        other.add(row)
    moved = row.__class__("2026-02", row.cipher, row.wrapped, row.kek_id, row.created_at)
    with pytest.raises(KeyRefusedError, match="does not unwrap the data key of 2026-02"):
        keys.add(moved)
    keys.add(row)
    assert keys.months == {"2026-01"}


def test_a_kek_file_is_created_only_when_allowed(tmp_path: Path) -> None:
    source = KekSource(tmp_path / "kek.key")
    with pytest.raises(KeyRefusedError, match="key-encryption key is missing"):
        source.load(create=False)
    made = source.load(create=True)
    assert (tmp_path / "kek.key").stat().st_mode & 0o777 == 0o600
    assert source.load(create=False).id == made.id


def test_a_kek_of_the_wrong_length_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kek.key").write_bytes(os.urandom(20))
    with pytest.raises(KeyRefusedError, match="20 bytes; it must be 32"):
        KekSource(tmp_path / "kek.key").load(create=False)


def test_a_key_command_prints_the_kek_in_hex(tmp_path: Path) -> None:
    key = os.urandom(32)
    script = tmp_path / "kms"
    script.write_text(f"print('{key.hex()}')\n", encoding="utf-8")
    from_command = KekSource(tmp_path / "unused", f"{sys.executable} {script}").load(create=False)
    (tmp_path / "kek.key").write_bytes(key)
    assert from_command.id == KekSource(tmp_path / "kek.key").load(create=False).id


def test_a_failing_key_command_is_refused_with_its_stderr_not_its_stdout(tmp_path: Path) -> None:
    script = tmp_path / "kms"
    script.write_text(
        "import sys\nprint('00' * 32)\nprint('kms: token expired', file=sys.stderr)\nsys.exit(4)\n",
        encoding="utf-8",
    )
    with pytest.raises(KeyRefusedError) as caught:
        KekSource(tmp_path / "unused", f"{sys.executable} {script}").load(create=False)
    assert "exited with status 4: kms: token expired" in str(caught.value)
    assert "00" * 32 not in str(caught.value)


def test_a_key_command_printing_no_hex_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyRefusedError, match="64 hex characters"):
        KekSource(tmp_path / "unused", "echo not-a-key").load(create=False)
