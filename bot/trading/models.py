"""The trading vocabulary: decisions, orders, fills, positions and closed trades."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from marketdata.errors import MarketDataError

PositionSide = Literal["long", "short"]
OrderSide = Literal["buy", "sell"]
Signal = Literal["hold", "long", "short", "exit_long", "exit_short"]


class TradingError(MarketDataError):
    """An order that cannot be placed or filled (no price, broker down, bad size)."""


@dataclass(frozen=True)
class Decision:
    """What a strategy wants after a candle: enter long/short, leave a side, or hold. ``reason`` goes to the journal."""

    signal: Signal = "hold"
    reason: str = ""


HOLD = Decision()


@dataclass(frozen=True)
class OrderRequest:
    symbol: str
    side: OrderSide
    size: float
    reason: str
    reduce_only: bool = False


@dataclass(frozen=True)
class Fill:
    order_id: str
    symbol: str
    side: OrderSide
    size: float
    price: float
    fee: float
    timestamp: float
    reason: str


@dataclass
class Position:
    symbol: str
    side: PositionSide
    size: float
    entry_price: float
    opened_at: float
    stop_loss: float
    take_profit: float
    trailing_pct: float
    entry_fee: float
    best_price: float = field(default=0.0)
    candles_held: int = 0

    def unrealized_pnl(self, price: float) -> float:
        direction = 1.0 if self.side == "long" else -1.0
        return direction * (price - self.entry_price) * self.size


@dataclass(frozen=True)
class ClosedTrade:
    symbol: str
    side: PositionSide
    size: float
    entry_price: float
    exit_price: float
    opened_at: float
    closed_at: float
    gross_pnl: float
    fees: float
    exit_reason: str

    @property
    def net_pnl(self) -> float:
        return self.gross_pnl - self.fees
