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
from typing import Any

import aiohttp

from bluefin_service.sources.backfill import TradeBackfill
from bluefin_service.sources.diffbooks import DiffBooks
from bluefin_service.sources.feed import FeedSettings, FeedStats, Publish, VenueConnection, status_events
from marketdata.book import BookDelta
from marketdata.ticks import Trade
from marketdata.venues import binance as parser
from marketdata.venues.common import VenueControl

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


class BinanceSource:
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
        self.symbol_map = symbol_map  # ETH-PERP -> ETHUSDT
        self.symbols = list(symbol_map)
        self.settings = settings or FeedSettings()
        self.urls = (ws_market_url, ws_public_url, rest_url.rstrip("/"))
        self.stats = FeedStats()
        self.parser = parser.BinanceParser({v: s for s, v in symbol_map.items()})
        self._ids = itertools.count(1)  # 0 is the idle probe's
        self._http: aiohttp.ClientSession | None = None
        self.books = DiffBooks(
            self.name, self.symbols, parser.SYNC_RULES, float, self._fetch_snapshot, self.settings, self.stats
        )
        self.backfill = TradeBackfill(self.name, self._fetch_trades, self.settings)

    async def run(self, publish: Publish) -> None:
        market_url, public_url, _ = self.urls
        self.books.publish = publish
        self.backfill.publish = publish
        async with aiohttp.ClientSession() as http:
            self._http = http

            def on_frame(frame: str | bytes, ts_init: float) -> None:
                out: list[Any] = []
                for event in self.parser.parse(frame, ts_init):
                    if type(event) is Trade:
                        self.backfill.on_trade(event, out)
                    elif type(event) is BookDelta:
                        self.books.on_delta(event, out)
                    elif type(event) is VenueControl:
                        self._on_control(event)
                    else:
                        out.append(event)
                if out:
                    publish(out)

            def on_down(kind: str) -> Any:
                def report(reason: str, stale: bool) -> None:
                    status = "stale" if stale else kind
                    publish(status_events(self.name, self.symbols, status, reason, self.stats))  # type: ignore[arg-type]

                return report

            market = VenueConnection(
                "binance/market", market_url, http, self.settings, stats=self.stats,
                on_open=self._open_market, on_frame=on_frame, on_down=on_down("reconnect"),
                ping_text=IDLE_PROBE,
            )  # fmt: skip
            public = VenueConnection(
                "binance/public", public_url, http, self.settings, stats=self.stats,
                on_open=self._open_public, on_frame=on_frame, on_down=on_down("resync"), ping_text=IDLE_PROBE,
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

    def _on_control(self, event: VenueControl) -> None:
        if event.kind == "unknown":
            self.stats.unknown += 1
        elif event.kind == "error":
            self.stats.last_error = event.message

    async def _fetch_trades(self, symbol: str, from_id: int) -> list[Trade]:
        assert self._http is not None
        params = {"symbol": self.symbol_map[symbol], "fromId": str(from_id), "limit": "1000"}
        async with self._http.get(f"{self.urls[2]}/fapi/v1/aggTrades", params=params) as response:
            response.raise_for_status()
            body = await response.read()
        return parser.parse_agg_trades_rest(body, symbol)

    async def _fetch_snapshot(self, symbol: str) -> BookDelta:
        assert self._http is not None
        url = f"{self.urls[2]}/fapi/v1/depth"
        params = {"symbol": self.symbol_map[symbol], "limit": str(SNAPSHOT_LIMIT)}
        async with self._http.get(url, params=params) as response:
            response.raise_for_status()
            body = await response.read()
        return parser.parse_depth_snapshot(body, symbol)
