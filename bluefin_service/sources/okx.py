"""OKX v5 public: ``trades``, ``tickers`` and ``books`` on one socket, text ``ping`` keepalive.

URL ``wss://ws.okx.com:8443/ws/v5/public`` (https://www.okx.com/docs-v5/en/#overview-production-trading-services).
Subscribe ``{"op":"subscribe","args":[{"channel":…,"instId":…}]}``; when idle, send the text ``ping`` and
expect ``pong`` (the server closes after 30 s without traffic), per
https://www.okx.com/docs-v5/en/#overview-websocket-overview. The ``books`` channel starts with a snapshot;
each update must name the last applied ``seqId`` as its ``prevSeqId``, and a non-zero ``checksum`` must match
the local book. On a gap or mismatch the book is dropped and the channel re-subscribed, which makes OKX send
a fresh snapshot. OKX announced dropping that WS snapshot (changelog "Delist initial snapshot and checksum
field in order book channels"; whether it happened is UNCONFIRMED): if updates arrive without one, the book is
built from ``GET /api/v5/market/books`` by the changelog's seqId procedure instead. Trade and book sizes are
contracts; ``ctVal`` from ``GET /api/v5/public/instruments`` turns them into base currency. Frame formats:
``marketdata/venues/okx.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from decimal import Decimal
from typing import Any

import aiohttp

from bluefin_service.sources.feed import FeedSettings, Publish, VenueConnection, backoff, status_events
from bluefin_service.sources.venue_source import VenueSource
from marketdata.book import BookDelta, BookError, DiffSync, OrderBook
from marketdata.venues import okx as parser
from marketdata.venues.common import VenueMessageError

log = logging.getLogger(__name__)

WS_URL = "wss://ws.okx.com:8443/ws/v5/public"
REST_URL = "https://www.okx.com"
CHANNELS = ("trades", "tickers", "books")


def venue_symbol(symbol: str) -> str:
    """ETH-PERP -> ETH-USDT-SWAP."""
    return symbol.removesuffix("-PERP") + "-USDT-SWAP"


class OkxSource(VenueSource):
    name = "okx"

    def __init__(
        self,
        symbol_map: dict[str, str],
        settings: FeedSettings | None = None,
        *,
        ws_url: str = WS_URL,
        rest_url: str = REST_URL,
    ) -> None:
        super().__init__(symbol_map, settings, parser.OkxParser, rest_url)  # ETH-PERP -> ETH-USDT-SWAP
        self.ws_url = ws_url
        self.books = {s: OrderBook(s, keep_raw=True) for s in self.symbols}
        self._size_factor = {s: 1.0 for s in self.symbols}
        self._resyncing: set[str] = set()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._rest_syncs: dict[str, DiffSync] = {}  # symbols being built from REST (no WS snapshot came)
        self._fetches: dict[str, asyncio.Task[None]] = {}
        self._publish: Publish = lambda events: None

    async def run(self, publish: Publish) -> None:
        self._publish = publish
        async with aiohttp.ClientSession() as http:
            self._http = http
            on_frame = self.frame_handler(publish, {BookDelta: self._on_book})
            report_down = self.down_reporter(publish)

            def on_down(reason: str, stale: bool) -> None:
                self._ws = None  # resyncs wait for the reconnect, which re-subscribes everything
                report_down(reason, stale)

            connection = VenueConnection(
                "okx/public", self.ws_url, http, self.settings, stats=self.stats,
                on_open=self._open, on_frame=on_frame, on_down=on_down, ping_text="ping",
            )  # fmt: skip
            try:
                await connection.run()
            finally:
                for task in self._fetches.values():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if not self.parser.contract_values:
            await self._load_contract_values()
        for book in self.books.values():
            book.clear()
        self._resyncing = set(self.symbols)
        self._rest_syncs.clear()
        self._ws = ws
        args = [{"channel": c, "instId": self.symbol_map[s]} for s in self.symbols for c in CHANNELS]
        await ws.send_json({"op": "subscribe", "args": args})

    async def _load_contract_values(self) -> None:
        values = parser.parse_contract_values(await self.rest_get("/api/v5/public/instruments", {"instType": "SWAP"}))
        wanted = {v: s for s, v in self.symbol_map.items()}
        missing = sorted(set(wanted) - set(values))
        if missing:
            log.warning("okx: no ctVal for %s; treating their sizes as base units", ", ".join(missing))
        self.parser.set_contract_values({k: v for k, v in values.items() if k in wanted and v != Decimal(1)})
        for inst_id, value in self.parser.contract_values.items():
            self._size_factor[wanted[inst_id]] = float(value)

    def _on_book(self, delta: BookDelta, out: list[Any]) -> None:
        symbol = delta.symbol
        if symbol in self._resyncing:
            if not delta.snapshot:
                self._sync_from_rest(delta, out)
                return
            self._resyncing.discard(symbol)
            self._rest_syncs.pop(symbol, None)
        book = self.books[symbol]
        try:
            parser.apply_book_delta(book, delta)
        except BookError as exc:
            self._resync(symbol, str(exc), out)
            return
        out.append(book.view(self.settings.book_depth, self.name, self._size_factor[symbol]))

    def _sync_from_rest(self, delta: BookDelta, out: list[Any]) -> None:
        """An update with no snapshot before it: buffer, fetch the REST book, bridge by seqId."""
        symbol = delta.symbol
        sync = self._rest_syncs.get(symbol)
        if sync is None:
            self.books[symbol].clear()
            sync = self._rest_syncs[symbol] = DiffSync(self.books[symbol], parser.REST_SYNC_RULES)
            task = self._fetches.get(symbol)
            if task is None or task.done():
                self._fetches[symbol] = asyncio.create_task(self._fetch_rest_book(symbol), name=f"okx-book-{symbol}")
        try:
            changed = sync.on_delta(delta)
        except BookError as exc:
            self._rest_syncs.pop(symbol, None)
            self._resync(symbol, str(exc), out)
            return
        if sync.live:
            self._resyncing.discard(symbol)
            self._rest_syncs.pop(symbol, None)
        if changed:
            out.append(self.books[symbol].view(self.settings.book_depth, self.name, self._size_factor[symbol]))

    async def _fetch_rest_book(self, symbol: str) -> None:
        delays = backoff(self.settings.initial_backoff, self.settings.max_backoff)
        await asyncio.sleep(self.settings.snapshot_wait)  # let updates buffer first, as the procedure says
        while symbol in self._rest_syncs:
            params = {"instId": self.symbol_map[symbol], "sz": "400"}
            try:
                snap = parser.parse_rest_book(await self.rest_get("/api/v5/market/books", params), symbol)
            except (aiohttp.ClientError, OSError, TimeoutError, VenueMessageError) as exc:
                log.warning("okx: REST book for %s failed (%s); retrying", symbol, exc)
                await asyncio.sleep(next(delays))
                continue
            sync = self._rest_syncs.get(symbol)
            if snap is None or sync is None:
                if snap is None:
                    log.error("okx: REST book for %s has no seqId; waiting for a WS snapshot", symbol)
                return
            try:
                sync.on_snapshot(snap.bids, snap.asks, snap.last_id, snap.timestamp)
            except BookError as exc:
                log.info("okx: REST book for %s unusable (%s); fetching another", symbol, exc)
                sync.reset()
                await asyncio.sleep(next(delays))
                continue
            if sync.live:
                self._resyncing.discard(symbol)
                self._rest_syncs.pop(symbol, None)
            view = self.books[symbol].view(self.settings.book_depth, self.name, self._size_factor[symbol])
            self._publish([view])
            return

    def _resync(self, symbol: str, reason: str, out: list[Any]) -> None:
        self.stats.resyncs += 1
        log.warning("okx: %s; re-subscribing to the book", reason)
        out.extend(status_events(self.name, [symbol], "resync", reason, self.stats))
        self.books[symbol].clear()
        self._resyncing.add(symbol)
        arg = {"channel": "books", "instId": self.symbol_map[symbol]}
        self._send({"op": "unsubscribe", "args": [arg]})
        self._send({"op": "subscribe", "args": [arg]})

    def _send(self, message: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return  # the reconnect re-subscribes everything
        task = asyncio.create_task(ws.send_json(message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)
