"""The bot in event time: ticks in, the live engine's candles, decisions and fills out, with no wall clock.

``EventTimeBot`` is what ``backtest`` runs over recorded ticks, and what ``live --event-time`` drives from the
WebSocket client (bot/live_event_time.py), so the two produce the same candles and trades from the same ticks.
The rules, in one place:

- Time is the ticks' own (exchange event) time: ``SimClock.now`` is the last tick's timestamp. The journal, the
  paper broker, the risk manager's cooldown and daily reset all read that clock.
- Candles come from the same ``TickAggregator`` as live, in event time: a candle is final when a tick at or after
  its end + grace arrives (the aggregator's default grace, as live). The candle holding the first tick is dropped:
  it saw only part of its interval (live drops the candle forming when it connected for the same reason).
- Each final candle goes to the engine at its decision time (end + grace), *before* the tick that finalized it,
  so an entry fills at the last price known at that moment.
- Every tick then marks the position; a touched stop or target is filled at that tick's price before the next
  tick is looked at (the engine's exit order is awaited).
- Data is stale at a decision when the last tick is older than ``RISK__STALE_AFTER_SECONDS``; entries are skipped.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bot.config import BotSettings
from bot.data.tick_aggregator import RealtimeCandle, Tick, TickAggregator
from bot.live import build_engine
from bot.trading.journal import Journal
from marketdata.errors import InvalidTick

MAX_CURVE_POINTS = 20_000
_COLUMNS = ["open", "high", "low", "close", "volume"]


class SimClock:
    """The simulated clock: whatever time the driver last set (the current tick's or decision's time)."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class CandleRow:
    start: float
    open: float
    high: float
    low: float
    close: float
    volume: float


class EquityCurve:
    """(time, equity marked to the last price) at every candle and fill; halves its resolution when full."""

    def __init__(self, limit: int = MAX_CURVE_POINTS) -> None:
        self.limit = limit
        self.step = 1
        self._skipped = 0
        self.points: list[tuple[float, float]] = []

    def add(self, when: float, equity: float) -> None:
        self._skipped += 1
        if self._skipped < self.step:
            return
        self._skipped = 0
        self.points.append((when, equity))
        if len(self.points) >= self.limit:
            self.points = self.points[::2]
            self.step *= 2


class EventTimeBot:
    def __init__(self, settings: BotSettings, journal_path: Path, keep_candles: bool = False) -> None:
        self.settings = settings
        self.symbol = settings.trading.symbol
        self.interval = settings.trading.interval_seconds
        self.stale_after = settings.risk.stale_after_seconds
        self.clock = SimClock()
        self.journal = Journal(journal_path, clock=self.clock, echo=self._record)
        self.engine = build_engine(settings, self.journal, self._price, clock=self.clock)
        self.aggregator = TickAggregator([self.interval], history_limit=settings.trading.history_limit)
        self.aggregator.subscribe_to_candles(self._final)
        self._finals: list[RealtimeCandle] = []
        self._frame: deque[CandleRow] = deque(maxlen=settings.trading.history_limit)
        self.candles: list[CandleRow] | None = [] if keep_candles else None
        self.curve = EquityCurve()
        self.first_tick_at: float | None = None
        self.last_tick_at: float | None = None
        self.last_price: float | None = None
        self.ticks = 0
        self.bad_ticks = 0
        self.candle_count = 0
        self.finished = False

    # ---- inputs ---------------------------------------------------------------------------------------------
    async def on_tick(
        self,
        timestamp: float,
        price: float,
        size: float = 0.0,
        side: str | None = None,
        trade_id: str | None = None,
    ) -> None:
        """One tick in stream order: a trade when ``side`` is given, else a price update."""
        try:
            tick = Tick(self.symbol, timestamp, price, size, side, trade_id or None, is_trade=side is not None)
        except InvalidTick:
            self.bad_ticks += 1
            return
        if self.first_tick_at is None:
            self.first_tick_at = tick.timestamp
            self.clock.now = tick.timestamp
            self.journal.write(
                "bot_started",
                symbol=self.symbol,
                interval=self.settings.trading.interval,
                broker=self.engine.broker.name,
                strategy=self.engine.strategy.name,
                mode="event_time",
                settings=self.settings.model_dump(mode="json"),
            )
        self.aggregator.add_tick(tick)
        finals, self._finals = self._finals, []
        for candle in finals:
            await self._decide(candle)
        self.clock.now = max(self.clock.now, tick.timestamp)
        self.last_tick_at, self.last_price = tick.timestamp, tick.price_float
        self.ticks += 1
        self.engine.on_price(tick.price_float)
        await self.engine.settle()

    async def finish(self) -> dict[str, Any]:
        """End of data: close (or report) the open position, write the summary; returns it."""
        if self.finished:
            return self.engine.stats.as_dict()
        self.finished = True
        engine = self.engine
        await engine.close_or_report("end_of_data", self.settings.trading.close_on_exit and self._price() is not None)
        self._mark()
        summary = engine.stats.as_dict()
        self.journal.write("summary", **summary)
        self.journal.write("bot_stopped")
        self.journal.close()
        return summary

    # ---- the rules ------------------------------------------------------------------------------------------
    def _final(self, candle: RealtimeCandle) -> None:
        self._finals.append(candle)  # decided on right after add_tick, before this tick marks the position

    async def _decide(self, candle: RealtimeCandle) -> None:
        raw = candle.raw
        if raw.interval != self.interval or self.first_tick_at is None or raw.start < self.first_tick_at:
            return
        row = CandleRow(raw.start, raw.open, raw.high, raw.low, raw.close, raw.volume)
        self._frame.append(row)
        if self.candles is not None:
            self.candles.append(row)
        self.candle_count += 1
        self.clock.now = max(self.clock.now, raw.end + self.aggregator.engine.grace)
        stale = self.last_tick_at is None or self.clock.now - self.last_tick_at > self.stale_after
        self.engine.set_stale(f"no ticks for over {self.stale_after:g}s" if stale else None)
        await self.engine.on_candle(self._dataframe())
        self._mark()

    def _dataframe(self) -> pd.DataFrame:
        rows = list(self._frame)
        index = pd.DatetimeIndex(pd.to_datetime([r.start for r in rows], unit="s", utc=True), name="timestamp")
        values = [[r.open, r.high, r.low, r.close, r.volume] for r in rows]
        return pd.DataFrame(values, columns=_COLUMNS, index=index.as_unit("ns"))

    def _price(self) -> float | None:
        """The broker's fill price: the last tick, unless it is older than the staleness limit (simulated time)."""
        if (
            self.last_price is None
            or self.last_tick_at is None
            or self.clock.now - self.last_tick_at > self.stale_after
        ):
            return None
        return self.last_price

    def _mark(self) -> None:
        equity = self.engine.stats.equity + self.engine.positions.unrealized_pnl()
        if math.isfinite(equity):
            self.curve.add(self.clock.now, equity)

    def _record(self, record: dict[str, Any]) -> None:
        if record["event"] == "position_closed":
            self._mark()
