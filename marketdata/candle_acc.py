"""The OHLCV accumulator of one bucket (the bar builder); the engine decides when a bucket closes."""

from __future__ import annotations

import math
from typing import Any

INF = math.inf
BUY = 1
SELL = -1
PRICE_ONLY = 0  # a price update: moves open/high/low/close, never volume

Values = tuple[float, float, float, float, float, float, float, int, int]


class Acc:
    """Open/high/low/close by exchange timestamp, plus trade sums, for the bucket [start, end)."""

    __slots__ = (
        "buy",
        "close",
        "count",
        "end",
        "first_ts",
        "high",
        "ids",
        "last_ts",
        "low",
        "notional",
        "open",
        "start",
        "volume",
    )

    def __init__(self, start: float, end: float, price: float) -> None:
        self.start = start
        self.end = end
        # first_ts/last_ts start "empty" so the first tick sets open and close; high/low start at its price
        self.first_ts = INF
        self.last_ts = -INF
        self.open = self.close = self.high = self.low = price
        self.volume = self.notional = self.buy = 0.0  # sell volume is volume - buy
        self.count = 0
        self.ids: dict[Any, None] | None = None  # an open base bucket's trade ids (SymbolState.ids[start])

    def add(self, ts: float, price: float, size: float, side: int) -> None:
        if ts < self.first_ts:
            self.first_ts = ts
            self.open = price
        if ts >= self.last_ts:
            self.last_ts = ts
            self.close = price
        if price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        if side:
            self.volume += size
            self.notional += price * size
            if side > 0:
                self.buy += size
            self.count += 1

    def merge(self, other: Acc) -> None:
        """Fold in ``other``, which arrived after everything already here (ties on timestamp go to it for close)."""
        if other.first_ts < self.first_ts:
            self.first_ts = other.first_ts
            self.open = other.open
        if other.last_ts >= self.last_ts:
            self.last_ts = other.last_ts
            self.close = other.close
        if other.high > self.high:
            self.high = other.high
        if other.low < self.low:
            self.low = other.low
        self.volume += other.volume
        self.notional += other.notional
        self.buy += other.buy
        self.count += other.count

    def copy(self, start: float, end: float) -> Acc:
        acc = Acc(start, end, self.open)
        acc.first_ts, acc.last_ts = self.first_ts, self.last_ts
        acc.close, acc.high, acc.low = self.close, self.high, self.low
        acc.volume, acc.notional, acc.buy, acc.count = self.volume, self.notional, self.buy, self.count
        return acc


def bucket_values(acc: Acc, flags: int) -> Values:
    """(open, high, low, close, volume, buy_volume, vwap, trade_count, flags); vwap is the close when no volume."""
    vwap = acc.notional / acc.volume if acc.volume > 0.0 else acc.close
    return (acc.open, acc.high, acc.low, acc.close, acc.volume, acc.buy, vwap, acc.count, flags)


def flat_values(close: float, flags: int) -> Values:
    return (close, close, close, close, 0.0, 0.0, close, 0, flags)
