"""Each exchange connector against its fake exchange: the book ends correct, every trade arrives once, and
every interruption (drop, gap, bad checksum, malformed frame, stale silence) is reported as a status event."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import random
from typing import Any

import pytest
from fake_exchanges.base import ERROR_MESSAGE, FakeExchange, standard_script
from fake_exchanges.binance import FakeBinance
from fake_exchanges.bluefin import FakeBluefin
from fake_exchanges.okx import FakeOkx

from bluefin_service.sources.binance import BinanceSource
from bluefin_service.sources.bluefin import BluefinSource
from bluefin_service.sources.feed import FeedSettings
from bluefin_service.sources.okx import OkxSource
from marketdata.book import BookView
from marketdata.ticks import PriceUpdate, Trade
from marketdata.venues.common import FeedStatus

FAST = FeedSettings(stale_after=0.6, initial_backoff=0.02, max_backoff=0.2, snapshot_wait=0.05, rest_timeout=5)
DEPTH = 50
OURS = ["ETH-PERP", "BTC-PERP"]


def make_source(venue: str, base: str, settings: FeedSettings = FAST) -> tuple[Any, dict[str, str]]:
    if venue == "binance":
        symbol_map = {"ETH-PERP": "ETHUSDT", "BTC-PERP": "BTCUSDT"}
        source: Any = BinanceSource(
            symbol_map, settings, ws_market_url=f"ws://{base}/market/ws", ws_public_url=f"ws://{base}/public/ws",
            rest_url=f"http://{base}",
        )  # fmt: skip
    elif venue == "okx":
        symbol_map = {"ETH-PERP": "ETH-USDT-SWAP", "BTC-PERP": "BTC-USDT-SWAP"}
        source = OkxSource(symbol_map, settings, ws_url=f"ws://{base}/ws/v5/public", rest_url=f"http://{base}")
    else:
        symbol_map = {"ETH-PERP": "ETH-PERP", "BTC-PERP": "BTC-PERP"}
        source = BluefinSource(symbol_map, settings, ws_url=f"ws://{base}/ws/market", rest_url=f"http://{base}")
    return source, symbol_map


FAKES: dict[str, type[FakeExchange]] = {"binance": FakeBinance, "okx": FakeOkx, "bluefin": FakeBluefin}


async def run_against_fake(
    venue: str, failures: list[str], seed: int, settings: FeedSettings = FAST
) -> tuple[FakeExchange, Any, list[Any]]:
    _, symbol_map = make_source(venue, "unused")
    script = standard_script(random.Random(seed), failures)
    fake = FAKES[venue](list(symbol_map.values()), script, seed=seed)
    base = await fake.start()
    source, _ = make_source(venue, base, settings)
    events: list[Any] = []
    task = asyncio.create_task(source.run(events.extend))
    try:
        await asyncio.wait_for(fake.play(), 30)
        ours = {v: s for s, v in symbol_map.items()}

        unrecoverable = fake.offline_ids if getattr(fake, "bad_trade_replies", 0) else set()

        def converged() -> bool:
            trades = sum(1 for e in events if type(e) is Trade)
            if trades < len(fake.sent_trades) - len(unrecoverable):
                return False
            for venue_symbol, market in fake.markets.items():
                views = [e for e in events if type(e) is BookView and e.symbol == ours[venue_symbol]]
                if not views or views[-1].update_id != market.update_id:
                    return False
            return True

        for _ in range(1000):  # up to 20 s: generous for a loaded machine
            if converged():
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.stop()
    return fake, source, events


def check_outcome(venue: str, fake: FakeExchange, events: list[Any]) -> None:
    _, symbol_map = make_source(venue, "unused")
    ours = {v: s for s, v in symbol_map.items()}
    for venue_symbol, symbol in ours.items():
        trades = [e for e in events if type(e) is Trade and e.symbol == symbol]
        expected = [fake.expected_trade(t) for t in fake.sent_trades if t.symbol == venue_symbol]
        got = [{"trade_id": t.trade_id, "price": t.price, "size": t.size, "side": t.side} for t in trades]
        assert got == expected, f"{symbol}: every trade arrives exactly once, in order, with exact values"
    for venue_symbol in fake.markets:
        view = [e for e in events if type(e) is BookView and e.symbol == ours[venue_symbol]][-1]
        bids, asks = fake.expected_book(venue_symbol, DEPTH)
        assert (view.bids, view.asks) == (bids, asks), f"{venue_symbol}: local book equals the exchange's"
    prices = [e for e in events if type(e) is PriceUpdate]
    assert prices and all(p.price > 0 for p in prices)


def statuses(events: list[Any]) -> list[str]:
    return [e.kind for e in events if type(e) is FeedStatus]


@pytest.mark.parametrize("venue", ["binance", "okx", "bluefin"])
async def test_clean_stream_gives_exact_book_and_trades(venue: str) -> None:
    fake, source, events = await run_against_fake(venue, [], seed=3)
    check_outcome(venue, fake, events)
    assert statuses(events) == []
    assert source.stats.malformed == 0


@pytest.mark.parametrize("venue", ["binance", "okx", "bluefin"])
async def test_every_failure_is_repaired_and_reported(venue: str, caplog: pytest.LogCaptureFixture) -> None:
    failures = ["drop", "gap", "unknown", "error", "malformed", "silence", "badlevel"]
    if venue == "okx":
        failures.append("checksum")
    with caplog.at_level(logging.WARNING, logger="bluefin_service.sources"):
        fake, source, events = await run_against_fake(venue, failures, seed=11)
    check_outcome(venue, fake, events)
    assert any(ERROR_MESSAGE in r.getMessage() and venue in r.getMessage() for r in caplog.records), "error logged"
    kinds = statuses(events)
    # drop: every symbol reported (a reconnect; Binance's book socket reports it as a resync)
    assert {"reconnect", "resync"} & set(kinds) if venue == "binance" else "reconnect" in kinds
    assert "stale" in kinds, "the silence was detected and reported"
    assert source.stats.resyncs >= 3, "the gap, the truncated update and the bad level each forced a resync"
    if venue == "okx":
        assert source.stats.resyncs >= 4, "the wrong checksum forced a resync too"
    assert source.stats.malformed >= 2, "truncated update and garbage were counted, not fatal"
    assert source.stats.unknown >= 1
    assert source.stats.venue_errors == 1, "the venue's error reply was counted, and the stream went on"
    if venue == "binance":  # trades made while the socket was down came back from REST, in place
        assert fake.offline_ids and source.backfill.recovered == len(fake.offline_ids)


async def _until(ws: Any, received: list[dict[str, Any]], done: Any, timeout: float = 20.0) -> None:
    async def read() -> None:
        while not done():
            msg = await ws.receive_json()
            received.append(msg)

    await asyncio.wait_for(read(), timeout)


def _service_env(venue: str, base: str) -> dict[str, str]:
    urls = {
        "okx": {"OKX_WS_URL": f"ws://{base}/ws/v5/public", "OKX_REST_URL": f"http://{base}"},
        "binance": {
            "BINANCE_WS_MARKET_URL": f"ws://{base}/market/ws",
            "BINANCE_WS_PUBLIC_URL": f"ws://{base}/public/ws",
            "BINANCE_REST_URL": f"http://{base}",
        },
        "bluefin": {"BLUEFIN_WS_URL": f"ws://{base}/ws/market", "BLUEFIN_REST_URL": f"http://{base}"},
    }[venue]
    return {
        "SOURCE": venue, "DRY_RUN": "false", "SYMBOLS": "ETH-PERP,BTC-PERP", "FEED_STALE_SECONDS": "5",
        "FEED_INITIAL_BACKOFF_SECONDS": "0.02", "BOOK_SNAPSHOT_WAIT_SECONDS": "0.05", "RECORD": "false",
        "RING_PERSIST": "false", **urls,
    }  # fmt: skip


@pytest.mark.parametrize("venue", ["okx", "binance", "bluefin"])
async def test_service_streams_books_trades_and_upstream_gaps_from_an_exchange(start_service, venue: str) -> None:
    """SOURCE=<venue> end to end: a client sees exact trades, the exact book top-20 and each interruption."""
    import aiohttp

    failures = ["drop", "malformed"] + (["checksum"] if venue == "okx" else ["gap"])
    script = standard_script(random.Random(5), failures, steps_between=15)
    _, symbol_map = make_source(venue, "unused")
    fake = FAKES[venue](list(symbol_map.values()), script, seed=5)
    base = await fake.start()
    service = start_service(**_service_env(venue, base))
    received: list[dict[str, Any]] = []
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{service.ws_url}/ws/multi/ETH-PERP") as ws:
            bad = {"type": "subscribe", "symbols": ["ETH-PERP"], "orderbook": True, "orderbook_depth": 999}
            await ws.send_json(bad)
            await ws.send_json({"type": "subscribe", "symbols": ["BTC-PERP"], "orderbook": True, "orderbook_rate": "x"})
            await ws.send_json(
                {"type": "subscribe", "symbols": ["ETH-PERP", "BTC-PERP"], "orderbook": True,
                 "orderbook_depth": 20, "orderbook_rate": 20}
            )  # fmt: skip
            await _until(ws, received, lambda: sum(m["type"] == "subscribed" for m in received) >= 2)
            await asyncio.wait_for(fake.play(), 30)
            ours = {v: k for k, v in symbol_map.items()}

            def converged() -> bool:
                if sum(m["type"] == "trade" for m in received) < len(fake.sent_trades):
                    return False
                for venue_symbol, symbol in ours.items():
                    books = [m for m in received if m["type"] == "orderbook" and m["symbol"] == symbol]
                    bids, asks = fake.expected_book(venue_symbol, 20)
                    if not books or books[-1]["data"]["bids"] != [list(b) for b in bids]:
                        return False
                    if books[-1]["data"]["asks"] != [list(a) for a in asks]:
                        return False
                return True

            await _until(ws, received, converged)
            await ws.send_json({"type": "ping"})
            await _until(ws, received, lambda: received[-1]["type"] == "pong")
            async with http.get(f"{service.http_url}/streaming/status") as response:
                status = await response.json()
    finally:
        await fake.stop()
    errors = [m for m in received if m["type"] == "error"]
    assert any("orderbook_depth" in e["message"] for e in errors)
    assert any(e["code"] == "invalid_message" and "orderbook_rate" in e["message"] for e in errors)
    for venue_symbol, symbol in ours.items():
        trades = [{k: m["data"][k] for k in ("trade_id", "price", "size", "side")} for m in received
                  if m["type"] == "trade" and m["symbol"] == symbol]  # fmt: skip
        assert trades == [fake.expected_trade(t) for t in fake.sent_trades if t.symbol == venue_symbol]
    book = [m for m in received if m["type"] == "orderbook" and m["symbol"] == "ETH-PERP"][-1]["data"]
    assert book["spread"] == round(book["best_ask"] - book["best_bid"], 9) > 0
    assert book["venue"] == venue
    reasons = {m["data"]["reason"] for m in received if m["type"] == "gap"}
    assert {"upstream_reconnect", "upstream_resync"} <= reasons
    assert status["source"] == venue and status["orderbook_subscriptions"] == 2
    feed = status["feed"]
    # A frame lost while a book still buffers for its snapshot is covered by the snapshot: no resync needed.
    assert feed["reconnects"] >= 1 and feed["resyncs"] >= 1 and feed["malformed_frames"] >= 1


@pytest.mark.parametrize("venue", ["binance", "okx", "bluefin"])
async def test_a_quiet_but_alive_venue_is_not_declared_stale(venue: str) -> None:
    """No market data for longer than the stale limit, but the venue answers pings: no reconnect."""
    fake, source, events = await run_against_fake(venue, ["quiet"], seed=4)
    check_outcome(venue, fake, events)
    assert statuses(events) == [] and source.stats.reconnects == 0
    assert fake.connections_seen == len(fake.kinds)


@pytest.mark.parametrize("venue", ["binance", "bluefin"])
async def test_garbage_rest_snapshots_are_retried(venue: str) -> None:
    """500s and truncated JSON from the snapshot endpoint: the source retries and still ends exact."""
    _, symbol_map = make_source(venue, "unused")
    script = standard_script(random.Random(8), ["gap"], steps_between=20)
    fake = FAKES[venue](list(symbol_map.values()), script, seed=8)
    fake.bad_rest_replies = 4
    base = await fake.start()
    source, _ = make_source(venue, base)
    events: list[Any] = []
    task = asyncio.create_task(source.run(events.extend))
    try:
        await asyncio.wait_for(fake.play(), 30)
        for _ in range(1000):  # up to 20 s: generous for a loaded machine
            views = {e.symbol: e.update_id for e in events if type(e) is BookView}
            if all(views.get(ours) == fake.markets[v].update_id for ours, v in symbol_map.items()):
                break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.stop()
    assert fake.bad_rest_replies == 0, "the garbage replies were all served"
    check_outcome(venue, fake, events)


def test_symbol_mapping_defaults_and_overrides() -> None:
    from bluefin_service.config import load_settings
    from bluefin_service.sources.exchanges import build_exchange_source, symbol_map

    settings = load_settings((), source="binance", symbols="ETH-PERP,BTC-PERP", symbol_map="BTC-PERP=XBTUSDT")
    assert symbol_map(settings, "binance") == {"ETH-PERP": "ETHUSDT", "BTC-PERP": "XBTUSDT"}
    assert symbol_map(settings, "okx") == {"ETH-PERP": "ETH-USDT-SWAP", "BTC-PERP": "XBTUSDT"}
    assert symbol_map(settings, "bluefin") == {"ETH-PERP": "ETH-PERP", "BTC-PERP": "XBTUSDT"}
    source = build_exchange_source(settings)
    assert source.name == "binance" and source.ws_market_url == "wss://fstream.binance.com/market/ws"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"symbol_map": "ETH-PERP"}, "SYMBOL_MAP"),
        ({"symbol_map": "=ETHUSDT"}, "SYMBOL_MAP"),
        ({"source": "kraken"}, "SOURCE"),
        ({"feed_stale_seconds": "-1"}, "FEED_STALE_SECONDS"),
        ({"dry_run": "false"}, "SOURCE=bluefin, binance or okx"),
    ],
)
def test_bad_exchange_settings_are_named(env: dict[str, str], names: str) -> None:
    from bluefin_service.config import load_settings
    from marketdata.errors import ConfigError

    with pytest.raises(ConfigError, match=names):
        load_settings((), **env)


async def test_okx_without_ws_snapshots_builds_books_from_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    """OKX's announced change: no snapshot on subscribe. The book comes from REST, bridged by seqId."""
    monkeypatch.setattr(FakeOkx, "ws_snapshots", False)
    fake, source, events = await run_against_fake("okx", ["quiet", "gap", "drop", "malformed"], seed=21)
    check_outcome("okx", fake, events)
    # The gap after the quiet spell hits a live book (a resync); what is lost while a book is still buffering for
    # its REST snapshot is covered by that snapshot, so it needs no resync.
    assert source.stats.resyncs >= 1 and source.stats.reconnects == 1


async def test_old_connections_are_recycled_and_reported() -> None:
    """Binance drops a connection at 24 h; the source replaces it before (here: after 0.4 s) and says so."""
    settings = dataclasses.replace(FAST, max_age=0.4)
    fake, _, events = await run_against_fake("binance", ["quiet"], seed=9, settings=settings)
    assert any("older than" in e.detail for e in events if type(e) is FeedStatus)
    assert fake.connections_seen > 2
    for venue_symbol, symbol in (("ETHUSDT", "ETH-PERP"), ("BTCUSDT", "BTC-PERP")):
        view = [e for e in events if type(e) is BookView and e.symbol == symbol][-1]
        assert (view.bids, view.asks) == fake.expected_book(venue_symbol, DEPTH)


def test_reconnect_delays_grow_capped_with_jitter() -> None:
    from bluefin_service.sources.feed import backoff

    low = list(itertools.islice(backoff(0.25, 5.0, rng=lambda: 0.0), 12))
    high = list(itertools.islice(backoff(0.25, 5.0, rng=lambda: 1.0), 12))
    assert low[0] == 0.125 and high[0] == 0.25  # jitter spans [d/2, d]
    assert all(b >= a for a, b in itertools.pairwise(high)) and high[-1] == 5.0  # grows, then capped
    assert all(lo == hi / 2 for lo, hi in zip(low, high, strict=True))


class _RecordingTransport:
    """Stands in for the asyncio transport under a hub connection: keeps what the hub writes."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def messages(self) -> list[dict[str, Any]]:
        import json

        out, data = [], self.data
        while data:  # unmasked server frames, payloads < 64 KiB
            length, start = data[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            out.append(json.loads(data[start : start + length]))
            data = data[start + length :]
        return out


async def test_books_are_throttled_per_client_and_statuses_reach_subscribers() -> None:
    from bluefin_service.books import BookStreams
    from bluefin_service.hub import Connection, Hub

    hub = Hub(["ETH-PERP"])
    books = BookStreams(hub, ["ETH-PERP"])
    fast, slow = _RecordingTransport(), _RecordingTransport()
    conn_fast = Connection(1, fast, lambda code, reason: None)
    conn_slow = Connection(2, slow, lambda code, reason: None)
    for conn in (conn_fast, conn_slow):
        hub.attach(conn)
        hub.subscribe(conn, "ETH-PERP")
    assert books.subscribe(conn_fast, "ETH-PERP", 1, 10.0) is None
    assert books.subscribe(conn_slow, "ETH-PERP", 3, 2.0) is None
    assert "orderbook_depth" in (books.subscribe(conn_fast, "ETH-PERP", 0, 1.0) or "")
    assert "orderbook_rate" in (books.subscribe(conn_fast, "ETH-PERP", 5, 0.0) or "")

    def view(bid: float) -> BookView:
        return BookView("ETH-PERP", 1.0, [(bid, 1.0), (bid - 1, 2.0)], [(bid + 0.5, 3.0)], "okx", int(bid))

    books.route([view(100.0)], hub.publish_batch)
    assert books.tick(now=0.0) == 2
    books.route([view(101.0), view(102.0)], hub.publish_batch)
    assert books.tick(now=0.05) == 0  # nobody is due yet
    assert books.tick(now=0.1) == 1  # 10/s: the fast client gets the latest; 2/s: the slow one waits
    assert books.tick(now=0.2) == 0  # unchanged books are not resent
    assert books.tick(now=0.5) == 1  # the slow client's turn
    books.route([FeedStatus("ETH-PERP", 2.0, "okx", "reconnect", "closed by venue")], hub.publish_batch)
    hub.flush()
    got_fast, got_slow = fast.messages(), slow.messages()
    assert [m["data"]["best_bid"] for m in got_fast if m["type"] == "orderbook"] == [100.0, 102.0]
    assert [m["data"]["bids"] for m in got_slow if m["type"] == "orderbook"] == [
        [[100.0, 1.0], [99.0, 2.0]],
        [[102.0, 1.0], [101.0, 2.0]],
    ]
    assert got_fast[0]["data"]["spread"] == 0.5 and len(got_fast[0]["data"]["bids"]) == 1
    assert [m["data"]["reason"] for m in got_slow if m["type"] == "gap"] == ["upstream_reconnect"]
    hub.detach(conn_fast)
    books.tick(now=5.0)
    assert conn_fast not in books.subs


async def test_a_client_resuming_from_before_an_upstream_interruption_still_gets_it_in_place() -> None:
    from bluefin_service.books import BookStreams
    from bluefin_service.hub import NOTICES_KEPT, Connection, Hub

    hub = Hub(["ETH-PERP"], ring_size=50)
    books = BookStreams(hub, ["ETH-PERP"])

    def ticks(start: int, count: int) -> list[PriceUpdate]:
        return [PriceUpdate("ETH-PERP", float(start + i), 2500.0, 1.0) for i in range(count)]

    def interrupted(kind: str) -> None:
        books.route([FeedStatus("ETH-PERP", 99.0, "okx", kind, "test")], hub.publish_batch)

    hub.publish_batch(ticks(0, 10))
    interrupted("reconnect")  # after seq 10
    hub.publish_batch(ticks(10, 5))
    interrupted("resync")  # after seq 15
    interrupted("stale")  # also after seq 15

    def resumed(after: int) -> list[tuple[str, object]]:
        transport = _RecordingTransport()
        conn = Connection(after + 100, transport, lambda code, reason: None)
        hub.attach(conn)
        hub.subscribe(conn, "ETH-PERP", after)
        hub.flush()
        hub.detach(conn)
        return [(m["type"], m["seq"] if m["type"] != "gap" else m["data"]["reason"]) for m in transport.messages()]

    notices = [("gap", "upstream_reconnect")], [("gap", "upstream_resync"), ("gap", "upstream_stale")]
    assert resumed(8) == [("price_update", 9), ("price_update", 10), *notices[0],
                          *[("price_update", seq) for seq in range(11, 16)], *notices[1]]  # fmt: skip
    assert resumed(10) == [*notices[0], *[("price_update", seq) for seq in range(11, 16)], *notices[1]]
    assert resumed(12) == [("price_update", 13), ("price_update", 14), ("price_update", 15), *notices[1]]
    assert resumed(15) == notices[1]
    hub.publish_batch(ticks(15, 1))
    assert resumed(16) == []
    for _ in range(NOTICES_KEPT):  # bounded: the oldest are forgotten
        interrupted("stale")
    assert ("gap", "upstream_reconnect") not in resumed(0)


async def test_failed_trade_backfill_releases_live_trades_and_keeps_the_gap(monkeypatch: pytest.MonkeyPatch) -> None:
    """aggTrades REST down: the trades made during the drop stay missing (the gap message says so); every
    live trade still arrives, once, in order."""
    monkeypatch.setattr(FakeBinance, "bad_trade_replies", 1000)
    fake, source, events = await run_against_fake("binance", ["drop"], seed=12)
    assert fake.offline_ids and source.backfill.recovered == 0
    for venue_symbol, symbol in (("ETHUSDT", "ETH-PERP"), ("BTCUSDT", "BTC-PERP")):
        got = [e.trade_id for e in events if type(e) is Trade and e.symbol == symbol]
        live = [
            t.trade_id
            for t in fake.sent_trades
            if t.symbol == venue_symbol and (t.symbol, t.trade_id) not in fake.offline_ids
        ]
        assert got == live
    assert "reconnect" in statuses(events)
