"""What the candle engine reads (``FloatTick``) and emits (``Candle``, and its wire form ``CandleData``)."""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from marketdata.candle_acc import Values
from marketdata.candle_history import FILLED, GAP, RECONNECT
from marketdata.protocol import CandleData, CandleFlags, CandleMessage


class FloatTick(Protocol):
    """What ``CandleEngine.add_tick`` reads (the bot's ``Tick`` has these): numbers already checked."""

    symbol: str
    timestamp: float
    price_float: float
    volume_float: float
    side: str | None  # "buy" or "sell" for a trade
    trade_id: Any
    is_trade: bool


class TickValues:
    """A ``FloatTick`` made from plain values (``CandleEngine.add_trade`` / ``add_price``)."""

    __slots__ = ("is_trade", "price_float", "side", "symbol", "timestamp", "trade_id", "volume_float")

    def __init__(self, symbol: str, ts: float, price: float, size: float, side: str | None, tid: Any, trade: bool):
        self.symbol, self.timestamp, self.price_float, self.volume_float = symbol, ts, price, size
        self.side, self.trade_id, self.is_trade = side, tid, trade


class Candle(msgspec.Struct, gc=False):
    """One candle, provisional (``final=False``) or final; ``revision`` > 0 marks a re-emitted final candle."""

    symbol: str
    interval: int
    start: float
    end: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    vwap: float
    buy_volume: float
    sell_volume: float
    final: bool
    late_ticks: int = 0
    gap: bool = False
    reconnect: bool = False
    filled: bool = False
    revision: int = 0


def to_candle_data(candle: Candle) -> CandleData:
    """The wire form of a candle (the ``data`` of a ``candle`` message)."""
    return CandleData(
        interval=candle.interval,
        start=candle.start,
        end=candle.end,
        open=candle.open,
        high=candle.high,
        low=candle.low,
        close=candle.close,
        volume=candle.volume,
        trade_count=candle.trade_count,
        vwap=candle.vwap,
        buy_volume=candle.buy_volume,
        sell_volume=candle.sell_volume,
        final=candle.final,
        flags=CandleFlags(late_ticks=candle.late_ticks, gap=candle.gap, reconnect=candle.reconnect),
    )


def to_candle_message(candle: Candle, timestamp: float, seq: int = 0) -> CandleMessage:
    return CandleMessage(candle.symbol, timestamp, to_candle_data(candle), seq)


def make_candle(
    symbol: str,
    interval: int,
    start: float,
    values: Values,
    final: bool,
    late: int,
    revision: int,
) -> Candle:
    o, h, low, c, vol, buy, vwap, count, flags = values
    return Candle(
        symbol,
        interval,
        start,
        start + interval,
        o,
        h,
        low,
        c,
        vol,
        count,
        vwap,
        buy,
        max(vol - buy, 0.0),
        final,
        late,
        bool(flags & GAP),
        bool(flags & RECONNECT),
        bool(flags & FILLED),
        revision,
    )


def candles_from_columns(symbol: str, interval: int, cols: dict[str, Any]) -> list[Candle]:
    """Final candles from ``CandleHistory.columns()``."""
    names = ("start", "end", "open", "high", "low", "close", "volume", "trade_count", "vwap", "buy_volume")
    names += ("sell_volume",)
    columns = [cols[name].tolist() for name in names]
    flags = [cols[name].tolist() for name in ("late_ticks", "gap", "reconnect", "filled")]
    finals = [True] * len(columns[0])
    return [Candle(symbol, interval, *row) for row in zip(*columns, finals, *flags, strict=True)]
