"""Candles from stored ticks, vectorized with numpy (history requests, exports).

The rules are the project's candle rules (DESIGN.md): aligned to epoch multiples of the interval; open, high,
low and close from every tick; volume, VWAP, trade count and buy/sell volume from trades only, de-duplicated
by ``trade_id``; an interval without ticks is a flat candle at the previous close with zero volume; a candle
is final once ``now`` is past its end plus the grace period.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from bluefin_service.store import TRADE, TickRow
from marketdata.protocol import CandleData

GRACE_SECONDS = 0.25


@dataclass
class TickColumns:
    """Ticks as columns (sorted by time), built page by page so a long range never holds row objects."""

    ts: list[np.ndarray] = field(default_factory=list)
    price: list[np.ndarray] = field(default_factory=list)
    size: list[np.ndarray] = field(default_factory=list)
    is_trade: list[np.ndarray] = field(default_factory=list)
    is_buy: list[np.ndarray] = field(default_factory=list)
    trade_ids: list[str | None] = field(default_factory=list)
    max_seq: int = 0

    def add(self, rows: Iterable[TickRow]) -> None:
        rows = list(rows)
        if not rows:
            return
        _symbols, ts, seq, kind, price, size, side, trade_id = zip(*rows, strict=True)
        self.max_seq = max(self.max_seq, *seq)
        kinds = np.array(kind, dtype=object)
        self.ts.append(np.array(ts, dtype=np.float64))
        self.price.append(np.array(price, dtype=np.float64))
        self.size.append(np.array(size, dtype=np.float64))
        self.is_trade.append(kinds == TRADE)
        self.is_buy.append(np.array(side, dtype=object) == "buy")
        self.trade_ids.extend(trade_id)

    def __len__(self) -> int:
        return sum(len(part) for part in self.ts)


def parse_interval(raw: str) -> int:
    """``15s``, ``1m``, ``5m``, ``1h``, ``1d`` or plain seconds (``15``) -> seconds."""
    text = raw.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        seconds = int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text)
    except ValueError:
        raise ValueError(f"interval {raw!r} is not a duration: use 1s, 5s, 15s, 1m, 5m, 1h or seconds") from None
    if not 1 <= seconds <= 86400:
        raise ValueError(f"interval {raw!r} is out of range: 1s to 1d")
    return seconds


def aggregate(
    ticks: TickColumns, interval: int, first_start: float, count: int, prev_close: float | None, now: float
) -> list[CandleData]:
    """``count`` candles of ``interval`` seconds from ``first_start`` (aligned), oldest first.

    Candles before the first tick ever seen (no ``prev_close`` and no tick yet) are left out.
    """
    first_bucket = int(first_start // interval)
    n = count
    opens = np.full(n, np.nan)
    highs = np.full(n, np.nan)
    lows = np.full(n, np.nan)
    closes = np.full(n, np.nan)
    volume = np.zeros(n)
    notional = np.zeros(n)
    trades = np.zeros(n, dtype=np.int64)
    buys = np.zeros(n)
    if len(ticks):
        ts = np.concatenate(ticks.ts)
        price = np.concatenate(ticks.price)
        size = np.concatenate(ticks.size)
        is_trade = np.concatenate(ticks.is_trade)
        is_buy = np.concatenate(ticks.is_buy)
        trade_ids = np.array(ticks.trade_ids, dtype=object)
        if len(ts) > 1 and not bool(np.all(ts[1:] >= ts[:-1])):  # pending rows may interleave with stored ones
            order = np.argsort(ts, kind="stable")
            ts, price, size, is_trade, is_buy = ts[order], price[order], size[order], is_trade[order], is_buy[order]
            trade_ids = trade_ids[order]
        bucket = np.floor(ts / interval).astype(np.int64) - first_bucket
        keep = (bucket >= 0) & (bucket < n)
        bucket, price, size, is_trade, is_buy, trade_ids = (
            a[keep] for a in (bucket, price, size, is_trade, is_buy, trade_ids)
        )
        if len(bucket):
            starts = np.r_[0, np.flatnonzero(np.diff(bucket)) + 1]  # bucket is sorted
            present = bucket[starts]
            ends = np.r_[starts[1:], len(bucket)]
            opens[present] = price[starts]
            closes[present] = price[ends - 1]
            highs[present] = np.maximum.reduceat(price, starts)
            lows[present] = np.minimum.reduceat(price, starts)
            counted = is_trade & ~_duplicated(trade_ids, is_trade)
            tb, tp, ts_size = bucket[counted], price[counted], size[counted]
            volume = np.bincount(tb, weights=ts_size, minlength=n)
            notional = np.bincount(tb, weights=tp * ts_size, minlength=n)
            trades = np.bincount(tb, minlength=n)
            buys = np.bincount(tb, weights=ts_size * is_buy[counted], minlength=n)
    # empty intervals: flat at the previous close (forward fill); none before the first price ever seen
    if prev_close is not None and np.isnan(closes[0]):
        closes[0] = prev_close
    source = np.where(~np.isnan(closes), np.arange(n), 0)
    np.maximum.accumulate(source, out=source)
    carried = closes[source]
    empty = np.isnan(opens)
    opens = np.where(empty, carried, opens)
    highs = np.where(empty, carried, highs)
    lows = np.where(empty, carried, lows)
    closes = carried
    starts_at = (first_bucket + np.arange(n, dtype=np.float64)) * interval
    keep = ~np.isnan(closes)
    with np.errstate(divide="ignore", invalid="ignore"):
        vwap = np.where(volume > 0, notional / volume, closes)
    final = now >= starts_at + interval + GRACE_SECONDS
    columns = (
        starts_at,
        starts_at + interval,
        opens,
        highs,
        lows,
        closes,
        volume,
        trades,
        vwap,
        buys,
        volume - buys,
        final,
    )
    return [
        CandleData(interval, *values) for values in zip(*(column[keep].tolist() for column in columns), strict=True)
    ]


def _duplicated(trade_ids: np.ndarray, is_trade: np.ndarray) -> np.ndarray:
    """True for a trade whose ``trade_id`` appeared earlier (a venue re-sent it)."""
    import pandas as pd  # here, not at the top: the service should not pay pandas' import time at start

    dup = np.zeros(len(trade_ids), dtype=bool)
    dup[is_trade] = pd.Series(trade_ids[is_trade]).duplicated().to_numpy()
    return dup
