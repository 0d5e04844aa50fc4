"""Types shared by the bot's modules, with the guide's names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class MarketData:
    """One completed OHLCV candle, as the guide's ``get_candle_history`` returns it (prices in Decimal)."""

    symbol: str
    timestamp: datetime  # the candle's start, timezone-aware UTC
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def to_decimal(value: float) -> Decimal:
    """The shortest decimal that round-trips the float (2500.1 -> Decimal('2500.1'), not its binary expansion)."""
    return Decimal(repr(float(value)))


def utc_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)
