"""Throwaway certificates for tests that need TLS, made with the `openssl` command line.

`make_tls_files(folder)` writes, into a test's own temporary folder: a CA; a server certificate
for 127.0.0.1 and localhost that this CA signed; a client certificate it signed, for mutual TLS;
and a second CA (the "wrong CA" an operator might copy into `ca_file`) with a client
certificate of its own, which a broker trusting only the first CA refuses. EC P-256 keys
(quick to make), one day of validity, nothing committed.

The extensions are the ones a strict verifier wants (basicConstraints, keyUsage, key
identifiers, subjectAltName), so a verification failure in a test is the one the test meant.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Our own openssl config, so the system's openssl.cnf (which differs between distributions)
# adds nothing to these certificates.
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""
VALID_DAYS = "1"


@dataclass(frozen=True)
class TlsFiles:
    """The PEM files of one test's certificates."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    """A CA that signed neither the server certificate nor `client_cert`."""
    stranger_cert: Path
    """A client certificate that `other_ca_cert` signed, so the broker's CA did not."""
    stranger_key: Path


def _openssl(*args: str | Path) -> None:
    executable = shutil.which("openssl")
    if executable is None:
        raise RuntimeError("the TLS tests need the `openssl` command (apt-get install openssl)")
    result = subprocess.run(
        [executable, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{result.stderr}")


def _new_key(path: Path) -> Path:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path)
    return path


def _new_ca(folder: Path, name: str, config: Path) -> tuple[Path, Path]:
    key = _new_key(folder / f"{name}.key")
    cert = folder / f"{name}.crt"
    _openssl(
        "req", "-x509", "-new", "-key", key, "-subj", f"/CN=etong {name}",
        "-days", VALID_DAYS, "-config", config, "-extensions", "ca", "-out", cert,
    )  # fmt: skip
    return cert, key


def _new_signed(
    folder: Path, name: str, *, profile: str, ca: tuple[Path, Path], config: Path
) -> tuple[Path, Path]:
    key = _new_key(folder / f"{name}.key")
    request = folder / f"{name}.csr"
    cert = folder / f"{name}.crt"
    ca_cert, ca_key = ca
    _openssl(
        "req", "-new", "-key", key, "-subj", f"/CN={name}", "-config", config, "-out", request
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key,
        "-set_serial", str(secrets.randbits(63)), "-days", VALID_DAYS,
        "-extfile", config, "-extensions", profile, "-out", cert,
    )  # fmt: skip
    return cert, key


def make_tls_files(folder: Path) -> TlsFiles:
    """Write a CA with server and client certificates, and another CA with a client one."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG, encoding="utf-8")
    ca = _new_ca(folder, "test-ca", config)
    other_ca = _new_ca(folder, "other-ca", config)
    server = _new_signed(folder, "localhost", profile="server", ca=ca, config=config)
    client = _new_signed(folder, "etong-bridge", profile="client", ca=ca, config=config)
    stranger = _new_signed(folder, "stranger", profile="client", ca=other_ca, config=config)
    return TlsFiles(
        ca_cert=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca_cert=other_ca[0],
        stranger_cert=stranger[0],
        stranger_key=stranger[1],
    )
