"""Strategy interface and the default VuManChu Cipher scalping strategy.

Rules of ``CipherScalpStrategy`` (evaluated on the last *closed* candle; documented in docs/indicators.md):

- long  when WaveTrend wt1 crosses above wt2 with wt2 <= -entry_level (a scalping "buy dot"; Cipher B's own buy
  dot is the same cross at -53), or on a Cipher B bullish WT divergence;
- short when wt1 crosses below wt2 with wt2 >= +entry_level, or on a bearish WT divergence;
- exit_long  when wt1 crosses below wt2 above zero (momentum rolled over), exit_short mirrored;
- no entry on a Cipher B gold dot (the script's own advice) and none before the indicators are warm.

Stop-loss, take-profit and trailing stop are not decided here: the position manager applies them on every tick.
"""

from __future__ import annotations

from typing import Protocol

import pandas as pd

from bot.indicators.vumanchu import CipherBSettings, VuManChuIndicators
from bot.trading.models import HOLD, Decision


def wavetrend_warmup(settings: CipherBSettings) -> int:
    """Rows before wt2 has a value: two EMAs of the channel length, the average EMA, then the MA (30 by default)."""
    return 2 * settings.wt_channel_len + settings.wt_average_len + settings.wt_ma_len - 3


class Strategy(Protocol):
    name: str
    min_candles: int

    def on_candle(self, df: pd.DataFrame) -> Decision:
        """``df`` holds closed candles, oldest first (open high low close volume). Return what to do now."""
        ...


class CipherScalpStrategy:
    name = "cipher_scalp"

    def __init__(self, entry_level: float = 30.0, indicators: VuManChuIndicators | None = None) -> None:
        self.entry_level = entry_level
        self.indicators = indicators or VuManChuIndicators()
        # One more row than wt2 needs, so that a cross (this row against the previous one) can be seen.
        self.min_candles = wavetrend_warmup(self.indicators.b) + 1

    def on_candle(self, df: pd.DataFrame) -> Decision:
        if len(df) < self.min_candles:
            return HOLD
        data = self.indicators.calculate_cipher_signals(df)
        last = data.iloc[-1]
        if pd.isna(last["wt2"]) or pd.isna(data["wt2"].iloc[-2]):
            return HOLD
        wt1, wt2 = float(last["wt1"]), float(last["wt2"])
        crossed = bool(last["wt_cross"])
        up, down = crossed and wt1 >= wt2, crossed and wt1 <= wt2
        level = self.entry_level
        state = f"wt1={wt1:.1f} wt2={wt2:.1f}"
        if not bool(last["gold_buy"]):
            if up and wt2 <= -level:
                return Decision("long", f"WT cross up at {state} (<= -{level:g})")
            if bool(last["wt_bull_div"]):
                return Decision("long", f"bullish WT divergence, {state}")
        if down and wt2 >= level:
            return Decision("short", f"WT cross down at {state} (>= {level:g})")
        if bool(last["wt_bear_div"]):
            return Decision("short", f"bearish WT divergence, {state}")
        if down and wt2 > 0:
            return Decision("exit_long", f"WT cross down above zero, {state}")
        if up and wt2 < 0:
            return Decision("exit_short", f"WT cross up below zero, {state}")
        return HOLD
