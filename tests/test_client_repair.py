"""Gap repair over HTTP: a gap the ring can no longer replay is filled from ``GET /trades``, in seq order, before
the symbol's live messages go on; what the store cannot give is reported as an unrepaired gap."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from svc_helpers import http, wait_for_seq
from test_client import SeqRecorder
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from bot.data.realtime_market import RealtimeMarketDataProvider
from bot.exchange.bluefin_client import BluefinServiceClient
from marketdata.errors import ConfigError

TIMEOUT = 15.0  # generous: the machine is shared; nothing waits this long when things work
SMALL_RING = {
    "RING_SIZE": "16",
    "RING_PERSIST": "false",
    "STREAM_INTERVAL_SECONDS": "0.01",
    "TRADE_FREQUENCY": "0.02",
    "HEARTBEAT_INTERVAL_SECONDS": "0.5",
    "FLUSH_INTERVAL_SECONDS": "0.2",
}


async def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class CuttableProxy:
    """A TCP relay in front of a server: ``cut()`` drops every connection through it and refuses new ones until
    ``restore()`` — a network outage for the clients behind it while the service streams on."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.open = True
        self.links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> CuttableProxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self.server is not None
        self.server.close()

    def cut(self) -> None:
        self.open = False
        for near, far in self.links:
            near.transport.abort()
            far.transport.abort()
        self.links.clear()

    def restore(self) -> None:
        self.open = True

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.links.append((writer, far_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))


def assert_complete(seqs: list[int]) -> None:
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a duplicate in the delivered seqs"


async def all_ticks(service_url: str, symbol: str, after_seq: int, to_seq: int) -> list[dict[str, Any]]:
    ticks: list[dict[str, Any]] = []
    while after_seq < to_seq:
        code, body, _ = await http("GET", f"{service_url}/trades/{symbol}?after_seq={after_seq}&limit=10000")
        assert code == 200 and body["ticks"]
        ticks += [t for t in body["ticks"] if t["seq"] <= to_seq]
        after_seq = body["ticks"][-1]["seq"]
    return ticks


# -- against the real service --------------------------------------------------------------------------------
async def test_a_long_disconnect_ends_with_complete_seqs_and_exact_candles(start_service: Any) -> None:
    service = start_service(**SMALL_RING)
    async with CuttableProxy(service.port) as proxy:
        client = BluefinServiceClient(proxy.url, heartbeat_interval=0.5, repair_page_size=40)
        log = SeqRecorder(client)
        provider = RealtimeMarketDataProvider("ETH-PERP", [1], service_url=proxy.url)
        provider_log = SeqRecorder(provider.client)
        assert await client.connect_websocket(["ETH-PERP", "BTC-PERP"]) and await provider.connect()
        try:
            await wait_until(lambda: len(log.messages) >= 50 and provider.get_candle_history(1, 10), "a candle")
            proxy.cut()
            await wait_until(lambda: not client.is_websocket_connected(), "the client to see the outage")
            await wait_until(lambda: not provider.is_websocket_connected(), "the provider to see the outage")
            away_from = {s: client.get_websocket_status()["last_seq"][s] for s in ("ETH-PERP", "BTC-PERP")}
            for symbol, seq in away_from.items():
                await wait_for_seq(service, symbol, seq + 100)  # far beyond the 16-message ring
            proxy.restore()
            await wait_until(lambda: client.get_websocket_status()["gaps_repaired"] >= 2, "both symbols repaired")
            await wait_until(lambda: provider.get_performance_stats()["gaps_repaired"] >= 1, "the provider's repair")
            count, candles = len(log.messages), len(provider.get_candle_history(1, 1000))
            await wait_until(lambda: len(log.messages) >= count + 50, "live messages after the repair")
            await wait_until(lambda: len(provider.get_candle_history(1, 1000)) >= candles + 2, "candles after it")
            frame = provider.to_dataframe(1, 1000)
            stats = provider.get_performance_stats()
        finally:
            await client.disconnect_websocket()
            await provider.disconnect()
    status = client.get_websocket_status()
    assert status["reconnects"] >= 1 and status["gaps"] == [] and status["gaps_unrepaired"] == 0
    assert {g["reason"] for g in status["repaired_gaps"]} == {"ring_overflow"}
    # >= 100 missed per symbol; the ring still replays its last 16, the rest came over HTTP, 40 a page
    assert status["messages_repaired"] >= 2 * (100 - int(SMALL_RING["RING_SIZE"]))
    for symbol, seqs in log.seqs().items():
        assert seqs[0] <= away_from[symbol] < away_from[symbol] + 100 < seqs[-1], symbol
        assert_complete(seqs)
    assert stats["gaps"] == 0 and stats["gaps_unrepaired"] == 0 and stats["gaps_repaired"] >= 1
    delivered = provider_log.seqs()["ETH-PERP"]
    assert_complete(delivered)
    # every tick the service published from the provider's first one on, read back from the store
    ticks = await all_ticks(service.http_url, "ETH-PERP", delivered[0] - 1, delivered[-1])
    assert [t["seq"] for t in ticks] == delivered
    assert not frame["gap"].any() and frame["reconnect"].any() and frame["late_ticks"].sum() == 0
    checked = 0
    for start, row in zip(frame.index, frame.itertuples(), strict=True):
        inside = [t for t in ticks if start.timestamp() <= t["timestamp"] < start.timestamp() + 1]
        if not inside:
            assert row.volume == 0 and row.filled
            continue
        prices = [t["data"]["price"] for t in sorted(inside, key=lambda t: t["timestamp"])]
        volume = sum(t["data"]["size"] for t in inside if t["type"] == "trade")
        expected = (prices[0], max(prices), min(prices), prices[-1], volume)
        assert (row.open, row.high, row.low, row.close, row.volume) == pytest.approx(expected), f"candle {start}"
        checked += 1
    assert checked >= 3


async def test_without_a_store_the_gap_is_reported_unrepaired_and_the_stream_goes_on(start_service: Any) -> None:
    service = start_service(RECORD="false", **SMALL_RING)
    async with CuttableProxy(service.port) as proxy:
        client = BluefinServiceClient(proxy.url, heartbeat_interval=0.5)
        log = SeqRecorder(client)
        gaps: list[dict[str, Any]] = []
        client.subscribe_to_gaps(gaps.append)
        assert await client.connect_websocket(["SOL-PERP"])
        try:
            await wait_until(lambda: len(log.messages) >= 20, "messages before the outage")
            proxy.cut()
            await wait_until(lambda: not client.is_websocket_connected(), "the client to see the outage")
            away_from = client.get_websocket_status()["last_seq"]["SOL-PERP"]
            await wait_for_seq(service, "SOL-PERP", away_from + 60)
            proxy.restore()
            await wait_until(lambda: len(gaps) == 1, "the unrepaired gap")
            count = len(log.messages)
            await wait_until(lambda: len(log.messages) >= count + 30, "the stream after the gap")
        finally:
            await client.disconnect_websocket()
    status = client.get_websocket_status()
    assert status["gaps_unrepaired"] == 1 and status["gaps_repaired"] == 0 and status["gap_count"] == 1
    gap = gaps[0]
    assert (gap["symbol"], gap["reason"], gap["from_seq"]) == ("SOL-PERP", "ring_overflow", away_from + 1)
    seqs = log.seqs()["SOL-PERP"]
    before = [s for s in seqs if s <= away_from]
    after = [s for s in seqs if s > away_from]
    assert_complete(before) and after[0] == gap["to_seq"] + 1
    assert_complete(after)


# -- against a scripted server that also answers /trades -----------------------------------------------------
def frame(seq: int, symbol: str = "ETH-PERP", kind: str = "price_update") -> dict[str, Any]:
    data: dict[str, Any] = {"price": 2500.0 + seq, "volume": 1.0}
    if kind == "trade":
        data = {"price": 2500.0 + seq, "size": 1.5, "side": "buy", "trade_id": f"t{seq}"}
    return {"type": kind, "symbol": symbol, "timestamp": 1_764_000_000.0 + seq, "data": data, "seq": seq}


def ack(head: int) -> str:
    data = {"symbols": ["ETH-PERP"], "subscriptions": ["ETH-PERP"], "last_seq": {"ETH-PERP": head}}
    return json.dumps({"type": "subscribed", "symbol": "system", "timestamp": time.time(), "data": data})


def gap(first: int, last: int, reason: str = "ring_overflow") -> str:
    data = {"from_seq": first, "to_seq": last, "reason": reason}
    return json.dumps({"type": "gap", "symbol": "ETH-PERP", "timestamp": time.time(), "data": data})


class StoreServer:
    """WebSocket frames from ``script``; ``GET /trades`` answers from ``store`` (or ``reply`` if set)."""

    def __init__(self, script: list[str], store: list[dict[str, Any]], reply: tuple[int, str] | None = None) -> None:
        self.script, self.store, self.reply = script, store, reply
        self.queries: list[dict[str, str]] = []
        self.url = ""

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if not parts.path.startswith("/trades/"):
            return None
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.queries.append(query)
        if self.reply is not None:
            return connection.respond(*self.reply)
        after, limit = int(query["after_seq"]), int(query["limit"])
        ticks = [t for t in self.store if t["seq"] > after][:limit]
        return connection.respond(200, json.dumps({"symbol": "ETH-PERP", "count": len(ticks), "ticks": ticks}))

    async def handler(self, ws: ServerConnection) -> None:
        for item in self.script:
            await ws.send(item)
        await ws.wait_closed()


@pytest.fixture
async def store_server() -> AsyncIterator[Callable[..., Any]]:
    servers: list[Any] = []

    async def start(*args: Any) -> StoreServer:
        fake = StoreServer(*args)
        server = await serve(fake.handler, "127.0.0.1", 0, process_request=fake.process_request, compression=None)
        servers.append(server)
        fake.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return fake

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def run_client(server: StoreServer, want: int, **options: Any) -> tuple[list[int], dict[str, Any], list]:
    client = BluefinServiceClient(server.url, heartbeat_interval=5, **options)
    log = SeqRecorder(client)
    gaps: list[dict[str, Any]] = []
    client.subscribe_to_gaps(gaps.append)
    await client.connect_websocket(["ETH-PERP"])
    try:
        await wait_until(lambda: len(log.messages) >= want and not client.is_repairing("ETH-PERP"), "the stream")
    finally:
        status = client.get_websocket_status()
        await client.disconnect_websocket()
    return [m["seq"] for m in log.messages], status, gaps


async def test_repaired_messages_come_before_the_held_live_ones_in_pages(store_server: Any) -> None:
    store = [frame(seq, kind="trade" if seq % 2 else "price_update") for seq in range(1, 30)]
    live = [json.dumps(frame(seq)) for seq in (1, 2)] + [gap(3, 12)] + [json.dumps(frame(s)) for s in range(13, 20)]
    jump = [json.dumps(frame(25)), json.dumps(frame(26))]  # 20..24 missing without a word: a seq jump
    server = await store_server([ack(0), *live, *jump], store)
    seqs, status, gaps = await run_client(server, 26, repair_page_size=4)
    assert seqs == list(range(1, 27)) and gaps == []
    assert status["gaps_repaired"] == 2 and status["gaps_unrepaired"] == 0 and status["messages_repaired"] == 15
    assert [(g["from_seq"], g["to_seq"], g["reason"]) for g in status["repaired_gaps"]] == [
        (3, 12, "ring_overflow"),
        (20, 24, "seq_jump"),
    ]
    assert [(q["after_seq"], q["limit"]) for q in server.queries] == [
        ("2", "4"), ("6", "4"), ("10", "2"), ("19", "4"), ("23", "1"),
    ]  # fmt: skip


async def test_a_store_with_holes_repairs_what_it_has_and_reports_the_rest(store_server: Any) -> None:
    store = [frame(seq) for seq in (3, 4, 7, 9)]  # 5, 6 and 8 were never recorded
    server = await store_server([ack(0), json.dumps(frame(1)), gap(2, 9), json.dumps(frame(10))], store)
    seqs, status, gaps = await run_client(server, 6)
    assert seqs == [1, 3, 4, 7, 9, 10]
    assert [(g["from_seq"], g["to_seq"]) for g in gaps] == [(2, 2), (5, 6), (8, 8)]
    assert status["gaps_unrepaired"] == 1 and status["gaps_repaired"] == 0 and status["gap_count"] == 3


@pytest.mark.parametrize(
    "reply",
    [
        (500, "internal error"),
        (503, '{"error": {"code": "store_unavailable", "message": "down"}}'),
        (200, "not json"),
        (200, '{"ticks": [{"type": "trade", "symbol": "ETH-PERP", "timestamp": 1, "data": {"price": "x"}}]}'),
        (200, '{"ticks": "nope"}'),
        (200, '{"ticks": [{"type": "bogus"}]}'),
        (200, "[1, 2, 3]"),
    ],
)
async def test_garbage_from_trades_leaves_the_gap_unrepaired_and_the_stream_going(
    store_server: Any, reply: tuple[int, str]
) -> None:
    server = await store_server([ack(0), json.dumps(frame(1)), gap(2, 5), json.dumps(frame(6))], [], reply)
    seqs, status, gaps = await run_client(server, 2)
    assert seqs == [1, 6] and [(g["from_seq"], g["to_seq"], g["reason"]) for g in gaps] == [(2, 5, "ring_overflow")]
    assert status["gaps_unrepaired"] == 1 and "error" in gaps[0]


async def test_other_gap_reasons_and_disabled_repair_are_reported_at_once(store_server: Any) -> None:
    store = [frame(seq) for seq in range(1, 10)]
    script = [ack(4), json.dumps(frame(5)), gap(1, 5, "ahead_of_server"), json.dumps(frame(1))]  # a restarted service
    server = await store_server(script, store)
    seqs, status, gaps = await run_client(server, 2)
    assert seqs == [5, 1] and [g["reason"] for g in gaps] == ["ahead_of_server"] and server.queries == []
    server = await store_server([ack(0), json.dumps(frame(1)), gap(2, 3), json.dumps(frame(4))], store)
    seqs, status, gaps = await run_client(server, 2, repair_gaps=False)
    assert seqs == [1, 4] and server.queries == [] and status["gaps_unrepaired"] == 1


async def test_a_full_hold_makes_the_reader_wait_for_the_repair(store_server: Any) -> None:
    store = [frame(seq) for seq in range(1, 60)]
    live = [json.dumps(frame(seq)) for seq in range(31, 60)]
    server = await store_server([ack(0), json.dumps(frame(1)), gap(2, 30), *live], store)
    seqs, status, _ = await run_client(server, 59, repair_page_size=1, repair_hold=3)
    assert seqs == list(range(1, 60)) and status["gaps_repaired"] == 1
    assert status["repair_hold_waits"] >= 1 and status["repair_held_messages"] == 0


def test_bad_repair_settings_are_refused() -> None:
    for bad in ({"repair_page_size": 0}, {"repair_timeout": 0}, {"repair_hold": 0}):
        with pytest.raises(ConfigError):
            BluefinServiceClient("http://127.0.0.1:1", **bad)
