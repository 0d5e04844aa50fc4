"""The running service: hub, data source and the periodic tasks (heartbeats, slow-consumer upkeep)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Protocol

from bluefin_service import __version__
from bluefin_service.books import TICK_SECONDS, BookStreams
from bluefin_service.candle_streams import CandleStreams
from bluefin_service.config import ServiceSettings
from bluefin_service.hub import Hub
from bluefin_service.loop_watch import LoopStallWatch
from bluefin_service.ring import MessageRing
from bluefin_service.ring_file import DirectoryLock, RingFile
from bluefin_service.sources.exchanges import EXCHANGES, build_exchange_source
from bluefin_service.sources.mock import MockSource
from bluefin_service.store import Store, open_store
from bluefin_service.store.recorder import Recorder
from marketdata.ticks import MarketEvent
from marketdata.venues.common import FeedStatus

log = logging.getLogger(__name__)
STORE_SEQ_TIMEOUT = 10.0  # seconds to read the store's last seqs at start before streaming without them

UPKEEP_INTERVAL = 0.05
CANDLE_RING_SIZE = 1024


class Source(Protocol):
    name: str

    async def run(self, publish: Callable[[list[MarketEvent]], None]) -> None: ...


def build_source(settings: ServiceSettings, hub: Hub) -> Source:
    if settings.source_name in EXCHANGES:
        return build_exchange_source(settings)  # type: ignore[no-any-return]
    if settings.source_name == "replay":
        from bluefin_service.sources.replay import ReplaySource

        return ReplaySource.from_settings(settings)
    return MockSource(
        settings.symbols,
        settings.stream_interval_seconds,
        settings.trade_frequency,
        seed=settings.mock_seed,
        last_prices=hub.last_prices(),
        backfill_seconds=settings.mock_backfill_seconds,
    )


def _build_recorder(settings: ServiceSettings, store: Store) -> Recorder:
    return Recorder(
        store,
        flush_interval=settings.flush_interval_seconds,
        max_buffered=settings.record_buffer_max,
        retention_age_seconds=settings.retention_hours * 3600 if settings.retention_hours else None,
        retention_max_bytes=int(settings.retention_max_mb * 1024 * 1024) if settings.retention_max_mb else None,
        retention_check_seconds=settings.retention_check_seconds,
    )


class StreamingService:
    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._lock: DirectoryLock | None = None
        ring_factory = None
        if settings.ring_persist:
            self._lock = DirectoryLock(settings.data_dir)
            # Each publish writes its slot through the mapping on the event loop. On a disk filesystem a write to
            # a page under writeback can stall the loop for milliseconds; a tmpfs RING_DIR survives kill -9 alike.
            ring_dir = settings.ring_dir or settings.data_dir / "ring"

            def ring_factory(key: str) -> MessageRing:
                # Candle streams publish one final per interval: a smaller ring still spans an hour of 1 s candles.
                size = settings.ring_size if "@" not in key else min(settings.ring_size, CANDLE_RING_SIZE)
                return MessageRing(size, RingFile(ring_dir / f"{key}.ring", size))

        self.hub = Hub(settings.symbols, ring_size=settings.ring_size, ring_factory=ring_factory)
        threshold = settings.loop_stall_warn_ms / 1000
        self.loop_watch = LoopStallWatch(threshold) if threshold else None
        self.candles = CandleStreams(
            self.hub, settings.symbols, settings.candle_intervals, settings.candle_grace_seconds
        )
        self.source = build_source(settings, self.hub)
        # Exchange sources (and a replay of their recorded books) also publish books and feed status; BookStreams
        # routes them off the tick path.
        with_books = settings.source_name in EXCHANGES or settings.source_name == "replay"
        self.books = BookStreams(self.hub, settings.symbols) if with_books else None
        if self.books is not None:
            self.books.status_listeners.append(self._flag_candles)
        self.store = open_store(settings.resolved_store_url)
        self.recorder: Recorder | None = None
        if settings.record and settings.source_name != "replay":  # replaying into the same store would duplicate it
            self.recorder = _build_recorder(settings, self.store)
            self.hub.tick_listeners.append(self.recorder.record)
            if self.books is not None and settings.record_book_seconds > 0:
                self.books.record = self.recorder.record_book
                self.books.record_interval = settings.record_book_seconds
                self.books.record_depth = settings.record_book_depth
        self.started_at = time.time()
        self.version = __version__
        self._source_task: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return self._source_task is not None and not self._source_task.done()

    def source_clock(self) -> float:
        """The source's time: the wall clock live; the replayed (or backfilled) time while it replays history."""
        clock = getattr(self.source, "clock", None)
        return clock() if clock is not None else time.time()

    def _publish(self, events: list[MarketEvent]) -> None:
        if self.books is not None:
            self.books.route(events, self._publish_market)
        else:
            self._publish_market(events)

    def _publish_market(self, events: list[MarketEvent]) -> None:
        self.hub.publish_batch(events)
        # Write the batch now, then run the candle engine, before the source arms its next sleep. Work done in a
        # later loop turn would run after that timer was armed: libuv computes the poll timeout from the loop
        # time it cached at the turn's start, so every ms spent there made the next tick wake that much late.
        self.hub.flush()
        # A source replaying the past (event_time) lets each tick's own time move the candle watermark.
        now = None if getattr(self.source, "event_time", False) else self.source_clock()
        try:
            self.candles.on_events(events, now)
        except Exception:
            log.exception("candle engine failed on a batch; continuing")

    async def start(self) -> None:
        """Start the background tasks and the feed."""
        if self.loop_watch is not None:
            self.loop_watch.start()
        self._background = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeats"),
            asyncio.create_task(self._upkeep_loop(), name="upkeep"),
            asyncio.create_task(self._candle_clock(), name="candle-clock"),
        ]
        if self.books is not None:
            self._background.append(asyncio.create_task(self._book_loop(), name="books"))
        if self.recorder is not None:
            await self._number_on_from_store()
            self.recorder.start()
        self.start_streaming()

    async def _number_on_from_store(self, timeout: float = STORE_SEQ_TIMEOUT) -> None:
        """Without its ring (RING_PERSIST=false, a lost DATA_DIR/ring, a reboot with RING_DIR on tmpfs) the hub
        would number every symbol from 1 again and the store would hold two ticks under one seq, which breaks
        resume and ``/trades?after_seq=`` gap repair. Number on from the highest stored seq instead."""
        try:
            async with asyncio.timeout(timeout):
                if not self.store.is_open:
                    await self.store.open()
                for symbol in self.settings.symbols:
                    ring = self.hub.ensure_channel(symbol).ring
                    stored = await self.store.last_seq(symbol)
                    if stored > ring.head:
                        log.warning(
                            "%s: the resume ring ends at seq %d but the store holds up to %d; numbering on from %d",
                            symbol, ring.head, stored, stored + 1,
                        )  # fmt: skip
                        ring.continue_after(stored)
        except Exception as exc:
            log.warning(
                "could not read the last stored sequence numbers (%s: %s); a symbol whose ring was lost numbers "
                "from 1 again", type(exc).__name__, exc or "timeout",
            )  # fmt: skip

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
        if self.recorder is not None:
            await self.recorder.stop()
        if self.loop_watch is not None:
            await self.loop_watch.stop()
        await self.store.close()
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

    def _flag_candles(self, status: FeedStatus) -> None:
        """An upstream interruption marks the candles it falls in: a lost connection, or a rebuilt book."""
        self.candles.mark_gap(status.symbol, status.timestamp, reconnect=status.kind != "resync")

    async def _candle_clock(self) -> None:
        """Finalize candles at boundary + grace even when no tick arrives, and push provisional ones."""
        candles = self.candles
        while True:
            now = self.source_clock()
            await asyncio.sleep(max(0.0, candles.next_wakeup(now) - now))
            try:
                candles.on_clock(self.source_clock(), time.time())
            except Exception:
                log.exception("candle clock failed; continuing")

    async def _book_loop(self) -> None:
        """Send each order-book subscriber the latest book, at most at its rate."""
        assert self.books is not None
        while True:
            await asyncio.sleep(TICK_SECONDS)
            self.books.tick()

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
                symbol: {"subscribers": hub.channels[symbol].subscriber_count(), "last_seq": hub.channels[symbol].seq}
                for symbol in self.settings.symbols
            },
            "candle_intervals": list(self.candles.intervals),
            "candle_subscriptions": self.candles.subscriber_count(),
            "messages_published": stats.messages_published,
            "messages_sent": stats.messages_sent,
            "message_rate": round(stats.message_rate, 1),
            "bytes_written": stats.bytes_written,
            "dropped_slow_consumers": stats.dropped_slow_consumers,
            "conflated_slow_consumers": stats.conflated_slow_consumers,
            "stream_interval_seconds": self.settings.stream_interval_seconds,
            "trade_frequency": self.settings.trade_frequency,
            "recorder": self.recorder.status() if self.recorder is not None else {"enabled": False},
            "loop_stalls": self.loop_watch.status() if self.loop_watch is not None else {"enabled": False},
            **self._feed_status(),
        }

    def _feed_status(self) -> dict[str, object]:
        """Exchange sources: reconnect/resync counters and book subscriptions; a replay: how far it got."""
        if self.source.name == "replay":
            return {"replay": self.source.status()}  # type: ignore[attr-defined]
        feed = getattr(self.source, "stats", None)
        if self.books is None or feed is None:
            return {}
        return {"feed": feed.as_dict(), "orderbook_subscriptions": sum(len(s) for s in self.books.subs.values())}

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "source": self.source.name,
            "streaming": self.running,
            "version": self.version,
        }
