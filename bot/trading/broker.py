"""The broker interface, and the paper broker that fills market orders at the live price.

A real exchange broker implements the same ``Broker`` protocol (async, so it may await the venue) and is a
drop-in: the engine only calls ``submit_market_order`` and reads ``name`` / ``is_paper``.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Protocol

from bot.trading.models import Fill, OrderRequest, TradingError


class Broker(Protocol):
    name: str
    is_paper: bool

    async def submit_market_order(self, order: OrderRequest) -> Fill:
        """Execute ``order`` at market; raise TradingError when it cannot be filled."""
        ...


class PaperBroker:
    """Fills at the last live price moved against the taker by ``slippage_bps``; charges ``fee_rate`` on notional."""

    name = "paper"
    is_paper = True

    def __init__(
        self,
        price_source: Callable[[], float | None],
        fee_rate: float = 0.0005,
        slippage_bps: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._price_source = price_source
        self.fee_rate = fee_rate
        self.slippage = slippage_bps / 10_000.0
        self._clock = clock
        self._ids = itertools.count(1)

    async def submit_market_order(self, order: OrderRequest) -> Fill:
        if not order.size > 0:
            raise TradingError(f"order size must be positive, got {order.size!r}")
        price = self._price_source()
        if price is None or not 0 < price < math.inf:
            raise TradingError(f"no live price for {order.symbol}; cannot fill a market order")
        direction = 1.0 if order.side == "buy" else -1.0
        fill_price = price * (1.0 + direction * self.slippage)
        fee = abs(fill_price * order.size) * self.fee_rate
        return Fill(
            order_id=f"paper-{next(self._ids)}",
            symbol=order.symbol,
            side=order.side,
            size=order.size,
            price=fill_price,
            fee=fee,
            timestamp=self._clock(),
            reason=order.reason,
        )
