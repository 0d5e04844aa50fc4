"""Risk manager: position size and leverage caps, daily loss limit (halts entries), entry cooldown."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class RiskVerdict:
    allowed: bool
    size: float = 0.0
    reason: str = ""


class RiskManager:
    def __init__(
        self,
        max_position_notional: float,
        leverage: float,
        max_daily_loss: float,
        cooldown_seconds: float,
    ) -> None:
        self.max_position_notional = max_position_notional
        self.leverage = leverage
        self.max_daily_loss = max_daily_loss
        self.cooldown_seconds = cooldown_seconds
        self.last_entry_at: float | None = None
        self._day: dt.date | None = None
        self.daily_pnl = 0.0
        self.halted_reason: str | None = None

    def check_entry(self, size: float, price: float, equity: float, now: float) -> RiskVerdict:
        """Size an entry within the caps, or say why there is none."""
        self._roll_day(now)
        if self.halted_reason:
            return RiskVerdict(False, reason=self.halted_reason)
        if self.last_entry_at is not None and now - self.last_entry_at < self.cooldown_seconds:
            wait = self.cooldown_seconds - (now - self.last_entry_at)
            return RiskVerdict(False, reason=f"cooldown: {wait:.1f}s until the next entry")
        if equity <= 0:
            return RiskVerdict(False, reason="no equity left")
        by_leverage = equity * self.leverage / price
        allowed = min(size, self.max_position_notional / price, by_leverage)
        if allowed <= 0:
            return RiskVerdict(False, reason="position size rounds to zero")
        note = "" if allowed == size else f"size capped from {size:.6g} to {allowed:.6g}"
        return RiskVerdict(True, allowed, note)

    def record_entry(self, now: float) -> None:
        self.last_entry_at = now

    def record_close(self, net_pnl: float, now: float) -> None:
        self._roll_day(now)
        self.daily_pnl += net_pnl
        if self.daily_pnl <= -self.max_daily_loss and not self.halted_reason:
            loss, limit = -self.daily_pnl, self.max_daily_loss
            self.halted_reason = f"daily loss {loss:.2f} reached the limit {limit:.2f}; no entries until UTC midnight"

    def _roll_day(self, now: float) -> None:
        day = dt.datetime.fromtimestamp(now, dt.UTC).date()
        if day != self._day:
            self._day = day
            self.daily_pnl = 0.0
            self.halted_reason = None
