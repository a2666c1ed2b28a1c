"""BufferedSocket: paho's many small reads and writes become few syscalls, bytes intact."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

from etong.brokers.buffered_socket import BufferedSocket


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_small_reads_are_served_from_one_large_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.sendall(b"\x30\x05hello\x40\x02\x00\x01")
    buffered = BufferedSocket(ours)
    assert buffered.recv(1) == b"\x30"
    assert buffered.pending() == 10  # the rest is already here, the selector will not say so
    assert buffered.recv(1) == b"\x05"
    assert buffered.recv(5) == b"hello"
    assert buffered.recv(100) == b"\x40\x02\x00\x01"  # never more than was buffered
    assert buffered.pending() == 0
    with pytest.raises(BlockingIOError):
        buffered.recv(1)  # paho turns this into "try again later"


def test_closed_peer_reads_as_empty(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    peer.close()
    assert BufferedSocket(ours).recv(1) == b""


def test_writes_are_buffered_until_flush(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    buffered = BufferedSocket(ours)
    assert buffered.send(b"abc") == 3
    assert buffered.send(bytearray(b"def")) == 3
    with pytest.raises(BlockingIOError):
        peer.recv(10)  # nothing sent yet
    assert buffered.flush() is True
    assert peer.recv(10) == b"abcdef"


def test_flush_keeps_what_the_kernel_would_not_take(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    buffered = BufferedSocket(ours)
    blob = bytes(range(256)) * 40_000  # far more than the socket buffers hold
    buffered.send(blob)
    assert buffered.flush() is False
    received = bytearray()
    while len(received) < len(blob):
        try:
            received += peer.recv(1 << 20)
        except BlockingIOError:
            buffered.flush()
    assert bytes(received) == blob


def test_other_attributes_pass_through(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    assert BufferedSocket(ours).fileno() == ours.fileno()


def test_close_sends_what_is_buffered_first(pair: tuple[socket.socket, socket.socket]) -> None:
    """paho writes DISCONNECT and closes at once; the packet must not die in our buffer."""
    ours, peer = pair
    buffered = BufferedSocket(ours)
    buffered.send(b"\xe0\x00")  # DISCONNECT
    buffered.close()
    assert peer.recv(10) == b"\xe0\x00"


class _RecvRaises:
    """A socket whose every read raises `error`."""

    def __init__(self, error: OSError) -> None:
        self.error = error

    def recv(self, bufsize: int) -> bytes:
        raise self.error


def test_a_read_error_is_kept_for_the_disconnect_report() -> None:
    """paho reports any read error as a bare "connection lost"; the cause must survive it."""
    error = ssl.SSLError(1, "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca")
    buffered = BufferedSocket(_RecvRaises(error))

    with pytest.raises(ssl.SSLError):
        buffered.recv(1)  # still raised: paho must see the connection end

    assert buffered.failure is error


@pytest.mark.parametrize("error", [BlockingIOError(), ssl.SSLWantReadError()])
def test_nothing_to_read_yet_is_not_a_failure(error: OSError) -> None:
    buffered = BufferedSocket(_RecvRaises(error))

    with pytest.raises(type(error)):
        buffered.recv(1)

    assert buffered.failure is None


def test_a_write_error_is_kept_for_the_disconnect_report(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    peer.close()
    buffered = BufferedSocket(ours)
    buffered.send(b"\xc0\x00")  # PINGREQ

    assert buffered.flush() is True  # dropped: the read side reports the lost connection

    assert isinstance(buffered.failure, OSError)
