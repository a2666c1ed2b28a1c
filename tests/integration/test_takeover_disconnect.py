"""The MQTT 5 "Session taken over" DISCONNECT (reason 0x8E) as paho really parses it, reaching
the adapter's takeover handling: counted, and the reconnect waits.

mosquitto 2.0.11 (the e2e tier's broker) does not send this packet, so a minimal MQTT 5
server on a loopback socket plays the broker's part: it accepts each connection with a
CONNACK and ends the first one with DISCONNECT 0x8E, as a spec-following broker does when
another client connects with the same client id [MQTT-3.1.4-3].
"""

from __future__ import annotations

import asyncio
import time

from etong.brokers.mqtt import MqttBroker
from etong.brokers.reconnect import RECONNECT_BACKOFF_S, SESSION_TAKEN_OVER
from etong.config import BrokerSettings
from etong.metrics import Metrics

CONNACK_V5 = bytes([0x20, 0x03, 0x00, 0x00, 0x00])  # session not present, success, no props
DISCONNECT_TAKEN_OVER = bytes([0xE0, 0x02, SESSION_TAKEN_OVER, 0x00])


class TakeoverServer:
    """Accepts MQTT connections; ends the first one with a takeover DISCONNECT."""

    def __init__(self) -> None:
        self.connected_at: list[float] = []
        self._server: asyncio.Server | None = None
        self.client_ready = asyncio.Event()  # set by the test once `start()` returned

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the CONNECT packet (small; its content does not matter here)
        self.connected_at.append(time.monotonic())
        writer.write(CONNACK_V5)
        await writer.drain()
        if len(self.connected_at) == 1:
            await self.client_ready.wait()  # the adapter took the CONNACK: now take it over
            writer.write(DISCONNECT_TAKEN_OVER)
            await writer.drain()
            writer.close()
            return
        while await reader.read(1024):  # keep later connections open (PINGREQ, DISCONNECT)
            pass
        writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_takeover_disconnect_from_the_broker_is_counted_and_the_reconnect_waits() -> None:
    server = TakeoverServer()
    port = await server.start()
    metrics = Metrics()
    broker = MqttBroker(
        BrokerSettings(url=f"mqtt://127.0.0.1:{port}", protocol=5),
        name="grid-pub",
        status_topic="etong/v1/bridge/etong-1/status",
        publisher=True,
        on_session_taken_over=metrics.session_taken_over.labels("grid-pub").inc,
    )
    try:
        await broker.start(lambda _m: None, [])
        server.client_ready.set()
        deadline = time.monotonic() + 20
        while len(server.connected_at) < 2:
            assert time.monotonic() < deadline, "the adapter did not reconnect"
            await asyncio.sleep(0.02)
    finally:
        await broker.stop()
        await server.stop()

    taken = metrics.registry.get_sample_value(
        "etong_session_taken_over_total", {"broker": "grid-pub"}
    )
    assert taken == 1.0
    assert server.connected_at[1] - server.connected_at[0] >= RECONNECT_BACKOFF_S
