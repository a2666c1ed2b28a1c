"""A minimal MQTT client for the load generator and the officers' terminals.

paho reads every packet with several recv() calls (a byte at a time for the header) and
wakes its network thread through a socket pair on every publish from another thread; with a
dozen clients in one process the load generator used a whole core at 3k reports/s, on a
machine with two. This client speaks just what the benchmark needs (CONNECT, SUBSCRIBE,
QoS 1 PUBLISH and PUBACK, MQTT 3.1.1 and 5) on an asyncio Protocol: one read and one write
per batch of packets. The contenders themselves use paho.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from etong.config import BrokerSettings

from e2e.errors import BenchError

MessageHandler = Callable[[str, bytes], tuple[str, bytes] | None]
"""Called for each inbound PUBLISH with (topic, payload); may return one reply to publish."""


_CONNACK, _PUBLISH, _PUBACK, _SUBACK = 0x20, 0x30, 0x40, 0x90


_RECEIVE_MAXIMUM = 0x21  # MQTT 5 CONNACK property [MQTT-3.2.2.3.3]


_MAX_INFLIGHT = 1000


def _varint(value: int) -> bytes:
    """MQTT Variable Byte Integer [MQTT-1.5.5]."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, position after it), or None when `data` ends inside it."""
    value = shift = 0
    while pos < len(data):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(2, "big") + raw


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes((first_byte,)) + _varint(len(body)) + body


class MiniMqtt(asyncio.Protocol):
    """One MQTT connection on an asyncio loop: QoS 1 publish and subscribe, clean session."""

    def __init__(self, client_id: str, protocol: int, on_message: MessageHandler | None = None):
        self.client_id = client_id
        self.v5 = protocol == 5
        self.on_message = on_message
        self.acked = 0
        self.lost: str | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._pending: deque[bytes] = deque()  # publishes waiting for an in-flight slot
        self._inflight = 0
        self._max_inflight = _MAX_INFLIGHT
        self._next_id = 0
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._replies: dict[int, asyncio.Future[bytes]] = {}  # first byte -> next such packet
        self._ack_target = 0
        self._all_acked = asyncio.Event()

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Note the loss; anyone waiting for a reply hears of it."""
        self.lost = f"connection lost: {exc or 'closed by the broker'}"
        for future in self._replies.values():
            if not future.done():
                future.set_exception(BenchError(f"{self.client_id}: {self.lost}"))

    def data_received(self, data: bytes) -> None:
        """Handle every complete packet in the buffer, then write what they produced at once."""
        buffer = self._buffer
        buffer += data
        pos = 0
        while len(buffer) - pos >= 2:
            header = _read_varint(buffer, pos + 1)
            if header is None:
                break
            length, start = header
            end = start + length
            if end > len(buffer):
                break
            self._handle(buffer[pos], bytes(buffer[start:end]))
            pos = end
        del buffer[:pos]
        self._flush()

    def _handle(self, first_byte: int, body: bytes) -> None:
        kind = first_byte & 0xF0
        if kind == _PUBLISH:
            self._on_publish(first_byte, body)
        elif kind == _PUBACK:
            self._inflight -= 1
            self.acked += 1
            if self._pending:
                self._inflight += 1
                self._out.append(self._pending.popleft())
            if self.acked >= self._ack_target:
                self._all_acked.set()
        else:
            future = self._replies.pop(kind, None)
            if future is not None and not future.done():
                future.set_result(body)

    def _on_publish(self, first_byte: int, body: bytes) -> None:
        qos = (first_byte >> 1) & 0x03
        topic_end = 2 + int.from_bytes(body[:2], "big")
        topic = body[2:topic_end].decode()
        pos = topic_end
        if qos:
            packet_id = body[pos : pos + 2]
            pos += 2
            self._out.append(b"\x40\x02" + packet_id)  # PUBACK, success
        if self.v5:
            properties = _read_varint(body, pos)
            assert properties is not None
            pos = properties[1] + properties[0]
        if self.on_message is not None:
            reply = self.on_message(topic, body[pos:])
            if reply is not None:
                self.publish(*reply)

    # -- writing

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _send(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def publish(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 (written on the loop's next turn, or when a slot frees)."""
        self._next_id = self._next_id % 65535 + 1
        body = [_utf8(topic), self._next_id.to_bytes(2, "big")]
        if self.v5:
            body.append(b"\x00")  # no properties
        body.append(payload)
        packet = _packet(0x32, b"".join(body))
        if self._inflight >= self._max_inflight:
            self._pending.append(packet)
            return
        self._inflight += 1
        self._send(packet)

    def expect_acks(self, more: int) -> None:
        """Before publishing `more` messages: arm `wait_acked` for them."""
        self._ack_target = self.acked + more
        self._all_acked.clear()
        if self.acked >= self._ack_target:
            self._all_acked.set()

    async def wait_acked(self) -> None:
        """Until every publish armed by `expect_acks` was acknowledged."""
        await self._all_acked.wait()

    # -- session

    async def _request(self, packet: bytes, reply_kind: int) -> bytes:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._replies[reply_kind] = future
        self._send(packet)
        return await future

    async def open(self, host: str, port: int, subscriptions: Sequence[str] = ()) -> None:
        """Connect with a clean session, no keep-alive, and subscribe at QoS 1."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        level = 5 if self.v5 else 4
        # protocol name, level, flags: clean start/session; keep alive 0: off.
        variable = _utf8("MQTT") + bytes((level, 0x02)) + b"\x00\x00"
        if self.v5:
            variable += b"\x00"
        connack = await self._request(_packet(0x10, variable + _utf8(self.client_id)), _CONNACK)
        if connack[1] != 0:
            raise BenchError(f"{self.client_id}: the broker refused the connection ({connack[1]})")
        if self.v5:
            self._max_inflight = min(_MAX_INFLIGHT, _receive_maximum(connack))
        if subscriptions:
            body = b"\x00\x01" + (b"\x00" if self.v5 else b"")
            body += b"".join(_utf8(topic) + b"\x01" for topic in subscriptions)
            suback = await self._request(_packet(0x82, body), _SUBACK)
            codes = suback[-len(subscriptions) :]
            if any(code >= 0x80 for code in codes):
                raise BenchError(f"{self.client_id}: subscription refused ({list(codes)})")

    def close(self) -> None:
        """Send DISCONNECT and close the connection."""
        if self._transport is not None and not self._transport.is_closing():
            self._flush()
            self._transport.write(b"\xe0\x00")
            self._transport.close()


def _receive_maximum(connack: bytes) -> int:
    """The Receive Maximum property of an MQTT 5 CONNACK body (65535 when absent)."""
    header = _read_varint(connack, 2)
    if header is None:
        return 65535
    length, pos = header
    end = pos + length
    while pos < end:
        prop = connack[pos]
        pos += 1
        if prop == _RECEIVE_MAXIMUM:
            return int.from_bytes(connack[pos : pos + 2], "big")
        # Skip any other property by its type [MQTT-2.2.2.2].
        if prop in (0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A):
            pos += 1
        elif prop in (0x13, 0x21, 0x22):
            pos += 2
        elif prop in (0x02, 0x11, 0x18, 0x27):
            pos += 4
        elif prop == 0x0B:
            skipped = _read_varint(connack, pos)
            pos = skipped[1] if skipped else end
        elif prop == 0x26:  # user property: two strings
            for _ in range(2):
                pos += 2 + int.from_bytes(connack[pos : pos + 2], "big")
        else:  # a string or binary property
            pos += 2 + int.from_bytes(connack[pos : pos + 2], "big")
    return 65535


async def close_clients(clients: Sequence[MiniMqtt]) -> None:
    """Disconnect every client, and let the loop see the connections close."""
    for client in clients:
        client.close()
    await asyncio.sleep(0)


async def open_clients(
    url: str, protocol: int, specs: Sequence[tuple[str, Sequence[str], MessageHandler | None]]
) -> list[MiniMqtt]:
    """Connect one client per (client id, subscriptions, handler)."""
    address = BrokerSettings(url=url)  # the bridge's own URL check and default ports
    clients = [MiniMqtt(client_id, protocol, handler) for client_id, _, handler in specs]
    for client, (_, subscriptions, _) in zip(clients, specs, strict=True):
        await client.open(address.host, address.port, subscriptions)
    return clients
