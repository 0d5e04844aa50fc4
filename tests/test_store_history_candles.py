"""History candles (``store/history_candles.py``) against the live candle engine, on a real SQLite store."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

from store_helpers import spoil_block

from bluefin_service.sources.mock import MockMarket
from bluefin_service.store import event_row, open_store
from bluefin_service.store.history_candles import HistoryCandles
from bluefin_service.store.sqlite import SqliteStore
from marketdata.candles import Candle, CandleEngine, to_candle_data
from marketdata.ticks import MarketEvent, Trade

LIVE_INTERVALS = [1, 5, 15, 30, 45, 60]
START = 1_764_100_000.0


def market(seconds: float, start: float = START) -> list[MarketEvent]:
    """A busy mock market (many trades per second, so sums over a bucket are long) with a 7 s silence."""
    mock = MockMarket(["ETH-PERP"], 0.05, 0.01, seed=11, start=start)
    events = mock.advance(start + seconds / 2, limit=10**7)
    mock.skip_to(start + seconds / 2 + 7.3)
    return events + mock.advance(start + seconds + 7.3, limit=10**7)


def live_finals(events: list[MarketEvent], lag: float) -> dict[tuple[int, float], Candle]:
    """What the service's candle stream emits: ticks in publish order, the wall clock ``lag`` behind them."""
    finals: dict[tuple[int, float], Candle] = {}
    engine = CandleEngine(
        LIVE_INTERVALS, grace=0.25, handler=lambda cs: finals.update(((c.interval, c.start), c) for c in cs)
    )
    for event in events:
        now = event.timestamp + lag
        if type(event) is Trade:
            engine.add_trade(
                event.symbol, event.timestamp, event.price, event.size, event.side == "buy", event.trade_id, now
            )
        else:
            engine.add_price(event.symbol, event.timestamp, event.price, now)
    engine.advance(events[-1].timestamp + 5)
    return finals


async def stored(tmp_path: Path, events: list[MarketEvent]) -> SqliteStore:
    store = open_store(f"sqlite:///{tmp_path / 'ticks.db'}")
    assert isinstance(store, SqliteStore)
    await store.open()
    await store.write([event_row(event, seq) for seq, event in enumerate(events, 1)])
    return store


async def history(store: SqliteStore, interval: int, first: float, count: int, now: float) -> list:
    previous = await store.last_before("ETH-PERP", first)
    builder = HistoryCandles(
        "ETH-PERP", interval, LIVE_INTERVALS, 0.25, first, count, previous.price if previous else None
    )
    async for page in store.iter_seq_pages("ETH-PERP", first, first + count * interval, page=1000):
        builder.feed(page)
    return builder.finish(now)


async def test_history_candles_equal_the_live_engine_field_by_field(tmp_path: Path) -> None:
    events = market(40.0)
    live = live_finals(events, lag=0.02)
    store = await stored(tmp_path, events)
    now = events[-1].timestamp + 5
    for interval in (1, 5, 15):
        first = math.floor(START / interval) * interval + 2 * interval  # starts after the data: prev close seeds it
        count = int((events[-1].timestamp - first) // interval)
        candles = await history(store, interval, first, count, now)
        assert [c.start for c in candles] == [first + i * interval for i in range(count)]
        for candle in candles:
            assert candle == to_candle_data(live[interval, candle.start]), (interval, candle.start)
        if interval < 15:  # the silence: flat candles, as live
            assert any(c.volume == 0 and c.open == c.close for c in candles)
    await store.close()


async def test_the_forming_candle_is_provisional_and_an_interval_the_service_lacks_works(tmp_path: Path) -> None:
    events = market(20.0)
    store = await stored(tmp_path, events)
    last = events[-1].timestamp
    candles = await history(store, 7, math.floor(last / 7) * 7 - 7 * 3, 4, now=last + 0.01)
    assert [c.final for c in candles] == [True, True, True, False]
    assert all(c.end - c.start == 7 for c in candles)
    for fraction in (0.05, 0.2, 0.3, 0.9):  # inside the grace window two candles are still forming
        now = math.floor(last) + 1 + fraction
        candles = await history(store, 1, math.floor(now) - 5, 6, now=now)
        finals = [c.final for c in candles]
        assert len(candles) == 6 and finals == sorted(finals, reverse=True) and not finals[-1], (fraction, finals)
        assert [c.start for c in candles] == [math.floor(now) - 5 + i for i in range(6)]
    await store.close()


async def test_garbage_rows_in_the_store_are_skipped_not_fatal(tmp_path: Path) -> None:
    events = market(6.0)
    store = await stored(tmp_path, events)
    with sqlite3.connect(store.path) as conn:  # what a hand-edited or damaged file may hold
        spoil_block(conn, 1, prices={10: math.nan, 12: -5.0, 16: math.inf}, bad_flags=(14,))  # seqs 11-17
        conn.execute("UPDATE tick_blocks SET trade_ids = x'c1' WHERE first_seq > 1")  # and the later blocks torn
    first = math.floor(START)
    candles = await history(store, 1, first, 5, now=START + 100)
    assert len(candles) == 5 and all(c.final and c.low > 0 for c in candles)
    await store.close()
