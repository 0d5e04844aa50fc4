"""The running service: hub, data source and the periodic tasks (heartbeats, slow-consumer upkeep)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bluefin_service import __version__
from bluefin_service.config import ServiceSettings
from bluefin_service.hub import Hub
from bluefin_service.ring import MessageRing
from bluefin_service.ring_file import DirectoryLock, RingFile
from bluefin_service.sources.mock import MockSource
from marketdata.ticks import MarketEvent

log = logging.getLogger(__name__)

UPKEEP_INTERVAL = 0.05


class Source(Protocol):
    name: str

    async def run(self, publish: Callable[[list[MarketEvent]], None]) -> None: ...


def build_source(settings: ServiceSettings, hub: Hub) -> Source:
    return MockSource(
        settings.symbols,
        settings.stream_interval_seconds,
        settings.trade_frequency,
        seed=settings.mock_seed,
        last_prices=hub.last_prices(),
    )


class StreamingService:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._lock: DirectoryLock | None = None
        ring_factory = None
        if settings.ring_persist:
            self._lock = DirectoryLock(settings.data_dir)
            ring_dir = settings.data_dir / "ring"

            def ring_factory(symbol: str) -> MessageRing:
                return MessageRing(settings.ring_size, RingFile(ring_dir / f"{symbol}.ring", settings.ring_size))

        self.hub = Hub(settings.symbols, ring_size=settings.ring_size, ring_factory=ring_factory)
        self.source = build_source(settings, self.hub)
        self.started_at = time.time()
        self.version = __version__
        self._source_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return self._source_task is not None and not self._source_task.done()

    def _publish(self, events: list[MarketEvent]) -> None:
        self.hub.publish_batch(events)

    async def start(self) -> None:
        """Start the background tasks and the feed."""
        self._background = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeats"),
            asyncio.create_task(self._upkeep_loop(), name="upkeep"),
        ]
        self.start_streaming()

    def start_streaming(self) -> bool:
        """Start the feed; returns False if it was already running."""
        if self.running:
            return False
        self._source_task = asyncio.create_task(self._run_source(), name=f"source-{self.source.name}")
        log.info("streaming started (source=%s)", self.source.name)
        return True

    async def stop_streaming(self) -> bool:
        """Stop the feed (clients stay connected); returns False if it was not running."""
        task, self._source_task = self._source_task, None
        if task is None or task.done():
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        log.info("streaming stopped")
        return True

    async def close(self) -> None:
        await self.stop_streaming()
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.hub.flush()
        self.hub.close()
        if self._lock is not None:
            self._lock.release()

    async def _run_source(self) -> None:
        try:
            await self.source.run(self._publish)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("source %s failed; streaming stopped", self.source.name)

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.heartbeat_interval_seconds
        while True:
            await asyncio.sleep(interval)
            self.hub.send_heartbeats(self.running)

    async def _upkeep_loop(self) -> None:
        last_rate = time.monotonic()
        while True:
            await asyncio.sleep(UPKEEP_INTERVAL)
            self.hub.drain_conflated()
            now = time.monotonic()
            if now - last_rate >= 1.0:
                self.hub.update_rate(now)
                last_rate = now

    def status(self) -> dict[str, object]:
        hub = self.hub
        stats = hub.stats
        return {
            "running": self.running,
            "source": self.source.name,
            "connections": len(hub.connections),
            "active_symbols": hub.active_symbols(),
            "symbols": {
                symbol: {"subscribers": channel.subscriber_count(), "last_seq": channel.seq}
                for symbol, channel in hub.channels.items()
            },
            "messages_published": stats.messages_published,
            "messages_sent": stats.messages_sent,
            "message_rate": round(stats.message_rate, 1),
            "bytes_written": stats.bytes_written,
            "dropped_slow_consumers": stats.dropped_slow_consumers,
            "conflated_slow_consumers": stats.conflated_slow_consumers,
            "stream_interval_seconds": self.settings.stream_interval_seconds,
            "trade_frequency": self.settings.trade_frequency,
        }

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "source": self.source.name,
            "streaming": self.running,
            "version": self.version,
        }
