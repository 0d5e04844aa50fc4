"""Bluefin Pro public market stream: trades, ticker and book diffs on one socket, book snapshots over REST.

URL ``wss://stream.api.sui-prod.bluefin.io/ws/market`` and REST ``https://api.sui-prod.bluefin.io`` per
fireflyprotocol/pro-sdk ``rust/src/env.rs`` and ``resources/websocket-api.yaml``. One
``{"method":"Subscribe","dataStreams":[{"symbol":…,"streams":[…]}]}`` per connection; the server answers
``{"success":…,"message":…}``. The server sends a protocol PING every 10 s and wants a PONG within 15 s
(https://bluefin-exchange.readme.io/reference/handling-websockets-1); aiohttp's autoping answers it. The book is
synced Binance-style from ``GET /v1/exchange/depth`` (UNCONFIRMED for Pro, see ``marketdata/venues/bluefin.py``).
"""

from __future__ import annotations

import aiohttp

from bluefin_service.sources.diffbooks import DiffBooks
from bluefin_service.sources.feed import FeedSettings, Publish, VenueConnection
from bluefin_service.sources.venue_source import VenueSource
from marketdata.book import BookDelta, e9
from marketdata.venues import bluefin as parser

WS_URL = "wss://stream.api.sui-prod.bluefin.io/ws/market"
REST_URL = "https://api.sui-prod.bluefin.io"
STREAMS = ("Recent_Trade", "Ticker", "Diff_Depth_200_ms")
SNAPSHOT_LIMIT = 1000


class BluefinSource(VenueSource):
    name = "bluefin"

    def __init__(
        self,
        symbol_map: dict[str, str],
        settings: FeedSettings | None = None,
        *,
        ws_url: str = WS_URL,
        rest_url: str = REST_URL,
    ) -> None:
        super().__init__(symbol_map, settings, parser.BluefinParser, rest_url)  # ETH-PERP -> ETH-PERP by default
        self.ws_url = ws_url
        self.books = DiffBooks(
            self.name, self.symbols, parser.SYNC_RULES, e9, self._fetch_snapshot, self.settings, self.stats
        )

    async def run(self, publish: Publish) -> None:
        self.books.publish = publish
        async with aiohttp.ClientSession() as http:
            self._http = http
            on_frame = self.frame_handler(publish, {BookDelta: self.books.on_delta})
            connection = VenueConnection(
                "bluefin/market", self.ws_url, http, self.settings, stats=self.stats,
                on_open=self._open, on_frame=on_frame, on_down=self.down_reporter(publish),
            )  # fmt: skip
            try:
                await connection.run()
            finally:
                await self.books.close()

    async def _open(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.books.restart_all()
        streams = [{"symbol": self.symbol_map[s], "streams": list(STREAMS)} for s in self.symbols]
        await ws.send_json({"method": "Subscribe", "dataStreams": streams})

    async def _fetch_snapshot(self, symbol: str) -> BookDelta:
        params = {"symbol": self.symbol_map[symbol], "limit": str(SNAPSHOT_LIMIT)}
        return parser.parse_depth_snapshot(await self.rest_get("/v1/exchange/depth", params), symbol)
