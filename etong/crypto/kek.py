"""The key-encryption key (KEK): where it comes from, and the data keys it wraps.

The KEK never enters the store (DESIGN §9). It is 32 bytes, read from `[store] kek_file` or
printed by `[store] key_command` (an operator's KMS or HSM client: 64 hex characters on
stdout). It only wraps data keys (`keys.py`), so replacing it (`etong rotate-key`) re-wraps a
handful of rows and re-encrypts no report.

A wrapped data key is sealed with the data key's own cipher under a key derived from the KEK
(HKDF-SHA256, one per cipher: SM4 takes 16 bytes, AES-256 32), bound to the month and the
cipher: a wrapped key copied to another month's row does not unwrap.
"""

from __future__ import annotations

import hashlib
import hmac
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from etong.crypto.aead import KEY_BYTES, Aead, AeadError, CipherName
from etong.errors import KeyRefusedError
from etong.keyfile import load_or_create_key

KEK_BYTES = 32
COMMAND_TIMEOUT_S = 30.0
_ID_MESSAGE = b"etong-kek-id"


class Kek:
    """A key-encryption key: wraps and unwraps data keys; `id` names it without revealing it."""

    def __init__(self, key: bytes, origin: str) -> None:
        if len(key) != KEK_BYTES:
            raise KeyRefusedError(
                f"the key-encryption key from {origin} is {len(key)} bytes; it must be {KEK_BYTES}"
            )
        self.origin = origin
        self.id = hmac.new(key, _ID_MESSAGE, hashlib.sha256).hexdigest()[:16]
        self._aeads = {
            cipher: Aead(cipher, _derive(key, cipher)) for cipher in ("aes-256-gcm", "sm4-gcm")
        }

    def wrap(self, month: str, cipher: CipherName, data_key: bytes) -> bytes:
        """`data_key` sealed for the store's `data_keys` row of `month`."""
        return self._aeads[cipher].seal(data_key, _wrap_ad(month, cipher))

    def unwrap(self, month: str, cipher: CipherName, wrapped: bytes) -> bytes:
        """The data key of `month`, or `AeadError` when this KEK did not wrap it."""
        return self._aeads[cipher].open(wrapped, _wrap_ad(month, cipher))


def _derive(key: bytes, cipher: CipherName) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES[cipher],
        salt=None,
        info=b"etong kek " + cipher.encode(),
    ).derive(key)


def _wrap_ad(month: str, cipher: CipherName) -> bytes:
    return f"etong/data_keys/{month}/{cipher}".encode()


@dataclass(frozen=True, slots=True)
class KekSource:
    """Where the KEK comes from: `command` when set, else `file`."""

    file: Path
    command: str | None = None

    def load(self, *, create: bool) -> Kek:
        """The KEK. `create`: make the file (mode 0600) when it is missing; only allowed
        while the store holds no data key yet. Any problem is `KeyRefusedError` (exit 3)."""
        if self.command is not None:
            return Kek(_run_command(self.command), f"store.key_command ({self.command})")
        origin = f"store.kek_file ({self.file})"
        try:
            key = self.file.read_bytes() if not create else load_or_create_key(self.file)
        except FileNotFoundError as exc:
            raise KeyRefusedError(
                f"the key-encryption key is missing: {origin} does not exist, and the store "
                "holds data keys wrapped by one. Copy the file from an instance serving this "
                "store (mode 0600) or set store.key_command; never create a new one"
            ) from exc
        except (OSError, ValueError) as exc:
            raise KeyRefusedError(f"cannot read the key-encryption key {origin}: {exc}") from exc
        return Kek(key, origin)


def _run_command(command: str) -> bytes:
    """The 32 bytes `command` prints as 64 hex characters; its stderr's first line on failure
    (never its stdout, which may hold a key)."""
    try:
        done = subprocess.run(  # the operator's own command, no shell
            shlex.split(command),
            capture_output=True,
            timeout=COMMAND_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise KeyRefusedError(f"store.key_command could not run: {exc}") from exc
    if done.returncode != 0:
        first = (done.stderr.decode(errors="replace").strip().splitlines() or [""])[0][:200]
        raise KeyRefusedError(f"store.key_command exited with status {done.returncode}: {first}")
    try:
        return bytes.fromhex(done.stdout.decode().strip())
    except ValueError as exc:
        raise KeyRefusedError(
            "store.key_command must print the key as 64 hex characters on stdout"
        ) from exc


__all__ = ["AeadError", "Kek", "KekSource"]
