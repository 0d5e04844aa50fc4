"""Server-side candles over the WebSocket: identical to the ticks the same client received, resumable, throttled."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import defaultdict
from typing import Any

import websockets

FAST = {"STREAM_INTERVAL_SECONDS": "0.02", "TRADE_FREQUENCY": "0.03", "SYMBOLS": "ETH-PERP,BTC-PERP"}


async def _collect(url: str, until: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    async with websockets.connect(url) as ws:
        deadline = time.monotonic() + timeout
        while not until(messages):
            assert time.monotonic() < deadline, f"timed out; got {len(messages)} messages"
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    return messages


def _finals(messages: list[dict[str, Any]], interval: int) -> list[dict[str, Any]]:
    return [m for m in messages if m["type"] == "candle" and m["data"]["final"] and m["data"]["interval"] == interval]


async def test_final_candles_match_the_ticks_the_client_saw(start_service) -> None:
    service = start_service(**FAST)
    messages = await _collect(f"{service.ws_url}/ws/ETH-PERP?candles=1", lambda ms: len(_finals(ms, 1)) >= 4)
    ticks = [m for m in messages if m["type"] in ("trade", "price_update")]
    first_tick = ticks[0]["timestamp"]
    checked = 0
    for candle in _finals(messages, 1):
        data = candle["data"]
        assert data["end"] - data["start"] == 1 and data["start"] % 1 == 0
        if data["start"] < first_tick:
            continue  # this candle began before we connected; we did not see all of its ticks
        inside = [t for t in ticks if data["start"] <= t["timestamp"] < data["end"]]
        trades = [t["data"] for t in inside if t["type"] == "trade"]
        prices = [t["data"]["price"] for t in inside]
        assert inside, "the mock feed ticks every 20 ms"
        assert data["open"] == prices[0] and data["close"] == prices[-1]
        assert data["high"] == max(prices) and data["low"] == min(prices)
        assert math.isclose(data["volume"], sum(t["size"] for t in trades), abs_tol=1e-9)
        assert data["trade_count"] == len(trades)
        assert math.isclose(data["buy_volume"], sum(t["size"] for t in trades if t["side"] == "buy"), abs_tol=1e-9)
        if trades:
            vwap = sum(t["price"] * t["size"] for t in trades) / sum(t["size"] for t in trades)
            assert math.isclose(data["vwap"], vwap, rel_tol=1e-9)
        checked += 1
    assert checked >= 2
    seqs = [m["seq"] for m in _finals(messages, 1)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_provisional_candles_are_throttled_to_the_asked_rate(start_service) -> None:
    service = start_service(**FAST)
    started = time.monotonic()
    messages = await _collect(
        f"{service.ws_url}/ws/ETH-PERP?candles=5&candle_rate=2",
        lambda ms: time.monotonic() - started > 3.0,
    )
    provisional = [m for m in messages if m["type"] == "candle" and not m["data"]["final"]]
    assert provisional, "a forming candle is pushed while ticks arrive"
    assert all("seq" not in m for m in provisional)
    elapsed = time.monotonic() - started
    assert len(provisional) <= 2 * elapsed + 2
    times = [m["timestamp"] for m in provisional]
    assert all(b - a >= 0.45 for a, b in itertools.pairwise(times))


async def test_subscribe_message_with_candles_and_bad_intervals(start_service) -> None:
    service = start_service(**FAST)
    async with websockets.connect(f"{service.ws_url}/ws/multi/ETH-PERP") as ws:
        await ws.send(json.dumps({"type": "subscribe", "symbols": ["BTC-PERP"], "candles": [1, 7], "candle_rate": -3}))
        await ws.send(json.dumps({"type": "subscribe", "symbols": ["BTC-PERP"], "candles": "often"}))
        seen: dict[str, list[dict[str, Any]]] = defaultdict(list)
        while not _finals(seen["candle"], 1):
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            seen[message["type"]].append(message)
    codes = [m["code"] for m in seen["error"]]
    assert "unsupported_interval" in codes and "invalid_message" in codes
    ack = next(m for m in seen["subscribed"] if "BTC-PERP" in m["data"]["symbols"])
    assert ack["data"]["candles"] == [1] and "BTC-PERP@1s" in ack["data"]["subscriptions"]
    assert {m["symbol"] for m in seen["candle"]} == {"BTC-PERP"}  # ETH-PERP was subscribed without candles


async def test_candle_stream_resumes_without_gap(start_service) -> None:
    service = start_service(**FAST)
    first = await _collect(f"{service.ws_url}/ws/ETH-PERP?candles=1", lambda ms: len(_finals(ms, 1)) >= 2)
    last_seq = _finals(first, 1)[-1]["seq"]
    await asyncio.sleep(2.5)  # at least two more 1 s candles become final while we are away
    second = await _collect(
        f"{service.ws_url}/ws/ETH-PERP?candles=1&resume=ETH-PERP@1s:{last_seq}", lambda ms: len(_finals(ms, 1)) >= 3
    )
    seqs = [m["seq"] for m in _finals(second, 1)]
    assert seqs[:3] == [last_seq + 1, last_seq + 2, last_seq + 3]
    starts = [m["data"]["start"] for m in _finals(first, 1) + _finals(second, 1)]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert not [m for m in second if m["type"] == "gap"]


async def test_garbage_candle_query_params_are_reported(start_service) -> None:
    service = start_service(**FAST)
    url = f"{service.ws_url}/ws/ETH-PERP?candles=1,abc,99999&candle_rate=fast"
    messages = await _collect(
        url, lambda ms: sum(m["type"] == "error" for m in ms) >= 3 and any(m["type"] == "price_update" for m in ms)
    )
    errors = [m for m in messages if m["type"] == "error"]
    assert {e["code"] for e in errors} == {"invalid_message", "unsupported_interval"}
    assert any(m["type"] == "price_update" for m in messages), "the stream goes on"
