"""GET /trades/{symbol} and GET /market_data/{symbol} on the real service, recording into SQLite."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import RunningService, service_env
from svc_helpers import collect_market, connect, http, recv_until, wait_for_status

FAST = {"STREAM_INTERVAL_SECONDS": "0.01", "TRADE_FREQUENCY": "0.02", "FLUSH_INTERVAL_SECONDS": "0.2"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """One recording service for the read-only tests of this module (each service start costs seconds)."""
    running = RunningService(service_env(**FAST), tmp_path_factory.mktemp("history"), [])
    yield running
    running.stop()


async def test_trades_repair_a_gap_with_exactly_what_the_websocket_sent(service: RunningService) -> None:
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        live = await collect_market(ws, 400)
    first = live[0]["seq"]
    # what a client that missed everything after `first - 1` fetches: the same messages, byte for byte in JSON
    code, body, _ = await http("GET", f"{service.http_url}/trades/ETH-PERP?after_seq={first - 1}&limit=400")
    assert code == 200
    assert body["ticks"] == live and body["count"] == 400 and body["last_seq"] == live[-1]["seq"]

    start, end = live[100]["timestamp"], live[200]["timestamp"]
    code, body, _ = await http("GET", f"{service.http_url}/trades/ETH-PERP?start={start!r}&end={end!r}&limit=1000")
    assert body["ticks"] == live[100:200]
    iso = quote("2026-01-01T00:00:00Z")
    code, body, _ = await http("GET", f"{service.http_url}/trades/eth-perp?start={iso}&type=trade&limit=7")
    assert code == 200 and body["count"] == 7 and {t["type"] for t in body["ticks"]} == {"trade"}
    code, body, _ = await http("GET", f"{service.http_url}/trades/ETH-PERP?limit=5")  # no range: the newest
    assert body["count"] == 5 and body["ticks"][-1]["seq"] >= live[-1]["seq"]


async def test_candles_match_the_ticks_they_come_from(service: RunningService) -> None:
    await wait_for_status(service, lambda s: s["recorder"]["written_seq"].get("ETH-PERP", 0) > 400)
    code, body, _ = await http("GET", f"{service.http_url}/market_data/ETH-PERP?interval=1s&limit=3")
    assert code == 200 and body["interval"] == 1
    candles = body["candles"]
    assert candles[-1]["final"] is False and candles[0]["final"] is True
    start, end = candles[0]["start"], candles[-1]["end"]
    _, ticks, _ = await http("GET", f"{service.http_url}/trades/ETH-PERP?start={start}&end={end}&limit=10000")
    buckets: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for tick in ticks["ticks"]:
        buckets[math.floor(tick["timestamp"])].append(tick)
    for candle in candles[:-1]:  # the final ones: every tick of them is in /trades
        group = buckets[candle["start"]]
        prices = [t["data"]["price"] for t in group]
        trades = [t["data"] for t in group if t["type"] == "trade"]
        assert (candle["open"], candle["high"], candle["low"], candle["close"]) == (
            prices[0], max(prices), min(prices), prices[-1],
        )  # fmt: skip
        assert candle["trade_count"] == len(trades)
        assert math.isclose(candle["volume"], sum(t["size"] for t in trades), abs_tol=1e-9)
        buys = sum(t["size"] for t in trades if t["side"] == "buy")
        assert math.isclose(candle["buy_volume"], buys, abs_tol=1e-9)
        assert candle["end"] - candle["start"] == 1
    code, body, _ = await http("GET", f"{service.http_url}/market_data/ETH-PERP?interval=15s")
    assert code == 200 and all(c["start"] % 15 == 0 for c in body["candles"])


async def test_history_candles_equal_the_live_candle_stream(service: RunningService) -> None:
    """The same recorded ticks through the same engine: /market_data's final candles are the `candle` messages
    a ?candles=1 client received, field by field (a live candle that counted late ticks is the documented
    exception: the history one includes them)."""
    live: dict[tuple[int, float], dict[str, Any]] = {}
    async with connect(f"{service.ws_url}/ws/ETH-PERP?candles=1,5") as ws:

        def enough(message: dict[str, Any]) -> bool:
            data = message.get("data", {})
            if message["type"] == "candle" and data["final"]:
                live[data["interval"], data["start"]] = data
            return sum(1 for interval, _ in live if interval == 5) >= 2

        await recv_until(ws, enough, timeout=30)
    newest = max(data["end"] for data in live.values())
    await wait_for_status(service, lambda s: (s["recorder"]["last_flush"] or 0) > newest + 0.3)
    compared = 0
    for interval in (1, 5):
        starts = [start for i, start in live if i == interval]
        limit = math.ceil((newest - min(starts)) / interval) + 1
        path = f"/market_data/ETH-PERP?interval={interval}s&limit={limit}&end={newest - 0.001!r}"
        code, body, _ = await http("GET", service.http_url + path)
        assert code == 200
        history = {candle["start"]: candle for candle in body["candles"] if candle["final"]}
        for start in starts:
            expected = live[interval, start]
            if expected.get("flags", {}).get("late_ticks"):
                continue
            assert history[start] == expected, (interval, start)
            compared += 1
    assert compared >= 5


BAD = [
    ("/trades/ETH-PERP?limit=0", "limit=0 is out of range"),
    ("/trades/ETH-PERP?limit=abc", "limit='abc' is not an integer"),
    ("/trades/ETH-PERP?limit=99999999", "out of range"),
    ("/trades/ETH-PERP?start=yesterday", "start: 'yesterday' is not a time"),
    ("/trades/ETH-PERP?start=nan", "out of range"),
    ("/trades/ETH-PERP?start=10&end=5", "end (5.0) must be after start (10.0)"),
    ("/trades/ETH-PERP?after_seq=-1", "after_seq=-1 is out of range"),
    ("/trades/ETH-PERP?type=candle", "type='candle': use trade, price_update or all"),
    ("/trades/ETH-PERP?strat=1", "unknown parameter 'strat'"),
    ("/trades/ETH%20PERP;DROP", "malformed symbol"),
    ("/market_data/ETH-PERP?interval=7x", "interval '7x' is not a duration"),
    ("/market_data/ETH-PERP?interval=0s", "out of range: 1s to 1d"),
    ("/market_data/ETH-PERP?interval=15s&limit=1000001", "limit=1000001 is out of range"),
    ("/market_data/ETH-PERP?end=%FF%FE", "end:"),
]


async def test_bad_parameters_get_400_with_a_clear_message(service: RunningService) -> None:
    for path, message in BAD:
        code, body, _ = await http("GET", service.http_url + path)
        assert code == 400, path
        assert message in body["error"]["message"], (path, body)
    code, body, _ = await http("GET", f"{service.http_url}/trades/NOPE-PERP")
    assert code == 404 and body["error"]["code"] == "unknown_symbol"
    code, body, _ = await http("GET", f"{service.http_url}/trades/ETH-PERP?limit=3")
    assert code == 200 and body["count"] == 3  # still serving


async def test_an_unreadable_store_is_a_503_and_streaming_goes_on(start_service: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    service = start_service(STORE_URL=f"sqlite:///{blocker / 'ticks.db'}", **FAST)
    code, body, _ = await http("GET", f"{service.http_url}/trades/ETH-PERP")
    assert code == 503 and body["error"]["code"] == "store_unavailable"
    assert "cannot be read right now" in body["error"]["message"]
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        assert len(await collect_market(ws, 50)) == 50
    current = await wait_for_status(service, lambda s: s["recorder"]["failures"] >= 1)
    assert current["recorder"]["state"] == "failing" and "Error" in current["recorder"]["last_error"]
