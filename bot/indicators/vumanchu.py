"""VuManChu Cipher A and Cipher B, re-implemented from the formulas of the public TradingView scripts.

"VuManChu Cipher B + Divergences" and "VuManChu Cipher A" (Pine v4, MPL-2.0) are the reference for formulas and
default parameters; ``docs/indicators.md`` writes each one down. Everything is column arithmetic over the whole
frame (O(n)); nothing at row ``i`` reads a row after ``i``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bot.indicators.core import (
    cross,
    crossover,
    crossunder,
    ema,
    highest,
    lowest,
    rsi,
    sma,
    stoch,
    value_when,
)
from marketdata.errors import MarketDataError

REQUIRED_COLUMNS = ("open", "high", "low", "close", "volume")


class IndicatorInputError(MarketDataError):
    """The frame handed to the indicators lacks columns or holds non-numeric data."""


@dataclass(frozen=True)
class CipherBSettings:
    wt_channel_len: int = 9
    wt_average_len: int = 12
    wt_ma_len: int = 3
    ob_level: float = 53
    ob_level2: float = 60
    ob_level3: float = 100
    os_level: float = -53
    os_level2: float = -60
    os_level3: float = -75
    wt_div_ob_level: float = 45
    wt_div_os_level: float = -65
    wt_div_ob_level_add: float = 15
    wt_div_os_level_add: float = -40
    rsi_mfi_period: int = 60
    rsi_mfi_multiplier: float = 150
    rsi_mfi_pos_y: float = 2.5
    rsi_len: int = 14
    stoch_len: int = 14
    stoch_rsi_len: int = 14
    stoch_k_smooth: int = 3
    stoch_d_smooth: int = 3
    stoch_use_log: bool = True
    stoch_avg: bool = False
    tc_length: int = 10
    tc_fast_length: int = 23
    tc_slow_length: int = 50
    tc_factor: float = 0.5


@dataclass(frozen=True)
class CipherASettings:
    wt_channel_len: int = 9
    wt_average_len: int = 13
    wt_ma_len: int = 3
    ob_level3: float = 100
    os_level: float = -53
    os_level3: float = -80
    ema_lengths: tuple[int, ...] = (5, 11, 15, 18, 21, 24, 28, 34)


def wavetrend(src: pd.Series, channel_len: int, average_len: int, ma_len: int) -> tuple[pd.Series, pd.Series]:
    """LazyBear's WaveTrend: wt1 = ema(ci, avg), wt2 = sma(wt1, ma) with ci the channel index of ``src``."""
    esa = ema(src, channel_len)
    deviation = ema((src - esa).abs(), channel_len)
    with np.errstate(divide="ignore", invalid="ignore"):
        ci = (src - esa) / (0.015 * deviation)
    # A perfectly flat market has zero deviation; the script would produce NaN forever after, we read it as 0.
    ci = ci.where(deviation != 0, 0.0).where(deviation.notna())
    wt1 = ema(ci, average_len)
    return wt1, sma(wt1, ma_len)


def rsi_mfi_area(df: pd.DataFrame, period: int, multiplier: float, pos_y: float) -> pd.Series:
    """The script's "RSI+MFI area": sma((close - open) / (high - low) * multiplier, period) - pos_y."""
    span = df["high"] - df["low"]
    with np.errstate(divide="ignore", invalid="ignore"):
        body = (df["close"] - df["open"]) / span * multiplier
    return sma(body.where(span != 0, 0.0), period) - pos_y


def stoch_rsi(close: pd.Series, s: CipherBSettings) -> tuple[pd.Series, pd.Series]:
    src = np.log(close) if s.stoch_use_log else close
    rsi_values = rsi(src, s.stoch_rsi_len)
    k = sma(stoch(rsi_values, rsi_values, rsi_values, s.stoch_len), s.stoch_k_smooth)
    d = sma(k, s.stoch_d_smooth)
    return ((k + d) / 2 if s.stoch_avg else k), d


def _smooth_from_first(values: pd.Series, factor: float) -> pd.Series:
    """``x := na(x[1]) ? x : x[1] + factor * (x - x[1])``: an EMA with alpha=factor seeded with the first value."""
    return values.ewm(alpha=factor, adjust=False, ignore_na=True).mean().where(values.notna().cummax())


def _normalize(values: pd.Series, length: int) -> pd.Series:
    """100 * position of ``values`` in its ``length``-row range; where the range is 0, the previous result (or 0)."""
    low = lowest(values, length)
    span = highest(values, length) - low
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = 100.0 * (values - low) / span
    started = values.notna().cummax()
    return scaled.where(span > 0).ffill().fillna(0.0).where(started)


def schaff_trend_cycle(close: pd.Series, s: CipherBSettings) -> pd.Series:
    macd = ema(close, s.tc_fast_length) - ema(close, s.tc_slow_length)
    delta = _smooth_from_first(_normalize(macd, s.tc_length), s.tc_factor)
    return _smooth_from_first(_normalize(delta, s.tc_length), s.tc_factor)


def find_divergences(
    src: pd.Series, df: pd.DataFrame, top_limit: float, bot_limit: float, use_limits: bool
) -> dict[str, pd.Series]:
    """The script's ``f_findDivs``: 5-bar fractals on ``src`` compared with the previous fractal and with price.

    A fractal peaks two rows back and is known on the current row, so the signal lands two rows after the peak.
    """
    s0, s1, s2, s3, s4 = (src.shift(k) for k in range(5))
    top = (s4 < s2) & (s3 < s2) & (s2 > s1) & (s2 > s0)
    bot = (s4 > s2) & (s3 > s2) & (s2 < s1) & (s2 < s0)
    if use_limits:
        top &= s2 >= top_limit
        bot &= s2 <= bot_limit
    high2, low2 = df["high"].shift(2), df["low"].shift(2)
    high_prev = value_when(top, s2).shift(2)
    high_price = value_when(top, high2).shift(2)
    low_prev = value_when(bot, s2).shift(2)
    low_price = value_when(bot, low2).shift(2)
    return {
        "top": top,
        "bot": bot,
        "low_prev": low_prev,
        "bear": top & (high2 > high_price) & (s2 < high_prev),
        "bull": bot & (low2 < low_price) & (s2 > low_prev),
        "bear_hidden": top & (high2 < high_price) & (s2 > high_prev),
        "bull_hidden": bot & (low2 > low_price) & (s2 < low_prev),
    }


class VuManChuIndicators:
    """``calculate_cipher_signals(df)`` adds the Cipher B and Cipher A columns to an OHLCV frame."""

    def __init__(self, cipher_b: CipherBSettings | None = None, cipher_a: CipherASettings | None = None) -> None:
        self.b = cipher_b or CipherBSettings()
        self.a = cipher_a or CipherASettings()

    def calculate_cipher_signals(self, df: pd.DataFrame) -> pd.DataFrame:
        base = _checked_copy(df)
        columns: dict[str, pd.Series] = {}
        self._cipher_b(base, columns)
        self._cipher_a(base, columns)
        # One concat instead of ~50 column inserts: inserting columns one by one dominates the run time.
        added = pd.DataFrame(columns, index=base.index)
        return pd.concat([base.drop(columns=[c for c in columns if c in base.columns]), added], axis=1)

    def _cipher_b(self, df: pd.DataFrame, out: dict[str, pd.Series]) -> None:
        s = self.b
        hlc3 = (df["high"] + df["low"] + df["close"]) / 3.0
        wt1, wt2 = wavetrend(hlc3, s.wt_channel_len, s.wt_average_len, s.wt_ma_len)
        out["wt1"], out["wt2"] = wt1, wt2
        out["wt_vwap"] = wt1 - wt2
        out["rsi"] = rsi(df["close"], s.rsi_len)
        out["rsi_mfi"] = rsi_mfi_area(df, s.rsi_mfi_period, s.rsi_mfi_multiplier, s.rsi_mfi_pos_y)
        out["stoch_k"], out["stoch_d"] = stoch_rsi(df["close"], s)
        out["stc"] = schaff_trend_cycle(df["close"], s)

        wt_cross = cross(wt1, wt2)
        cross_up = (wt2 - wt1) <= 0
        cross_down = (wt2 - wt1) >= 0
        out["wt_cross"] = wt_cross
        out["wt_oversold"] = wt2 <= s.os_level
        out["wt_overbought"] = wt2 >= s.ob_level
        out["buy_signal"] = wt_cross & cross_up & out["wt_oversold"]
        out["sell_signal"] = wt_cross & cross_down & out["wt_overbought"]

        main = find_divergences(wt2, df, s.wt_div_ob_level, s.wt_div_os_level, True)
        extra = find_divergences(wt2, df, s.wt_div_ob_level_add, s.wt_div_os_level_add, True)
        out["wt_bull_div"] = main["bull"]
        out["wt_bear_div"] = main["bear"]
        out["buy_signal_div"] = main["bull"] | extra["bull"]
        out["sell_signal_div"] = main["bear"] | extra["bear"]
        last_rsi = value_when(main["bot"], out["rsi"].shift(2)).shift(2)
        low_prev = main["low_prev"]
        out["gold_buy"] = (
            main["bull"] & (low_prev <= s.os_level3) & (wt2 > s.os_level3) & (low_prev - wt2 <= -5) & (last_rsi < 30)
        )

    def _cipher_a(self, df: pd.DataFrame, out: dict[str, pd.Series]) -> None:
        s = self.a
        close, open_ = df["close"], df["open"]
        ribbon = [ema(close, length) for length in s.ema_lengths]
        for number, line in enumerate(ribbon, start=1):
            out[f"ema{number}"] = line
        ema1, ema2, ema3, ema8 = ribbon[0], ribbon[1], ribbon[2], ribbon[7]
        hlc3 = (df["high"] + df["low"] + close) / 3.0
        wt1, wt2 = wavetrend(hlc3, s.wt_channel_len, s.wt_average_len, s.wt_ma_len)
        out["a_wt1"], out["a_wt2"] = wt1, wt2
        green_cross_wt, red_cross_wt = cross(wt1, wt2), cross(wt2, wt1)
        wt_up, wt_down = (wt2 - wt1) <= 0, (wt2 - wt1) >= 0
        rsi_values = out["rsi"]

        trend = np.where(ema8.isna() | ema2.isna(), 0, np.where(ema8 < ema2, 1, -1))
        out["trend"] = pd.Series(trend, index=df.index)
        out["long_ema"] = crossover(ema2, ema8)
        out["short_ema"] = crossover(ema8, ema2)
        out["red_cross"] = crossunder(ema1, ema2)
        out["green_cross"] = crossunder(ema2, ema1)
        out["blue_triangle_up"] = crossover(ema2, ema3)
        out["blue_triangle_down"] = crossover(ema3, ema2)
        out["red_diamond"] = green_cross_wt & wt_down
        out["green_diamond"] = red_cross_wt & wt_up
        out["yellow_cross_up"] = (
            out["red_diamond"] & (wt2 < 45) & (wt2 > s.os_level3) & (rsi_values < 30) & (rsi_values > 15)
        )
        # The script reads "rsi < 70 and rsi < 85" here; kept as written (see docs/indicators.md).
        out["yellow_cross_down"] = out["green_diamond"] & (wt2 > 55) & (wt2 < s.ob_level3) & (rsi_values < 70)
        out["dump_diamond"] = out["red_diamond"] & out["red_cross"]
        out["moon_diamond"] = out["green_diamond"] & out["green_cross"]
        prev_green = close.shift(1) > open_.shift(1)
        prev_red = close.shift(1) < open_.shift(1)
        out["bull_candle"] = (
            (open_ > ema2) & (open_ > ema8) & prev_green & (close > open_) & ~out["red_diamond"] & ~out["red_cross"]
        )
        out["bear_candle"] = (
            (open_ < ema2) & (open_ < ema8) & prev_red & (close < open_) & ~out["green_diamond"] & ~out["red_cross"]
        )


def _checked_copy(df: pd.DataFrame) -> pd.DataFrame:
    missing = [column for column in REQUIRED_COLUMNS if column not in df.columns]
    if missing:
        raise IndicatorInputError(f"indicator input lacks column(s) {', '.join(missing)}; needs {REQUIRED_COLUMNS}")
    out = df.copy()
    for column in REQUIRED_COLUMNS:
        try:
            out[column] = pd.to_numeric(out[column], errors="raise").astype(float)
        except (TypeError, ValueError) as exc:
            raise IndicatorInputError(f"indicator column {column!r} is not numeric: {exc}") from None
    return out
