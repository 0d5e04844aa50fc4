"""The recorder: a hub listener that batches every published tick into the store.

The listener only appends the payload to a list, so recording never blocks or slows the fan-out. Payloads are
kept in chunks of up to ``CHUNK_MESSAGES``: every step on the event loop (taking a batch, copying it into the
pipe, freeing it once stored) then works a chunk at a time. Taking 50,000 payloads as one list and freeing them
at once stalled the loop ~1.5 ms each, twice per flush, which showed in fan-out p99 at 100k ticks/s.

A flusher task takes a batch every ``flush_interval`` and hands it to the writer process (``writer.py``), which
decodes it and writes it in one transaction. When the store fails the batch is kept and retried with capped,
jittered backoff while new messages keep buffering; once the buffer is full the oldest chunk is dropped,
counted, logged and shown in ``/streaming/status``. Memory is bounded by ``max_buffered + max_batch`` messages
(plus one chunk being filled).
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

from bluefin_service.store import TICK_PREFIXES, Store, redact
from bluefin_service.store.writer import WriterProcess

log = logging.getLogger(__name__)

CHUNK_MESSAGES = 1000  # payloads per chunk: ~140 KB, ~50 us to join or free on the loop
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
    undecodable: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    retention_deleted: int = 0
    last_error: str | None = None
    last_flush: float | None = None


class _Batch:
    """Chunks of payloads taken from the buffer, and the newest seq per symbol they hold (known when the whole
    buffer was taken; a partial batch of a backlog leaves the status to the next whole one)."""

    __slots__ = ("chunks", "last_seq", "size")

    def __init__(self, chunks: list[list[bytes]], size: int, last_seq: dict[str, int]) -> None:
        self.chunks = chunks
        self.size = size
        self.last_seq = last_seq


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
        self._filling: list[bytes] = []  # the chunk being filled
        self._chunks: deque[list[bytes]] = deque()  # full chunks, oldest first
        self._chunked = 0  # payloads in self._chunks
        self._recorded_seq: dict[str, int] = {}  # newest seq per symbol put in the buffer
        self._inflight: _Batch | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_retention = 0.0
        self._logged_dropped = 0
        self._last_failure_log = 0.0

    # -- the hub listener (hot path: no I/O, no decoding) -----------------------------------------------
    def record(self, symbol: str, seq: int, payload: bytes) -> None:
        if not payload.startswith(TICK_PREFIXES):
            return
        filling = self._filling
        filling.append(payload)
        self._recorded_seq[symbol] = seq
        if len(filling) >= self.chunk_size:
            self._seal()

    def _seal(self) -> None:
        """Move the chunk being filled to the full ones; past ``max_buffered``, drop the oldest chunks."""
        filling = self._filling
        if not filling:
            return
        self._chunks.append(filling)
        self._filling = []
        self._chunked += len(filling)
        while self._chunked > self.max_buffered:
            dropped = self._chunks.popleft()
            self._chunked -= len(dropped)
            self.stats.dropped += len(dropped)

    @property
    def buffered(self) -> int:
        return self._chunked + len(self._filling) + (self._inflight.size if self._inflight else 0)

    def pending_messages(self, symbol: str) -> list[bytes]:
        """Recorded but not yet stored payloads of ``symbol``, oldest first (for history reads)."""
        marker = b'"symbol":"' + symbol.encode() + b'"'
        inflight = self._inflight.chunks if self._inflight else ()
        chunks = itertools.chain(inflight, self._chunks, (self._filling,))
        return [payload for chunk in chunks for payload in chunk if marker in payload]

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
        while self._inflight is not None or self._chunks or self._filling:
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
            if not self._chunks:
                return False
            self._inflight = self._take_batch()
        batch = self._inflight
        bad = await self.writer.write(batch.chunks)
        if not self.opened:
            self.opened = True
            log.info("recording to %s", redact(self.store.url))
        self._inflight = None
        self.stats.undecodable += bad
        self.stats.written += batch.size - bad
        self.stats.last_flush = self._clock()
        self.written_seq.update(batch.last_seq)
        while batch.chunks:  # free the stored payloads a chunk per loop turn
            batch.chunks.pop()
            await asyncio.sleep(0)
        return self._chunked >= self.max_batch

    def _take_batch(self) -> _Batch:
        chunks = self._chunks
        if self._chunked <= self.max_batch:
            batch = _Batch(list(chunks), self._chunked, dict(self._recorded_seq))
            chunks.clear()
        else:
            batch = _Batch([], 0, {})
            while chunks and batch.size < self.max_batch:
                batch.chunks.append(chunks.popleft())
                batch.size += len(batch.chunks[-1])
        self._chunked -= batch.size
        return batch

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
            "written_seq": dict(self.written_seq),
        }
