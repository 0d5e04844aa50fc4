"""Types shared by the bot's modules, with the guide's names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgspec

from marketdata.errors import InvalidTick

_INF = math.inf
_FLOAT = float
_BUY = "buy"
_SELL = "sell"


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


class _TickFields(msgspec.Struct, gc=False, eq=False):
    # A msgspec Struct is built in C: ~4x cheaper per tick than a Python __init__ (see docs/benchmarks.md).
    # ``Tick`` shadows ``price``/``volume`` with Decimal properties; the floats stay readable as
    # ``price_float``/``volume_float`` (the same slots under a second name, as fast as any attribute).
    symbol: str
    timestamp: float  # a datetime (timezone-aware) is accepted and converted
    price: float  # Decimal, str and int are accepted and converted
    volume: float = 0.0
    side: str | None = None
    trade_id: Any = None
    is_trade: bool | None = None  # None: a trade if it has a side


_PRICE_SLOT = _TickFields.__dict__["price"]
_VOLUME_SLOT = _TickFields.__dict__["volume"]


class Tick(_TickFields, gc=False, eq=False):
    """A trade (``is_trade``; it has a ``side`` and usually a ``trade_id``) or a price update (no volume).

    ``Tick(symbol, timestamp, price, volume=0.0, side=None, trade_id=None, is_trade=None)``; ``timestamp`` is
    the exchange's event time in float seconds (a datetime is converted), ``price``/``volume`` read back as
    Decimal and ``price_float``/``volume_float`` as floats. Bad values raise ``InvalidTick``.
    """

    price_float = _PRICE_SLOT
    volume_float = _VOLUME_SLOT

    def __post_init__(self) -> None:
        price, volume, ts = self.price_float, self.volume_float, self.timestamp
        # the hot path is finite floats and interned "buy"/"sell"; anything else is converted and checked once
        if not (
            type(price) is _FLOAT
            and type(volume) is _FLOAT
            and type(ts) is _FLOAT
            and 0.0 < price < _INF
            and 0.0 <= volume < _INF
            and ts - ts == 0.0
        ):
            self._convert()
        side = self.side
        if self.is_trade is None:
            self.is_trade = side is not None
        if self.is_trade and side is not _BUY and side is not _SELL:
            self.side = _side(side)

    def _convert(self) -> None:
        raw_ts, raw_price, raw_volume = self.timestamp, self.price_float, self.volume_float
        ts, px, qty = _seconds(raw_ts), _number(raw_price, "price"), _number(raw_volume, "volume")
        if not (0.0 < px < _INF and 0.0 <= qty < _INF and ts - ts == 0.0):
            shown = f"timestamp={raw_ts!r} price={raw_price!r} volume={raw_volume!r}"
            raise InvalidTick(f"bad tick for {self.symbol!r}: {shown}")
        self.timestamp = ts
        _PRICE_SLOT.__set__(self, px)
        _VOLUME_SLOT.__set__(self, qty)

    @property  # type: ignore[misc]
    def price(self) -> Decimal:  # type: ignore[override]
        return to_decimal(self.price_float)

    @property  # type: ignore[misc]
    def volume(self) -> Decimal:  # type: ignore[override]
        return to_decimal(self.volume_float)

    size = volume

    @property
    def datetime(self) -> datetime:
        return utc_datetime(self.timestamp)

    def __repr__(self) -> str:
        kind = "trade" if self.is_trade else "price"
        return (
            f"Tick({kind} {self.symbol} @{self.timestamp} price={self.price_float} volume={self.volume_float}"
            f" side={self.side} trade_id={self.trade_id})"
        )


def _side(side: Any) -> str:
    if side == _BUY:
        return _BUY
    if side == _SELL:
        return _SELL
    raise InvalidTick(f"a trade's side must be 'buy' or 'sell', got {side!r}")


def _seconds(timestamp: Any) -> float:
    if isinstance(timestamp, datetime):
        if timestamp.tzinfo is None:
            raise InvalidTick(f"a naive datetime is ambiguous; give a timezone-aware one, got {timestamp!r}")
        return timestamp.timestamp()
    return _number(timestamp, "timestamp")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (float, int, Decimal, str)):
        raise InvalidTick(f"tick {name} must be a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise InvalidTick(f"tick {name} must be a number, got {value!r}") from None
