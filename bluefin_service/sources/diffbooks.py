"""Books kept from a diff stream plus REST snapshots (Binance and Bluefin share this; the rules differ).

``DiffBooks`` owns one ``marketdata.book.DiffSync`` per symbol and the snapshot fetches. A sequence gap resets
that symbol's book, reports a ``resync`` status and fetches a new snapshot; at most one fetch per symbol runs
at a time, retried with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from bluefin_service.sources.feed import FeedSettings, FeedStats, Publish, backoff, status_events
from marketdata.book import BookDelta, BookError, DiffSync, OrderBook, SyncRules
from marketdata.venues.common import VenueMessageError

log = logging.getLogger(__name__)


class DiffBooks:
    def __init__(
        self,
        venue: str,
        symbols: list[str],
        rules: SyncRules,
        parse: Callable[[str], float],
        fetch: Callable[[str], Awaitable[BookDelta]],
        settings: FeedSettings,
        stats: FeedStats,
    ) -> None:
        self.venue = venue
        self.fetch = fetch
        self.settings = settings
        self.stats = stats
        self.syncs = {s: DiffSync(OrderBook(s, parse), rules) for s in symbols}
        self._buffered = {s: asyncio.Event() for s in symbols}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.publish: Publish = lambda events: None

    def book(self, symbol: str) -> OrderBook:
        return self.syncs[symbol].book

    def restart_all(self) -> None:
        """The diff stream (re)connected: every book starts over from a fresh snapshot."""
        for symbol in self.syncs:
            self._restart(symbol)

    def on_delta(self, delta: BookDelta, out: list[Any]) -> None:
        sync = self.syncs.get(delta.symbol)
        if sync is None:
            return
        try:
            changed = sync.on_delta(delta)
        except BookError as exc:  # a sequence gap, or a level that is not numbers
            self.stats.resyncs += 1
            log.warning("%s: %s; resyncing from a snapshot", self.venue, exc)
            out.extend(status_events(self.venue, [delta.symbol], "resync", str(exc), self.stats))
            self._restart(delta.symbol)
            self.on_delta(delta, out)  # buffered: the next snapshot may bridge to it
            return
        if changed:
            out.append(sync.book.view(self.settings.book_depth, self.venue))
        elif not sync.has_snapshot:
            self._buffered[delta.symbol].set()

    def _restart(self, symbol: str) -> None:
        self.syncs[symbol].reset()
        self._buffered[symbol].clear()
        task = self._tasks.get(symbol)
        if task is None or task.done():
            self._tasks[symbol] = asyncio.create_task(self._fetch_loop(symbol), name=f"{self.venue}-snapshot-{symbol}")

    async def _fetch_loop(self, symbol: str) -> None:
        sync = self.syncs[symbol]
        delays = backoff(self.settings.initial_backoff, self.settings.max_backoff)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._buffered[symbol].wait(), self.settings.snapshot_wait)
            try:
                snap = await asyncio.wait_for(self.fetch(symbol), self.settings.rest_timeout)
            except (aiohttp.ClientError, OSError, TimeoutError, VenueMessageError) as exc:
                log.warning("%s: snapshot for %s failed (%s); retrying", self.venue, symbol, exc)
                await asyncio.sleep(next(delays))
                continue
            try:
                sync.on_snapshot(snap.bids, snap.asks, snap.last_id, snap.timestamp)
            except BookError as exc:
                log.info("%s: snapshot for %s unusable (%s); fetching another", self.venue, symbol, exc)
                sync.reset()
                self._buffered[symbol].clear()
                await asyncio.sleep(next(delays))
                continue
            self.publish([sync.book.view(self.settings.book_depth, self.venue)])
            return

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
