"""Fake Binance USDⓈ-M: ``/market/ws`` (aggTrade), ``/public/ws`` (depth diffs, bookTicker), ``/fapi/v1/depth``.

Frames follow the documented examples (wire-formats.md §1): ``{"result":null,"id":N}`` acks, depthUpdate with
``U``/``u``/``pu``, aggTrade with ``m`` = buyer is maker.
"""

from __future__ import annotations

import json
from functools import partial

from aiohttp import web

from fake_exchanges.base import ERROR_MESSAGE, FakeExchange, Market, SentTrade, garbage_reply, lots_str, price_str


class FakeBinance(FakeExchange):
    kinds = ("market", "public")
    book_kind = "public"
    backfills_trades = True

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/market/ws", partial(self.serve_ws, kind="market")),
            web.get("/public/ws", partial(self.serve_ws, kind="public")),
            web.get("/fapi/v1/depth", self.rest_depth),
            web.get("/fapi/v1/aggTrades", self.rest_agg_trades),
        ]

    bad_trade_replies = 0  # the next N aggTrades requests get a 500

    async def rest_agg_trades(self, request: web.Request) -> web.Response:
        if self.bad_trade_replies > 0:
            self.bad_trade_replies -= 1
            return web.Response(status=500, text="internal error")
        symbol, from_id = request.query["symbol"], int(request.query["fromId"])
        limit = min(int(request.query.get("limit", "500")), 1000)
        trades = [t for t in self.sent_trades if t.symbol == symbol and int(t.trade_id) >= from_id][:limit]
        body = [
            {"a": int(t.trade_id), "p": price_str(t.price_ticks), "q": lots_str(t.lots), "f": 1, "l": 1,
             "T": t.millis, "m": t.side == "sell"}
            for t in trades
        ]  # fmt: skip
        return web.json_response(body)

    def on_client_text(self, kind: str, text: str) -> list[str] | None:
        request = json.loads(text)
        if request.get("method") == "LIST_SUBSCRIPTIONS":
            return None if self.mute else [json.dumps({"result": [], "id": request.get("id")})]
        return [json.dumps({"result": None, "id": request.get("id")})]

    def is_subscription(self, text: str) -> bool:
        return json.loads(text).get("method") == "SUBSCRIBE"

    async def rest_depth(self, request: web.Request) -> web.Response:
        bad = garbage_reply(self)
        if bad is not None:
            return bad
        market = self.markets[request.query["symbol"]]
        bids, asks = market.top(1000)
        body = {
            "lastUpdateId": market.update_id,
            "E": self.clock_ms,
            "T": self.clock_ms,
            "bids": [[price_str(p), lots_str(q)] for p, q in bids],
            "asks": [[price_str(p), lots_str(q)] for p, q in asks],
        }
        return web.json_response(body)

    async def send_trade(self, trade: SentTrade) -> None:
        frame = {
            "e": "aggTrade", "E": trade.millis + 1, "s": trade.symbol, "a": int(trade.trade_id),
            "p": price_str(trade.price_ticks), "q": lots_str(trade.lots), "nq": lots_str(trade.lots),
            "f": 100, "l": 105, "T": trade.millis, "m": trade.side == "sell",
        }  # fmt: skip
        await self.send("market", json.dumps(frame))

    async def send_book(self, market: Market, step: str) -> None:
        previous = market.update_id
        bids, asks = market.change(self.rng)
        first = previous + 1
        market.update_id = previous + self.rng.randint(1, 5)
        frame = json.dumps({
            "e": "depthUpdate", "E": self.clock_ms, "T": self.clock_ms - 1, "s": market.symbol,
            "U": first, "u": market.update_id, "pu": previous,
            "b": [["abc", "1.000"]] * (step == "badlevel") + [[price_str(p), lots_str(q)] for p, q in bids],
            "a": [[price_str(p), lots_str(q)] for p, q in asks],
        })  # fmt: skip
        if step == "gap":
            return
        if step == "malformed":
            frame = frame[: len(frame) // 2]
        await self.send("public", frame)
        if self.rng.random() < 0.3:
            best_bid, best_ask = max(market.bids), min(market.asks)
            ticker = {
                "e": "bookTicker", "u": market.update_id, "E": self.clock_ms, "T": self.clock_ms, "s": market.symbol,
                "b": price_str(best_bid), "B": lots_str(market.bids[best_bid]),
                "a": price_str(best_ask), "A": lots_str(market.asks[best_ask]),
            }  # fmt: skip
            await self.send("public", json.dumps(ticker))

    async def send_error(self) -> None:
        await self.send("market", json.dumps({"code": 2, "msg": ERROR_MESSAGE, "id": 99}))

    async def send_unknown(self, market: Market) -> None:
        frame = {"e": "markPriceUpdate", "E": self.clock_ms, "s": market.symbol, "p": "2500.00", "r": "0.0001"}
        await self.send("market", json.dumps(frame))
