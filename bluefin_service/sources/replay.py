"""SOURCE=replay: recorded ticks and order books from the store, streamed through the same hub with their
original timestamps.

``speed`` 1 replays in real time, 10 ten times faster, 0 as fast as the hub takes them. Symbols are merged
in event-time order; each is read in pages (keyset pagination), so memory stays bounded whatever the range.
Recorded order-book snapshots (``RECORD_BOOK_SECONDS``) go out in the same time order, as the ``BookView``
events an exchange source publishes, so clients that subscribe with ``"orderbook": true`` get the book as it
was at that point of the replay. A snapshot that does not decode is logged, counted and skipped.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import AsyncIterator, Iterable

from bluefin_service.config import ServiceSettings
from bluefin_service.sources.feed import Publish
from bluefin_service.store import PAGE_ROWS, BookRow, Store, TickRow, open_store, recorded_book, redact, row_event
from marketdata.book import BookView
from marketdata.ticks import MarketEvent

log = logging.getLogger(__name__)

FAST_BATCH = 2000  # events per loop turn at speed 0, so clients and HTTP keep being served


class ReplaySource:
    name = "replay"

    def __init__(
        self,
        store: Store,
        symbols: Iterable[str],
        start: float | None,
        end: float | None,
        speed: float = 1.0,
        page: int = PAGE_ROWS,
    ) -> None:
        self.store = store
        self.symbols = list(symbols)
        self.start = start
        self.end = end
        self.speed = speed
        self.page = page
        self.published = 0  # ticks
        self.books_published = 0
        self.books_skipped = 0  # recorded snapshots that did not decode
        self.finished = False
        self._replayed_to: float | None = None  # timestamp of the newest tick published
        self._anchor: tuple[float, float] | None = None  # (replayed time, monotonic) the clock runs on from

    # Replayed ticks carry their original times: the candle engine must follow them, not the wall clock.
    event_time = True

    def clock(self) -> float:
        """The replay's time: where playback has reached, moving on at ``speed`` (or 1x once finished)."""
        if self._anchor is None:
            return self.start if self.start is not None else 0.0
        replayed, at = self._anchor
        rate = self.speed if self.speed > 0 and not self.finished else (1.0 if self.finished else 0.0)
        return max(replayed + (time.monotonic() - at) * rate, self._replayed_to or replayed)

    def _published(self, batch: list[MarketEvent | BookView]) -> None:
        books = sum(type(event) is BookView for event in batch)
        self.published += len(batch) - books
        self.books_published += books
        self._replayed_to = batch[-1].timestamp
        if self.speed == 0 or self._anchor is None:
            self._anchor = (self._replayed_to, time.monotonic())

    def status(self) -> dict[str, object]:
        return {
            "ticks": self.published,
            "orderbooks": self.books_published,
            "orderbooks_skipped": self.books_skipped,
            "finished": self.finished,
        }

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> ReplaySource:
        store = open_store(settings.resolved_store_url)
        return cls(store, settings.symbols, settings.replay_start, settings.replay_end, settings.replay_speed)

    async def rows(self) -> AsyncIterator[TickRow | BookRow]:
        """Every symbol's ticks and book snapshots in the range, merged by time (ticks before a snapshot of the
        same instant; ticks by seq, snapshots by version)."""
        pages = [self.store.iter_range(symbol, self.start, self.end, self.page) for symbol in self.symbols]
        pages += [self.store.iter_books(symbol, self.start, self.end) for symbol in self.symbols]
        buffers: list[list[TickRow] | list[BookRow]] = [[] for _ in pages]
        positions = [0] * len(pages)
        heap: list[tuple[float, int, int, int]] = []
        first_book_stream = len(self.symbols)

        async def push_next(index: int) -> None:
            if positions[index] >= len(buffers[index]):
                buffers[index] = await anext(pages[index], [])
                positions[index] = 0
                if not buffers[index]:
                    return
            row = buffers[index][positions[index]]
            order = row[2]  # a tick's seq, a snapshot's version
            heapq.heappush(heap, (row.ts, index >= first_book_stream, order, index))

        for index in range(len(pages)):
            await push_next(index)
        while heap:
            index = heapq.heappop(heap)[3]
            row = buffers[index][positions[index]]
            positions[index] += 1
            yield row
            await push_next(index)

    def _book_view(self, row: BookRow) -> BookView | None:
        try:
            message = recorded_book(row)
        except ValueError as exc:
            self.books_skipped += 1
            log.warning("replay: skipped the recorded %s book at %s: %s", row.symbol, row.ts, exc)
            return None
        data = message.data
        bids = [(level[0], level[1]) for level in data.bids]
        asks = [(level[0], level[1]) for level in data.asks]
        return BookView(message.symbol, message.timestamp, bids, asks, data.venue, data.update_id)

    async def run(self, publish: Publish) -> None:
        await self.store.open()
        log.info(
            "replaying %s from %s (%s to %s, speed %s)",
            ",".join(self.symbols),
            redact(self.store.url),
            self.start,
            self.end,
            self.speed or "max",
        )
        started = time.monotonic()
        first_ts: float | None = None
        batch: list[MarketEvent | BookView] = []
        async for row in self.rows():
            if first_ts is None:
                first_ts = row.ts
            if self.speed > 0:
                wait = started + (row.ts - first_ts) / self.speed - time.monotonic()
                if wait > 0.0005:
                    if batch:
                        publish(batch)
                        self._published(batch)
                        batch = []
                    await asyncio.sleep(wait)
            if type(row) is TickRow:
                batch.append(row_event(row))
            else:
                view = self._book_view(row)  # type: ignore[arg-type]
                if view is not None:
                    batch.append(view)
            if len(batch) >= FAST_BATCH:
                publish(batch)
                self._published(batch)
                batch = []
                await asyncio.sleep(0)
        if batch:
            publish(batch)
            self._published(batch)
        if self._replayed_to is not None:
            self._anchor = (self._replayed_to, time.monotonic())
        self.finished = True
        elapsed = time.monotonic() - started
        if not self.published:
            log.warning("replay found no recorded ticks for %s in that range", ",".join(self.symbols))
        rate = self.published / max(elapsed, 1e-9)
        log.info(
            "replay finished: %d ticks and %d order books in %.2fs (%.0f ticks/s)",
            self.published, self.books_published, elapsed, rate,
        )  # fmt: skip
