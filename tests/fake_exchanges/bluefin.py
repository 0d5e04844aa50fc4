"""Fake Bluefin Pro: ``/ws/market`` (Recent_Trade, Ticker, Diff_Depth_*; one ``{"success","message"}`` ack per
Subscribe) and ``GET /v1/exchange/depth``. Frames built from the pro-sdk schema (wire-formats.md §3); values
are ``…E9`` integer strings."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from aiohttp import web

from fake_exchanges.base import ERROR_MESSAGE, FakeExchange, Market, SentTrade, garbage_reply

PRICE_E9_PER_TICK = 10_000_000  # a tick is 0.01
SIZE_E9_PER_LOT = 1_000_000  # a lot is 0.001


def levels_e9(levels: list[tuple[int, int]]) -> list[list[str]]:
    return [[str(p * PRICE_E9_PER_TICK), str(q * SIZE_E9_PER_LOT)] for p, q in levels]


class FakeBluefin(FakeExchange):
    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ws/market", partial(self.serve_ws, kind="ws")),
            web.get("/v1/exchange/depth", self.rest_depth),
        ]

    def on_client_text(self, kind: str, text: str) -> list[Any] | None:
        json.loads(text)
        return [json.dumps({"success": True, "message": "Subscribed"})]

    def is_subscription(self, text: str) -> bool:
        return json.loads(text).get("method") == "Subscribe"

    async def rest_depth(self, request: web.Request) -> web.Response:
        bad = garbage_reply(self)
        if bad is not None:
            return bad
        market = self.markets[request.query["symbol"]]
        bids, asks = market.top(int(request.query.get("limit", "500")))
        body = {
            "symbol": market.symbol, "updatedAtMillis": self.clock_ms, "lastUpdateId": market.update_id,
            "responseSentAtMillis": self.clock_ms + 1,
            "bestBidPriceE9": levels_e9(bids[:1])[0][0], "bestBidQuantityE9": levels_e9(bids[:1])[0][1],
            "bestAskPriceE9": levels_e9(asks[:1])[0][0], "bestAskQuantityE9": levels_e9(asks[:1])[0][1],
            "bidsE9": levels_e9(bids), "asksE9": levels_e9(asks),
        }  # fmt: skip
        return web.json_response(body)

    async def send_trade(self, trade: SentTrade) -> None:
        price, qty = trade.price_ticks * PRICE_E9_PER_TICK, trade.lots * SIZE_E9_PER_LOT
        item = {
            "id": trade.trade_id, "symbol": trade.symbol, "side": "LONG" if trade.side == "buy" else "SHORT",
            "tradeType": "ORDER", "priceE9": str(price), "quantityE9": str(qty),
            "quoteQuantityE9": str(price * qty // 10**9), "executedAtMillis": trade.millis,
        }  # fmt: skip
        await self.send("ws", json.dumps({"event": "RecentTradesUpdates", "payload": {"trades": [item]}}))

    async def send_book(self, market: Market, step: str) -> None:
        previous = market.update_id
        bids, asks = market.change(self.rng)
        market.update_id = previous + self.rng.randint(1, 5)
        payload = {
            "updatedAtMillis": self.clock_ms, "symbol": market.symbol,
            "bidsE9": [["abc", "1000000"]] * (step == "badlevel") + levels_e9(bids),
            "asksE9": levels_e9(asks), "firstUpdateId": previous + 1, "lastUpdateId": market.update_id,
        }  # fmt: skip
        frame = json.dumps({"event": "OrderbookDiffDepthUpdate", "payload": payload})
        if step == "gap":
            return
        if step == "malformed":
            frame = frame[: len(frame) // 2]
        await self.send("ws", frame)
        if self.rng.random() < 0.3:
            await self.send("ws", json.dumps({"event": "TickerUpdate", "payload": self.ticker(market)}))

    def ticker(self, market: Market) -> dict[str, Any]:
        bid, ask = max(market.bids), min(market.asks)
        e9 = str(market.mid * PRICE_E9_PER_TICK)
        ms = self.clock_ms
        return {
            "symbol": market.symbol, "lastQuantityE9": "10000000000", "lastTimeAtMillis": ms, "lastPriceE9": e9,
            "lastFundingRateE9": "10000000", "nextFundingTimeAtMillis": ms, "avgFundingRate8hrE9": "10000000",
            "oraclePriceE9": e9, "oraclePriceDirection": 0, "markPriceE9": e9, "markPriceDirection": 0,
            "marketPriceE9": e9, "marketPriceDirection": 0, "bestBidPriceE9": str(bid * PRICE_E9_PER_TICK),
            "bestBidQuantityE9": str(market.bids[bid] * SIZE_E9_PER_LOT),
            "bestAskPriceE9": str(ask * PRICE_E9_PER_TICK),
            "bestAskQuantityE9": str(market.asks[ask] * SIZE_E9_PER_LOT), "openInterestE9": "100000000",
            "highPrice24hrE9": e9, "lowPrice24hrE9": e9, "volume24hrE9": "1234500000000",
            "quoteVolume24hrE9": "5000000000000", "closePrice24hrE9": e9, "openPrice24hrE9": e9,
            "closeTime24hrAtMillis": ms, "openTime24hrAtMillis": ms, "firstId24hr": 0, "lastId24hr": 0,
            "count24hr": "123456", "priceChange24hrE9": "0", "priceChangePercent24hrE9": "0", "updatedAtMillis": ms,
        }  # fmt: skip

    async def send_error(self) -> None:
        await self.send("ws", json.dumps({"success": False, "message": ERROR_MESSAGE}))

    async def send_unknown(self, market: Market) -> None:
        payload = {"symbol": market.symbol, "priceE9": "2500000000000", "updatedAtMillis": self.clock_ms}
        await self.send("ws", json.dumps({"event": "OraclePriceUpdate", "payload": payload}))
