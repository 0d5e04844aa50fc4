"""RealtimeMarketDataProvider against the real service: candles equal the ticks it saw, across a crash too."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
from websockets.asyncio.server import ServerConnection, serve

from bot.data.realtime_market import MarketData, RealtimeCandle, RealtimeMarketDataProvider, Tick, TickAggregator
from bot.exchange.bluefin_client import BluefinServiceClient
from marketdata.errors import ConfigError, MarketDataError

TIMEOUT = 15.0  # generous: the machine is shared; nothing waits this long when things work
FAST_SERVICE = {"STREAM_INTERVAL_SECONDS": "0.01", "TRADE_FREQUENCY": "0.02", "HEARTBEAT_INTERVAL_SECONDS": "0.5"}
OHLCV = ["open", "high", "low", "close", "volume"]


async def wait_until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class TickLog:
    """Every price and trade the provider's client delivered, to rebuild candles by hand."""

    def __init__(self, provider: RealtimeMarketDataProvider) -> None:
        self.ticks: list[dict[str, Any]] = []
        provider.client.subscribe_to_price_updates(self.ticks.append)
        provider.client.subscribe_to_trades(self.ticks.append)

    def expected(self, start: float, interval: int) -> dict[str, float] | None:
        inside = [t for t in self.ticks if start <= t["timestamp"] < start + interval]
        if not inside:
            return None
        inside.sort(key=lambda t: t["timestamp"])  # stable: equal timestamps keep arrival order
        prices = [t["price"] for t in inside]
        return {
            "open": prices[0],
            "high": max(prices),
            "low": min(prices),
            "close": prices[-1],
            "volume": sum(t.get("size", 0.0) for t in inside),
        }

    def check(self, frame: pd.DataFrame, interval: int) -> int:
        """Compare each candle with the ticks; returns how many candles had ticks."""
        checked = 0
        for start, row in zip(frame.index, frame.itertuples(), strict=True):
            expected = self.expected(start.timestamp(), interval)
            if expected is None:
                assert row.volume == 0 and row.filled, f"candle {start} has no ticks but is not a flat fill"
                continue
            actual = {name: getattr(row, name) for name in OHLCV}
            assert actual == pytest.approx(expected, rel=1e-12, abs=1e-9), f"candle {start}"
            checked += 1
        return checked


def final_count(provider: RealtimeMarketDataProvider, interval: int) -> int:
    return len(provider.get_candle_history(interval, 1000))


async def test_candles_dataframe_and_stats_match_the_stream(start_service: Any) -> None:
    service = start_service(**FAST_SERVICE)
    provider = RealtimeMarketDataProvider("eth-perp", [1, 2], service_url=service.http_url)
    log = TickLog(provider)
    sync_seen: list[RealtimeCandle] = []
    async_seen: list[RealtimeCandle] = []

    async def on_candle_async(candle: RealtimeCandle) -> None:
        await asyncio.sleep(0)
        async_seen.append(candle)

    def broken(candle: RealtimeCandle) -> None:
        raise RuntimeError("strategy bug")

    provider.subscribe_to_candles(broken)
    provider.subscribe_to_candles(sync_seen.append)
    provider.subscribe_to_candles(on_candle_async)
    assert await provider.connect()
    try:
        await wait_until(lambda: final_count(provider, 1) >= 3, "three final 1s candles")
        frame = provider.to_dataframe(1, 100)
        stats, logged = provider.get_performance_stats(), len(log.ticks)
        current = provider.get_current_candles()
        history = provider.get_candle_history(1, 2)
        ticks = provider.get_recent_ticks(5)
        price = provider.get_current_price()
        assert provider.is_connected() and provider.is_websocket_connected()
    finally:
        await provider.disconnect()
    assert not provider.is_connected() and not provider.is_websocket_connected()

    assert isinstance(frame.index, pd.DatetimeIndex) and str(frame.index.tz) == "UTC"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert list(frame.columns[:5]) == OHLCV and {"vwap", "trade_count", "buy_volume", "sell_volume"} <= set(frame)
    assert all(frame[c].dtype == np.float64 for c in [*OHLCV, "vwap", "buy_volume", "sell_volume"])
    assert str(frame.index.dtype) == "datetime64[ns, UTC]" and len(frame) >= 3
    assert (frame.index.to_series().diff().dropna() == pd.Timedelta(seconds=1)).all()
    assert log.check(frame, 1) >= 3
    assert (frame["buy_volume"] + frame["sell_volume"]).to_numpy() == pytest.approx(frame["volume"].to_numpy())

    assert [c.interval_seconds for c in sync_seen].count(1) >= 3
    assert [c.timestamp for c in async_seen] == [c.timestamp for c in sync_seen] and all(c.is_final for c in sync_seen)
    assert set(current) == {1, 2} and all(not c.is_final for c in current.values())
    assert len(history) == 2 and isinstance(history[0], MarketData) and isinstance(history[0].close, Decimal)
    assert history[-1].close == Decimal(repr(float(frame["close"].iloc[-1])))
    assert len(ticks) == 5 and all(isinstance(t, Tick) and t.symbol == "ETH-PERP" for t in ticks)
    assert isinstance(price, Decimal) and price > 0

    assert stats["tick_rate"] > 10 and stats["ticks_received"] == logged
    assert 0 <= stats["tick_to_candle_latency_ms"]["p50"] <= stats["tick_to_candle_latency_ms"]["p99"]
    assert stats["candle_callback_errors"] >= 3 and stats["candles_emitted"] == len(sync_seen)
    for key in ("reconnects", "resumes", "gaps", "messages_received"):
        assert stats[key] >= 0
    print("provider stats:", stats)


async def test_candles_stay_exact_across_a_service_crash(start_service: Any) -> None:
    service = start_service(**FAST_SERVICE)
    client = BluefinServiceClient(service.http_url, heartbeat_interval=0.5)
    provider = RealtimeMarketDataProvider("BTC-PERP", [1], client=client)
    log = TickLog(provider)
    assert await provider.connect()
    try:
        await wait_until(lambda: final_count(provider, 1) >= 1, "a candle before the crash")
        await asyncio.to_thread(service.kill)
        await wait_until(lambda: not provider.is_websocket_connected(), "the client to notice the crash")
        await asyncio.to_thread(service.start)
        await wait_until(provider.is_connected, "the provider to be live again")
        after = final_count(provider, 1)
        await wait_until(lambda: final_count(provider, 1) >= after + 2, "candles after the restart")
        frame = provider.to_dataframe(1, 1000)
        stats = provider.get_performance_stats()
    finally:
        await provider.disconnect()
    assert stats["reconnects"] == 1 and stats["resumes"] == 1 and stats["gaps"] == 0
    assert frame["reconnect"].any(), "the candle where the feed reconnected is flagged"
    assert frame["late_ticks"].sum() == 0, "the clock waits for the replay, so no replayed tick comes late"
    assert log.check(frame, 1) >= 3


async def test_guide_examples_run_as_written(start_service: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    service = start_service(**FAST_SERVICE)
    monkeypatch.setenv("EXCHANGE__BLUEFIN_SERVICE_URL", service.http_url)

    class PositionManager:
        def __init__(self) -> None:
            self.prices: list[float] = []

        def update_positions(self, price: float) -> None:
            self.prices.append(price)

    position_manager = PositionManager()

    # -- "Real-time Provider Settings", verbatim ----------------------------------------------------------
    from bot.data.realtime_market import RealtimeMarketDataProvider

    # Create provider with custom intervals
    provider = RealtimeMarketDataProvider(
        symbol="ETH-PERP",
        intervals=[1, 5, 15, 60],  # 1s, 5s, 15s, 1m candles
    )

    # Subscribe to candle updates
    def on_new_candle(candle):  # type: ignore[no-untyped-def]
        print(f"New candle: {candle.symbol} @ {candle.close}")

    provider.subscribe_to_candles(on_new_candle)

    # -- "Position Management", verbatim ------------------------------------------------------------------
    def on_price_update(price_data):  # type: ignore[no-untyped-def]
        current_price = price_data["price"]
        # Update stop-loss, take-profit, etc.
        position_manager.update_positions(current_price)

    provider.client.subscribe_to_price_updates(on_price_update)

    # -- "Integration with Trading Strategies", verbatim (main.py's choice, then the indicators) -------------
    symbol, interval_seconds = "ETH-PERP", 15
    # In main.py, for intervals <= 60s:
    if interval_seconds <= 60:
        # Uses RealtimeMarketDataProvider automatically
        market_data = RealtimeMarketDataProvider(symbol, [interval_seconds, 1, 5])

    assert await provider.connect() and await market_data.connect()
    try:
        await wait_until(lambda: "New candle: ETH-PERP @ " in capsys.readouterr().out, "a printed candle")
        await wait_until(lambda: len(position_manager.prices) >= 5, "price updates")
        market_data.aggregator.force_complete_candles(symbol)  # the guide's "force completion for testing"

        from bot.indicators.vumanchu import VuManChuIndicators

        # Get real-time DataFrame
        df = market_data.to_dataframe(interval_seconds=15, limit=100)

        # Calculate indicators on live data
        indicators = VuManChuIndicators()
        cipher_data = indicators.calculate_cipher_signals(df)
    finally:
        await provider.disconnect()
        await market_data.disconnect()
    assert provider.client.get_websocket_status()["url"] == service.ws_url
    # one forced candle, or two when the test straddled a 15 s boundary and a candle also closed by itself
    assert 1 <= len(df) <= 2 and list(df.columns[:5]) == OHLCV and len(cipher_data) == len(df)
    assert all(isinstance(p, float) and p > 0 for p in position_manager.prices)


# -- bad input -------------------------------------------------------------------------------------------------
async def test_invalid_ticks_from_the_server_are_skipped() -> None:
    when = (time.time() // 60 + 1) * 60 + 1  # inside a 1m candle that stays open for the whole test

    def frame(kind: str, seq: int, data: dict[str, Any], symbol: str = "ETH-PERP") -> str:
        return json.dumps({"type": kind, "symbol": symbol, "timestamp": when, "data": data, "seq": seq})

    script = [
        frame("price_update", 1, {"price": 2500.0, "volume": 1.0}),
        frame("price_update", 2, {"price": -5.0, "volume": 1.0}),
        frame("trade", 3, {"price": 0.0, "size": 1.0, "side": "buy", "trade_id": "t3"}),
        frame("trade", 1, {"price": 9.0, "size": 1.0, "side": "sell", "trade_id": "x1"}, symbol="BTC-PERP"),
        frame("trade", 4, {"price": 2501.0, "size": 2.0, "side": "sell", "trade_id": "t4"}),
    ]

    async def handler(ws: ServerConnection) -> None:
        for item in script:
            await ws.send(item)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        provider = RealtimeMarketDataProvider("ETH-PERP", [60], service_url=url)
        await provider.connect()
        try:
            await wait_until(lambda: provider.get_performance_stats()["ticks_received"] >= 2, "the valid ticks")
            stats = provider.get_performance_stats()
            ticks = provider.get_recent_ticks(10)
            candle = provider.get_current_candles()[60]
        finally:
            await provider.disconnect()
    assert stats["invalid_ticks"] == 2 and stats["ticks_received"] == 2
    assert [(t.price, t.volume) for t in ticks] == [(Decimal("2500.0"), Decimal("0.0")), (Decimal("2501.0"), 2)]
    assert candle.volume == 2 and candle.low == Decimal("2500.0")


def test_bad_arguments_are_refused_with_clear_errors() -> None:
    with pytest.raises(MarketDataError):
        RealtimeMarketDataProvider("not a symbol!", [1])
    with pytest.raises(ConfigError):
        RealtimeMarketDataProvider("ETH-PERP", [0])
    with pytest.raises(ConfigError):
        RealtimeMarketDataProvider("ETH-PERP", [1], tick_buffer=0)
    provider = RealtimeMarketDataProvider("ETH-PERP", [5, 1, 5], service_url="http://127.0.0.1:1")
    assert provider.intervals == [1, 5] and isinstance(provider.aggregator, TickAggregator)
    with pytest.raises(ConfigError, match="not configured"):
        provider.to_dataframe(7, 10)
    empty = provider.to_dataframe(5, 10)
    assert empty.empty and list(empty.columns[:5]) == OHLCV and str(empty.index.tz) == "UTC"
    assert provider.get_recent_ticks(0) == [] and provider.get_current_price() is None
    assert provider.get_candle_history(1, 10) == [] and provider.get_current_candles() == {}
    assert provider.is_connected() is False


async def test_a_gap_in_the_feed_is_flagged_on_the_candle() -> None:
    when = (time.time() // 60 + 1) * 60 + 1  # inside a 1m candle that stays open for the whole test

    def price(seq: int) -> str:
        data = {"price": 2500.0 + seq, "volume": 1.0}
        return json.dumps({"type": "price_update", "symbol": "ETH-PERP", "timestamp": when, "data": data, "seq": seq})

    gap = {"type": "gap", "symbol": "ETH-PERP", "timestamp": when, "data": {"from_seq": 2, "to_seq": 4, "reason": "x"}}

    async def handler(ws: ServerConnection) -> None:
        for item in (price(1), json.dumps(gap), price(5)):
            await ws.send(item)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        provider = RealtimeMarketDataProvider("ETH-PERP", [60], service_url=url)
        await provider.connect()
        try:
            await wait_until(lambda: provider.get_performance_stats()["ticks_received"] >= 2, "both ticks")
            stats = provider.get_performance_stats()
            candle = provider.get_current_candles()[60]
        finally:
            await provider.disconnect()
    assert candle.gap and not candle.reconnect and candle.close == Decimal("2505.0")
    assert stats["gaps"] == 1 and [(g["from_seq"], g["to_seq"]) for g in stats["gap_ranges"]] == [(2, 4)]
