"""The candle engine (marketdata.candles), driven with a fake clock: no event loop, no sleeps.

The property tests compare final candles with a pandas ``resample(...).ohlc()`` / sum oracle.
"""

from __future__ import annotations

import math
import tracemalloc
from math import gcd

import msgspec
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketdata.candles import CandleEngine, to_candle_data, to_candle_message
from marketdata.errors import ConfigError, InvalidTick, MarketDataError
from marketdata.protocol import CandleMessage, decode_server, encode

T0 = 1_699_999_920.0  # a multiple of every interval used here (lcm 180)
SYMBOL = "ETH-PERP"
COLUMNS = ("open", "high", "low", "close", "volume", "trade_count", "vwap", "buy_volume", "sell_volume")


# --------------------------------------------------------------------------------------------------- oracle
def oracle(ticks: list[dict], interval: int) -> pd.DataFrame:
    """pandas' view of the candles: OHLC over every tick, volume/vwap/counts over trades, flats forward-filled."""
    df = pd.DataFrame(ticks).sort_values("arrival", kind="stable").sort_values("ms", kind="stable")
    df.index = pd.DatetimeIndex(pd.to_datetime(df["ms"].to_numpy(), unit="ms"))
    df["volume"] = df["size"].where(df["trade"], 0.0)
    df["buy_volume"] = df["volume"].where(df["buy"], 0.0)
    df["sell_volume"] = df["volume"] - df["buy_volume"]
    df["notional"] = df["price"] * df["volume"]
    df["trade_count"] = df["trade"].astype(int)
    resampled = df.resample(f"{interval}s", origin="epoch")
    out = resampled["price"].ohlc()
    sums = resampled[["volume", "buy_volume", "sell_volume", "notional", "trade_count"]].sum()
    out = out.join(sums)
    notional = out["notional"]
    out["filled"] = out["open"].isna()
    out["close"] = out["close"].ffill()
    for column in ("open", "high", "low"):
        out[column] = out[column].fillna(out["close"])
    out["vwap"] = (notional / out["volume"]).where(out["volume"] > 0, out["close"])
    out["start"] = (out.index - pd.Timestamp(0)) / pd.Timedelta(seconds=1)
    return out.reset_index(drop=True)


def engine_frame(engine: CandleEngine, interval: int, last_tick_ms: int, revisions: bool = False) -> pd.DataFrame:
    """Final candles up to the one holding the last tick; the flat ones after it must copy its close."""
    got = pd.DataFrame(engine.history(SYMBOL, interval))
    last_start = last_tick_ms // (interval * 1000) * interval
    after = got[got["start"] > last_start]
    assert after["filled"].all() and (after["volume"] == 0).all()
    if not revisions:  # a revised close is not carried into flat candles that were final before it
        assert (after["close"] == got[got["start"] <= last_start]["close"].iloc[-1]).all()
    return got[got["start"] <= last_start].reset_index(drop=True)


def assert_same(got: pd.DataFrame, want: pd.DataFrame, columns: tuple[str, ...] = COLUMNS) -> None:
    assert list(got["start"]) == list(want["start"])
    for column in columns:
        # history keeps vwap as a float32 offset from the open: exact to ~6e-8 of the candle's range
        g, w = got[column].to_numpy(float), want[column].to_numpy(float)
        atol = 1e-7 * (want["high"] - want["low"]).to_numpy(float) + 1e-12 if column == "vwap" else 1e-12
        assert (np.abs(g - w) <= 1e-9 * np.abs(w) + atol).all(), f"{column}: got {g.tolist()} want {w.tolist()}"


def feed(engine: CandleEngine, ticks: list[dict]) -> None:
    """Deliver ticks in arrival order; each arrival is also the clock's `now`."""
    for t in sorted(ticks, key=lambda t: t["arrival"]):
        ts, now = t["ms"] / 1000, t["arrival"] / 1000
        if t["trade"]:
            engine.add_trade(SYMBOL, ts, t["price"], t["size"], t["buy"], t["id"], now=now)
        else:
            engine.add_price(SYMBOL, ts, t["price"], now=now)


@st.composite
def tick_streams(draw: st.DrawFn, max_delay_ms: int) -> list[dict]:
    """Ticks over ~40 s; each arrives `delay` ms after its timestamp; some trades are delivered twice."""
    n = draw(st.integers(1, 60))
    base_ms = int(T0 * 1000)
    offsets = sorted(draw(st.lists(st.integers(0, 40_000), min_size=n, max_size=n)))
    offsets[0] = 0  # the first tick opens the first bucket (nothing can be earlier)
    ticks = []
    for i, offset in enumerate(offsets):
        trade = i == 0 or draw(st.booleans()) or draw(st.booleans())
        delay = 0 if i == 0 else draw(st.integers(0, max_delay_ms))
        ticks.append(
            {
                "ms": base_ms + offset,
                "arrival": base_ms + offset + delay,
                "price": draw(st.integers(90_000, 110_000)) / 100,
                "size": draw(st.integers(1, 5000)) / 1000 if trade else 0.0,
                "buy": draw(st.booleans()),
                "trade": trade,
                "id": f"t{i}" if trade else None,
            }
        )
    for t in draw(st.lists(st.sampled_from(ticks), max_size=5)):
        if t["trade"] and t is not ticks[0]:
            ticks.append({**t, "arrival": t["arrival"] + draw(st.integers(0, 3000)), "dup": True})
    return ticks


def late_for(t: dict, interval: int, base: int, grace_ms: int) -> bool:
    """Is this tick later than the watermark for its `interval` candle when it arrives?"""
    watermark = (t["arrival"] - grace_ms) // (base * 1000) * base * 1000
    bucket_end = (t["ms"] // (interval * 1000) + 1) * interval * 1000
    return bucket_end <= watermark


INTERVALS = (1, 5, 15, 30, 45, 60)


# --------------------------------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks=tick_streams(max_delay_ms=249))
def test_final_candles_equal_pandas_when_ticks_are_shuffled_within_grace(ticks: list[dict]) -> None:
    engine = CandleEngine(INTERVALS, grace=0.25, history_limit=10_000)
    feed(engine, ticks)
    emitted = engine.take_output() + engine.advance(T0 + 200)
    unique = [t for t in ticks if not t.get("dup")]
    for interval in INTERVALS:
        got = engine_frame(engine, interval, max(t["ms"] for t in ticks))
        want = oracle(unique, interval)
        assert_same(got, want)
        assert list(got["filled"]) == list(want["filled"])
        assert (np.diff(got["start"]) > 0).all(), "history must be time-ordered"
        assert got["late_ticks"].sum() == 0
        finals = [c for c in emitted if c.interval == interval and c.start <= got["start"].iloc[-1]]
        assert [c.start for c in finals] == list(got["start"]), "each candle emitted once, in time order"
    assert engine.stats(SYMBOL)["duplicates"] == len(ticks) - len(unique)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ticks=tick_streams(max_delay_ms=4000), revisions=st.booleans())
def test_late_ticks_are_counted_and_only_revisions_change_history(ticks: list[dict], revisions: bool) -> None:
    engine = CandleEngine(INTERVALS, grace=0.25, history_limit=10_000, revisions=revisions, revision_window=10_000)
    feed(engine, ticks)
    emitted = engine.take_output() + engine.advance(T0 + 200)
    unique = [t for t in ticks if not t.get("dup")]
    base = gcd(*INTERVALS)
    for interval in INTERVALS:
        full = pd.DataFrame(engine.history(SYMBOL, interval))
        assert (np.diff(full["start"]) > 0).all(), "history must be time-ordered"
        late = [t for t in unique if late_for(t, interval, base, 250)]
        expected = pd.Series([t["ms"] // (interval * 1000) * interval for t in late], dtype=float).value_counts()
        got_late = {start: n for start, n in zip(full["start"], full["late_ticks"], strict=True) if n}
        assert got_late == expected.to_dict()
        if revisions:
            got = engine_frame(engine, interval, max(t["ms"] for t in unique), revisions=True)
            want = oracle(unique, interval)
            traded = ~want["filled"].to_numpy()
            assert_same(got[traded].reset_index(drop=True), want[traded].reset_index(drop=True))
            revised = {c.start for c in emitted if c.interval == interval and c.revision > 0}
            assert revised == {t["ms"] // (interval * 1000) * interval for t in late}
        else:
            on_time = [t for t in unique if not late_for(t, interval, base, 250)]
            got = engine_frame(engine, interval, max(t["ms"] for t in on_time))
            assert_same(got, oracle(on_time, interval))
            assert not [c for c in emitted if c.revision]


@settings(max_examples=20, deadline=None)
@given(ticks=tick_streams(max_delay_ms=0), chunks=st.integers(1, 4))
def test_batch_path_gives_the_same_candles_as_tick_by_tick(ticks: list[dict], chunks: int) -> None:
    trades = [t for t in ticks if t["trade"] and not t.get("dup")]
    one = CandleEngine((1, 5, 60), history_limit=10_000)
    for t in trades:
        one.add_trade(SYMBOL, t["ms"] / 1000, t["price"], t["size"], t["buy"], t["id"], now=t["ms"] / 1000)
    batch = CandleEngine((1, 5, 60), history_limit=10_000)
    for part in np.array_split(np.arange(len(trades)), chunks):
        rows = [trades[i] for i in part]
        ts = np.array([t["ms"] / 1000 for t in rows])
        batch.add_trades_batch(
            SYMBOL,
            ts,
            [t["price"] for t in rows],
            [t["size"] for t in rows],
            [t["buy"] for t in rows],
            [t["id"] for t in rows],
            now=float(ts.max()) if len(rows) else None,
        )
    end = trades[-1]["ms"] / 1000 + 61
    one.advance(end)
    batch.advance(end)
    for interval in (1, 5, 60):
        want = pd.DataFrame(one.history(SYMBOL, interval))
        assert_same(pd.DataFrame(batch.history(SYMBOL, interval)), want)


# --------------------------------------------------------------------------------------------------- examples
def trade(engine: CandleEngine, ts: float, price: float, size: float = 1.0, buy: bool = True, tid: str | None = None):
    return engine.add_trade(SYMBOL, T0 + ts, price, size, buy, tid, now=T0 + ts)


def test_candle_is_final_at_boundary_plus_grace_even_without_ticks() -> None:
    engine = CandleEngine([1, 5], grace=0.25)
    trade(engine, 0.3, 100.0)
    assert engine.advance(T0 + 1.24) == []
    (final,) = engine.advance(T0 + 1.25)
    assert (final.interval, final.start, final.end, final.final) == (1, T0, T0 + 1, True)
    assert (final.open, final.close, final.volume, final.trade_count) == (100.0, 100.0, 1.0, 1)
    flats = engine.advance(T0 + 5.25)
    assert [(c.interval, c.start - T0) for c in flats] == [(1, 1), (1, 2), (1, 3), (1, 4), (5, 0)]
    flat = flats[0]
    assert (flat.open, flat.high, flat.low, flat.close, flat.volume, flat.filled) == (100, 100, 100, 100, 0, True)


def test_no_flat_candles_when_fill_empty_is_off() -> None:
    engine = CandleEngine([1], fill_empty=False)
    trade(engine, 0.5, 100.0)
    trade(engine, 3.5, 101.0)
    engine.advance(T0 + 10)
    assert list(engine.history(SYMBOL, 1)["start"] - T0) == [0, 3]


def test_price_updates_move_the_price_never_the_volume() -> None:
    engine = CandleEngine([1])
    trade(engine, 0.1, 100.0, size=2.0)
    engine.add_price(SYMBOL, T0 + 0.2, 105.0)
    engine.add_price(SYMBOL, T0 + 0.3, 95.0)
    (candle,) = engine.advance(T0 + 2)[:1]
    assert (candle.open, candle.high, candle.low, candle.close) == (100.0, 105.0, 95.0, 95.0)
    assert (candle.volume, candle.trade_count, candle.vwap) == (2.0, 1, 100.0)


def test_out_of_order_ticks_within_grace_fold_by_timestamp() -> None:
    engine = CandleEngine([1], grace=0.25)
    engine.add_trade(SYMBOL, T0 + 0.9, 110.0, 1.0, True, "b", now=T0 + 0.9)
    engine.add_trade(SYMBOL, T0 + 1.1, 120.0, 1.0, True, "c", now=T0 + 1.1)
    engine.add_trade(SYMBOL, T0 + 0.1, 100.0, 1.0, False, "a", now=T0 + 1.2)  # 1.1 s late, but within grace
    (first, _) = engine.advance(T0 + 2.25)
    assert (first.open, first.close, first.trade_count, first.late_ticks) == (100.0, 110.0, 2, 0)
    assert (first.buy_volume, first.sell_volume) == (1.0, 1.0)


def test_duplicate_trade_ids_count_once_and_dedupe_memory_is_bounded() -> None:
    engine = CandleEngine([1], dedupe_size=3)  # remembers the newest 3 ids at least, 6 at most
    assert trade(engine, 0.1, 100.0, tid="a") is True
    assert trade(engine, 0.2, 100.0, tid="a") is False
    for i, tid in enumerate("bcdef"):
        trade(engine, 0.3 + i / 10, 100.0, tid=tid)
        assert engine._symbols[SYMBOL].remembered_ids() <= 6
    assert trade(engine, 0.8, 100.0, tid="e") is False
    assert trade(engine, 0.9, 100.0, tid="a") is True  # forgotten
    assert engine.stats(SYMBOL)["duplicates"] == 2


def test_redelivered_trades_are_duplicates_while_open_late_or_batched_and_id_memory_stays_bounded() -> None:
    engine = CandleEngine([1, 5], dedupe_size=4)
    assert trade(engine, 0.1, 100.0, tid="a") is True
    assert (
        engine.add_trades_batch(SYMBOL, [T0 + 0.1, T0 + 0.2], [100.0, 101.0], [1.0, 1.0], [True, True], ["a", "b"]) == 1
    )
    assert trade(engine, 0.2, 101.0, tid="b") is False  # batched first, re-sent tick by tick
    assert trade(engine, 3.0, 102.0, tid="c") is True  # bucket 0 is final now
    assert engine.add_trade(SYMBOL, T0 + 0.1, 100.0, 1.0, True, "a", now=T0 + 3.1) is False  # late re-delivery
    assert engine.add_trade(SYMBOL, T0 + 0.3, 99.0, 1.0, False, "z", now=T0 + 3.1) is True  # late, new
    assert engine.stats(SYMBOL) == {"duplicates": 3, "late_ticks": 1, "late_unplaced": 0}
    for i in range(200):  # 40 final buckets of 5 ids: only the newest ones (>= 4 ids) are kept
        for k in range(5):
            trade(engine, 4 + i + k / 10, 100.0, tid=f"{i}-{k}")
        assert engine._symbols[SYMBOL].remembered_ids() <= 4 + 5 + 5
    engine.advance(T0 + 300)
    ones = engine.history(SYMBOL, 1)
    assert int(ones["trade_count"][ones["start"] >= T0 + 4].sum()) == 1000  # all new: none dropped as duplicates


def test_late_tick_is_counted_and_history_unchanged_without_revisions() -> None:
    engine = CandleEngine([1], grace=0.25)
    trade(engine, 0.5, 100.0)
    engine.advance(T0 + 1.3)
    before = engine.history(SYMBOL, 1)
    engine.add_trade(SYMBOL, T0 + 0.7, 200.0, 5.0, True, "late", now=T0 + 1.4)
    assert engine.take_output() == []
    after = engine.history(SYMBOL, 1)
    assert (after["close"][0], after["volume"][0], after["late_ticks"][0]) == (100.0, 1.0, 1)
    assert before["close"][0] == after["close"][0]


def test_late_tick_produces_a_revision_when_configured() -> None:
    engine = CandleEngine([1, 5], grace=0.25, revisions=True)
    trade(engine, 0.5, 100.0)
    engine.advance(T0 + 1.3)
    engine.add_trade(SYMBOL, T0 + 0.7, 200.0, 5.0, True, "late", now=T0 + 1.4)
    (revision,) = engine.take_output()
    assert (revision.interval, revision.start, revision.revision, revision.final) == (1, T0, 1, True)
    assert (revision.close, revision.high, revision.volume, revision.late_ticks) == (200.0, 200.0, 6.0, 1)
    five = engine.advance(T0 + 5.25)[-1]
    assert (five.interval, five.close, five.volume, five.late_ticks) == (5, 200.0, 6.0, 0)  # 5 s was still open


def test_gap_and_reconnect_flags() -> None:
    engine = CandleEngine([1, 60])
    trade(engine, 0.5, 100.0)
    engine.mark_gap(SYMBOL, T0 + 0.6)
    engine.advance(T0 + 1.5)
    engine.mark_gap(SYMBOL, T0 + 0.9, reconnect=True)  # that 1 s candle is already final: history is flagged
    trade(engine, 1.5, 100.0)
    candles = engine.advance(T0 + 61)
    one = engine.history(SYMBOL, 1)
    assert (bool(one["gap"][0]), bool(one["reconnect"][0]), bool(one["gap"][1])) == (True, True, False)
    minute = next(c for c in candles if c.interval == 60)
    assert (minute.gap, minute.reconnect) == (True, True)
    assert to_candle_data(minute).flags.gap is True


def test_force_complete_closes_at_the_aligned_boundary() -> None:
    engine = CandleEngine([1, 15])
    trade(engine, 3.2, 100.0)
    candles = engine.force_complete(SYMBOL)
    assert sorted((c.interval, c.start - T0, c.end - T0) for c in candles) == [(1, 3, 4), (15, 0, 15)]
    trade(engine, 3.9, 101.0)
    assert engine.stats(SYMBOL)["late_ticks"] == 1
    assert engine.history(SYMBOL, 15)["late_ticks"][0] == 1


def test_current_candles_are_provisional_and_merge_out_of_order_buckets() -> None:
    engine = CandleEngine([1, 5])
    trade(engine, 1.9, 100.0)
    trade(engine, 2.1, 102.0)
    now = engine.current(SYMBOL)
    assert (now[1].start - T0, now[1].close, now[1].final) == (2, 102.0, False)
    assert (now[5].start - T0, now[5].open, now[5].close, now[5].volume) == (0, 100.0, 102.0, 2.0)
    assert engine.current("UNKNOWN") == {}


def test_history_is_bounded_and_long_idle_emits_at_most_one_ring_of_flats() -> None:
    engine = CandleEngine([1], history_limit=100)
    trade(engine, 0.5, 100.0)
    candles = engine.advance(T0 + 3 * 86_400)
    assert len(candles) == 101  # the real candle, then only as many flats as history keeps
    cols = engine.history(SYMBOL, 1)
    assert len(cols["start"]) == 100 and (np.diff(cols["start"]) == 1).all()
    assert cols["start"][-1] == T0 + 3 * 86_400 - 2


def test_candle_message_round_trips_through_the_wire_format() -> None:
    engine = CandleEngine([5])
    trade(engine, 1.0, 100.5, size=2.0, buy=False)
    (candle,) = engine.advance(T0 + 6)
    frame = encode(to_candle_message(candle, timestamp=T0 + 6, seq=7))
    message = decode_server(frame)
    assert isinstance(message, CandleMessage)
    assert (message.seq, message.data.interval, message.data.close, message.data.sell_volume) == (7, 5, 100.5, 2.0)
    assert message.data.final is True
    assert msgspec.json.decode(frame)["type"] == "candle"


def test_24h_of_1s_candles_fit_in_5_mb() -> None:
    ts = T0 + np.arange(86_400) + 0.5
    rng = np.random.default_rng(7)
    prices, sizes = 2500 + np.cumsum(rng.normal(0, 0.5, ts.size)), rng.uniform(0.1, 3, ts.size)
    buys = rng.random(ts.size) < 0.5
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engine = CandleEngine([1], history_limit=86_400)
        engine.add_trades_batch(SYMBOL, ts, prices, sizes, buys)
        engine.advance(T0 + 86_401)
        engine.take_output()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(engine.history(SYMBOL, 1)["start"]) == 86_400
    assert used <= 5_000_000, f"24 h of 1 s candles took {used / 1e6:.2f} MB"


# --------------------------------------------------------------------------------------------------- garbage
@pytest.mark.parametrize(
    ("ts", "price", "size"),
    [
        (math.nan, 100.0, 1.0),
        (math.inf, 100.0, 1.0),
        (1.0, 0.0, 1.0),
        (1.0, -5.0, 1.0),
        (1.0, math.nan, 1.0),
        (1.0, math.inf, 1.0),
        (1.0, 100.0, -1.0),
        (1.0, 100.0, math.nan),
    ],
)
def test_garbage_ticks_are_rejected_and_nothing_is_lost(ts: float, price: float, size: float) -> None:
    engine = CandleEngine([1])
    trade(engine, 0.5, 100.0, tid="good")
    with pytest.raises(InvalidTick):
        engine.add_trade(SYMBOL, T0 + ts, price, size, True, "bad")
    with pytest.raises(MarketDataError):
        engine.add_trades_batch(SYMBOL, [T0 + 0.6, T0 + ts], [100.0, price], [1.0, size], [True, False])
    trade(engine, 0.9, 101.0, tid="bad")  # the rejected id was not remembered
    (candle,) = engine.advance(T0 + 1.5)
    assert (candle.trade_count, candle.volume, candle.close) == (2, 2.0, 101.0)


def test_garbage_batches_and_settings_are_rejected() -> None:
    engine = CandleEngine([1])
    with pytest.raises(InvalidTick):
        engine.add_trades_batch(SYMBOL, [T0, T0], [1.0], [1.0], [True])
    with pytest.raises(InvalidTick):
        engine.add_trades_batch(SYMBOL, [T0], [1.0], [1.0], [True], trade_ids=["a", "b"])
    with pytest.raises(InvalidTick):
        engine.mark_gap(SYMBOL, math.nan)
    for bad in ([], [0], [1.5], [True], ["5"]):
        with pytest.raises(ConfigError):
            CandleEngine(bad)
    with pytest.raises(ConfigError):
        CandleEngine([1], grace=-1)
    with pytest.raises(ConfigError):
        CandleEngine([1], history_limit=0)
    with pytest.raises(ConfigError):
        engine.history(SYMBOL, 7)
    assert engine.add_trades_batch(SYMBOL, [], [], [], []) == 0


def test_symbols_are_independent_and_share_one_clock() -> None:
    engine = CandleEngine([1])
    engine.add_trade("BTC-PERP", T0 + 0.5, 50_000.0, 0.1, True, "x", now=T0 + 0.5)
    engine.add_trade(SYMBOL, T0 + 0.6, 2_500.0, 2.0, False, "x", now=T0 + 0.6)  # same id, other symbol: not a dup
    candles = engine.advance(T0 + 1.25)
    assert sorted((c.symbol, c.close, c.volume) for c in candles) == [
        ("BTC-PERP", 50_000.0, 0.1),
        (SYMBOL, 2_500.0, 2.0),
    ]
    assert len(engine.history("UNKNOWN", 1)["start"]) == 0
    assert engine.last_candles(SYMBOL, 1)[0].sell_volume == 2.0


@pytest.mark.parametrize(("ts", "price"), [(math.nan, 100.0), (1.0, 0.0), (1.0, -1.0), (1.0, math.inf)])
def test_garbage_price_updates_are_rejected(ts: float, price: float) -> None:
    engine = CandleEngine([1])
    with pytest.raises(InvalidTick):
        engine.add_price(SYMBOL, T0 + ts, price)
    engine.add_price(SYMBOL, T0 + 0.5, 100.0)
    assert engine.current(SYMBOL)[1].close == 100.0
