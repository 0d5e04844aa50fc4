"""Trades missed while a trade socket was down, fetched back by id over REST.

For venues whose trade ids are consecutive per symbol and whose REST API pages by id (Binance ``aggTrades``
with ``fromId``). After a reconnect, live trades of each symbol are held (bounded) while the missed ones are
fetched from the last id seen; then both go out in id order, de-duplicated, so subscribers get a complete
stream. If REST keeps failing, or more than ``max_pages`` pages are missing, or the hold fills up, the held
trades are released and the shortfall stays what the ``upstream_reconnect`` gap message already says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp

from bluefin_service.sources.feed import FeedSettings, Publish, backoff
from marketdata.ticks import Trade
from marketdata.venues.common import VenueMessageError

log = logging.getLogger(__name__)


class TradeBackfill:
    def __init__(
        self,
        venue: str,
        fetch: Callable[[str, int], Awaitable[list[Trade]]],
        settings: FeedSettings,
        *,
        page_size: int = 1000,
        max_pages: int = 10,
        max_held: int = 10_000,
    ) -> None:
        self.venue = venue
        self.fetch = fetch  # (symbol, first id) -> up to page_size trades from that id on, oldest first
        self.settings = settings
        self.page_size = page_size
        self.max_pages = max_pages
        self.max_held = max_held
        self.last: dict[str, int] = {}
        self.recovered = 0
        self.duplicates = 0
        self.publish: Publish = lambda events: None
        self._held: dict[str, list[Trade]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def reconnected(self) -> None:
        """The trade socket is back: hold live trades and fetch what was missed, per symbol seen before."""
        for symbol in self.last:
            if symbol not in self._held:
                self._held[symbol] = []
                self._tasks[symbol] = asyncio.create_task(self._fill(symbol), name=f"{self.venue}-backfill-{symbol}")

    def on_trade(self, trade: Trade, out: list[Trade]) -> None:
        held = self._held.get(trade.symbol)
        if held is None:
            self._accept(trade, out)
        elif len(held) < self.max_held:
            held.append(trade)
        else:
            log.warning("%s: %d live trades held for %s; giving up the backfill", self.venue, len(held), trade.symbol)
            self._tasks[trade.symbol].cancel()
            self._release(trade.symbol, [])
            self._accept(trade, out)

    def _accept(self, trade: Trade, out: list[Trade]) -> None:
        trade_id = int(trade.trade_id)
        last = self.last.get(trade.symbol)
        if last is not None and trade_id <= last:
            self.duplicates += 1
            return
        self.last[trade.symbol] = trade_id
        out.append(trade)

    def _release(self, symbol: str, missing: list[Trade]) -> None:
        held = self._held.pop(symbol, [])
        out: list[Trade] = []
        for trade in missing:
            self._accept(trade, out)
        self.recovered += len(out)
        for trade in held:
            self._accept(trade, out)
        if out:
            self.publish(out)

    async def _fill(self, symbol: str) -> None:
        next_id = self.last[symbol] + 1
        missing: list[Trade] = []
        delays = backoff(self.settings.initial_backoff, self.settings.max_backoff)
        failures = pages = 0
        try:
            while pages < self.max_pages:
                try:
                    page = await asyncio.wait_for(self.fetch(symbol, next_id), self.settings.rest_timeout)
                except (aiohttp.ClientError, OSError, TimeoutError, VenueMessageError) as exc:
                    failures += 1
                    log.warning("%s: trade backfill for %s failed (%s)", self.venue, symbol, exc)
                    if failures >= 3:
                        break
                    await asyncio.sleep(next(delays))
                    continue
                pages += 1
                missing.extend(page)
                held = self._held.get(symbol) or []
                caught_up = bool(held) and bool(page) and int(page[-1].trade_id) >= int(held[0].trade_id) - 1
                if len(page) < self.page_size or caught_up:
                    break
                next_id = int(page[-1].trade_id) + 1
        finally:
            if symbol in self._held:
                self._release(symbol, missing)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
