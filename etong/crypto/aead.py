"""Seal and open one value with an AEAD: SM4-GCM (GB/T 39786) or AES-256-GCM.

A sealed value is nonce (12 bytes) + ciphertext + tag (16 bytes). The nonce is NIST SP 800-38D
§8.2.1's deterministic construction: a fixed field of 8 random bytes drawn per `Aead` object
(per key and process) and a 4-byte counter, a new fixed field drawn before the counter wraps.
Two processes sealing with one key (a cluster, a restart) repeat a nonce only if they draw the
same 64-bit field; a `getrandom` call per value cost more than the AES itself. The associated data
is bound by the caller (the row's identity, or a data key's month), so a sealed value opens
only where it was sealed. Any failure to open (wrong key, wrong associated data, a changed
byte) is one `AeadError`, which never carries the value.

AES-256-GCM goes through `AESGCM`, one C call; SM4-GCM has no such shortcut in `cryptography`
and goes through `Cipher(algorithms.SM4(...), modes.GCM(...))`, several times slower per
value (measured in docs/BENCHMARKS.md, "Personal data at rest").
"""

from __future__ import annotations

import os
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CipherName = Literal["sm4-gcm", "aes-256-gcm"]
CIPHERS: Final[tuple[CipherName, ...]] = ("aes-256-gcm", "sm4-gcm")
KEY_BYTES: Final[dict[CipherName, int]] = {"aes-256-gcm": 32, "sm4-gcm": 16}
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
OVERHEAD: Final = NONCE_BYTES + TAG_BYTES


class AeadError(Exception):
    """A sealed value did not open: wrong key, wrong associated data, or altered bytes."""


def check_key(cipher: CipherName, key: bytes) -> None:
    """Raise ValueError unless `key` has the length `cipher` takes."""
    if len(key) != KEY_BYTES[cipher]:
        raise ValueError(f"{cipher} takes a {KEY_BYTES[cipher]}-byte key, not {len(key)} bytes")


class Aead:
    """One key of one cipher: `seal` and `open` values (AES's context is made once per key)."""

    def __init__(self, cipher: CipherName, key: bytes) -> None:
        check_key(cipher, key)
        self.cipher: CipherName = cipher
        self._key = key
        self._aes = AESGCM(key) if cipher == "aes-256-gcm" else None
        self._fixed = os.urandom(NONCE_BYTES - 4)
        self._counter = 0

    def _nonce(self) -> bytes:
        if self._counter == 0xFFFF_FFFF:
            self._fixed, self._counter = os.urandom(NONCE_BYTES - 4), 0
        self._counter += 1
        return self._fixed + self._counter.to_bytes(4, "big")

    def seal(self, plaintext: bytes, ad: bytes) -> bytes:
        """nonce + ciphertext + tag of `plaintext`, bound to `ad`."""
        nonce = self._nonce()
        if self._aes is not None:
            return nonce + self._aes.encrypt(nonce, plaintext, ad)
        enc = Cipher(algorithms.SM4(self._key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(ad)
        body = enc.update(plaintext) + enc.finalize()
        return nonce + body + enc.tag

    def open(self, sealed: bytes, ad: bytes) -> bytes:
        """The plaintext `seal` sealed, or `AeadError` when it does not authenticate."""
        if len(sealed) < OVERHEAD:
            raise AeadError("sealed value too short")
        nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        try:
            if self._aes is not None:
                return self._aes.decrypt(nonce, body, ad)
            tag, text = body[-TAG_BYTES:], body[:-TAG_BYTES]
            dec = Cipher(algorithms.SM4(self._key), modes.GCM(nonce, tag)).decryptor()
            dec.authenticate_additional_data(ad)
            return dec.update(text) + dec.finalize()
        except InvalidTag as exc:
            raise AeadError("sealed value does not authenticate") from exc
