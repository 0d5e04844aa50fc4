"""The venue-independent half of the fake exchanges: a true market, a failure script and its player.

A ``Market`` is the exchange's truth: integer ticks and lots per level (so expected values are exact), an update
id, trade ids. The ``Player`` walks a ``script`` of steps, each sent to whichever client connection is live:

    trade      one trade                      book        one book update
    gap        a book update applied but never sent (the client must notice the sequence gap)
    malformed  a book update sent truncated (unparseable: the next update shows the gap), then plain garbage
    unknown    a well-formed frame of an event type the client does not know
    error      the venue's documented error reply (as to a bad request): recorded and logged, never fatal
    checksum   (OKX) a book update whose checksum is wrong
    badlevel   a well-formed book update with a level whose price is not a number
    drop       close every connection; wait for the client to reconnect and subscribe (a venue whose REST API
               serves trades by id, ``backfills_trades``, also trades while the client is away)
    quiet      no market data for ``quiet_seconds``, but protocol PINGs every 0.2 s and answered probes:
               a live connection that the client must not mistake for a stale one
    silence    send nothing and answer no ping until the client gives up and reconnects

Venue subclasses (``binance.py``, ``okx.py``, ``bluefin.py``) provide the routes and frame formats.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

RECONNECT_TIMEOUT = 15.0
ERROR_MESSAGE = "Requests too frequent."  # what the ``error`` step's reply says, whatever the venue's framing


@dataclass
class SentTrade:
    symbol: str  # the venue's symbol
    trade_id: str
    price_ticks: int
    lots: int
    side: str  # taker side: buy / sell
    millis: int


@dataclass
class Market:
    symbol: str
    mid: int = 250_000  # ticks
    bids: dict[int, int] = field(default_factory=dict)
    asks: dict[int, int] = field(default_factory=dict)
    update_id: int = 1000
    trade_seq: int = 0

    def seed(self, rng: random.Random) -> None:
        for i in range(1, 30):
            self.bids[self.mid - i] = rng.randint(1, 50)
            self.asks[self.mid + i] = rng.randint(1, 50)

    def change(self, rng: random.Random) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """A random update: a few levels set or removed (lots 0), never crossing the mid."""
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        for _ in range(rng.randint(1, 4)):
            offset = rng.randint(1, 40)
            lots = 0 if rng.random() < 0.3 else rng.randint(1, 60)
            if rng.random() < 0.5:
                bids[self.mid - offset] = lots
            else:
                asks[self.mid + offset] = lots
        for side, changes in ((self.bids, bids), (self.asks, asks)):
            for price, lots in changes.items():
                if lots:
                    side[price] = lots
                else:
                    side.pop(price, None)
        return sorted(bids.items(), reverse=True), sorted(asks.items())

    def trade(self, rng: random.Random, millis: int) -> SentTrade:
        self.trade_seq += 1
        side = "buy" if rng.random() < 0.5 else "sell"
        price = self.mid + rng.randint(1, 3) if side == "buy" else self.mid - rng.randint(1, 3)
        return SentTrade(self.symbol, str(7_000_000 + self.trade_seq), price, rng.randint(1, 40), side, millis)

    def top(self, depth: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return sorted(self.bids.items(), reverse=True)[:depth], sorted(self.asks.items())[:depth]


class FakeExchange:
    """Base: an aiohttp server on 127.0.0.1:<free port>, a set of live client sockets and the player."""

    kinds: tuple[str, ...] = ("ws",)  # connection kinds the venue uses (Binance: market + public)
    backfills_trades = False  # True: trades happen during a drop, and REST serves them by id

    def __init__(self, symbols: list[str], script: list[str], seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.markets = {s: Market(s) for s in symbols}
        for market in self.markets.values():
            market.seed(self.rng)
        self.script = script
        self.sent_trades: list[SentTrade] = []  # every trade the exchange made, in order
        self.offline_ids: set[tuple[str, str]] = set()  # (symbol, id) of those made while no client was connected
        self.conns: dict[str, web.WebSocketResponse | None] = dict.fromkeys(self.kinds)
        self.generation = 0  # bumped each time every kind is connected and subscribed again
        self._changed = asyncio.Event()  # set whenever a connection comes or goes
        self.mute = False
        self.clock_ms = 1_764_000_000_000
        self.connections_seen = 0
        self.finished = asyncio.Event()
        self.quiet_seconds = 1.5
        self.bad_rest_replies = 0  # the next N REST snapshot requests get garbage
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # -- server ----------------------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        raise NotImplementedError

    async def start(self) -> str:
        app = web.Application()
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        for ws in list(self.conns.values()):
            if ws is not None:
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def serve_ws(self, request: web.Request, kind: str) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self.connections_seen += 1
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            replies = self.on_client_text(kind, msg.data)
            if replies is None:
                continue
            for reply in replies:
                await ws.send_str(reply() if callable(reply) else reply)  # callables: built at send time
            if self.conns.get(kind) is not ws and self.is_subscription(msg.data):
                self.conns[kind] = ws
                await self.on_subscribed(kind, ws)
                if all(self.conns.values()):
                    self.generation += 1
                self._changed.set()
        if self.conns.get(kind) is ws:
            self.conns[kind] = None
            self._changed.set()
        return ws

    def on_client_text(self, kind: str, text: str) -> list[Any] | None:
        """Replies to one client frame (acks, pongs); None to stay silent."""
        raise NotImplementedError

    def is_subscription(self, text: str) -> bool:
        raise NotImplementedError

    async def on_subscribed(self, kind: str, ws: web.WebSocketResponse) -> None:
        """Hook: OKX sends its book snapshot here."""

    # -- player ----------------------------------------------------------------------------------------------
    async def send(self, kind: str, frame: str) -> None:
        """Send to the live ``kind`` connection, waiting for a reconnect if it is going away."""
        while True:
            await self.wait_ready()
            ws = self.conns.get(kind)
            if ws is not None and not ws.closed:
                try:
                    await ws.send_str(frame)
                    return
                except ConnectionError:
                    pass
            await asyncio.sleep(0.01)

    async def wait_ready(self, after_generation: int = -1) -> None:
        async def ready() -> None:
            while not (self.generation > after_generation and all(self.conns.values())):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(ready(), RECONNECT_TIMEOUT)

    async def play(self) -> None:
        await self.wait_ready()
        for step in self.script:
            await self.wait_ready()
            self.clock_ms += 7
            market = self.markets[self.rng.choice(list(self.markets))]
            if step == "trade":
                trade = market.trade(self.rng, self.clock_ms)
                await self.send_trade(trade)
                self.sent_trades.append(trade)
            elif step in ("book", "gap", "malformed", "checksum", "badlevel"):
                await self.send_book(market, step)
                if step == "malformed":
                    await self.send(self.book_kind, "}{ not json")
            elif step == "unknown":
                await self.send_unknown(market)
            elif step == "error":
                await self.send_error()
            elif step == "quiet":
                for _ in range(int(self.quiet_seconds / 0.2)):
                    for ws in list(self.conns.values()):
                        if ws is not None and not ws.closed:
                            await ws.ping()
                    await asyncio.sleep(0.2)
            elif step in ("drop", "silence"):
                generation = self.generation
                if step == "drop":
                    for ws in list(self.conns.values()):
                        if ws is not None:
                            await ws.close()
                    for _ in range(3 if self.backfills_trades else 0):
                        for offline_market in self.markets.values():
                            self.clock_ms += 3
                            trade = offline_market.trade(self.rng, self.clock_ms)
                            self.sent_trades.append(trade)
                            self.offline_ids.add((trade.symbol, trade.trade_id))
                else:
                    self.mute = True
                await self.wait_ready(after_generation=generation)
                self.mute = False
            await asyncio.sleep(0.001)
        self.finished.set()

    book_kind = "ws"

    async def send_trade(self, trade: SentTrade) -> None:
        raise NotImplementedError

    async def send_book(self, market: Market, step: str) -> None:
        raise NotImplementedError

    async def send_unknown(self, market: Market) -> None:
        raise NotImplementedError

    async def send_error(self) -> None:
        raise NotImplementedError

    # -- expectations ----------------------------------------------------------------------------------------
    def expected_book(self, symbol: str, depth: int) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        bids, asks = self.markets[symbol].top(depth)
        return [self.level(p, q) for p, q in bids], [self.level(p, q) for p, q in asks]

    def level(self, ticks: int, lots: int) -> tuple[float, float]:
        return ticks / 100, lots / 1000

    def expected_trade(self, trade: SentTrade) -> dict[str, Any]:
        price, size = self.level(trade.price_ticks, trade.lots)
        return {"trade_id": trade.trade_id, "price": price, "size": size, "side": trade.side}


def garbage_reply(exchange: FakeExchange) -> web.Response | None:
    """While ``bad_rest_replies`` lasts, alternate a 500 and a truncated JSON body."""
    if exchange.bad_rest_replies <= 0:
        return None
    exchange.bad_rest_replies -= 1
    if exchange.bad_rest_replies % 2:
        return web.Response(status=500, text="internal error")
    return web.Response(text='{"lastUpdateId": 12, "bids": [["1', content_type="application/json")


def price_str(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


def lots_str(lots: int) -> str:
    return f"{lots // 1000}.{lots % 1000:03d}"


def standard_script(rng: random.Random, failures: list[str], steps_between: int = 25) -> list[str]:
    """Normal traffic with each failure in turn, ending with normal traffic."""
    script: list[str] = []
    for failure in [*failures, None]:
        script.extend(rng.choice(["trade", "book", "book"]) for _ in range(steps_between))
        if failure is not None:
            script.append(failure)
    script.extend(["book", "trade"])
    return script
