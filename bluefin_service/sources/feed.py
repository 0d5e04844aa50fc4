"""What the three exchange sources share: settings, the reconnect policy and one kept-alive WebSocket.

``VenueConnection`` knows nothing about any venue: the source hands it ``on_open`` (subscribe), ``on_frame``
(parse and publish), ``on_down`` (report the interruption) and, for venues with a text keepalive (OKX), the
ping text. It reconnects forever with capped, jittered exponential backoff, treats a silence longer than
``stale_after`` as a dead connection, and recycles connections older than ``max_age`` (Binance's 24 h limit).
A malformed frame is logged and counted, never fatal: the sequence checks catch anything it hid.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from marketdata.errors import MarketDataError
from marketdata.venues.common import FeedStatus, StatusKind, VenueMessageError

log = logging.getLogger(__name__)

Publish = Callable[[list[Any]], None]


class StaleFeed(MarketDataError):
    """No frame from the venue for longer than the stale limit."""


class ConnectionExpired(MarketDataError):
    """The connection reached its maximum age and is being replaced."""


@dataclass(frozen=True)
class FeedSettings:
    stale_after: float = 30.0  # seconds of silence before the connection counts as dead
    initial_backoff: float = 0.25
    max_backoff: float = 30.0
    max_age: float = 23 * 3600.0  # Binance closes at 24 h; the official SDK recycles at 23 h
    connect_timeout: float = 10.0
    book_depth: int = 50  # levels per side published to the service
    rest_timeout: float = 10.0
    snapshot_wait: float = 1.0  # let diffs buffer this long before asking for a snapshot (the documented order)


def backoff(initial: float, cap: float, rng: Callable[[], float] = random.random) -> Iterator[float]:
    """Delays for successive reconnects: ×1.618 per attempt, capped, each drawn from [d/2, d] (jitter)."""
    delay = initial
    while True:
        yield delay * (0.5 + rng() / 2)
        delay = min(cap, delay * 1.618)


@dataclass
class FeedStats:
    frames: int = 0
    malformed: int = 0
    unknown: int = 0
    venue_errors: int = 0  # error replies from the venue (a refused subscription, a rate limit)
    reconnects: int = 0
    resyncs: int = 0
    last_error: str = ""
    statuses: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        """Counters for /streaming/status."""
        return {
            "frames": self.frames,
            "malformed_frames": self.malformed,
            "unknown_frames": self.unknown,
            "venue_errors": self.venue_errors,
            "reconnects": self.reconnects,
            "resyncs": self.resyncs,
            "last_error": self.last_error,
            "recent_status": list(self.statuses),
        }


class VenueConnection:
    def __init__(
        self,
        name: str,
        url: str,
        session: aiohttp.ClientSession,
        settings: FeedSettings,
        *,
        on_open: Callable[[aiohttp.ClientWebSocketResponse], Awaitable[None]],
        on_frame: Callable[[str | bytes, float], None],
        on_down: Callable[[str, bool], None],
        stats: FeedStats,
        ping_text: str | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.session = session
        self.settings = settings
        self.on_open = on_open
        self.on_frame = on_frame
        self.on_down = on_down
        self.stats = stats
        self.ping_text = ping_text
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def run(self) -> None:
        delays = backoff(self.settings.initial_backoff, self.settings.max_backoff)
        while True:
            stale = False
            got_data = False
            try:
                async with self.session.ws_connect(
                    self.url,
                    autoping=False,  # PINGs are answered in _read, so the venue's heartbeat counts as liveness
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    max_msg_size=16 * 1024 * 1024,
                ) as ws:
                    self.ws = ws
                    await asyncio.wait_for(self.on_open(ws), self.settings.connect_timeout)
                    got_data = await self._read(ws)
                    reason = f"closed by venue (code {ws.close_code})"
            except StaleFeed as exc:
                reason, stale = str(exc), True
            except (aiohttp.ClientError, OSError, TimeoutError, ConnectionExpired) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                self.ws = None
            if got_data:
                delays = backoff(self.settings.initial_backoff, self.settings.max_backoff)
            self.stats.reconnects += 1
            self.stats.last_error = reason
            log.warning("%s: connection lost (%s); reconnecting", self.name, reason)
            self.on_down(reason, stale)
            await asyncio.sleep(next(delays))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Read until the connection ends; returns whether any frame arrived. Raises StaleFeed on silence."""
        settings = self.settings
        opened = time.monotonic()
        got_data = False
        ping_after = settings.stale_after / 2 if self.ping_text else settings.stale_after
        pinged = False
        while True:
            if time.monotonic() - opened > settings.max_age:
                await ws.close()
                raise ConnectionExpired(f"connection older than {settings.max_age:g}s; recycling")
            try:
                msg = await asyncio.wait_for(ws.receive(), ping_after)
            except TimeoutError:
                if self.ping_text and not pinged:
                    pinged = True
                    await ws.send_str(self.ping_text)
                    continue
                raise StaleFeed(f"no data for {settings.stale_after:g}s") from None
            pinged = False
            if msg.type is aiohttp.WSMsgType.PING:  # Binance every 3 min, Bluefin every 10 s
                await ws.pong(msg.data)
            elif msg.type is aiohttp.WSMsgType.PONG:
                pass
            elif msg.type is aiohttp.WSMsgType.TEXT or msg.type is aiohttp.WSMsgType.BINARY:
                got_data = True
                self.stats.frames += 1
                try:
                    self.on_frame(msg.data, time.time())
                except VenueMessageError as exc:
                    self.stats.malformed += 1
                    log.warning("%s: %s", self.name, exc)
                except (ValueError, TypeError, KeyError, IndexError) as exc:  # a frame shape no parser foresaw
                    self.stats.malformed += 1
                    log.warning("%s: unusable frame (%s: %s): %.120r", self.name, type(exc).__name__, exc, msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return got_data
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise aiohttp.ClientError(f"websocket error: {ws.exception()}")


def status_events(venue: str, symbols: list[str], kind: StatusKind, detail: str, stats: FeedStats) -> list[FeedStatus]:
    now = time.time()
    stats.statuses.append(f"{kind}: {detail}")
    del stats.statuses[:-20]  # keep the last 20 for /streaming/status
    return [FeedStatus(symbol, now, venue, kind, detail) for symbol in symbols]


def default_symbol_map(symbols: list[str], template: Callable[[str], str], override: dict[str, str]) -> dict[str, str]:
    """Our symbol -> the venue's, from a naming template (ETH-PERP -> ETHUSDT), overridden per symbol."""
    return {symbol: override.get(symbol, template(symbol)) for symbol in symbols}
