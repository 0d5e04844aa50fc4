"""BluefinServiceClient against the real service and against tiny local servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bot.exchange.bluefin_client import BluefinServiceClient, ReconnectPolicy, stream_url, ws_base_url
from marketdata.errors import ConfigError, MarketDataError

TIMEOUT = 10.0  # generous: the machine is shared; nothing waits this long when things work
FAST_SERVICE = {"STREAM_INTERVAL_SECONDS": "0.01", "TRADE_FREQUENCY": "0.02", "HEARTBEAT_INTERVAL_SECONDS": "0.5"}


async def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class SeqRecorder:
    """Collects every price/trade callback; checks seqs per symbol."""

    def __init__(self, client: BluefinServiceClient) -> None:
        self.messages: list[dict[str, Any]] = []
        client.subscribe_to_price_updates(self.messages.append)
        client.subscribe_to_trades(self.messages.append)

    def seqs(self) -> dict[str, list[int]]:
        by_symbol: dict[str, list[int]] = defaultdict(list)
        for message in self.messages:
            by_symbol[message["symbol"]].append(message["seq"])
        return by_symbol

    def assert_contiguous(self) -> None:
        for symbol, seqs in self.seqs().items():
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"{symbol}: gap or duplicate in {seqs}"


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# -- a scripted local server ---------------------------------------------------------------------------------
def msg(kind: str, symbol: str = "ETH-PERP", **fields: Any) -> str:
    return json.dumps({"type": kind, "symbol": symbol, "timestamp": time.time(), **fields})


def price(seq: int, value: float = 2500.0, symbol: str = "ETH-PERP") -> str:
    return msg("price_update", symbol, data={"price": value, "volume": 1.0}, seq=seq)


def ack(head: int, symbol: str = "ETH-PERP") -> str:
    data = {"symbols": [symbol], "subscriptions": [symbol], "last_seq": {symbol: head}}
    return msg("subscribed", "system", data=data)


class ScriptedServer:
    """Connection n gets ``scripts[n]`` (the last one repeats), then stays silent until the client leaves."""

    def __init__(self, scripts: list[list[str | bytes | None]]) -> None:
        self.scripts = scripts
        self.paths: list[str] = []
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path if ws.request else "")
        script = self.scripts[min(len(self.paths), len(self.scripts)) - 1]
        for frame in script:
            if frame is None:  # None ends the connection cleanly
                await ws.close()
                return
            await ws.send(frame)
        await ws.wait_closed()


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    servers: list[Any] = []

    async def start(*scripts: list[str | bytes | None]) -> ScriptedServer:
        scripted_server = ScriptedServer(list(scripts))
        server = await serve(scripted_server.handler, "127.0.0.1", 0, compression=None, max_size=None)
        servers.append(server)
        scripted_server.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return scripted_server

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


# -- against the real service --------------------------------------------------------------------------------
async def test_sigkill_restart_resumes_without_gap_or_duplicate(start_service: Any) -> None:
    service = start_service(**FAST_SERVICE)
    client = BluefinServiceClient(service.http_url, heartbeat_interval=0.5)
    recorder = SeqRecorder(client)
    assert await client.connect_websocket(["ETH-PERP", "BTC-PERP"])
    try:
        await wait_until(lambda: len(recorder.messages) >= 100, "messages before the kill")
        await asyncio.to_thread(service.kill)
        before = len(recorder.messages)
        await wait_until(lambda: not client.is_websocket_connected(), "the client to notice the kill")
        await asyncio.to_thread(service.start)
        back = time.monotonic()
        await wait_until(client.is_websocket_connected, "the reconnect")
        print(f"reconnected {time.monotonic() - back:.3f}s after the service was back")
        await wait_until(lambda: len(recorder.messages) >= before + 100, "messages after the restart")
    finally:
        await client.disconnect_websocket()
    status = client.get_websocket_status()
    assert status["reconnects"] == 1 and status["resumes"] == 1
    assert status["gaps"] == [], "the restarted service should replay what the client missed"
    recorder.assert_contiguous()
    assert set(recorder.seqs()) == {"ETH-PERP", "BTC-PERP"}


async def test_clean_server_close_reconnects_and_streams_again(start_service: Any) -> None:
    service = start_service(**FAST_SERVICE)
    client = BluefinServiceClient(service.http_url, heartbeat_interval=0.5)
    recorder = SeqRecorder(client)
    assert await client.connect_websocket(["ETH-PERP"])
    try:
        await wait_until(lambda: len(recorder.messages) >= 20, "messages before the restart")
        # SIGTERM: the service closes every connection with 1001 going away, then starts again
        await asyncio.to_thread(service.restart)
        count = len(recorder.messages)
        await wait_until(lambda: client.get_websocket_status()["reconnects"] == 1, "the reconnect")
        await wait_until(lambda: len(recorder.messages) >= count + 20, "messages after the restart")
    finally:
        await client.disconnect_websocket()
    status = client.get_websocket_status()
    assert "1001" in status["last_disconnect_reason"]
    assert status["connected"] is False and status["resumes"] == 1


async def test_a_frozen_service_is_detected_as_stale_and_resumed_after_sigcont(start_service: Any) -> None:
    service = start_service(**FAST_SERVICE)
    client = BluefinServiceClient(service.http_url, heartbeat_interval=0.3, stale_after_heartbeats=2)
    recorder = SeqRecorder(client)
    assert await client.connect_websocket(["ETH-PERP"])
    try:
        await wait_until(lambda: len(recorder.messages) >= 20, "messages before the freeze")
        assert service.proc is not None
        service.proc.send_signal(signal.SIGSTOP)  # the socket stays open, nothing arrives
        try:
            await wait_until(lambda: client.get_websocket_status()["stale_disconnects"] == 1, "stale detection")
        finally:
            service.proc.send_signal(signal.SIGCONT)
        count = len(recorder.messages)
        await wait_until(client.is_websocket_connected, "the reconnect")
        await wait_until(lambda: len(recorder.messages) >= count + 20, "messages after the thaw")
    finally:
        await client.disconnect_websocket()
    status = client.get_websocket_status()
    assert status["reconnects"] >= 1 and status["resumes"] >= 1 and status["gaps"] == []
    recorder.assert_contiguous()


async def test_fails_over_to_the_next_url_when_the_first_is_dead(start_service: Any) -> None:
    service = start_service(**FAST_SERVICE)
    client = BluefinServiceClient([dead_url(), service.http_url])
    recorder = SeqRecorder(client)
    assert await client.connect_websocket(["SUI-PERP"])
    try:
        await wait_until(lambda: len(recorder.messages) >= 5, "messages through the second URL")
        status = client.get_websocket_status()
    finally:
        await client.disconnect_websocket()
    assert status["url"] == service.ws_url and status["connect_failures"] == 1
    assert "ConnectionRefused" in status["last_error"]
    assert all(m["symbol"] == "SUI-PERP" for m in recorder.messages)


async def test_connect_returns_false_when_nothing_listens_and_keeps_retrying(scripted: Any) -> None:
    client = BluefinServiceClient([dead_url(), dead_url()])
    assert await client.connect_websocket(["ETH-PERP"]) is False
    await wait_until(lambda: client.get_websocket_status()["connect_failures"] >= 4, "background retries")
    await client.disconnect_websocket()
    assert client.is_websocket_connected() is False


# -- against scripted servers --------------------------------------------------------------------------------
async def test_silent_server_is_detected_as_stale_and_the_client_resumes(scripted: Any) -> None:
    server = await scripted([ack(5), price(6)])
    client = BluefinServiceClient(server.url, heartbeat_interval=0.1, stale_after_heartbeats=2)
    await client.connect_websocket(["ETH-PERP"])
    await wait_until(lambda: len(server.paths) >= 2, "a reconnect after silence")
    status = client.get_websocket_status()
    await client.disconnect_websocket()
    assert status["stale_disconnects"] >= 1 and "stale" in status["last_disconnect_reason"]
    assert server.paths[0] == "/ws/ETH-PERP"
    assert server.paths[1] == "/ws/ETH-PERP?resume=ETH-PERP:6"


async def test_garbage_from_the_server_is_skipped_and_the_stream_continues(scripted: Any) -> None:
    garbage: list[str | bytes | None] = [
        "not json at all",
        '{"type": "bogus", "symbol": "ETH-PERP"}',
        "[1, 2, 3]",
        b"\xff\x00\xfe",
        msg("trade", data={"price": "cheap", "size": 1}, seq=3),
        msg("error", code="invalid_message", message="you sent nonsense"),
        price(1, symbol="BTC-PERP"),  # a symbol this client never asked for
    ]
    server = await scripted([ack(0), price(1), *garbage, price(2), price(2), price(3), "x" * 5000], [price(4)])
    client = BluefinServiceClient(server.url, max_message_bytes=4096, heartbeat_interval=5)
    recorder = SeqRecorder(client)
    await client.connect_websocket(["ETH-PERP"])
    await wait_until(lambda: len(recorder.messages) >= 4, "messages after the garbage")
    status = client.get_websocket_status()
    await client.disconnect_websocket()
    assert [m["seq"] for m in recorder.messages] == [1, 2, 3, 4]
    assert status["invalid_messages"] == 5 and status["server_errors"] == 1 and status["duplicates_dropped"] == 1
    assert status["unexpected_symbol"] == 1 and set(status["last_seq"]) == {"ETH-PERP"}
    assert "1009" in status["last_disconnect_reason"]  # the oversized frame ends that connection, resume follows
    assert server.paths[1].endswith("?resume=ETH-PERP:3") and status["gaps"] == []


async def test_gaps_are_recorded_exposed_and_the_seq_space_can_restart(scripted: Any) -> None:
    first = [
        ack(0),
        price(1),
        msg("gap", data={"from_seq": 2, "to_seq": 5, "reason": "ring_overflow"}),
        price(6),
        price(9),
        None,
    ]
    restarted = [ack(0), msg("gap", data={"from_seq": 1, "to_seq": 9, "reason": "ahead_of_server"}), price(1)]
    server = await scripted(first, restarted)
    client = BluefinServiceClient(server.url, heartbeat_interval=5)
    recorder = SeqRecorder(client)
    gap_events: list[dict[str, Any]] = []
    client.subscribe_to_gaps(gap_events.append)
    await client.connect_websocket(["ETH-PERP"])
    await wait_until(lambda: len(recorder.messages) >= 4, "the message after the service's seq restart")
    status = client.get_websocket_status()
    await client.disconnect_websocket()
    ranges = [(g["from_seq"], g["to_seq"], g["reason"]) for g in status["gaps"]]
    assert ranges == [(2, 5, "ring_overflow"), (7, 8, "seq_jump"), (1, 9, "ahead_of_server")]
    assert [(g["from_seq"], g["to_seq"]) for g in gap_events] == [(2, 5), (7, 8), (1, 9)]
    assert [m["seq"] for m in recorder.messages] == [1, 6, 9, 1]
    assert status["last_seq"] == {"ETH-PERP": 1} and status["gap_count"] == 3


async def test_callbacks_sync_async_and_raising_with_a_full_queue(scripted: Any) -> None:
    server = await scripted([ack(0), *(price(seq, 2500 + seq) for seq in range(1, 51))])
    client = BluefinServiceClient(server.url, queue_size=2, heartbeat_interval=5)
    seen_async: list[int] = []
    seen_sync: list[int] = []

    async def slow(update: dict[str, Any]) -> None:
        await asyncio.sleep(0.001)
        seen_async.append(update["seq"])

    def broken(update: dict[str, Any]) -> None:
        raise RuntimeError("strategy bug")

    client.subscribe_to_price_updates(slow)
    client.subscribe_to_price_updates(broken)
    client.subscribe_to_price_updates(lambda update: seen_sync.append(update["seq"]))
    await client.connect_websocket(["ETH-PERP"])
    await wait_until(lambda: len(seen_sync) == 50, "every update through a 2-slot queue")
    status = client.get_websocket_status()
    await client.disconnect_websocket()
    assert seen_async == seen_sync == list(range(1, 51))
    assert status["callback_errors"] == 50 and status["backpressure_waits"] > 0
    assert client.get_latest_price("eth-perp") == 2550.0 and client.get_latest_price("BTC-PERP") is None


# -- pure parts and configuration ---------------------------------------------------------------------------
def test_backoff_is_capped_full_jitter_and_the_first_retry_is_immediate() -> None:
    policy = ReconnectPolicy(base_delay=0.1, max_delay=2.0, factor=2.0)
    rng = random.Random(1)
    assert policy.delay(0, rng) == 0.0
    for failures in range(1, 200):
        samples = [policy.delay(failures, rng) for _ in range(20)]
        assert all(0.0 <= d <= min(2.0, 0.1 * 2 ** (failures - 1)) for d in samples)
    assert max(policy.delay(50, rng) for _ in range(200)) > 1.5  # jitter spans the whole capped range
    for bad in ({"base_delay": 0}, {"base_delay": 3, "max_delay": 1}, {"factor": 0.5}):
        with pytest.raises(ConfigError):
            ReconnectPolicy(**bad)


def test_service_urls_from_argument_env_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXCHANGE__BLUEFIN_SERVICE_URL", raising=False)
    assert BluefinServiceClient().service_urls == ["http://localhost:8080"]
    monkeypatch.setenv("EXCHANGE__BLUEFIN_SERVICE_URL", "http://a:1, https://b:2/prefix/")
    assert BluefinServiceClient().service_urls == ["http://a:1", "https://b:2/prefix/"]
    assert ws_base_url("https://b:2/prefix/") == "wss://b:2/prefix"
    assert ws_base_url("ws://c:3/ws") == "ws://c:3"
    assert stream_url("ws://h:1", ["ETH-PERP"], {}) == "ws://h:1/ws/ETH-PERP"
    assert stream_url("ws://h:1", ["A", "B"], {"A": 3, "B": 4}) == "ws://h:1/ws/multi/A,B?resume=A:3,B:4"


@pytest.mark.parametrize("bad", ["ftp://host:1", "localhost:8080", "http://", "http://host:99999", "", " , "])
def test_bad_service_urls_are_refused_with_a_clear_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"service URL|no Bluefin service URL"):
        BluefinServiceClient(bad)


async def test_bad_symbols_and_settings_are_refused() -> None:
    client = BluefinServiceClient(dead_url())
    for symbols in (["eth perp"], ["ETH-PERP/../x"], []):
        with pytest.raises(MarketDataError):
            await client.connect_websocket(symbols)
    assert client.is_websocket_connected() is False
    with pytest.raises(ConfigError):
        BluefinServiceClient(dead_url(), queue_size=0)
