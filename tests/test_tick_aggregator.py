"""The guide's TickAggregator API (bot.data.tick_aggregator), as a bot author uses it."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pytest

from bot.data.tick_aggregator import RealtimeCandle, Tick, TickAggregator
from bot.types import MarketData
from marketdata.errors import ConfigError, InvalidTick, MarketDataError

T0 = 1_699_999_920.0  # a multiple of 1, 5, 15, 60
SYMBOL = "ETH-PERP"


def trade(
    ts: float, price: float | str | Decimal, size: float = 1.0, side: str = "buy", tid: str | None = None
) -> Tick:
    return Tick(SYMBOL, T0 + ts, price, size, side, tid or f"t{ts}")


def test_guide_api_end_to_end() -> None:
    agg = TickAggregator([1, 5, 15, 60])
    finals: list[RealtimeCandle] = []
    agg.subscribe_to_candles(finals.append)

    agg.add_tick(trade(0.1, "2500.10", 2.0, "buy"))
    agg.add_tick(trade(0.4, Decimal("2501.25"), 1.0, "sell"))
    agg.add_tick(Tick(SYMBOL, T0 + 0.6, 2499.5))  # a price update: no volume
    current = agg.get_current_candles(SYMBOL)
    assert sorted(current) == [1, 5, 15, 60]
    one = current[1]
    assert (one.symbol, one.interval_seconds, one.is_final) == (SYMBOL, 1, False)
    assert (one.open, one.high, one.low, one.close) == (
        Decimal("2500.1"),
        Decimal("2501.25"),
        Decimal("2499.5"),
        Decimal("2499.5"),
    )
    assert (one.volume, one.trade_count, one.buy_volume, one.sell_volume) == (Decimal("3.0"), 2, 2, 1)
    assert one.timestamp == datetime.fromtimestamp(T0, UTC)

    agg.add_tick(trade(1.3, 2502.0))  # event time: 1.3 s passes the 1 s candle's watermark (1.25)
    assert [(c.interval_seconds, c.is_final, c.close) for c in finals] == [(1, True, Decimal("2499.5"))]

    history = agg.get_candle_history(SYMBOL, 1, 10)
    assert history == [
        MarketData(
            SYMBOL,
            datetime.fromtimestamp(T0, UTC),
            Decimal("2500.1"),
            Decimal("2501.25"),
            Decimal("2499.5"),
            Decimal("2499.5"),
            Decimal("3.0"),
        )
    ]
    assert finals[0].to_market_data() == history[0]
    assert finals[0].to_candle_data().close == 2499.5

    forced = agg.force_complete_candles(SYMBOL)
    assert sorted((c.interval_seconds, c.start - T0, c.end - T0) for c in forced) == [
        (1, 1, 2),
        (5, 0, 5),
        (15, 0, 15),
        (60, 0, 60),
    ]
    assert agg.get_candle_history(SYMBOL, 60, 5)[-1].close == Decimal("2502.0")
    assert agg.get_candle_history("UNKNOWN", 60, 5) == []


def test_duplicates_late_ticks_and_gap_marks_through_the_guide_api() -> None:
    agg = TickAggregator([1], revisions=True)
    revisions: list[RealtimeCandle] = []
    agg.subscribe_to_candles(lambda c: revisions.append(c) if c.revision else None)
    assert agg.add_tick(trade(0.2, 100.0, tid="a")) is True
    assert agg.add_tick(trade(0.3, 100.0, tid="a")) is False
    agg.mark_gap(SYMBOL, T0 + 0.5, reconnect=True)
    agg.add_tick(trade(2.0, 101.0, tid="b"))
    agg.add_tick(Tick(SYMBOL, T0 + 0.9, 99.0, 1.0, "sell", "c"))  # 1.1 s late, after the watermark
    assert [(c.start - T0, c.revision, c.late_ticks, c.low, c.reconnect) for c in revisions] == [
        (0, 1, 1, Decimal("99.0"), True)
    ]
    assert agg.stats(SYMBOL)["duplicates"] == 1
    cols = agg.get_candle_columns(SYMBOL, 1)
    assert (cols["late_ticks"][0], cols["volume"][0], bool(cols["reconnect"][0])) == (1, 2.0, True)


async def test_sync_and_async_callbacks_and_a_failing_one_never_stops_the_stream(caplog) -> None:
    now = [T0]
    agg = TickAggregator([1], clock=lambda: now[0])
    seen_sync: list[float] = []
    seen_async: list[float] = []

    def broken(candle: RealtimeCandle) -> None:
        raise RuntimeError("strategy bug")

    async def broken_async(candle: RealtimeCandle) -> None:
        raise RuntimeError("async strategy bug")

    async def on_candle(candle: RealtimeCandle) -> None:
        await asyncio.sleep(0)
        seen_async.append(candle.start - T0)

    for callback in (broken, lambda c: seen_sync.append(c.start - T0), broken_async, on_candle):
        agg.subscribe_to_candles(callback)
    with caplog.at_level(logging.ERROR, logger="bot.data.realtime_market"):
        for second in range(3):
            now[0] = T0 + second + 0.1
            agg.add_tick(trade(second + 0.1, 100.0 + second))
        now[0] = T0 + 3.3
        agg.advance()
        for _ in range(5):
            await asyncio.sleep(0)
    assert seen_sync == [0, 1, 2]
    assert seen_async == [0, 1, 2]
    assert agg.stats(SYMBOL)["callback_errors"] == 6
    assert "strategy bug" in caplog.text


def test_async_callback_without_a_running_loop_is_dropped_with_a_warning(caplog) -> None:
    agg = TickAggregator([1])

    async def on_candle(candle: RealtimeCandle) -> None:  # pragma: no cover - never runs
        pass

    agg.subscribe_to_candles(on_candle)
    agg.add_tick(trade(0.1, 100.0))
    with caplog.at_level(logging.WARNING, logger="bot.data.realtime_market"):
        agg.add_tick(trade(1.5, 100.0))
    assert agg.stats(SYMBOL)["callbacks_dropped"] == 1
    assert "no running event loop" in caplog.text


async def test_real_clock_makes_candles_final_without_further_ticks() -> None:
    agg = TickAggregator([1], clock=time.time, grace=0.05)
    got: asyncio.Queue[RealtimeCandle] = asyncio.Queue()
    agg.subscribe_to_candles(got.put_nowait)
    agg.start_clock()
    try:
        agg.add_tick(Tick(SYMBOL, time.time(), 100.0, 1.0, "buy", "x"))
        candle = await asyncio.wait_for(got.get(), timeout=5)
        assert candle.is_final and candle.trade_count == 1
        flat = await asyncio.wait_for(got.get(), timeout=5)  # no tick in the next second: a flat candle
        assert (flat.start - candle.start, flat.volume, flat.filled) == (1, 0, True)
    finally:
        await agg.stop_clock()


def test_provisional_updates_when_asked_for() -> None:
    agg = TickAggregator([1, 5], emit_provisional=True)
    updates: list[RealtimeCandle] = []
    agg.subscribe_to_candles(updates.append)
    agg.add_tick(trade(0.1, 100.0))
    agg.add_tick(trade(0.2, 101.0))
    assert [(c.interval_seconds, c.is_final, c.close) for c in updates[-2:]] == [
        (1, False, Decimal("101.0")),
        (5, False, Decimal("101.0")),
    ]


def test_batch_of_arrays_equals_tick_by_tick() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    ts = T0 + np.sort(rng.uniform(0, 120, n))
    prices = np.round(2500 + np.cumsum(rng.normal(0, 0.2, n)), 4)
    sizes = np.round(rng.uniform(0.01, 2, n), 3)
    sides = np.where(rng.random(n) < 0.5, "buy", "sell")
    ids = [f"id{i}" for i in range(n)]
    one, batch = TickAggregator([1, 5, 15, 60]), TickAggregator([1, 5, 15, 60])
    for i in range(n):
        one.add_tick(Tick(SYMBOL, float(ts[i]), float(prices[i]), float(sizes[i]), str(sides[i]), ids[i]))
    assert batch.add_ticks_batch(SYMBOL, ts, prices, sizes, sides, ids) == n
    assert batch.add_ticks_batch(SYMBOL, ts[:10], prices[:10], sizes[:10], sides[:10], ids[:10]) == 0
    for interval in (1, 5, 15, 60):
        a, b = one.get_candle_columns(SYMBOL, interval), batch.get_candle_columns(SYMBOL, interval)
        for column in ("start", "open", "high", "low", "close", "trade_count"):
            assert (a[column] == b[column]).all(), column
        for column in ("volume", "vwap", "buy_volume", "sell_volume"):
            np.testing.assert_allclose(a[column], b[column], rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"timestamp": math.nan},
        {"timestamp": datetime(2024, 1, 1)},  # naive: ambiguous
        {"timestamp": "soon"},
        {"price": 0},
        {"price": "abc"},
        {"price": True},
        {"price": None},
        {"volume": -1},
        {"side": "long"},
        {"side": None, "is_trade": True},
    ],
)
def test_garbage_ticks_raise_a_clear_error_and_the_aggregator_keeps_working(kwargs: dict) -> None:
    agg = TickAggregator([1])
    agg.add_tick(trade(0.1, 100.0))
    fields = {"symbol": SYMBOL, "timestamp": T0 + 0.2, "price": 100.0, "volume": 1.0, "side": "buy", "trade_id": "z"}
    with pytest.raises(InvalidTick):
        agg.add_tick(Tick(**{**fields, **kwargs}))
    with pytest.raises(MarketDataError):  # and the same garbage as a batch
        agg.add_ticks_batch(SYMBOL, [T0 + 0.3, T0 + 0.35], [100.0, math.nan], [1.0, -1.0], ["buy", "sell"])
    with pytest.raises(MarketDataError):
        agg.add_ticks_batch(SYMBOL, [T0 + 0.3], [100.0], [1.0], ["buy", "sell"])
    with pytest.raises(MarketDataError):
        agg.add_ticks_batch(SYMBOL, [T0 + 0.3], [100.0], [1.0], ["long"])
    agg.add_tick(trade(0.4, 101.0))
    (candle,) = agg.force_complete_candles(SYMBOL)
    assert (candle.trade_count, candle.close) == (2, Decimal("101.0"))


def test_tick_accepts_datetimes_decimals_and_strings() -> None:
    at = datetime(2024, 1, 1, 0, 0, 1, 500_000, tzinfo=UTC)
    tick = Tick(SYMBOL, at, Decimal("2500.123456"), "2.5", "sell", "t1")
    assert (tick.timestamp, tick.price, tick.volume, tick.size, tick.is_trade) == (
        at.timestamp(),
        Decimal("2500.123456"),
        Decimal("2.5"),
        Decimal("2.5"),
        True,
    )
    assert tick.datetime == at
    assert Tick(SYMBOL, at, 1.0).is_trade is False


@pytest.mark.parametrize(
    "args",
    [
        (SYMBOL, T0, "abc"),
        (SYMBOL, T0, -1.0),
        (SYMBOL, T0, 0.0),
        (SYMBOL, T0, math.inf),
        (SYMBOL, math.nan, 1.0),
        (SYMBOL, "soon", 1.0),
        (SYMBOL, datetime(2024, 1, 1), 1.0),  # naive: ambiguous
        (SYMBOL, T0, True),
        (SYMBOL, T0, None),
        (SYMBOL, T0, 1.0, -2.0, "buy"),
        (SYMBOL, T0, 1.0, [1.0], "buy"),
        (SYMBOL, T0, 1.0, 1.0, "long"),
        (SYMBOL, T0, 1.0, 1.0, None, "id", True),  # a trade needs a side
        (SYMBOL, T0, Decimal("NaN")),
    ],
)
def test_garbage_ticks_are_rejected_when_built(args: tuple) -> None:
    with pytest.raises(InvalidTick):
        Tick(*args)


def test_tick_keywords_and_float_views() -> None:
    tick = Tick(symbol=SYMBOL, timestamp=T0, price=2500.1, volume=2, side="buy", trade_id=7)
    assert (tick.price, tick.volume, tick.price_float, tick.volume_float, tick.trade_id) == (
        Decimal("2500.1"),
        Decimal("2.0"),
        2500.1,
        2.0,
        7,
    )
    assert tick.is_trade is True and tick != Tick(SYMBOL, T0, 2500.1, 2.0, "buy", 7)  # identity, as before
    assert "trade ETH-PERP" in repr(tick)
    with pytest.raises(TypeError):
        Tick(SYMBOL)  # type: ignore[call-arg]


def test_bad_settings_and_unknown_intervals_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        TickAggregator([])
    with pytest.raises(ConfigError):
        TickAggregator([1]).get_candle_history(SYMBOL, 5, 10)


@pytest.mark.parametrize("clock", [None, time.time])
def test_something_that_is_not_a_tick_is_rejected_clearly(clock) -> None:
    agg = TickAggregator([1], clock=clock)
    with pytest.raises(InvalidTick, match="needs a Tick"):
        agg.add_tick({"symbol": SYMBOL, "price": 1.0})  # type: ignore[arg-type]
    assert agg.add_tick(Tick(SYMBOL, time.time(), 1.0, 1.0, "buy", "ok")) is True
