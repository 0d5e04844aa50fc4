"""The trading engine: candles go to the strategy, prices to the position manager, orders to the broker.

No sockets and no clock reads of its own (``clock`` is injected), so live and backtest drive the same object.
Price updates arrive synchronously from the feed; when one touches a stop or target the engine schedules the
exit order once (a second tick while the order is in flight does nothing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pandas as pd

from bot.trading.broker import Broker
from bot.trading.journal import Journal
from bot.trading.models import ClosedTrade, Decision, Fill, OrderRequest, PositionSide, TradingError
from bot.trading.position import PositionManager
from bot.trading.risk import RiskManager
from bot.trading.strategy import Strategy
from bot.trading.summary import TradeStats

log = logging.getLogger(__name__)


class TradingEngine:
    def __init__(
        self,
        symbol: str,
        strategy: Strategy,
        broker: Broker,
        positions: PositionManager,
        risk: RiskManager,
        journal: Journal,
        stats: TradeStats,
        position_notional: float,
        position_size: float | None = None,
        max_hold_candles: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.symbol = symbol
        self.strategy = strategy
        self.broker = broker
        self.positions = positions
        self.risk = risk
        self.journal = journal
        self.stats = stats
        self.position_notional = position_notional
        self.position_size = position_size
        self.max_hold_candles = max_hold_candles
        self.clock = clock
        self.stale_reason: str | None = "waiting for data"
        self.last_decision: Decision | None = None
        self.last_note = ""
        self._busy = asyncio.Lock()
        self._exit_task: asyncio.Task[None] | None = None

    # ---- feed side ------------------------------------------------------------------------------------
    def on_price(self, price: float) -> None:
        """Every price update and trade: mark, trail, and fire an exit the moment a level is touched."""
        reason = self.positions.update_positions(price)
        if reason is None or (self._exit_task is not None and not self._exit_task.done()):
            return
        self._exit_task = asyncio.get_running_loop().create_task(self.close_position(reason, trigger=f"tick {price}"))

    async def settle(self) -> None:
        """Wait for an exit that ``on_price`` fired (event-time runs fill it before the next tick)."""
        task = self._exit_task
        if task is not None and not task.done():
            await task

    def set_stale(self, reason: str | None) -> None:
        if reason != self.stale_reason:
            self.journal.write("data_state", state="stale" if reason else "live", reason=reason or "")
            self.stale_reason = reason

    async def on_candle(self, df: pd.DataFrame) -> Decision:
        decision = self.strategy.on_candle(df)
        self.last_decision = decision
        if decision.signal != "hold":
            self.journal.write("signal", signal=decision.signal, reason=decision.reason, candle=str(df.index[-1]))
        pos = self.positions.position
        if pos is not None:
            pos.candles_held += 1
        async with self._busy:
            pos = self.positions.position
            if pos is not None:
                exit_reason = self._exit_for(decision, pos.side, pos.candles_held)
                if exit_reason:
                    await self._close_locked(exit_reason, trigger="candle")
                return decision
            if decision.signal in ("long", "short"):
                await self._enter_locked(decision.signal, decision.reason)  # type: ignore[arg-type]
        return decision

    def _exit_for(self, decision: Decision, side: PositionSide, held: int) -> str | None:
        opposite = "short" if side == "long" else "long"
        if decision.signal in (opposite, f"exit_{side}"):
            return f"signal: {decision.reason}"
        if self.max_hold_candles and held >= self.max_hold_candles:
            return f"time: held {held} candles"
        return None

    # ---- orders -----------------------------------------------------------------------------------------
    async def _enter_locked(self, side: PositionSide, reason: str) -> None:
        now = self.clock()
        if self.stale_reason:
            self.last_note = f"entry skipped: data stale ({self.stale_reason})"
            self.journal.write("entry_skipped", side=side, reason=self.last_note)
            return
        price = self.positions.last_price
        if price is None:
            self.last_note = "entry skipped: no live price yet"
            return
        size = self.position_size or self.position_notional / price
        verdict = self.risk.check_entry(size, price, self.stats.equity, now)
        if not verdict.allowed:
            self.last_note = f"entry skipped: {verdict.reason}"
            self.journal.write("entry_skipped", side=side, reason=verdict.reason)
            return
        order = OrderRequest(self.symbol, "buy" if side == "long" else "sell", verdict.size, reason)
        fill = await self._submit(order)
        if fill is None:
            return
        self.risk.record_entry(now)
        pos = self.positions.open(side, fill)
        self.last_note = f"opened {side} {fill.size:g} @ {fill.price:.4f}: {reason}"
        self.journal.write(
            "position_opened",
            symbol=pos.symbol,
            side=side,
            size=pos.size,
            entry_price=pos.entry_price,
            stop_loss=pos.stop_loss,
            take_profit=pos.take_profit,
            trailing_pct=pos.trailing_pct,
        )

    async def close_position(self, reason: str, trigger: str = "request") -> ClosedTrade | None:
        async with self._busy:
            return await self._close_locked(reason, trigger)

    async def close_or_report(self, reason: str, can_close: bool) -> bool:
        """At the end (shutdown, end of data): close the open position, or journal it as left open.

        Returns True if a position was left open.
        """
        pos = self.positions.position
        if pos is None:
            return False
        if can_close:
            await self.close_position(reason)
            return False
        self.journal.write(
            "position_left_open",
            symbol=pos.symbol,
            side=pos.side,
            size=pos.size,
            entry_price=pos.entry_price,
            stop_loss=pos.stop_loss,
            take_profit=pos.take_profit,
            unrealized_pnl=self.positions.unrealized_pnl(),
        )
        return True

    async def _close_locked(self, reason: str, trigger: str) -> ClosedTrade | None:
        pos = self.positions.position
        if pos is None:
            return None
        order = OrderRequest(self.symbol, "sell" if pos.side == "long" else "buy", pos.size, reason, reduce_only=True)
        fill = await self._submit(order)
        if fill is None:
            return None
        stop_loss = pos.stop_loss
        trade = self.positions.close(fill, reason)
        self.stats.record(trade)
        self.risk.record_close(trade.net_pnl, fill.timestamp)
        self.last_note = f"closed {trade.side} @ {trade.exit_price:.4f} ({reason}) net {trade.net_pnl:+.4f}"
        self.journal.write(
            "position_closed",
            symbol=trade.symbol,
            side=trade.side,
            size=trade.size,
            entry_price=trade.entry_price,
            exit_price=trade.exit_price,
            gross_pnl=trade.gross_pnl,
            fees=trade.fees,
            net_pnl=trade.net_pnl,
            reason=reason,
            trigger=trigger,
            stop_loss=stop_loss,
            held_seconds=round(trade.closed_at - trade.opened_at, 3),
        )
        if self.risk.halted_reason:
            self.journal.write("trading_halted", reason=self.risk.halted_reason)
        return trade

    async def _submit(self, order: OrderRequest) -> Fill | None:
        self.journal.write(
            "order",
            symbol=order.symbol,
            side=order.side,
            size=order.size,
            type="market",
            reason=order.reason,
            reduce_only=order.reduce_only,
            broker=self.broker.name,
        )
        try:
            fill = await self.broker.submit_market_order(order)
        except TradingError as exc:
            self.last_note = f"order rejected: {exc}"
            self.journal.write("order_rejected", side=order.side, size=order.size, reason=str(exc))
            log.warning("order rejected: %s", exc)
            return None
        self.journal.write(
            "fill",
            order_id=fill.order_id,
            symbol=fill.symbol,
            side=fill.side,
            size=fill.size,
            price=fill.price,
            fee=fill.fee,
            reason=fill.reason,
        )
        return fill
