"""VuManChu Cipher A/B indicators: helpers against TA-Lib, WaveTrend by hand, no look-ahead, garbage input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bot.indicators.core import ema, mfi, rma, rsi, sma
from bot.indicators.vumanchu import CipherBSettings, IndicatorInputError, VuManChuIndicators, wavetrend

talib = pytest.importorskip("talib", reason="TA-Lib is a test dependency: pip install -e '.[test]'")


def walk(n: int, seed: int = 3, step_seconds: int = 15) -> pd.DataFrame:
    """Candles from a 1-second random walk like the mock service's (volatility 4e-4 per sqrt(second))."""
    rng = np.random.default_rng(seed)
    path = 2500 * np.exp(np.cumsum(rng.normal(0, 4e-4, n * step_seconds))).reshape(n, step_seconds)
    index = pd.date_range("2026-01-01", periods=n, freq=f"{step_seconds}s", tz="UTC")
    return pd.DataFrame(
        {
            "open": path[:, 0],
            "high": path.max(axis=1),
            "low": path.min(axis=1),
            "close": path[:, -1],
            "volume": rng.uniform(0.5, 5.0, n),
        },
        index=index,
    )


def assert_same(ours: pd.Series | np.ndarray, reference: np.ndarray) -> None:
    ours = np.asarray(ours, dtype=float)
    assert np.array_equal(np.isnan(ours), np.isnan(reference)), "NaN warm-up rows differ"
    np.testing.assert_allclose(ours[~np.isnan(ours)], reference[~np.isnan(reference)], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("length", [3, 9, 14, 34])
def test_ema_sma_match_talib(length: int) -> None:
    close = walk(300)["close"]
    assert_same(ema(close, length), talib.EMA(close.to_numpy(), timeperiod=length))
    assert_same(sma(close, length), talib.SMA(close.to_numpy(), timeperiod=length))


def test_ema_on_an_indicator_with_a_warm_up_seeds_at_its_first_value() -> None:
    close = walk(200)["close"]
    inner = sma(close, 10)  # NaN for 9 rows
    ours = ema(inner, 12).to_numpy()
    assert np.isnan(ours[: 9 + 11]).all()
    assert_same(ours[9:], talib.EMA(inner.to_numpy()[9:], timeperiod=12))


@pytest.mark.parametrize("length", [2, 14, 21])
def test_rsi_matches_talib(length: int) -> None:
    close = walk(300, seed=5)["close"]
    assert_same(rsi(close, length), talib.RSI(close.to_numpy(), timeperiod=length))


@pytest.mark.parametrize("length", [5, 14, 60])
def test_mfi_matches_talib(length: int) -> None:
    df = walk(300, seed=9)
    ours = mfi(df["high"], df["low"], df["close"], df["volume"], length)
    reference = talib.MFI(*(df[c].to_numpy() for c in ("high", "low", "close", "volume")), timeperiod=length)
    assert_same(ours, reference)


def test_rma_is_wilder_smoothing() -> None:
    values = pd.Series([1.0, 2.0, 3.0, 4.0, 5.0])
    # seed = mean(1, 2, 3) = 2; then y = y + (x - y) / 3: 2 + (4-2)/3 = 8/3; 8/3 + (5 - 8/3)/3 = 31/9
    np.testing.assert_allclose(rma(values, 3).to_numpy()[2:], [2.0, 8 / 3, 31 / 9])


def test_wavetrend_hand_computed_small_case() -> None:
    """channel 2, average 2, MA 2 (EMA alpha 2/3, SMA seeds) on src = 10 12 11 14 13 15, worked out by hand:

    esa = ema(src, 2):           -, 11, 11, 13, 13, 43/3            (seed (10+12)/2; 11 + 2/3*(11-11) ...)
    |src - esa|:                 -, 1, 0, 1, 0, 2/3
    de = ema(|src - esa|, 2):    -, -, 1/2, 5/6, 5/18, 29/54        (seed (1+0)/2)
    ci = (src - esa) / (0.015 de):  -, -, 0, 80, 0, 2400/29
    wt1 = ema(ci, 2):            -, -, -, 40, 40/3, 15560/261       (seed (0+80)/2)
    wt2 = sma(wt1, 2):           -, -, -, -, 80/3, 9520/261
    """
    src = pd.Series([10.0, 12.0, 11.0, 14.0, 13.0, 15.0])
    wt1, wt2 = wavetrend(src, channel_len=2, average_len=2, ma_len=2)
    nan = float("nan")
    np.testing.assert_allclose(wt1.to_numpy(), [nan, nan, nan, 40.0, 40 / 3, 15560 / 261])
    np.testing.assert_allclose(wt2.to_numpy(), [nan, nan, nan, nan, 80 / 3, 9520 / 261])


def loop_wavetrend(src: list[float], ch: int, avg: int, ma: int) -> list[float]:
    """A plain loop, written independently of the vectorized code, for the default parameters."""

    def loop_ema(values: list[float], n: int) -> list[float]:
        out = [float("nan")] * len(values)
        start = next(i for i, v in enumerate(values) if v == v)
        out[start + n - 1] = sum(values[start : start + n]) / n
        for i in range(start + n, len(values)):
            out[i] = out[i - 1] + 2 / (n + 1) * (values[i] - out[i - 1])
        return out

    esa = loop_ema(src, ch)
    de = loop_ema([abs(s - e) for s, e in zip(src, esa, strict=True)], ch)
    ci = [(s - e) / (0.015 * d) for s, e, d in zip(src, esa, de, strict=True)]
    wt1 = loop_ema(ci, avg)
    return [sum(wt1[i - ma + 1 : i + 1]) / ma if i >= ma - 1 else float("nan") for i in range(len(wt1))]


def test_wavetrend_defaults_match_a_plain_loop() -> None:
    df = walk(200, seed=11)
    hlc3 = (df["high"] + df["low"] + df["close"]) / 3
    _, wt2 = wavetrend(hlc3, 9, 12, 3)
    assert_same(wt2, np.array(loop_wavetrend(hlc3.tolist(), 9, 12, 3)))
    assert wt2.first_valid_index() == df.index[29]


def test_no_value_uses_future_rows() -> None:
    df = walk(260, seed=13)
    full = VuManChuIndicators().calculate_cipher_signals(df)
    for cut in (35, 64, 120, 200, 259):
        part = VuManChuIndicators().calculate_cipher_signals(df.iloc[:cut])
        pd.testing.assert_frame_equal(part, full.iloc[:cut], check_exact=False, rtol=1e-9, atol=1e-9)


def test_signal_columns_follow_the_script_definitions() -> None:
    out = VuManChuIndicators().calculate_cipher_signals(walk(1500, seed=17))
    s = CipherBSettings()
    buys, sells = out[out["buy_signal"]], out[out["sell_signal"]]
    assert len(buys) > 5 and len(sells) > 5, "a random walk crosses the bands many times in 1500 candles"
    assert (buys["wt2"] <= s.os_level).all() and (buys["wt1"] >= buys["wt2"]).all()
    assert (sells["wt2"] >= s.ob_level).all() and (sells["wt1"] <= sells["wt2"]).all()
    assert out["stc"].dropna().between(-1e-9, 100 + 1e-9).all()
    assert out["stoch_k"].dropna().between(-1e-9, 100 + 1e-9).all()
    assert out["rsi"].dropna().between(0, 100).all()
    assert set(out["trend"].unique()) <= {-1, 0, 1}
    assert out["gold_buy"].sum() <= out["wt_bull_div"].sum()
    for column in ("wt1", "wt2", "rsi_mfi", "ema1", "ema8", "a_wt1", "long_ema", "red_diamond", "yellow_cross_up"):
        assert column in out.columns


def test_flat_market_gives_zero_wavetrend_not_nan() -> None:
    df = pd.DataFrame({c: [100.0] * 80 for c in ("open", "high", "low", "close")} | {"volume": [1.0] * 80})
    out = VuManChuIndicators().calculate_cipher_signals(df)
    assert out["wt2"].iloc[-1] == 0.0
    assert not out["buy_signal"].any() and not out["sell_signal"].any()


def test_garbage_frames_get_a_clear_error() -> None:
    indicators = VuManChuIndicators()
    with pytest.raises(IndicatorInputError, match="lacks column"):
        indicators.calculate_cipher_signals(pd.DataFrame({"close": [1.0, 2.0]}))
    bad = walk(40).astype(object)
    bad.iloc[5, 3] = "not a price"
    with pytest.raises(IndicatorInputError, match="'close' is not numeric"):
        indicators.calculate_cipher_signals(bad)
    empty = indicators.calculate_cipher_signals(walk(40).iloc[:0])
    assert len(empty) == 0 and "wt2" in empty.columns
    short = indicators.calculate_cipher_signals(walk(3))
    assert short["wt2"].isna().all()


def loop_stc(close: list[float], length: int = 10, fast: int = 23, slow: int = 50, factor: float = 0.5) -> list[float]:
    """The script's f_tc as a bar-by-bar loop (Pine's na/nz rules), on our SMA-seeded EMAs."""
    closes = pd.Series(close)
    macd = (ema(closes, fast) - ema(closes, slow)).tolist()
    nan = float("nan")

    def stage(values: list[float]) -> list[float]:
        out: list[float] = []
        smoothed = nan
        prev_norm = nan
        for i, value in enumerate(values):
            if value != value:
                out.append(nan)
                continue
            window = values[max(0, i - length + 1) : i + 1]
            if len(window) == length and all(v == v for v in window) and max(window) - min(window) > 0:
                norm = (value - min(window)) / (max(window) - min(window)) * 100
            else:
                norm = prev_norm if prev_norm == prev_norm else 0.0  # nz(x[1])
            prev_norm = norm
            smoothed = norm if smoothed != smoothed else smoothed + factor * (norm - smoothed)
            out.append(smoothed)
        return out

    return stage(stage(macd))


def test_schaff_trend_cycle_matches_a_plain_loop() -> None:
    df = walk(220, seed=21)
    out = VuManChuIndicators().calculate_cipher_signals(df)
    assert_same(out["stc"], np.array(loop_stc(df["close"].tolist())))


def loop_bull_divergences(src: list[float], low: list[float], bot_limit: float) -> list[bool]:
    """f_findDivs' bullish branch bar by bar: a bottom fractal two bars back, compared with the previous one."""
    out = [False] * len(src)
    fractal_at: list[int] = []  # bars where a bottom fractal was detected
    for i in range(4, len(src)):
        s = src[i - 4 : i + 1][::-1]  # s[k] = src[i - k]
        if any(v != v for v in s):
            continue
        if s[4] > s[2] and s[3] > s[2] and s[2] < s[1] and s[2] < s[0] and s[2] <= bot_limit:
            # valuewhen(fractalBot, x, 0)[2]: the latest detection at or before bar i - 2
            earlier = [j for j in fractal_at if j <= i - 2]
            if earlier:
                j = earlier[-1]
                out[i] = low[i - 2] < low[j - 2] and s[2] > src[j - 2]
            fractal_at.append(i)
    return out


def test_bullish_divergences_match_a_plain_loop() -> None:
    df = walk(2000, seed=23)
    out = VuManChuIndicators().calculate_cipher_signals(df)
    expected = loop_bull_divergences(out["wt2"].tolist(), df["low"].tolist(), CipherBSettings().wt_div_os_level)
    assert sum(expected) > 3
    assert out["wt_bull_div"].tolist() == expected
