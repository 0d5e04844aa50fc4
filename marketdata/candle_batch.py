"""The batch path of the candle engine: numpy columns of trades in, the same candles as tick by tick.

The trades are reduced to base-interval buckets with ``reduceat`` (a stable sort first, only if they are out of
order), and each bucket is merged into the engine like a run of single ticks. The batch counts as arriving at
once: ticks for buckets already final are late (handled one by one), and the watermark moves only after it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from marketdata.candle_acc import BUY, SELL, Acc
from marketdata.candle_state import NO_BUCKET
from marketdata.errors import InvalidTick

if TYPE_CHECKING:
    from marketdata.candles import CandleEngine


def add_trades_batch(
    engine: CandleEngine,
    symbol: str,
    timestamps: Any,
    prices: Any,
    sizes: Any,
    is_buy: Any,
    trade_ids: Any = None,
    now: float | None = None,
) -> int:
    """Add trades given as equal-length arrays; returns how many were accepted (not duplicates)."""
    ts = np.ascontiguousarray(timestamps, dtype=np.float64)
    price = np.ascontiguousarray(prices, dtype=np.float64)
    size = np.ascontiguousarray(sizes, dtype=np.float64)
    buy = np.ascontiguousarray(is_buy, dtype=np.bool_)
    n = ts.shape[0]
    if ts.ndim != 1 or price.shape != ts.shape or size.shape != ts.shape or buy.shape != ts.shape:
        raise InvalidTick("batch columns must be 1-D arrays of one length")
    valid = np.isfinite(ts).all() and ((price > 0) & (price < np.inf)).all() and ((size >= 0) & (size < np.inf)).all()
    if not valid:
        raise InvalidTick(f"batch for {symbol!r} rejected: non-finite time, price <= 0 or size < 0 (nothing applied)")
    st = engine._symbol_state(symbol)
    if trade_ids is not None:
        keep = _dedupe(engine, st, trade_ids, _bucket_starts(ts, engine.base), n)
        if not keep.all():
            ts, price, size, buy = ts[keep], price[keep], size[keep], buy[keep]
            n = ts.shape[0]
    if n:
        if n > 1 and not (ts[1:] >= ts[:-1]).all():
            order = np.argsort(ts, kind="stable")
            ts, price, size, buy = ts[order], price[order], size[order], buy[order]
        g = engine.base
        starts = _bucket_starts(ts, g)
        late = starts < st.base_next
        if late.any():
            late_rows = zip(
                ts[late].tolist(), price[late].tolist(), size[late].tolist(), buy[late].tolist(), strict=True
            )
            for t, p, s, b in late_rows:
                engine._late_tick(st, t, p, s, BUY if b else SELL)
            on_time = ~late
            ts, price, size, buy, starts = ts[on_time], price[on_time], size[on_time], buy[on_time], starts[on_time]
        if ts.shape[0]:
            _merge_buckets(st, g, ts, price, size, buy, starts, trade_ids is not None)
    if now is None and n:
        now = float(ts[-1])  # event time: the newest trade of the batch
    if now is not None:
        engine._move_watermark(now)
    engine._flush()
    return n


def _bucket_starts(ts: np.ndarray, base: int) -> np.ndarray:
    return np.floor(ts) if base == 1 else ts - np.mod(ts, base)


def _dedupe(engine: CandleEngine, st: Any, trade_ids: Any, starts: np.ndarray, n: int) -> np.ndarray:
    ids = list(trade_ids)
    if len(ids) != n:
        raise InvalidTick("trade_ids must have one id per trade")
    keep = np.ones(n, dtype=np.bool_)
    remember, limit = st.remember, engine.dedupe_size
    for i, (tid, start) in enumerate(zip(ids, starts.tolist(), strict=True)):
        if not remember(tid, start, limit):
            keep[i] = False
    return keep


def _merge_buckets(
    st: Any,
    g: int,
    ts: np.ndarray,
    price: np.ndarray,
    size: np.ndarray,
    buy: np.ndarray,
    starts: np.ndarray,
    with_ids: bool,
) -> None:
    n = ts.shape[0]
    cut = np.flatnonzero(starts[1:] != starts[:-1]) + 1
    first = np.concatenate(([0], cut))
    last = np.concatenate((cut, [n])) - 1
    buy_size = np.where(buy, size, 0.0)
    columns = zip(
        starts[first].tolist(),
        ts[first].tolist(),
        ts[last].tolist(),
        price[first].tolist(),
        np.maximum.reduceat(price, first).tolist(),
        np.minimum.reduceat(price, first).tolist(),
        price[last].tolist(),
        np.add.reduceat(size, first).tolist(),
        np.add.reduceat(price * size, first).tolist(),
        np.add.reduceat(buy_size, first).tolist(),
        (last - first + 1).tolist(),
        strict=True,
    )
    open_base = st.open_base
    for start, first_ts, last_ts, o, h, low, c, vol, notional, buy_vol, count in columns:
        acc = Acc(start, start + g, o)
        acc.first_ts, acc.last_ts, acc.high, acc.low, acc.close = first_ts, last_ts, h, low, c
        acc.volume, acc.notional, acc.buy, acc.count = vol, notional, buy_vol, count
        existing = open_base.get(start)
        if existing is None:
            if with_ids:  # the ids _dedupe remembered for this bucket (else the hot path adds them when needed)
                acc.ids = st.bucket_ids(start)
            open_base[start] = acc
            if st.cur is NO_BUCKET or start > st.cur.start:
                st.cur = acc
        else:
            if with_ids and existing.ids is None:
                existing.ids = st.bucket_ids(start)
            existing.merge(acc)
