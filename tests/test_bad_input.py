"""Bad input against a running service: an ``error`` and the connection stays open; abuse closes it with a
documented code; the service keeps serving and other clients never notice."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from svc_helpers import (
    MARKET_TYPES,
    assert_contiguous,
    background_reader,
    connect,
    http,
    recv_type,
    recv_until,
    shared_service,
)
from websockets.sync.client import connect as sync_connect

from marketdata.protocol import ErrorCode, decode_server

ERROR_CODES = {value for name, value in vars(ErrorCode).items() if name.isupper()}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(
        tmp_path_factory,
        STREAM_INTERVAL_SECONDS="0.01",
        TRADE_FREQUENCY="0.05",
        MAX_SYMBOLS_PER_CONNECTION="2",
        MAX_MESSAGE_BYTES="4096",
        CLIENT_MESSAGE_RATE="100000",
        CLIENT_MESSAGE_BURST="100000",
    )
    yield running
    running.stop()


@contextlib.asynccontextmanager
async def bystander(service: Any) -> AsyncIterator[list[dict[str, Any]]]:
    """Another client on the same service, reading all along; on exit its stream must be uninterrupted."""
    async with background_reader(f"{service.ws_url}/ws/multi/ETH-PERP,BTC-PERP") as received:
        yield received
    assert not [m for m in received if m["type"] in ("error", "gap")]
    assert len([m for m in received if m["type"] in MARKET_TYPES]) >= 5
    assert_contiguous([m for m in received if m["type"] in MARKET_TYPES])


async def expect_error(ws: Any, code: str, symbol: str = "system") -> dict[str, Any]:
    error = await recv_type(ws, "error")
    assert error["code"] == code, error
    assert error["symbol"] == symbol
    assert isinstance(error["message"], str) and len(error["message"]) > 10
    return error


async def still_open(ws: Any) -> None:
    await ws.send(json.dumps({"type": "ping", "timestamp": 42.0}))
    replies = await recv_until(ws, lambda m: m["type"] == "pong")
    assert replies[-1]["data"] == {"client_timestamp": 42.0}


BAD_FRAMES = [
    pytest.param('{"type": "ping"', ErrorCode.INVALID_JSON, id="malformed-json"),
    pytest.param("", ErrorCode.INVALID_JSON, id="empty-text"),
    pytest.param('{"type": "dance"}', ErrorCode.UNKNOWN_TYPE, id="unknown-type"),
    pytest.param('{"symbols": ["ETH-PERP"]}', ErrorCode.UNKNOWN_TYPE, id="missing-type"),
    pytest.param('{"type": 7}', ErrorCode.UNKNOWN_TYPE, id="type-not-a-string"),
    pytest.param('{"type": "ping", "timestamp": "soon"}', ErrorCode.INVALID_MESSAGE, id="ping-timestamp-string"),
    pytest.param('{"type": "subscribe", "symbols": "ETH-PERP"}', ErrorCode.INVALID_MESSAGE, id="symbols-not-list"),
    pytest.param('{"type": "subscribe", "symbols": [1, 2]}', ErrorCode.INVALID_MESSAGE, id="symbols-not-strings"),
    pytest.param('{"type": "subscribe"}', ErrorCode.INVALID_MESSAGE, id="subscribe-no-symbol"),
    pytest.param('{"type": "unsubscribe", "symbols": []}', ErrorCode.INVALID_MESSAGE, id="unsubscribe-no-symbol"),
    pytest.param('{"type": "resume", "last_seq": {"ETH-PERP": "x"}}', ErrorCode.INVALID_MESSAGE, id="resume-seq-str"),
    pytest.param('{"type": "resume"}', ErrorCode.INVALID_MESSAGE, id="resume-missing-last-seq"),
    pytest.param('{"type": "resume", "last_seq": [1]}', ErrorCode.INVALID_MESSAGE, id="resume-not-object"),
    pytest.param("[1, 2]", ErrorCode.INVALID_MESSAGE, id="json-array"),
    pytest.param('"ping"', ErrorCode.INVALID_MESSAGE, id="json-string"),
    pytest.param("null", ErrorCode.INVALID_MESSAGE, id="json-null"),
    pytest.param("42", ErrorCode.INVALID_MESSAGE, id="json-number"),
    pytest.param(b"\x00\x01binary", ErrorCode.BINARY_NOT_SUPPORTED, id="binary-frame"),
    pytest.param(b'{"type": "ping"}', ErrorCode.BINARY_NOT_SUPPORTED, id="json-in-binary-frame"),
]


@pytest.mark.parametrize(("frame", "code"), BAD_FRAMES)
async def test_bad_frame_gets_an_error_and_the_connection_stays_open(
    service: Any, frame: str | bytes, code: str
) -> None:
    async with bystander(service), connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        await recv_type(ws, "subscribed")
        await ws.send(frame)
        await expect_error(ws, code)
        await still_open(ws)
        await recv_type(ws, "price_update")  # and still streaming


@pytest.mark.parametrize(
    ("request_", "code", "symbol"),
    [
        ({"type": "subscribe", "symbols": ["DOGE-PERP"]}, ErrorCode.UNKNOWN_SYMBOL, "DOGE-PERP"),
        ({"type": "subscribe", "symbol": "ETH PERP!"}, ErrorCode.INVALID_SYMBOL, "system"),
        ({"type": "subscribe", "symbol": "A-" * 1000}, ErrorCode.INVALID_SYMBOL, "system"),
        ({"type": "unsubscribe", "symbol": "ETH/PERP"}, ErrorCode.INVALID_SYMBOL, "system"),
        ({"type": "unsubscribe", "symbol": "DOGE-PERP"}, ErrorCode.UNKNOWN_SYMBOL, "DOGE-PERP"),
        ({"type": "resume", "last_seq": {"DOGE-PERP": 3}}, ErrorCode.UNKNOWN_SYMBOL, "DOGE-PERP"),
        ({"type": "resume", "last_seq": {"BTC-PERP": -1}}, ErrorCode.INVALID_MESSAGE, "system"),
        ({"type": "subscribe", "symbols": ["BTC-PERP", "SUI-PERP"]}, ErrorCode.TOO_MANY_SYMBOLS, "SUI-PERP"),
    ],
)
async def test_bad_symbols_in_messages(service: Any, request_: dict[str, Any], code: str, symbol: str) -> None:
    async with bystander(service), connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        await recv_type(ws, "subscribed")
        await ws.send(json.dumps(request_))
        error = await expect_error(ws, code, symbol)
        assert len(error["message"]) < 300  # a 2000-character symbol is not echoed back whole
        await still_open(ws)


async def test_too_many_symbols_in_the_path_streams_the_first_ones(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/multi/ETH-PERP,BTC-PERP,SUI-PERP") as ws:
        first = await recv_until(ws, lambda m: m["type"] == "subscribed")
        errors = [m for m in first if m["type"] == "error"]
        assert [(e["code"], e["symbol"]) for e in errors] == [(ErrorCode.TOO_MANY_SYMBOLS, "SUI-PERP")]
        assert first[-1]["data"]["symbols"] == ["ETH-PERP", "BTC-PERP"]
        await still_open(ws)


@pytest.mark.parametrize(
    ("path", "code", "symbol"),
    [
        ("/ws/DOGE-PERP", ErrorCode.UNKNOWN_SYMBOL, "DOGE-PERP"),
        ("/ws/ETH%20PERP%21", ErrorCode.INVALID_SYMBOL, "system"),
        ("/ws/ETH-PERP,BTC-PERP", ErrorCode.INVALID_SYMBOL, "system"),
        ("/ws/multi/ETH-PERP,%24%24%24", ErrorCode.INVALID_SYMBOL, "system"),
        ("/ws/multi/,,,", ErrorCode.INVALID_SYMBOL, "system"),
        ("/ws/multi/DOGE-PERP,SHIB-PERP", ErrorCode.UNKNOWN_SYMBOL, "DOGE-PERP"),
    ],
)
async def test_bad_symbols_in_the_path_leave_an_open_connection(
    service: Any, path: str, code: str, symbol: str
) -> None:
    async with bystander(service), connect(f"{service.ws_url}{path}") as ws:
        await expect_error(ws, code, symbol)
        await still_open(ws)
        await ws.send(json.dumps({"type": "subscribe", "symbol": "SOL-PERP"}))
        ack = await recv_type(ws, "subscribed")
        assert ack["data"]["subscriptions"] == ["SOL-PERP"]
        assert (await recv_type(ws, "price_update"))["symbol"] == "SOL-PERP"


@pytest.mark.parametrize(
    "query",
    ["last_seq=abc", "last_seq=-5", "last_seq=1.5", "resume=ETH-PERP:x", "resume=ETH%20PERP:3", "resume=::::"],
)
async def test_bad_resume_parameter_streams_live_without_resume(service: Any, query: str) -> None:
    async with connect(f"{service.ws_url}/ws/ETH-PERP?{query}") as ws:
        error = await expect_error(ws, ErrorCode.INVALID_SYMBOL if "%20" in query else ErrorCode.INVALID_MESSAGE)
        assert "without resume" in error["message"]
        ack = await recv_type(ws, "subscribed")
        head = ack["data"]["last_seq"]["ETH-PERP"]
        first = await recv_type(ws, "price_update")
        assert first["seq"] > head  # live data, no replay


async def test_resume_needs_symbols_on_a_multi_stream(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/multi/ETH-PERP?last_seq=3") as ws:
        await expect_error(ws, ErrorCode.INVALID_MESSAGE)
        await recv_type(ws, "subscribed")
    async with connect(f"{service.ws_url}/ws/multi/ETH-PERP?resume=5") as ws:
        await expect_error(ws, ErrorCode.INVALID_MESSAGE)
        await recv_type(ws, "subscribed")


# -- abuse: closes with a documented code -------------------------------------------------------------------
@pytest.fixture(scope="module")
def strict_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(
        tmp_path_factory,
        STREAM_INTERVAL_SECONDS="0.01",
        MAX_MESSAGE_BYTES="1024",
        CLIENT_MESSAGE_RATE="1",
        CLIENT_MESSAGE_BURST="5",
    )
    yield running
    running.stop()


async def test_a_frame_over_the_size_limit_closes_with_1009(strict_service: Any) -> None:
    async with bystander(strict_service), connect(f"{strict_service.ws_url}/ws/ETH-PERP") as ws:
        await recv_type(ws, "subscribed")
        await ws.send(json.dumps({"type": "ping", "pad": "x" * 2000}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    assert (await http("GET", f"{strict_service.http_url}/health"))[0] == 200


async def test_a_message_flood_closes_with_1008(strict_service: Any) -> None:
    async with bystander(strict_service), connect(f"{strict_service.ws_url}/ws/ETH-PERP") as ws:
        await recv_type(ws, "subscribed")
        for stamp in range(50):
            await ws.send(json.dumps({"type": "ping", "timestamp": float(stamp)}))
        pongs = []
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message["type"] == "pong":
                    pongs.append(message["data"]["client_timestamp"])
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        assert "flood" in closed.value.rcvd.reason
        assert pongs[:5] == [0.0, 1.0, 2.0, 3.0, 4.0]  # the burst was answered
    assert (await http("GET", f"{strict_service.http_url}/health"))[0] == 200


# -- a hypothesis-generated stream of random frames ------------------------------------------------------
SYMBOLS = st.sampled_from(["ETH-PERP", "BTC-PERP", "SUI-PERP", "SOL-PERP", "eth-perp", "DOGE-PERP", "", "A B", "-"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
VALID_MESSAGES = st.one_of(
    st.builds(lambda t: {"type": "ping", "timestamp": t}, st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(lambda s: {"type": "subscribe", "symbols": s}, st.lists(SYMBOLS, max_size=3)),
    st.builds(lambda s: {"type": "unsubscribe", "symbol": s}, SYMBOLS),
    st.builds(lambda d: {"type": "resume", "last_seq": d}, st.dictionaries(SYMBOLS, st.integers(-5, 10**6))),
)
TYPED_GARBAGE = st.builds(
    lambda kind, extra: {**extra, "type": kind},
    st.sampled_from(["ping", "subscribe", "unsubscribe", "resume", "pong", "trade", "PING", ""]),
    st.dictionaries(st.sampled_from(["symbols", "symbol", "timestamp", "last_seq", "resume", "candles"]), JSON_VALUES),
)
FRAMES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    JSON_VALUES.map(json.dumps),
    VALID_MESSAGES.map(json.dumps),
    TYPED_GARBAGE.map(json.dumps),
)


def test_random_frames_never_hurt_the_connection_the_service_or_others(service: Any) -> None:
    watched: list[dict[str, Any]] = []
    with (
        sync_connect(f"{service.ws_url}/ws/multi/ETH-PERP,BTC-PERP", compression=None, max_queue=None) as watcher,
        sync_connect(f"{service.ws_url}/ws/ETH-PERP", compression=None, max_queue=None, max_size=None) as victim,
    ):

        def watch() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                for frame in watcher:
                    watched.append(json.loads(frame))

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        markers = itertools.count(10**9)

        @settings(
            max_examples=60,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(frames=st.lists(FRAMES, max_size=10))
        def send_frames(frames: list[str | bytes]) -> None:
            for frame in frames:
                victim.send(frame)
            marker = float(next(markers))  # a pong for this ping means every frame above was handled
            victim.send(json.dumps({"type": "ping", "timestamp": marker}))
            while True:
                raw = victim.recv(timeout=10)
                decode_server(raw)  # every reply is a well-formed server message
                reply = json.loads(raw)
                if reply["type"] == "error":
                    assert reply["code"] in ERROR_CODES
                    assert reply["message"]
                if reply["type"] == "pong" and reply["data"].get("client_timestamp") == marker:
                    return

        send_frames()
        assert thread.is_alive(), "the watching client's connection ended"
        watcher.close()
        thread.join(10)
    market = [m for m in watched if m["type"] in MARKET_TYPES]
    assert len(market) > 10
    assert not [m for m in watched if m["type"] in ("error", "gap")]
    assert_contiguous(market)
    assert asyncio.run(http("GET", f"{service.http_url}/health"))[0] == 200
