"""The recorder: a hub tick listener that batches every published trade and price update into the store.

The listener only appends the event and its seq to a list (~0.1 us a tick, a tenth of what publishing a tick
costs) and, once ``PACK_SLICE`` ticks wait, schedules a packing step to run after the loop's current work (what
waits at a flush is packed then). Fan-out p99 is set by how long a source's burst takes to publish (a tick
waits for those ahead of it), so every tenth of a microsecond spent on the loop shows in it. Each packing step
moves up to ``PACK_SLICE`` ticks into their symbol's chunk: the columns of one store block
(``marketdata/tick_blocks.py``), up to ``CHUNK_MESSAGES`` ticks, which the writer stores as they are.

Measured at 100k ticks/s (``bench/store.py``): packing inside the listener (0.5 us a tick) raised p99 ~1.5x;
encoding a whole chunk at send time (0.2-0.4 ms steps) 2-6x; 200-tick packing steps (~0.1 ms, one period of
the mock's lockstep ticks) ~1.4x, 50-tick steps ~1.2x. A packing step after every published batch added 0.70 us
a tick to the loop, one per 50 waiting ticks 0.53 us. Sending the ticks MessagePack-encoded for the writer to
pack (0.41 against 0.70 us a tick on the loop) was worse on two vCPUs: the writer then needed 8-9% of a core
beside a service that keeps its own core busy (mean p99 ratio 1.35 against 1.18). Every other step on the loop
(taking a batch, copying it into the pipe, freeing it once stored) works a chunk at a time.

A flusher task takes a batch every ``flush_interval`` and hands it to the writer process (``writer.py``), which
writes it in one transaction. When the store fails the batch is kept and retried with capped, jittered backoff
while new ticks keep buffering; once the buffer is full the oldest chunk is dropped, counted, logged and shown
in ``/streaming/status``. Memory is bounded by ``max_buffered + max_batch`` ticks (plus one chunk being filled
per symbol).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bluefin_service.store import BookRow, Store, TickRow, redact
from bluefin_service.store.writer import WriterProcess
from marketdata.tick_blocks import (
    BLOCK_SPAN_SECONDS,
    BUY_FLAG,
    PRICE_UPDATE_FLAG,
    SELL_FLAG,
    Block,
    ChunkColumns,
    block_rows,
)
from marketdata.ticks import MarketEvent, Trade

log = logging.getLogger(__name__)

CHUNK_MESSAGES = 1000  # ticks per chunk (and stored block)
PACK_SLICE = 50  # ticks packed per loop step: ~25 us
_PACK_TRIGGER = 2 * PACK_SLICE  # a packing step is scheduled once a slice waits (fewer waits pack at the flush)
MAX_BOOKS = 100_000  # order-book snapshots buffered while the store fails (~1 day of 1/s for a symbol)
BACKOFF_FIRST = 0.1
BACKOFF_CAP = 2.0
REPEAT_LOG_SECONDS = 10.0


def backoff_delays(first: float = BACKOFF_FIRST, cap: float = BACKOFF_CAP) -> Iterator[float]:
    """Doubling waits with jitter (50-100% of the nominal wait), capped."""
    for attempt in itertools.count():
        nominal = min(cap, first * 2**attempt)
        yield nominal * random.uniform(0.5, 1.0)


@dataclass
class RecorderStats:
    written: int = 0
    dropped: int = 0
    books_written: int = 0
    books_dropped: int = 0
    undecodable: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    retention_deleted: int = 0
    last_error: str | None = None
    last_flush: float | None = None


class _Batch:
    """Chunks and book snapshots taken from the buffer, and the newest seq per symbol they hold."""

    __slots__ = ("books", "chunks", "last_seq", "size")

    def __init__(self, chunks: list[ChunkColumns], size: int, books: list[BookRow]) -> None:
        self.chunks = chunks
        self.size = size
        self.books = books
        self.last_seq = {chunk.symbol: chunk.seqs[-1] for chunk in chunks}  # chunks are oldest first


class Recorder:
    def __init__(
        self,
        store: Store,
        *,
        flush_interval: float = 0.5,
        max_buffered: int = 1_000_000,
        max_batch: int = 100_000,
        retention_age_seconds: float | None = None,
        retention_max_bytes: int | None = None,
        retention_check_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self.max_buffered = max_buffered
        self.max_batch = max_batch
        self.retention_age_seconds = retention_age_seconds
        self.retention_max_bytes = retention_max_bytes
        self.retention_check_seconds = retention_check_seconds
        self.writer = WriterProcess(store.url)
        self.stats = RecorderStats()
        self.written_seq: dict[str, int] = {}
        self.opened = False
        self._clock = clock
        self.chunk_size = max(1, min(CHUNK_MESSAGES, max_buffered // 10))
        self._unpacked: list[object] = []  # event, seq, event, seq, ... as published, not yet packed
        self._packing: list[object] = []  # the list being packed, from index _packed_to
        self._packed_to = 0
        self._pack_scheduled = False
        self._filling: dict[str, ChunkColumns] = {}  # the chunk being filled, per symbol
        self._books: deque[BookRow] = deque(maxlen=MAX_BOOKS)  # snapshots waiting; full: the oldest go, counted
        self._chunks: deque[ChunkColumns] = deque()  # full chunks, oldest first
        self._chunked = 0  # ticks in self._chunks
        self._inflight: _Batch | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_retention = 0.0
        self._logged_dropped = 0
        self._last_failure_log = 0.0

    # -- the hub tick listener (hot path: no I/O, no encoding) ------------------------------------------
    def record(self, event: MarketEvent, seq: int) -> None:
        unpacked = self._unpacked
        unpacked.append(event)
        unpacked.append(seq)
        if len(unpacked) >= _PACK_TRIGGER and not self._pack_scheduled:
            self._pack_scheduled = True
            try:
                asyncio.get_running_loop().call_soon(self._pack_step)
            except RuntimeError:  # no loop (a synchronous caller): pack now
                self._pack_all()

    def record_book(self, row: BookRow) -> None:
        """An order-book snapshot to store (``BookStreams`` calls this at its recording rate)."""
        if len(self._books) == self._books.maxlen:
            self.stats.books_dropped += 1
        self._books.append(row)

    def pending_books(self, symbol: str) -> list[BookRow]:
        """Recorded but not yet stored book snapshots of ``symbol``, oldest first."""
        inflight = self._inflight.books if self._inflight else []
        return [row for row in itertools.chain(inflight, self._books) if row.symbol == symbol]

    def _pack_step(self) -> None:
        """Pack up to ``PACK_SLICE`` ticks, and come back after the loop's other ready work if more wait."""
        self._pack(PACK_SLICE)
        if self._waiting():
            asyncio.get_running_loop().call_soon(self._pack_step)
        else:
            self._pack_scheduled = False

    def _pack_all(self) -> None:
        while self._waiting():
            self._pack(self._waiting())
        self._pack_scheduled = False

    def _waiting(self) -> int:
        return (len(self._packing) - self._packed_to + len(self._unpacked)) // 2

    def _next_list(self) -> None:
        """Once the list being packed is done, take what was published since (a swap: nothing is copied)."""
        if self._packed_to >= len(self._packing):
            self._packing, self._unpacked, self._packed_to = self._unpacked, [], 0

    def _pack(self, count: int) -> None:
        self._next_list()
        excess = self._waiting() - self.max_buffered
        while excess > 0:  # more waiting than the whole buffer may hold: the oldest go, counted
            skipped = min(excess, (len(self._packing) - self._packed_to) // 2)
            self._packed_to += 2 * skipped
            self.stats.dropped += skipped
            excess -= skipped
            self._next_list()
        packing, start = self._packing, self._packed_to
        stop = min(len(packing), start + 2 * count)
        self._packed_to = stop
        filling = self._filling
        size = self.chunk_size
        span, trade, buy, sell, update = BLOCK_SPAN_SECONDS, Trade, BUY_FLAG, SELL_FLAG, PRICE_UPDATE_FLAG
        for i in range(start, stop, 2):
            event: MarketEvent = packing[i]  # type: ignore[assignment]
            ts = event.timestamp
            chunk = filling.get(event.symbol)
            if chunk is not None and not -span <= ts - chunk.first_ts <= span:
                del filling[event.symbol]  # a block spans at most this much event time (see sqlite_blocks)
                self._add_chunk(chunk)
                chunk = None
            if chunk is None:
                chunk = filling[event.symbol] = ChunkColumns(event.symbol)
                chunk.first_ts = ts
            seqs = chunk.seqs
            seqs.append(packing[i + 1])  # type: ignore[arg-type]
            chunk.stamps.append(ts)
            chunk.prices.append(event.price)
            if event.__class__ is trade:  # ChunkColumns.add, inlined: this loop runs for every tick
                chunk.sizes.append(event.size)  # type: ignore[union-attr]
                chunk.flags.append(buy if event.side == "buy" else sell)  # type: ignore[union-attr]
                chunk.trade_ids.append(event.trade_id)  # type: ignore[union-attr]
            else:
                chunk.sizes.append(event.volume)  # type: ignore[union-attr]
                chunk.flags.append(update)
            if len(seqs) >= size:
                del filling[event.symbol]
                self._add_chunk(chunk)
        if stop >= len(packing):
            self._packing, self._packed_to = [], 0

    def _add_chunk(self, chunk: ChunkColumns) -> None:
        """Append a full chunk to the buffer; past ``max_buffered``, drop the oldest chunks."""
        self._chunks.append(chunk)
        self._chunked += len(chunk)
        while self._chunked > self.max_buffered:
            dropped = self._chunks.popleft()
            self._chunked -= len(dropped)
            self.stats.dropped += len(dropped)

    def _seal(self) -> None:
        """Pack what is waiting and move every chunk being filled to the full ones (at each flush)."""
        self._pack_all()
        filling, self._filling = self._filling, {}
        for chunk in filling.values():
            self._add_chunk(chunk)

    @property
    def buffered(self) -> int:
        filling = sum(len(chunk) for chunk in self._filling.values()) + self._waiting()
        return self._chunked + filling + (self._inflight.size if self._inflight else 0)

    def pending_blocks(self, symbol: str) -> list[Block]:
        """Recorded but not yet stored ticks of ``symbol``, oldest first, as block copies: a memory copy a chunk on
        the loop, decoded into rows by ``pending_rows`` in a worker thread (for history reads)."""
        self._pack_all()
        inflight = self._inflight.chunks if self._inflight else ()
        filling = self._filling.get(symbol)
        chunks = itertools.chain(inflight, self._chunks, (filling,) if filling is not None else ())
        return [chunk.block() for chunk in chunks if chunk.symbol == symbol]

    # -- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="recorder")

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Flush what is buffered (for up to ``drain_seconds``), then close the store."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.stats.consecutive_failures:
            drain_seconds = min(drain_seconds, 1.0)  # one last try, not a long wait on a store that is down
        try:
            await asyncio.wait_for(self._drain(), drain_seconds)
        except (TimeoutError, Exception) as exc:
            log.error("recorder stopped with %d messages unstored: %s", self.buffered, exc or "timeout")
        with contextlib.suppress(Exception):
            await self.writer.close()
        with contextlib.suppress(Exception):
            await self.store.close()

    async def _drain(self) -> None:
        while self._inflight is not None or self._chunks or self._filling or self._waiting() or self._books:
            await self.flush_once()

    async def _run(self) -> None:
        delays: Iterator[float] | None = None  # set while the store is failing
        with contextlib.suppress(OSError):
            await self.writer.start()  # now, so its start-up is not paid by the first batch
        while True:
            await asyncio.sleep(next(delays) if delays is not None else self.flush_interval)
            try:
                while await self.flush_once():
                    pass  # a backlog larger than one batch: keep writing
                await self._maybe_retention()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._on_failure(exc)
                if delays is None:
                    delays = backoff_delays(BACKOFF_FIRST, max(BACKOFF_CAP, self.flush_interval))
                continue
            if self.stats.consecutive_failures:
                log.warning(
                    "store %s recovered after %d failed attempts; %d messages dropped in total",
                    redact(self.store.url),
                    self.stats.consecutive_failures,
                    self.stats.dropped,
                )
                self.stats.consecutive_failures = 0
                delays = None
            self._log_drops()

    async def flush_once(self) -> bool:
        """Write one batch; True if more is waiting. Raises what the store raised (the batch is kept)."""
        if self._inflight is None:
            self._seal()
            if not self._chunks and not self._books:
                return False
            self._inflight = self._take_batch()
        batch = self._inflight
        bad = await self.writer.write(batch.chunks, batch.books)
        if not self.opened:
            self.opened = True
            log.info("recording to %s", redact(self.store.url))
        self._inflight = None
        self.stats.undecodable += bad
        self.stats.written += batch.size - bad
        self.stats.books_written += len(batch.books)
        self.stats.last_flush = self._clock()
        self.written_seq.update(batch.last_seq)
        while batch.chunks:  # free the stored payloads a chunk per loop turn
            batch.chunks.pop()
            await asyncio.sleep(0)
        return self._chunked >= self.max_batch

    def _take_batch(self) -> _Batch:
        chunks = self._chunks
        if self._chunked <= self.max_batch:
            taken, size = list(chunks), self._chunked
            chunks.clear()
        else:
            taken, size = [], 0
            while chunks and size < self.max_batch:
                taken.append(chunks.popleft())
                size += len(taken[-1])
        self._chunked -= size
        books = list(self._books)
        self._books.clear()
        return _Batch(taken, size, books)

    async def _maybe_retention(self) -> None:
        if self.retention_age_seconds is None and self.retention_max_bytes is None:
            return
        now = self._clock()
        if now - self._last_retention < self.retention_check_seconds:
            return
        self._last_retention = now
        if not self.store.is_open:
            await self.store.open()
        deleted = await self.store.enforce_retention(self.retention_age_seconds, self.retention_max_bytes, now)
        if deleted:
            self.stats.retention_deleted += deleted
            log.info("retention deleted %d old ticks", deleted)

    # -- failure reporting ----------------------------------------------------------------------------------
    def _on_failure(self, exc: Exception) -> None:
        stats = self.stats
        stats.failures += 1
        stats.consecutive_failures += 1
        stats.last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if stats.consecutive_failures == 1 or now - self._last_failure_log >= REPEAT_LOG_SECONDS:
            self._last_failure_log = now
            log.error(
                "store %s failed (%s, attempt %d); retrying with backoff, %d messages buffered (limit %d), "
                "%d dropped so far",
                redact(self.store.url),
                stats.last_error,
                stats.consecutive_failures,
                self.buffered,
                self.max_buffered,
                stats.dropped,
            )
        self._log_drops()

    def _log_drops(self) -> None:
        dropped = self.stats.dropped
        if dropped > self._logged_dropped:
            log.error(
                "recorder buffer full (%d messages): dropped %d oldest unstored messages (%d in total)",
                self.max_buffered,
                dropped - self._logged_dropped,
                dropped,
            )
            self._logged_dropped = dropped

    def status(self) -> dict[str, object]:
        self._pack_all()  # so `buffered` and `dropped` describe the bounded buffer
        stats = self.stats
        failing = stats.consecutive_failures > 0
        return {
            "enabled": True,
            "store": redact(self.store.url),
            "state": "failing" if failing else ("ok" if self.opened else "opening"),
            "flush_interval_seconds": self.flush_interval,
            "buffered": self.buffered,
            "max_buffered": self.max_buffered,
            "written": stats.written,
            "dropped": stats.dropped,
            "undecodable": stats.undecodable,
            "failures": stats.failures,
            "consecutive_failures": stats.consecutive_failures,
            "last_error": stats.last_error,
            "last_flush": stats.last_flush,
            "retention_deleted": stats.retention_deleted,
            "books_written": stats.books_written,
            "books_buffered": len(self._books) + (len(self._inflight.books) if self._inflight else 0),
            "books_dropped": stats.books_dropped,
            "written_seq": dict(self.written_seq),
        }


def pending_rows(blocks: list[Block]) -> list[TickRow]:
    """``Recorder.pending_blocks`` as rows (run it in a worker thread: it is Python per tick)."""
    return [TickRow._make(row) for block in blocks for row in block_rows(block)[0]]
