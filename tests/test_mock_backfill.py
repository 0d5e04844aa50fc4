"""DRY_RUN's first start generates recent history, so indicators have candles at once; a restart does not."""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import aiohttp
import websockets

from bluefin_service.sources.mock import MAX_BACKFILL_EVENTS, MockSource


async def _candles(base: str, interval: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{base}/market_data/ETH-PERP?interval={interval}") as r:
        assert r.status == 200
        return (await r.json())["candles"]


async def test_first_start_backfills_history_a_restart_does_not(start_service) -> None:
    service = start_service(MOCK_BACKFILL_SECONDS="300", SYMBOLS="ETH-PERP,BTC-PERP")
    started = time.time()
    for _ in range(100):
        final = [c for c in await _candles(service.http_url, "15s") if c["final"]]
        if len(final) >= 19:
            break
        await asyncio.sleep(0.1)
    assert len(final) >= 19, "five minutes of 15 s candles"
    assert final[0]["start"] <= started - 285
    starts = [c["start"] for c in final]
    assert starts == sorted(starts) and all(b - a == 15 for a, b in itertools.pairwise(starts))
    assert all(2000 < c["close"] < 3000 for c in final)

    # The backfill went out as ordinary sequenced messages: a client can resume from seq 0 and see it in order.
    async with websockets.connect(f"{service.ws_url}/ws/ETH-PERP?last_seq=0") as ws:
        first = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(20)]
    market = [m for m in first if "seq" in m]
    assert [m["seq"] for m in market] == list(range(1, len(market) + 1))
    assert market[0]["timestamp"] <= started - 285

    service.stop()
    service.start()  # the ring still has prices, so this is no first start
    async with aiohttp.ClientSession() as http, http.get(f"{service.http_url}/streaming/status") as r:
        before = (await r.json())["symbols"]["ETH-PERP"]["last_seq"]
    await asyncio.sleep(1.5)
    async with aiohttp.ClientSession() as http, http.get(f"{service.http_url}/streaming/status") as r:
        after = (await r.json())["symbols"]["ETH-PERP"]["last_seq"]
    assert after - before < 20, "live rate only: about one price update a second plus trades"


def test_backfill_is_bounded_at_load_test_rates() -> None:
    source = MockSource(["ETH-PERP"], 0.0001, 0.0001, seed=1, backfill_seconds=1800)
    assert source.backfill_seconds * 20_000 <= MAX_BACKFILL_EVENTS
    assert source.clock() <= time.time() - source.backfill_seconds + 1
    resumed = MockSource(["ETH-PERP"], 1.0, 5.0, seed=1, backfill_seconds=1800, last_prices={"ETH-PERP": 2600.0})
    assert resumed.backfill_seconds == 0


async def test_backfilled_ticks_make_clean_server_candles(start_service) -> None:
    """The backfill replays the past: the service's candle engine follows its times, so nothing counts as late."""
    service = start_service(MOCK_BACKFILL_SECONDS="120", SYMBOLS="ETH-PERP")
    finals: list[dict] = []
    async with websockets.connect(f"{service.ws_url}/ws/ETH-PERP?candles=5&resume=ETH-PERP@5s:0") as ws:
        while len(finals) < 20:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if message["type"] == "candle" and message["data"]["final"]:
                finals.append(message["data"])
    starts = [c["start"] for c in finals]
    assert all(b - a == 5 for a, b in itertools.pairwise(starts))
    assert all(c["flags"].get("late_ticks", 0) == 0 for c in finals)
    assert sum(c["trade_count"] for c in finals) > 0
