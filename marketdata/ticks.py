"""Normalized market events: what every source produces and every consumer reads.

Timestamps are the exchange's event time in float seconds since the epoch. Prices and sizes are floats on
the hot path (the wire format is JSON numbers); sources that receive decimal strings parse them once.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Side = Literal["buy", "sell"]


class Trade(msgspec.Struct, frozen=True):
    """One executed trade."""

    symbol: str
    timestamp: float
    price: float
    size: float
    side: Side
    trade_id: str


class PriceUpdate(msgspec.Struct, frozen=True):
    """A new reference price; `volume` is the venue's rolling volume figure, never a traded quantity."""

    symbol: str
    timestamp: float
    price: float
    volume: float


MarketEvent = Trade | PriceUpdate
