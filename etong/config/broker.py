"""What a `[broker]` section needs beyond its fields: URL parsing and loading its files.

The URL is parsed here so that the section model, the MQTT client and the simulators agree on
host, port and TLS; the password and TLS files are read on demand (never kept on the model),
and a file that cannot be loaded is a `ConfigError` naming its key, not the ssl module's error.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from etong.errors import ConfigError


def parse_broker_url(url: str) -> tuple[bool, str, int]:
    """Split a broker URL into (tls, host, port); ValueError naming what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError("scheme must be mqtt:// or mqtts://")
    # Credentials in a URL end up in `ps`, logs and config dumps: keep them in their own keys.
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials; use username and password_file")
    if not parts.hostname:
        raise ValueError("has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("must be only scheme://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("port must be a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("port must be a number from 1 to 65535")
    tls = scheme == "mqtts"
    return tls, parts.hostname, port if port is not None else (8883 if tls else 1883)


def parse_broker_urls(url: str) -> list[tuple[bool, str, int]]:
    """The nodes of a broker URL: one `scheme://host[:port]`, or several separated by commas
    (the nodes of one broker cluster, tried in turn: docs/SCALING.md). Every node must use
    the same scheme, so TLS is on for all of them or for none. ValueError naming the node
    at fault."""
    pieces = [piece.strip() for piece in url.split(",")]
    if any(not piece for piece in pieces):
        raise ValueError("has an empty node between commas")
    nodes: list[tuple[bool, str, int]] = []
    for number, piece in enumerate(pieces, start=1):
        try:
            nodes.append(parse_broker_url(piece))
        except ValueError as exc:
            if len(pieces) == 1:
                raise
            raise ValueError(f"node {number} ({piece}) {exc}") from None
    if len({tls for tls, _, _ in nodes}) > 1:
        raise ValueError("mixes mqtt:// and mqtts:// nodes; use one scheme for every node")
    if len(set(nodes)) < len(nodes):
        raise ValueError("names the same node twice")
    return nodes


def node_url(tls: bool, host: str, port: int) -> str:
    """One node's URL, as logs and messages name it."""
    shown = f"[{host}]" if ":" in host else host
    return f"{'mqtts' if tls else 'mqtt'}://{shown}:{port}"


def read_password_file(path: Path) -> str:
    """The first line of `path` ("" for an empty file); ConfigError when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"password_file: cannot read {path}: {reason}"]) from exc
    lines = text.splitlines()
    return lines[0] if lines else ""


def load_tls_context(
    ca_file: Path | None, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """A verifying client TLS context: `ca_file` (system CAs when None), and the client
    certificate `cert_file` with `key_file` for mutual TLS when set.

    Raises ConfigError naming the key whose file cannot be loaded.
    """
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except OSError as exc:  # ssl.SSLError is an OSError too
            raise ConfigError(
                [f"ca_file: cannot load {ca_file} as PEM CA certificates: {_why(exc)}"]
            ) from exc
    if cert_file is not None:
        try:
            context.load_cert_chain(cert_file, key_file)
        except OSError as exc:
            raise ConfigError(
                [
                    f"cert_file: cannot load {cert_file} with key_file {key_file} "
                    f"as a PEM certificate and its private key: {_why(exc)}"
                ]
            ) from exc
    return context


def _why(exc: OSError) -> str:
    """The reason in an OSError or ssl.SSLError, without the C source location."""
    if isinstance(exc, ssl.SSLError):
        return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", str(exc))
    return exc.strerror or str(exc)
