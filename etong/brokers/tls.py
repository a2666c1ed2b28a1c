"""TLS failures with a broker, said in words that name the config key to check.

The ssl module reports what OpenSSL saw (`[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown
ca`), and paho reports a TLS failure after the handshake only as a lost connection. An on-call
engineer needs to know whether the broker's certificate was not trusted (our `ca_file`) or ours
was not (`cert_file`, `key_file`), so the adapter passes what it caught through here.

Two cases look alike on the wire, and the texts say so rather than guess:
- a broker that requires a client certificate and got none may answer with an alert
  (`certificate required`, `handshake failure`) or just close the TLS connection;
- a broker that does not trust our client certificate answers with an alert (`unknown ca`,
  `bad certificate`, `certificate expired`).
"""

from __future__ import annotations

import re
import ssl

from etong.config import BrokerSettings

__all__ = ["describe_closed_before_connack", "describe_tls_error"]

# OpenSSL names an alert from the peer in the reason: TLSV13_ALERT_CERTIFICATE_REQUIRED.
_ALERT = re.compile(r"ALERT_(?P<name>[A-Z0-9_]+)$")
_SOURCE_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)$")


def describe_tls_error(exc: ssl.SSLError, settings: BrokerSettings) -> str:
    """What a TLS failure with the broker means, and which key to check."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _untrusted_broker_certificate(exc, settings)
    hint = _client_certificate_hint(settings)
    if isinstance(exc, ssl.SSLEOFError):
        return f"the broker closed the TLS connection abruptly; {hint}"
    alert = _alert_name(exc)
    if alert is not None:
        return f"the broker refused the TLS session (alert: {alert}); {hint}"
    return f"TLS error: {_library_text(exc)}"


def describe_closed_before_connack(failure: OSError | None, settings: BrokerSettings) -> str:
    """Why the connection ended after connecting but before the broker's CONNACK.

    `failure` is the socket error seen while reading or writing, if any: a broker that
    rejects a TLS client after the handshake (TLS 1.3 verifies the client's certificate
    only then) may close without one, so the TLS hint is given either way.
    """
    if isinstance(failure, ssl.SSLError):
        return "closed before CONNACK: " + describe_tls_error(failure, settings)
    text = "the broker closed the connection before CONNACK"
    if failure is not None:
        text += f" ({failure})"
    if settings.tls:
        text += "; " + _client_certificate_hint(settings)
    return text


def _client_certificate_hint(settings: BrokerSettings) -> str:
    """Where to look when the broker may have refused our side of a TLS connection."""
    if settings.cert_file is None:
        return "if it requires client certificates (mutual TLS), set cert_file and key_file"
    return (
        f"check that the broker trusts the CA that signed cert_file {settings.cert_file} "
        "and that the certificate is still valid"
    )


def _untrusted_broker_certificate(
    exc: ssl.SSLCertVerificationError, settings: BrokerSettings
) -> str:
    trusted_by = (
        f"ca_file {settings.ca_file}" if settings.ca_file else "the system CAs (ca_file unset)"
    )
    # Keep OpenSSL's own words ("certificate verify failed: ..."): they are what people search.
    why = getattr(exc, "verify_message", None) or _library_text(exc)
    return (
        f"TLS certificate verify failed: {why}; the broker's certificate must be "
        f"signed by a CA in {trusted_by} and name the host {settings.host}"
    )


def _alert_name(exc: ssl.SSLError) -> str | None:
    # `reason` is set on errors raised by OpenSSL, not on every SSLError made in Python.
    match = _ALERT.search(getattr(exc, "reason", None) or "")
    return match["name"].lower().replace("_", " ") if match else None


def _library_text(exc: ssl.SSLError) -> str:
    return _SOURCE_LOCATION.sub("", str(exc))
