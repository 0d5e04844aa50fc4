"""Bluefin Pro public market stream: trades, ticker and book diffs on one socket, book snapshots over REST.

URL ``wss://stream.api.sui-prod.bluefin.io/ws/market`` and REST ``https://api.sui-prod.bluefin.io`` per
fireflyprotocol/pro-sdk ``rust/src/env.rs`` and ``resources/websocket-api.yaml``. One
``{"method":"Subscribe","dataStreams":[{"symbol":…,"streams":[…]}]}`` per connection; the server answers
``{"success":…,"message":…}``. The server sends a protocol PING every 10 s and wants a PONG within 15 s
(https://bluefin-exchange.readme.io/reference/handling-websockets-1); aiohttp's autoping answers it. The book is
synced Binance-style from ``GET /v1/exchange/depth`` (UNCONFIRMED for Pro, see ``marketdata/venues/bluefin.py``).
"""

from __future__ import annotations

from typing import Any

import aiohttp

from bluefin_service.sources.diffbooks import DiffBooks
from bluefin_service.sources.feed import FeedSettings, FeedStats, Publish, VenueConnection, status_events
from marketdata.book import BookDelta, e9
from marketdata.venues import bluefin as parser
from marketdata.venues.common import VenueControl

WS_URL = "wss://stream.api.sui-prod.bluefin.io/ws/market"
REST_URL = "https://api.sui-prod.bluefin.io"
STREAMS = ("Recent_Trade", "Ticker", "Diff_Depth_200_ms")
SNAPSHOT_LIMIT = 1000


class BluefinSource:
    name = "bluefin"

    def __init__(
        self,
        symbol_map: dict[str, str],
        settings: FeedSettings | None = None,
        *,
        ws_url: str = WS_URL,
        rest_url: str = REST_URL,
    ) -> None:
        self.symbol_map = symbol_map  # ETH-PERP -> ETH-PERP unless overridden
        self.symbols = list(symbol_map)
        self.settings = settings or FeedSettings()
        self.ws_url = ws_url
        self.rest_url = rest_url.rstrip("/")
        self.stats = FeedStats()
        self.parser = parser.BluefinParser({v: s for s, v in symbol_map.items()})
        self._http: aiohttp.ClientSession | None = None
        self.books = DiffBooks(
            self.name, self.symbols, parser.SYNC_RULES, e9, self._fetch_snapshot, self.settings, self.stats
        )

    async def run(self, publish: Publish) -> None:
        self.books.publish = publish
        async with aiohttp.ClientSession() as http:
            self._http = http

            def on_frame(frame: str | bytes, ts_init: float) -> None:
                out: list[Any] = []
                for event in self.parser.parse(frame, ts_init):
                    if type(event) is BookDelta:
                        self.books.on_delta(event, out)
                    elif type(event) is VenueControl:
                        if event.kind == "unknown":
                            self.stats.unknown += 1
                        elif not event.ok:
                            self.stats.last_error = event.message
                    else:
                        out.append(event)
                if out:
                    publish(out)

            def on_down(reason: str, stale: bool) -> None:
                kind = "stale" if stale else "reconnect"
                publish(status_events(self.name, self.symbols, kind, reason, self.stats))

            connection = VenueConnection(
                "bluefin/market", self.ws_url, http, self.settings, stats=self.stats,
                on_open=self._open, on_frame=on_frame, on_down=on_down,
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
        assert self._http is not None
        params = {"symbol": self.symbol_map[symbol], "limit": str(SNAPSHOT_LIMIT)}
        async with self._http.get(f"{self.rest_url}/v1/exchange/depth", params=params) as response:
            response.raise_for_status()
            body = await response.read()
        return parser.parse_depth_snapshot(body, symbol)
