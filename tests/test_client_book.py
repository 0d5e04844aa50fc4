"""Order books in the client and the provider: against the real service fed by a fake exchange, and against a
tiny server that sends broken books. Upstream interruptions are feed interruptions, never seq gaps."""

from __future__ import annotations

import asyncio
import json
import random
import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
from fake_exchanges.base import standard_script
from test_client import SeqRecorder
from test_client_repair import CuttableProxy, assert_complete, wait_until
from test_sources import FAKES, _service_env, make_source
from websockets.asyncio.server import ServerConnection, serve

from bot.data.realtime_market import RealtimeMarketDataProvider
from bot.exchange.bluefin_client import BluefinServiceClient
from marketdata.errors import ConfigError

DEPTH = 20


def levels(book: dict[str, Any]) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    return book["bids"], book["asks"]


async def test_books_equal_the_exchange_and_upstream_gaps_are_interruptions(start_service: Any) -> None:
    script = standard_script(random.Random(5), ["drop", "checksum"], steps_between=15)
    _, symbol_map = make_source("okx", "unused")
    fake = FAKES["okx"](list(symbol_map.values()), script, seed=5)
    service = start_service(**_service_env("okx", await fake.start()))
    async with CuttableProxy(service.port) as proxy:
        client = BluefinServiceClient(proxy.url, heartbeat_interval=0.5)
        log = SeqRecorder(client)
        books: list[dict[str, Any]] = []
        interruptions: list[dict[str, Any]] = []
        client.subscribe_to_orderbook(books.append)
        client.subscribe_to_feed_interruptions(interruptions.append)
        provider = RealtimeMarketDataProvider(
            "ETH-PERP", [1], service_url=service.http_url, orderbook=True, orderbook_depth=5, orderbook_rate=20
        )
        books_options = {"orderbook": True, "orderbook_depth": DEPTH, "orderbook_rate": 20}
        assert await client.connect_websocket(list(symbol_map), **books_options)
        assert await provider.connect()
        try:
            await asyncio.wait_for(fake.play(), 30)

            def converged() -> bool:
                for symbol, venue_symbol in symbol_map.items():
                    book = client.get_orderbook(symbol)
                    if book is None or levels(book) != fake.expected_book(venue_symbol, DEPTH):
                        return False
                book = provider.get_order_book()
                return book is not None and book["update_id"] == client.get_orderbook("ETH-PERP")["update_id"]

            await wait_until(converged, "the client's books to equal the exchange's")
            # the book subscription is asked again after a reconnect: a fresh book arrives with no venue change
            proxy.cut()
            await wait_until(lambda: not client.is_websocket_connected(), "the client to see the outage")
            cut_at, count = time.time(), len(books)
            proxy.restore()
            await wait_until(lambda: len(books) >= count + 2, "books after the reconnect")
            status = client.get_websocket_status()
            book, best, spread = provider.get_order_book(), provider.get_best_bid_ask(), provider.get_spread()
            stats = provider.get_performance_stats()
        finally:
            await client.disconnect_websocket()
            await provider.disconnect()
            await fake.stop()
    assert all(b["received_at"] > cut_at for b in books[count:]) and status["reconnects"] == 1
    bids, asks = fake.expected_book("ETH-USDT-SWAP", DEPTH)
    assert client.get_best_bid_ask("eth-perp") == (bids[0][0], asks[0][0])
    assert client.get_spread("ETH-PERP") == round(asks[0][0] - bids[0][0], 9) > 0
    assert book is not None and best is not None and spread is not None
    assert book["bids"] == [(Decimal(str(p)), Decimal(str(q))) for p, q in bids[:5]] and len(book["asks"]) == 5
    assert best == (Decimal(str(bids[0][0])), Decimal(str(asks[0][0]))) and spread == best[1] - best[0]
    assert book["venue"] == "okx" and isinstance(book["mid"], Decimal)

    kinds = {i["kind"] for i in interruptions}
    assert {"reconnect", "resync"} <= kinds and status["feed_interruptions"] == len(interruptions)
    assert all(i["reason"] == "upstream_" + i["kind"] for i in status["interruptions"])
    assert status["gaps"] == [] and status["gaps_repaired"] == 0 and status["gaps_unrepaired"] == 0
    assert stats["feed_interruptions"] >= 2 and stats["gaps"] == 0
    assert set(log.seqs()) == set(symbol_map)
    for seqs in log.seqs().values():
        assert_complete(seqs)
    print("interruptions:", interruptions, "messages:", {s: len(v) for s, v in log.seqs().items()})
    assert provider.client.get_orderbook("BTC-PERP") is None  # the provider asked for its own symbol only


async def test_an_upstream_interruption_during_a_client_outage_reaches_it_on_resume_once(start_service: Any) -> None:
    """The venue feed drops while the client is cut off: the resumed client still learns of it, in place, once."""
    _, symbol_map = make_source("okx", "unused")
    fake = FAKES["okx"](list(symbol_map.values()), ["trade"] * 6 + ["book"] * 2, seed=9)
    service = start_service(**_service_env("okx", await fake.start()))
    async with CuttableProxy(service.port) as proxy:
        client = BluefinServiceClient(proxy.url, heartbeat_interval=0.5)
        log = SeqRecorder(client)
        interruptions: list[dict[str, Any]] = []
        client.subscribe_to_feed_interruptions(interruptions.append)
        assert await client.connect_websocket(list(symbol_map))
        try:
            await asyncio.wait_for(fake.play(), 30)
            await wait_until(lambda: sum(map(len, log.seqs().values())) >= 6, "the first trades")
            assert interruptions == []
            proxy.cut()
            await wait_until(lambda: not client.is_websocket_connected(), "the client to see the outage")
            fake.script = ["drop", "trade", "trade", "trade", "book"]
            await asyncio.wait_for(fake.play(), 30)  # the venue drops the service and comes back
            async with aiohttp.ClientSession() as session:
                deadline = time.monotonic() + 20
                while True:
                    async with session.get(f"{service.http_url}/streaming/status") as response:
                        if (await response.json())["feed"]["reconnects"] >= 1:
                            break
                    assert time.monotonic() < deadline, "the service never saw the venue drop"
                    await asyncio.sleep(0.05)
            proxy.restore()
            await wait_until(lambda: sum(map(len, log.seqs().values())) >= 9, "the trades after the drop")
            await asyncio.sleep(0.3)  # anything repeated would have arrived by now
            status = client.get_websocket_status()
        finally:
            await client.disconnect_websocket()
            await fake.stop()
    assert [i["reason"] for i in interruptions] == ["upstream_reconnect"] * len(symbol_map)
    assert {i["symbol"] for i in interruptions} == set(symbol_map)
    assert status["reconnects"] == 1 and status["feed_interruptions"] == len(symbol_map)
    for seqs in log.seqs().values():
        assert_complete(seqs)


def book(bids: Any, asks: Any, symbol: str = "ETH-PERP", **extra: Any) -> str:
    data = {"bids": bids, "asks": asks, **extra}
    return json.dumps({"type": "orderbook", "symbol": symbol, "timestamp": 1_764_000_000.5, "data": data})


def ack(symbols: list[str]) -> str:
    data = {"symbols": symbols, "subscriptions": symbols, "last_seq": dict.fromkeys(symbols, 0)}
    return json.dumps({"type": "subscribed", "symbol": "system", "timestamp": time.time(), "data": data})


def price(seq: int) -> str:
    data = {"price": 2500.0, "volume": 1.0}
    message = {"type": "price_update", "symbol": "ETH-PERP", "timestamp": time.time(), "data": data, "seq": seq}
    return json.dumps(message)


GARBAGE = [
    book([[2500.0]], [[2501.0, 1.0]]),  # a level with one number
    book([[2500.0, 1.0, 3.0]], []),  # and one with three
    book([["cheap", 1.0]], []),
    book("nope", []),
    book([[2500.0, 1.0]], None),
    book([[2499.0, 1.0], [2500.0, 1.0]], []),  # bids not best first
    book([], [[2502.0, 1.0], [2501.0, 1.0]]),  # asks not best first
    book([[2502.0, 1.0]], [[2501.0, 1.0]]),  # crossed
    book([[0.0, 1.0]], []),
    book([[2500.0, -1.0]], []),
    book([[2500.0, 1e999]], []),  # infinite size
    json.dumps({"type": "orderbook", "symbol": "ETH-PERP", "timestamp": "soon", "data": {"bids": [], "asks": []}}),
    '{"type": "orderbook"',
]


async def test_garbage_books_are_skipped_and_the_subscription_is_resent_on_reconnect() -> None:
    good = book([[2500.0, 1.5], [2499.5, 2.0]], [[2500.5, 0.5]], venue="binance", update_id=7)
    other = book([[10.0, 1.0]], [[11.0, 1.0]], symbol="BTC-PERP")  # a symbol this client never asked for
    scripts = [[ack(["ETH-PERP"]), *GARBAGE, other, good, price(1), None], [ack(["ETH-PERP"]), price(2)]]
    requests: list[list[dict[str, Any]]] = []

    async def handler(ws: ServerConnection) -> None:
        received: list[dict[str, Any]] = []
        requests.append(received)
        await ws.send(scripts[len(requests) - 1][0])
        received.append(json.loads(await ws.recv()))  # the book subscription comes right after the open
        for frame in scripts[len(requests) - 1][1:]:
            if frame is None:
                await ws.close()
                return
            await ws.send(frame)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = BluefinServiceClient(url, heartbeat_interval=5)
        log = SeqRecorder(client)
        seen: list[dict[str, Any]] = []
        client.subscribe_to_orderbook(seen.append)
        await client.connect_websocket(["eth-perp"], orderbook=True, orderbook_depth=3, orderbook_rate=4)
        try:
            await wait_until(lambda: [m["seq"] for m in log.messages] == [1, 2], "the stream after the garbage")
            status = client.get_websocket_status()
        finally:
            await client.disconnect_websocket()
    expected = {"type": "subscribe", "symbols": ["ETH-PERP"], "orderbook": True, "orderbook_depth": 3}
    assert requests == [[{**expected, "orderbook_rate": 4.0}]] * 2
    assert status["invalid_messages"] == len(GARBAGE) and status["orderbooks_received"] == 1
    assert status["unexpected_symbol"] == 1 and status["orderbook_symbols"] == ["ETH-PERP"]
    assert len(seen) == 1 and seen[0] is client.get_orderbook("ETH-PERP")
    assert (seen[0]["bids"], seen[0]["asks"]) == ([(2500.0, 1.5), (2499.5, 2.0)], [(2500.5, 0.5)])
    assert (seen[0]["spread"], seen[0]["mid"], seen[0]["venue"], seen[0]["update_id"]) == (0.5, 2500.25, "binance", 7)
    assert client.get_best_bid_ask("ETH-PERP") == (2500.0, 2500.5) and client.get_spread("BTC-PERP") is None


async def test_no_book_yet_and_bad_book_settings() -> None:
    provider = RealtimeMarketDataProvider("ETH-PERP", [1], service_url="http://127.0.0.1:1")
    assert provider.get_order_book() is None and provider.get_best_bid_ask() is None and provider.get_spread() is None
    client = BluefinServiceClient("http://127.0.0.1:1")
    for bad in ({"orderbook_depth": 0}, {"orderbook_depth": 51}, {"orderbook_rate": 0}, {"orderbook_rate": 21}):
        with pytest.raises(ConfigError):
            await client.connect_websocket(["ETH-PERP"], orderbook=True, **bad)
    assert client.get_orderbook("ETH-PERP") is None and client.is_websocket_connected() is False


async def test_an_interruption_sent_again_on_resume_is_counted_once() -> None:
    from bot.exchange.sequencing import StreamSequencer
    from marketdata.protocol import GapData, GapMessage

    delivered: list[tuple[str, dict[str, Any]]] = []

    async def put(kind: str, payload: dict[str, Any]) -> None:
        delivered.append((kind, payload))

    stats: dict[str, Any] = {"feed_interruptions": 0, "gap_count": 0, "duplicates_dropped": 0}
    sequencer = StreamSequencer(put, stats, repair_gaps=False, page_size=10, timeout=1, hold_size=10, history=10)
    reconnect = GapMessage("ETH-PERP", 1_700_000_000.5, GapData(41, 41, "upstream_reconnect"))
    later = GapMessage("ETH-PERP", 1_700_000_009.0, GapData(41, 41, "upstream_reconnect"))  # another, same seq
    for message in (reconnect, reconnect, later, reconnect):
        await sequencer.on_gap_message(message, None)
    assert [(i["seq"], i["time"]) for i in sequencer.interruptions] == [(41, 1_700_000_000.5), (41, 1_700_000_009.0)]
    assert stats["feed_interruptions"] == 2 and [kind for kind, _ in delivered] == ["interruption"] * 2
    assert stats["gap_count"] == 0 and list(sequencer.gaps) == []
