"""One position per symbol, with stop-loss, take-profit and trailing stop checked on every price."""

from __future__ import annotations

from bot.trading.models import ClosedTrade, Fill, Position, PositionSide


class PositionManager:
    def __init__(self, stop_loss_pct: float, take_profit_pct: float, trailing_stop_pct: float = 0.0) -> None:
        self.stop_loss_pct = stop_loss_pct
        self.take_profit_pct = take_profit_pct
        self.trailing_stop_pct = trailing_stop_pct
        self.position: Position | None = None
        self.last_price: float | None = None

    def open(self, side: PositionSide, fill: Fill) -> Position:
        price = fill.price
        sl, tp = self.stop_loss_pct / 100.0, self.take_profit_pct / 100.0
        if side == "long":
            stop, take = price * (1 - sl), price * (1 + tp)
        else:
            stop, take = price * (1 + sl), price * (1 - tp)
        self.position = Position(
            symbol=fill.symbol,
            side=side,
            size=fill.size,
            entry_price=price,
            opened_at=fill.timestamp,
            stop_loss=stop,
            take_profit=take,
            trailing_pct=self.trailing_stop_pct,
            entry_fee=fill.fee,
            best_price=price,
        )
        return self.position

    def update_positions(self, price: float) -> str | None:
        """Mark to ``price``; move a trailing stop; return the exit reason if a stop or target was touched."""
        self.last_price = price
        pos = self.position
        if pos is None:
            return None
        long = pos.side == "long"
        improved = (long and price > pos.best_price) or (not long and price < pos.best_price)
        if pos.trailing_pct > 0 and improved:
            pos.best_price = price
            distance = pos.trailing_pct / 100.0
            trail = price * (1 - distance) if long else price * (1 + distance)
            if (long and trail > pos.stop_loss) or (not long and trail < pos.stop_loss):
                pos.stop_loss = trail
        if (long and price <= pos.stop_loss) or (not long and price >= pos.stop_loss):
            return "trailing_stop" if pos.trailing_pct > 0 and self._stop_in_profit(pos) else "stop_loss"
        if (long and price >= pos.take_profit) or (not long and price <= pos.take_profit):
            return "take_profit"
        return None

    @staticmethod
    def _stop_in_profit(pos: Position) -> bool:
        return pos.stop_loss > pos.entry_price if pos.side == "long" else pos.stop_loss < pos.entry_price

    def close(self, fill: Fill, reason: str) -> ClosedTrade:
        pos = self.position
        if pos is None:
            raise RuntimeError("close() without an open position")
        self.position = None
        return ClosedTrade(
            symbol=pos.symbol,
            side=pos.side,
            size=pos.size,
            entry_price=pos.entry_price,
            exit_price=fill.price,
            opened_at=pos.opened_at,
            closed_at=fill.timestamp,
            gross_pnl=pos.unrealized_pnl(fill.price),
            fees=pos.entry_fee + fill.fee,
            exit_reason=reason,
        )

    def unrealized_pnl(self) -> float:
        if self.position is None or self.last_price is None:
            return 0.0
        return self.position.unrealized_pnl(self.last_price)
