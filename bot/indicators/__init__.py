"""Technical indicators for the bot: VuManChu Cipher A and B, on vectorized numpy/pandas helpers."""

from bot.indicators.vumanchu import VuManChuIndicators

__all__ = ["VuManChuIndicators"]
