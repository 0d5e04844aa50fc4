"""Building blocks with TradingView (Pine) semantics, vectorized and O(n).

Conventions shared with Pine v5 and TA-Lib: an EMA / RMA is seeded with the simple mean of its first ``length``
valid values and is NaN before that; RSI and MFI are NaN for the first ``length`` rows. Leading NaNs in an input
(an indicator built on another indicator) shift the seed to the first valid value. Every value at row ``i``
depends only on rows ``<= i``, so appending a candle never changes the past.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _first_valid(values: np.ndarray) -> int | None:
    valid = np.flatnonzero(~np.isnan(values))
    return int(valid[0]) if valid.size else None


def _seeded_ewm(series: pd.Series, length: int, alpha: float) -> pd.Series:
    """Recursive average ``y = alpha*x + (1-alpha)*y[-1]`` seeded with the SMA of the first ``length`` values."""
    values = series.to_numpy(dtype=float)
    out = np.full(values.shape, np.nan)
    start = _first_valid(values)
    if start is None or len(values) - start < length:
        return pd.Series(out, index=series.index)
    seed_at = start + length - 1
    tail = values[seed_at:].copy()
    tail[0] = values[start : seed_at + 1].mean()
    # pandas' ewm(adjust=False) is the same recursion, in C; NaNs inside the tail carry the last value forward.
    out[seed_at:] = pd.Series(tail).ewm(alpha=alpha, adjust=False, ignore_na=True).mean().to_numpy()
    return pd.Series(out, index=series.index)


def ema(series: pd.Series, length: int) -> pd.Series:
    """Exponential moving average, alpha = 2 / (length + 1)."""
    return _seeded_ewm(series, length, 2.0 / (length + 1))


def rma(series: pd.Series, length: int) -> pd.Series:
    """Wilder's moving average (Pine ``rma``), alpha = 1 / length."""
    return _seeded_ewm(series, length, 1.0 / length)


def sma(series: pd.Series, length: int) -> pd.Series:
    return series.rolling(length, min_periods=length).mean()


def highest(series: pd.Series, length: int) -> pd.Series:
    return series.rolling(length, min_periods=length).max()


def lowest(series: pd.Series, length: int) -> pd.Series:
    return series.rolling(length, min_periods=length).min()


def rsi(series: pd.Series, length: int = 14) -> pd.Series:
    """Wilder's RSI: 100 - 100 / (1 + rma(gains) / rma(losses)); 100 when there were no losses."""
    change = series.diff()
    gains = rma(change.clip(lower=0.0), length)
    losses = rma((-change).clip(lower=0.0), length)
    total = gains + losses
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 * gains / total
    # A flat window (no gains, no losses) has no direction: TA-Lib reports 0 there, and so do we.
    return value.where(total != 0, 0.0).where(total.notna())


def mfi(high: pd.Series, low: pd.Series, close: pd.Series, volume: pd.Series, length: int = 14) -> pd.Series:
    """Money Flow Index on hlc3: 100 * positive flow / (positive + negative flow) over ``length`` rows."""
    typical = (high + low + close) / 3.0
    flow = typical * volume
    change = typical.diff()
    positive = flow.where(change > 0, 0.0).where(change.notna())
    negative = flow.where(change < 0, 0.0).where(change.notna())
    pos_sum = positive.rolling(length, min_periods=length).sum()
    neg_sum = negative.rolling(length, min_periods=length).sum()
    total = pos_sum + neg_sum
    with np.errstate(divide="ignore", invalid="ignore"):
        value = 100.0 * pos_sum / total
    return value.where(total != 0, 0.0).where(total.notna())


def stoch(source: pd.Series, high: pd.Series, low: pd.Series, length: int) -> pd.Series:
    """Pine ``stoch``: 100 * (source - lowest(low)) / (highest(high) - lowest(low)); NaN on a zero range."""
    low_n = lowest(low, length)
    span = highest(high, length) - low_n
    return (100.0 * (source - low_n) / span).where(span > 0)


def crossover(a: pd.Series, b: pd.Series) -> pd.Series:
    diff = a - b
    prev = diff.shift(1)
    return (diff > 0) & (prev <= 0)


def crossunder(a: pd.Series, b: pd.Series) -> pd.Series:
    diff = a - b
    prev = diff.shift(1)
    return (diff < 0) & (prev >= 0)


def cross(a: pd.Series, b: pd.Series) -> pd.Series:
    """Pine ``cross``: either series crossed the other on this row."""
    return crossover(a, b) | crossunder(a, b)


def value_when(condition: pd.Series, value: pd.Series) -> pd.Series:
    """Pine ``valuewhen(condition, value, 0)``: ``value`` at the most recent row where ``condition`` held."""
    return value.where(condition.fillna(False).astype(bool)).ffill()
