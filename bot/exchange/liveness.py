"""The client's stale-connection watchdog: a ``ping`` after a quiet heartbeat interval, a disconnect after
``stale_timeout`` without any message. The WebSocket library's own pings are off: this covers a frozen service
too, whose kernel would still answer TCP but whose event loop sends nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from websockets.asyncio.client import ClientConnection

from marketdata.protocol import PingRequest, encode


class Liveness:
    def __init__(self, heartbeat_interval: float, stale_timeout: float) -> None:
        self.heartbeat_interval = heartbeat_interval
        self.stale_timeout = stale_timeout
        self.last_message = 0.0  # time.monotonic() of the newest frame

    def touch(self) -> None:
        self.last_message = time.monotonic()

    async def watch(self, ws: ClientConnection, paused: Callable[[], bool]) -> str:
        """Return the reason once ``ws`` is stale; ``paused()`` is true while we, not the service, stop reading."""
        check = min(max(self.heartbeat_interval / 4, 0.01), 1.0)
        pinged_at = 0.0
        while True:
            await asyncio.sleep(check)
            now = time.monotonic()
            if paused():
                self.last_message = now
                continue
            idle = now - self.last_message
            if idle >= self.stale_timeout:
                await asyncio.sleep(0)  # after a blocked loop, let frames already received be read first
                idle = time.monotonic() - self.last_message
                if idle < self.stale_timeout:
                    continue
                return f"stale: no message for {idle:.2f}s (limit {self.stale_timeout:g}s)"
            if idle >= self.heartbeat_interval and pinged_at < self.last_message:
                pinged_at = now
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.send(encode(PingRequest(time.time())).decode()), check)
