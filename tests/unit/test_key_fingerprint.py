"""The PII key's fingerprint: what a shared store records to tell keys apart without the key."""

from __future__ import annotations

import hashlib
import hmac

from etong.core.keys import key_fingerprint


def test_the_fingerprint_tells_keys_apart_and_is_stable() -> None:
    key = bytes(range(32))
    assert key_fingerprint(key) == key_fingerprint(bytes(range(32)))
    assert key_fingerprint(key) != key_fingerprint(bytes(range(1, 33)))
    # HMAC-SHA256 of a fixed message under the key: documented, so an operator can compute it.
    expected = hmac.new(key, b"etong-pii-key-fingerprint", hashlib.sha256).hexdigest()
    assert key_fingerprint(key) == expected


def test_the_fingerprint_does_not_contain_the_key() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    fingerprint = key_fingerprint(key)
    assert len(fingerprint) == 64
    assert key.hex() not in fingerprint and key.decode() not in fingerprint
