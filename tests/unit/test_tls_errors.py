"""TLS failures with the broker, said in words that name the config key to check."""

from __future__ import annotations

import ssl
from pathlib import Path

from etong.brokers.tls import describe_closed_before_connack, describe_tls_error
from etong.config import BrokerSettings

TLS = BrokerSettings(url="mqtts://grid.example.cn", ca_file=Path("/etc/etong/ca.pem"))
MUTUAL_TLS = BrokerSettings(
    url="mqtts://grid.example.cn",
    ca_file=Path("/etc/etong/ca.pem"),
    cert_file=Path("/etc/etong/etong.crt"),
    key_file=Path("/etc/etong/etong.key"),
)


def _verify_error(verify_message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(
        1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {verify_message}"
    )
    error.verify_message = verify_message  # OpenSSL sets it; a test has to
    return error


def _alert(reason: str, text: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {text} (_ssl.c:2580)")
    error.reason = reason  # OpenSSL sets it; a test has to
    return error


def test_an_untrusted_broker_certificate_names_ca_file_and_the_host() -> None:
    text = describe_tls_error(_verify_error("unable to get local issuer certificate"), TLS)

    assert text.startswith("TLS certificate verify failed: unable to get local issuer certificate")
    assert "ca_file /etc/etong/ca.pem" in text
    assert "grid.example.cn" in text


def test_without_ca_file_the_system_cas_are_named() -> None:
    settings = BrokerSettings(url="mqtts://grid.example.cn")

    text = describe_tls_error(_verify_error("self-signed certificate"), settings)

    assert "the system CAs (ca_file unset)" in text


def test_a_refusal_without_a_client_certificate_suggests_setting_one() -> None:
    error = _alert("TLSV13_ALERT_CERTIFICATE_REQUIRED", "tlsv13 alert certificate required")

    text = describe_tls_error(error, TLS)

    assert text == (
        "the broker refused the TLS session (alert: certificate required); "
        "if it requires client certificates (mutual TLS), set cert_file and key_file"
    )


def test_a_refused_client_certificate_is_named() -> None:
    error = _alert("TLSV1_ALERT_UNKNOWN_CA", "tlsv1 alert unknown ca")

    text = describe_tls_error(error, MUTUAL_TLS)

    assert "(alert: unknown ca)" in text
    assert "trusts the CA that signed cert_file /etc/etong/etong.crt" in text


def test_an_abrupt_tls_close_gives_the_client_certificate_hint() -> None:
    error = ssl.SSLEOFError(8, "EOF occurred in violation of protocol (_ssl.c:2427)")

    text = describe_tls_error(error, TLS)

    assert text.startswith("the broker closed the TLS connection abruptly; ")
    assert text.endswith("set cert_file and key_file")


def test_another_tls_error_keeps_the_library_text_without_its_source_location() -> None:
    error = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)")

    assert describe_tls_error(error, TLS) == (
        "TLS error: [SSL: WRONG_VERSION_NUMBER] wrong version number"
    )


def test_a_close_before_connack_on_tls_without_an_error_still_gives_the_hint() -> None:
    """A broker may drop a client whose certificate it refused without a TLS alert."""
    assert describe_closed_before_connack(None, TLS) == (
        "the broker closed the connection before CONNACK; "
        "if it requires client certificates (mutual TLS), set cert_file and key_file"
    )


def test_a_close_before_connack_names_the_tls_error_that_caused_it() -> None:
    error = _alert("TLSV1_ALERT_UNKNOWN_CA", "tlsv1 alert unknown ca")

    text = describe_closed_before_connack(error, MUTUAL_TLS)

    assert text.startswith("closed before CONNACK: the broker refused the TLS session")


def test_a_close_before_connack_on_plain_mqtt_names_the_socket_error_and_no_tls() -> None:
    error = ConnectionResetError(104, "Connection reset by peer")

    text = describe_closed_before_connack(error, BrokerSettings(url="mqtt://h"))

    assert text == (
        "the broker closed the connection before CONNACK ([Errno 104] Connection reset by peer)"
    )
