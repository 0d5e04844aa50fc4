"""Fake OKX v5 public: ``/ws/v5/public`` (trades, tickers, books with seqId/prevSeqId and CRC32 checksum, text
ping/pong) and ``/api/v5/public/instruments``. Frames follow the documented examples (wire-formats.md §2).
Sizes are contracts (ctVal 0.1 for ETH-USDT-SWAP, 0.01 for BTC-USDT-SWAP, as on OKX)."""

from __future__ import annotations

import json
import zlib
from decimal import Decimal
from functools import partial
from typing import Any

from aiohttp import web

from fake_exchanges.base import ERROR_MESSAGE, FakeExchange, Market, SentTrade, price_str

CONTRACT_VALUES = {"ETH-USDT-SWAP": "0.1", "BTC-USDT-SWAP": "0.01"}


def okx_checksum(bids: list[tuple[int, int]], asks: list[tuple[int, int]]) -> int:
    parts: list[str] = []
    for i in range(max(len(bids[:25]), len(asks[:25]))):
        for side in (bids, asks):
            if i < min(len(side), 25):
                parts += [price_str(side[i][0]), str(side[i][1])]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


class FakeOkx(FakeExchange):
    ws_snapshots = True  # False: OKX's announced behaviour, no snapshot on subscribe; books come from REST

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ws/v5/public", partial(self.serve_ws, kind="ws")),
            web.get("/api/v5/public/instruments", self.rest_instruments),
            web.get("/api/v5/market/books", self.rest_books),
        ]

    async def rest_books(self, request: web.Request) -> web.Response:
        market = self.markets[request.query["instId"]]
        bids, asks = market.top(int(request.query.get("sz", "1")))
        data = {
            "asks": [[price_str(p), str(q), "0", "1"] for p, q in asks],
            "bids": [[price_str(p), str(q), "0", "1"] for p, q in bids],
            "ts": str(self.clock_ms),
            "seqId": market.update_id,
        }
        return web.json_response({"code": "0", "msg": "", "data": [data]})

    async def rest_instruments(self, request: web.Request) -> web.Response:
        data = [{"instType": "SWAP", "instId": i, "ctVal": v, "ctValCcy": i[:3]} for i, v in CONTRACT_VALUES.items()]
        return web.json_response({"code": "0", "msg": "", "data": data})

    def on_client_text(self, kind: str, text: str) -> list[Any] | None:
        if text == "ping":
            return None if self.mute else ["pong"]
        request = json.loads(text)
        replies: list[Any] = []
        for arg in request.get("args", []):
            replies.append(json.dumps({"event": request["op"], "arg": arg, "connId": "a4d3ae55"}))
            if request["op"] == "subscribe" and arg["channel"] == "books" and self.ws_snapshots:
                replies.append(partial(self.snapshot_frame, self.markets[arg["instId"]]))
        return replies

    def is_subscription(self, text: str) -> bool:
        return text.startswith("{") and any(a["channel"] == "trades" for a in json.loads(text).get("args", []))

    def book_frame(self, market: Market, action: str, bids: Any, asks: Any, prev: int, checksum_delta: int = 0) -> str:
        full_bids, full_asks = market.top(25)
        data = {
            "asks": [[price_str(p), str(q), "0", "1"] for p, q in asks],
            "bids": [[price_str(p), str(q), "0", "1"] for p, q in bids],
            "ts": str(self.clock_ms),
            "checksum": okx_checksum(full_bids, full_asks) + checksum_delta,
            "prevSeqId": prev,
            "seqId": market.update_id,
        }
        return json.dumps({"arg": {"channel": "books", "instId": market.symbol}, "action": action, "data": [data]})

    def snapshot_frame(self, market: Market) -> str:
        bids, asks = market.top(400)
        return self.book_frame(market, "snapshot", bids, asks, -1)

    async def send_trade(self, trade: SentTrade) -> None:
        item = {
            "instId": trade.symbol, "tradeId": trade.trade_id, "px": price_str(trade.price_ticks),
            "sz": str(trade.lots), "side": trade.side, "ts": str(trade.millis), "count": "1", "seqId": 1,
        }  # fmt: skip
        await self.send("ws", json.dumps({"arg": {"channel": "trades", "instId": trade.symbol}, "data": [item]}))

    async def send_book(self, market: Market, step: str) -> None:
        previous = market.update_id
        bids, asks = market.change(self.rng)
        market.update_id = previous + self.rng.randint(1, 9)
        frame = self.book_frame(market, "update", bids, asks, previous, 1 if step == "checksum" else 0)
        if step == "badlevel":  # a level whose price is not a number
            frame = frame.replace('"bids": [', '"bids": [["abc", "1", "0", "1"]' + (", " if bids else ""), 1)
        if step == "gap":
            return
        if step == "malformed":
            frame = frame[: len(frame) // 2]
        await self.send("ws", frame)
        if self.rng.random() < 0.3:
            ticker = {
                "instType": "SWAP", "instId": market.symbol, "last": price_str(market.mid), "lastSz": "1",
                "askPx": price_str(min(market.asks)), "askSz": "1", "bidPx": price_str(max(market.bids)),
                "bidSz": "1", "open24h": "2400", "high24h": "2600", "low24h": "2300", "volCcy24h": "12345.6",
                "vol24h": "123456", "sodUtc0": "2450", "sodUtc8": "2450", "ts": str(self.clock_ms),
            }  # fmt: skip
            arg = {"channel": "tickers", "instId": market.symbol}
            await self.send("ws", json.dumps({"arg": arg, "data": [ticker]}))

    async def send_error(self) -> None:
        frame = {"event": "error", "code": "60014", "msg": ERROR_MESSAGE, "connId": "a4d3ae55"}
        await self.send("ws", json.dumps(frame))

    async def send_unknown(self, market: Market) -> None:
        item = {"instType": "SWAP", "instId": market.symbol, "markPx": "2500.1", "ts": str(self.clock_ms)}
        await self.send("ws", json.dumps({"arg": {"channel": "mark-price", "instId": market.symbol}, "data": [item]}))

    def level(self, ticks: int, lots: int) -> tuple[float, float]:
        raise NotImplementedError  # sizes depend on the instrument: see expected_book / expected_trade

    def expected_book(self, symbol: str, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        ct = float(CONTRACT_VALUES[symbol])
        bids, asks = self.markets[symbol].top(depth)
        return [(p / 100, round(q * ct, 12)) for p, q in bids], [(p / 100, round(q * ct, 12)) for p, q in asks]

    def expected_trade(self, trade: SentTrade) -> dict[str, Any]:
        size = float(Decimal(trade.lots) * Decimal(CONTRACT_VALUES[trade.symbol]))
        return {"trade_id": trade.trade_id, "price": trade.price_ticks / 100, "size": size, "side": trade.side}
