"""The WebSocket streams of a running service, checked message by message against the guide's format."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from svc_helpers import (
    MARKET_TYPES,
    assert_contiguous,
    collect_market,
    connect,
    recv_json,
    recv_type,
    recv_until,
    shared_service,
)
from websockets.extensions.permessage_deflate import PerMessageDeflate

HEARTBEAT_FIELDS = {"connections", "active_symbols", "running", "last_seq"}
TRADE_ID = re.compile(r"^trade_\d+_\d+$")  # the guide's "trade_1672531200456_1234"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(
        tmp_path_factory, STREAM_INTERVAL_SECONDS="0.01", TRADE_FREQUENCY="0.01", HEARTBEAT_INTERVAL_SECONDS="0.2"
    )
    yield running
    running.stop()


def check_guide_format(message: dict[str, Any], now: float) -> None:
    """Exactly the guide's envelope and data fields (plus the additive ``seq``), with JSON types."""
    kind = message["type"]
    assert isinstance(message["timestamp"], float) and abs(message["timestamp"] - now) < 60
    data = message["data"]
    if kind == "price_update":
        assert set(message) == {"type", "symbol", "timestamp", "data", "seq"}
        assert set(data) == {"price", "volume"}
        assert isinstance(data["price"], float) and data["price"] > 0
        assert isinstance(data["volume"], float) and data["volume"] >= 0
    elif kind == "trade":
        assert set(message) == {"type", "symbol", "timestamp", "data", "seq"}
        assert set(data) == {"price", "size", "side", "trade_id"}
        assert isinstance(data["price"], float) and data["price"] > 0
        assert isinstance(data["size"], float) and data["size"] > 0
        assert data["side"] in ("buy", "sell")
        assert TRADE_ID.match(data["trade_id"]), data["trade_id"]
    elif kind == "heartbeat":
        assert set(message) == {"type", "symbol", "timestamp", "data"}
        assert message["symbol"] == "system"
        assert {"connections", "active_symbols"} <= set(data) <= HEARTBEAT_FIELDS
        assert type(data["connections"]) is int and data["connections"] >= 1
        assert type(data["active_symbols"]) is int and data["active_symbols"] >= 1
    else:
        raise AssertionError(f"unexpected message type {kind}")
    if kind in MARKET_TYPES:
        assert type(message["seq"]) is int and message["seq"] >= 1


async def test_single_symbol_stream_is_the_guides_format_with_contiguous_seq(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        ack = await recv_json(ws)
        assert ack["type"] == "subscribed" and ack["symbol"] == "system"
        assert ack["data"]["symbols"] == ack["data"]["subscriptions"] == ["ETH-PERP"]
        first_seq = ack["data"]["last_seq"]["ETH-PERP"] + 1
        seen: dict[str, list[dict[str, Any]]] = {"price_update": [], "trade": [], "heartbeat": []}
        market: list[dict[str, Any]] = []
        while not all(seen.values()) or len(market) < 30:
            message = await recv_json(ws)
            check_guide_format(message, time.time())
            seen[message["type"]].append(message)
            if message["type"] in MARKET_TYPES:
                assert message["symbol"] == "ETH-PERP"
                market.append(message)
        assert_contiguous(market, start=first_seq)


async def test_multi_symbol_stream_delivers_every_symbol_in_sequence(service: Any) -> None:
    symbols = ["ETH-PERP", "BTC-PERP", "SUI-PERP"]
    async with connect(f"{service.ws_url}/ws/multi/{','.join(symbols)}") as ws:
        ack = await recv_json(ws)
        assert ack["type"] == "subscribed"
        assert ack["data"]["symbols"] == symbols
        market = await collect_market(ws, 90)
        for message in market:
            check_guide_format(message, time.time())
        assert {m["symbol"] for m in market} == set(symbols)
        for symbol in symbols:
            ours = [m for m in market if m["symbol"] == symbol]
            assert_contiguous(ours, start=ack["data"]["last_seq"][symbol] + 1)


async def test_multi_path_normalizes_case_and_drops_duplicates(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/multi/eth-perp,,ETH-PERP,btc-perp") as ws:
        ack = await recv_json(ws)
        assert ack["data"]["symbols"] == ["ETH-PERP", "BTC-PERP"]


async def test_ping_gets_a_pong_echoing_the_client_timestamp(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        sent = time.time()
        await ws.send(json.dumps({"type": "ping", "timestamp": sent}))
        pong = await recv_type(ws, "pong")
        assert pong["symbol"] == "system"
        assert pong["data"] == {"client_timestamp": sent}
        assert pong["timestamp"] >= sent - 1
        await ws.send(json.dumps({"type": "ping"}))
        assert (await recv_type(ws, "pong"))["data"] == {}


async def test_subscribe_and_unsubscribe_ack_and_change_the_stream(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        await recv_type(ws, "subscribed")
        await ws.send(json.dumps({"type": "subscribe", "symbols": ["BTC-PERP"]}))
        before_ack = await recv_until(ws, lambda m: m["type"] == "subscribed")
        ack = before_ack[-1]
        assert ack["data"]["symbols"] == ["BTC-PERP"]
        assert ack["data"]["subscriptions"] == ["ETH-PERP", "BTC-PERP"]
        assert all(m["symbol"] == "ETH-PERP" for m in before_ack if m["type"] in MARKET_TYPES)
        btc_from = ack["data"]["last_seq"]["BTC-PERP"] + 1

        # Subscribing again to a symbol already streaming acks without duplicating anything.
        await ws.send(json.dumps({"type": "subscribe", "symbol": "ETH-PERP"}))
        stream = await recv_until(ws, lambda m: m["type"] == "subscribed")
        assert stream[-1]["data"]["subscriptions"] == ["ETH-PERP", "BTC-PERP"]
        stream += await collect_market(ws, 40)
        market = [m for m in before_ack + stream if m["type"] in MARKET_TYPES]
        assert {m["symbol"] for m in market} == {"ETH-PERP", "BTC-PERP"}
        assert_contiguous(market)
        assert_contiguous([m for m in market if m["symbol"] == "BTC-PERP"], start=btc_from)

        await ws.send(json.dumps({"type": "unsubscribe", "symbol": "ETH-PERP"}))
        unsub = await recv_type(ws, "unsubscribed")
        assert unsub["symbol"] == "system"
        assert unsub["data"] == {"symbols": ["ETH-PERP"], "subscriptions": ["BTC-PERP"]}
        after = await collect_market(ws, 30)
        assert {m["symbol"] for m in after} == {"BTC-PERP"}


GUIDE_DIRECT_CONNECTION = """
import asyncio
import websockets
import json
import time  # the guide's snippet calls time.time() but forgets this import

async def test_websocket():
    uri = "ws://localhost:8080/ws/ETH-PERP"

    async with websockets.connect(uri) as websocket:
        # Send ping
        await websocket.send(json.dumps({
            "type": "ping",
            "timestamp": time.time()
        }))

        # Receive messages
        async for message in websocket:
            data = json.loads(message)
            print(f"Received: {data}")

asyncio.run(test_websocket())
"""


async def test_guides_direct_websocket_connection_example(service: Any) -> None:
    code = GUIDE_DIRECT_CONNECTION.replace("localhost:8080", f"127.0.0.1:{service.port}")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE, env=env)
    assert proc.stdout is not None
    kinds: set[str] = set()
    try:
        async with asyncio.timeout(20):
            while not {"pong", "price_update", "trade"} <= kinds:
                line = (await proc.stdout.readline()).decode()
                assert line.startswith("Received: {"), line
                kinds.add(re.search(r"'type': '(\w+)'", line).group(1))  # type: ignore[union-attr]
    finally:
        proc.kill()
        await proc.wait()


@pytest.fixture(scope="module")
def compressing_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(
        tmp_path_factory, STREAM_INTERVAL_SECONDS="0.01", TRADE_FREQUENCY="0.02", WS_COMPRESSION="true"
    )
    yield running
    running.stop()


async def test_compression_delivers_the_same_messages_to_deflate_and_plain_clients(compressing_service: Any) -> None:
    url = f"{compressing_service.ws_url}/ws/multi/ETH-PERP,BTC-PERP"
    async with connect(url, compression="deflate") as deflating, connect(url) as plain:
        assert any(isinstance(ext, PerMessageDeflate) for ext in deflating.protocol.extensions)
        assert not plain.protocol.extensions
        await deflating.send(json.dumps({"type": "ping", "timestamp": 1.5}))
        replies = await recv_until(deflating, lambda m: m["type"] == "pong")
        assert replies[-1]["data"] == {"client_timestamp": 1.5}
        squeezed = [m for m in replies if m["type"] in MARKET_TYPES] + await collect_market(deflating, 60)
        clear = await collect_market(plain, 60)
        for messages in (squeezed, clear):
            assert_contiguous(messages)
            for message in messages:
                check_guide_format(message, time.time())
        by_key = {(m["symbol"], m["seq"]): m for m in clear}
        common = [m for m in squeezed if (m["symbol"], m["seq"]) in by_key]
        assert common, "the two clients should overlap"
        assert all(by_key[(m["symbol"], m["seq"])] == m for m in common)
