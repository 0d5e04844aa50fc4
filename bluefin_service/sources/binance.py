"""Binance USDⓈ-M futures: trades on ``/market``, book diffs and best bid/ask on ``/public``.

Two sockets, because Binance routes ``@aggTrade`` to ``/market`` and ``@depth``/``@bookTicker`` to ``/public``
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Important-WebSocket-Change-Notice).
Subscriptions use ``{"method":"SUBSCRIBE","params":[…],"id":N}`` (…/Live-Subscribing-Unsubscribing-to-streams),
one request per connection (the limit is 10 messages/s). The server pings every 3 minutes and is answered; an
idle connection is probed with LIST_SUBSCRIPTIONS so a quiet symbol is not taken for a dead socket. A
connection lives at most 24 h, so it is recycled at 23 h (``FeedSettings.max_age``). The book follows "How to
manage a local order book correctly" via ``DiffBooks`` (REST ``/fapi/v1/depth``, limit 1000).
Trades missed while ``/market`` was down are fetched back from ``/fapi/v1/aggTrades?fromId=`` (``TradeBackfill``).
Frame formats and parsing: ``marketdata/venues/binance.py``.
"""

from __future__ import annotations

import asyncio
import itertools

import aiohttp

from bluefin_service.sources.backfill import TradeBackfill
from bluefin_service.sources.diffbooks import DiffBooks
from bluefin_service.sources.feed import FeedSettings, Publish, VenueConnection
from bluefin_service.sources.venue_source import VenueSource
from marketdata.book import BookDelta
from marketdata.ticks import Trade
from marketdata.venues import binance as parser

WS_MARKET_URL = "wss://fstream.binance.com/market/ws"
WS_PUBLIC_URL = "wss://fstream.binance.com/public/ws"
REST_URL = "https://fapi.binance.com"
SNAPSHOT_LIMIT = 1000
# A quiet symbol can go longer than the stale limit without a trade, and the server's own PING comes only every
# 3 minutes; an idle connection is probed with a request whose reply proves it alive (id 0 marks the probe).
IDLE_PROBE = '{"method":"LIST_SUBSCRIPTIONS","id":0}'


def venue_symbol(symbol: str) -> str:
    """ETH-PERP -> ETHUSDT (USDT-margined perpetuals)."""
    return symbol.removesuffix("-PERP").replace("-", "") + "USDT"


class BinanceSource(VenueSource):
    name = "binance"

    def __init__(
        self,
        symbol_map: dict[str, str],
        settings: FeedSettings | None = None,
        *,
        ws_market_url: str = WS_MARKET_URL,
        ws_public_url: str = WS_PUBLIC_URL,
        rest_url: str = REST_URL,
    ) -> None:
        super().__init__(symbol_map, settings, parser.BinanceParser, rest_url)
        self.ws_market_url = ws_market_url
        self.ws_public_url = ws_public_url
        self._ids = itertools.count(1)  # 0 is the idle probe's
        self.books = DiffBooks(
            self.name, self.symbols, parser.SYNC_RULES, float, self._fetch_snapshot, self.settings, self.stats
        )
        self.backfill = TradeBackfill(self.name, self._fetch_trades, self.settings)

    async def run(self, publish: Publish) -> None:
        self.books.publish = publish
        self.backfill.publish = publish
        async with aiohttp.ClientSession() as http:
            self._http = http
            on_frame = self.frame_handler(publish, {Trade: self.backfill.on_trade, BookDelta: self.books.on_delta})
            market = VenueConnection(
                "binance/market", self.ws_market_url, http, self.settings, stats=self.stats,
                on_open=self._open_market, on_frame=on_frame, on_down=self.down_reporter(publish, "reconnect"),
                ping_text=IDLE_PROBE,
            )  # fmt: skip
            public = VenueConnection(
                "binance/public", self.ws_public_url, http, self.settings, stats=self.stats,
                on_open=self._open_public, on_frame=on_frame, on_down=self.down_reporter(publish, "resync"),
                ping_text=IDLE_PROBE,
            )  # fmt: skip
            try:
                await asyncio.gather(market.run(), public.run())
            finally:
                await self.books.close()
                await self.backfill.close()

    async def _open_market(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.backfill.reconnected()  # no-op on the first connection: no trade seen yet
        await self._subscribe(ws, ["aggTrade"])

    async def _open_public(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.books.restart_all()
        await self._subscribe(ws, ["depth@100ms", "bookTicker"])

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse, streams: list[str]) -> None:
        params = [f"{self.symbol_map[s].lower()}@{stream}" for s in self.symbols for stream in streams]
        await ws.send_json({"method": "SUBSCRIBE", "params": params, "id": next(self._ids)})

    async def _fetch_trades(self, symbol: str, from_id: int) -> list[Trade]:
        params = {"symbol": self.symbol_map[symbol], "fromId": str(from_id), "limit": "1000"}
        return parser.parse_agg_trades_rest(await self.rest_get("/fapi/v1/aggTrades", params), symbol)

    async def _fetch_snapshot(self, symbol: str) -> BookDelta:
        params = {"symbol": self.symbol_map[symbol], "limit": str(SNAPSHOT_LIMIT)}
        return parser.parse_depth_snapshot(await self.rest_get("/fapi/v1/depth", params), symbol)
