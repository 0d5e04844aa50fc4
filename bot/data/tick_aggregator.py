"""The guide's ``Tick``, ``RealtimeCandle`` and ``TickAggregator``: a thin layer over ``marketdata.candles``.

Re-exported by ``bot.data.realtime_market`` (the guide's import path).

Time: ``Tick.timestamp`` is the exchange's event time in float seconds since the epoch (a datetime is accepted and
converted). Without a ``clock`` the aggregator runs in *event time*: each tick's own timestamp moves the watermark,
which is what replay and backtests want. Live, pass ``clock=time.time`` and call ``start_clock()`` (or ``advance()``
from your own timer) so candles become final at boundary + grace even when no tick arrives.

Prices are floats inside (the hot path) and ``Decimal`` at the edges, as the guide's ``candle.close`` is.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import numpy as np

from bot.types import MarketData, Tick, to_decimal, utc_datetime
from marketdata.candles import Candle, CandleEngine, to_candle_data
from marketdata.errors import InvalidTick
from marketdata.protocol import CandleData, CandleFlags

log = logging.getLogger("bot.data.realtime_market")

_BUY = "buy"
_SELL = "sell"


class RealtimeCandle:
    """A candle as the guide's callbacks and ``get_current_candles`` see it; ``raw`` holds the float values."""

    __slots__ = ("raw",)

    def __init__(self, raw: Candle) -> None:
        self.raw = raw

    symbol = property(lambda self: self.raw.symbol)
    interval_seconds = property(lambda self: self.raw.interval)
    start = property(lambda self: self.raw.start)
    end = property(lambda self: self.raw.end)
    trade_count = property(lambda self: self.raw.trade_count)
    is_final = property(lambda self: self.raw.final)
    is_complete = is_final
    revision = property(lambda self: self.raw.revision)
    late_ticks = property(lambda self: self.raw.late_ticks)
    gap = property(lambda self: self.raw.gap)
    reconnect = property(lambda self: self.raw.reconnect)
    filled = property(lambda self: self.raw.filled)
    open = property(lambda self: to_decimal(self.raw.open))
    high = property(lambda self: to_decimal(self.raw.high))
    low = property(lambda self: to_decimal(self.raw.low))
    close = property(lambda self: to_decimal(self.raw.close))
    volume = property(lambda self: to_decimal(self.raw.volume))
    vwap = property(lambda self: to_decimal(self.raw.vwap))
    buy_volume = property(lambda self: to_decimal(self.raw.buy_volume))
    sell_volume = property(lambda self: to_decimal(self.raw.sell_volume))

    @property
    def timestamp(self) -> datetime:
        """The candle's start as a UTC datetime (as ``MarketData.timestamp``)."""
        return utc_datetime(self.raw.start)

    @property
    def end_time(self) -> datetime:
        return utc_datetime(self.raw.end)

    @property
    def flags(self) -> CandleFlags:
        return CandleFlags(late_ticks=self.raw.late_ticks, gap=self.raw.gap, reconnect=self.raw.reconnect)

    def to_market_data(self) -> MarketData:
        r = self.raw
        return MarketData(
            r.symbol,
            utc_datetime(r.start),
            to_decimal(r.open),
            to_decimal(r.high),
            to_decimal(r.low),
            to_decimal(r.close),
            to_decimal(r.volume),
        )

    def to_candle_data(self) -> CandleData:
        return to_candle_data(self.raw)

    def __repr__(self) -> str:
        r = self.raw
        state = f"final r{r.revision}" if r.final else "forming"
        return (
            f"RealtimeCandle({r.symbol} {r.interval}s @{r.start} {state} o={r.open} h={r.high} l={r.low}"
            f" c={r.close} v={r.volume} n={r.trade_count})"
        )


CandleCallback = Callable[[RealtimeCandle], Any]


class TickAggregator:
    """Ticks in, candles for several intervals out (see the module docstring for time and clocks)."""

    def __init__(
        self,
        intervals: Sequence[int],
        *,
        clock: Callable[[], float] | None = None,
        grace: float = 0.25,
        history_limit: int = 1000,
        fill_empty: bool = True,
        revisions: bool = False,
        dedupe_size: int = 10_000,
        emit_provisional: bool = False,
        max_pending_callbacks: int = 1000,
    ) -> None:
        self._engine = CandleEngine(
            intervals,
            grace=grace,
            history_limit=history_limit,
            fill_empty=fill_empty,
            revisions=revisions,
            dedupe_size=dedupe_size,
            handler=self._deliver,
        )
        self.intervals = list(self._engine.intervals)
        self._clock = clock
        self._emit_provisional = emit_provisional
        self._callbacks: list[CandleCallback] = []
        self._pending: set[asyncio.Future[Any]] = set()
        self._max_pending = max_pending_callbacks
        self._collected: list[RealtimeCandle] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self.callback_errors = 0
        self.callbacks_dropped = 0
        self._bind_add_tick()

    def _bind_add_tick(self) -> None:
        # In event time with no provisional updates, add_tick *is* the engine's: no wrapper on the hot path.
        if self._clock is None and not self._emit_provisional:
            self.add_tick = self._engine.add_tick  # type: ignore[method-assign]
        else:
            vars(self).pop("add_tick", None)

    @property
    def engine(self) -> CandleEngine:
        return self._engine

    # ------------------------------------------------------------------------------------------- the guide
    def add_tick(self, tick: Tick) -> bool:
        """Add one tick; returns False for a duplicate trade (same ``trade_id``)."""
        clock = self._clock
        accepted = self._engine.add_tick(tick, None if clock is None else clock())
        if self._emit_provisional and accepted and self._callbacks:
            self._deliver(list(self._engine.current(tick.symbol).values()))
        return accepted

    def get_current_candles(self, symbol: str) -> dict[int, RealtimeCandle]:
        """The forming candle of each interval (``is_final`` False)."""
        return {interval: RealtimeCandle(c) for interval, c in self._engine.current(symbol).items()}

    def get_candle_history(self, symbol: str, interval_seconds: int, limit: int = 1000) -> list[MarketData]:
        """The newest ``limit`` final candles, oldest first."""
        cols = self._engine.history(symbol, interval_seconds, limit)
        return [
            MarketData(
                symbol, utc_datetime(t), to_decimal(o), to_decimal(h), to_decimal(lo), to_decimal(c), to_decimal(v)
            )
            for t, o, h, lo, c, v in zip(
                cols["start"].tolist(),
                cols["open"].tolist(),
                cols["high"].tolist(),
                cols["low"].tolist(),
                cols["close"].tolist(),
                cols["volume"].tolist(),
                strict=True,
            )
        ]

    def subscribe_to_candles(self, callback: CandleCallback) -> None:
        """Call ``callback(candle)`` for every final candle (and revision); async callbacks run on the loop."""
        self._callbacks.append(callback)

    def unsubscribe_from_candles(self, callback: CandleCallback) -> None:
        if callback in self._callbacks:
            self._callbacks.remove(callback)

    def force_complete_candles(self, symbol: str) -> list[RealtimeCandle]:
        """Finalize the symbol's forming candles now, each closing at its aligned boundary."""
        return self._collect(self._engine.force_complete, symbol)

    # ------------------------------------------------------------------------------------------- beyond it
    def add_ticks_batch(
        self,
        symbol: str,
        timestamps: Any,
        prices: Any,
        sizes: Any,
        sides: Any,
        trade_ids: Any = None,
    ) -> int:
        """Add many trades as arrays; ``sides`` is a bool array (True = buy) or 'buy'/'sell' strings."""
        is_buy = np.asarray(sides)
        if is_buy.dtype != np.bool_:
            named = is_buy
            is_buy = named == _BUY
            if is_buy.shape != np.shape(timestamps) or not (is_buy | (named == _SELL)).all():
                raise InvalidTick("sides must be a bool array (True = buy) or 'buy'/'sell' strings, one per trade")
        now = None if self._clock is None else self._clock()
        return self._engine.add_trades_batch(symbol, timestamps, prices, sizes, is_buy, trade_ids, now)

    def advance(self, now: float | None = None) -> list[RealtimeCandle]:
        """Finalize every candle whose end + grace has passed at ``now`` (default: the clock)."""
        if now is None:
            now = (self._clock or time.time)()
        return self._collect(self._engine.advance, now)

    def mark_gap(self, symbol: str, at: float | None = None, reconnect: bool = False) -> None:
        """Record that the feed had a gap (or reconnected) at ``at``, on the candles containing it."""
        if at is None:
            at = (self._clock or time.time)()
        self._engine.mark_gap(symbol, at, reconnect)

    def get_candle_columns(self, symbol: str, interval_seconds: int, limit: int | None = None) -> dict[str, Any]:
        """Final candles as numpy columns (start, end, open, ..., vwap, buy_volume, late_ticks, gap, ...)."""
        return self._engine.history(symbol, interval_seconds, limit)

    def stats(self, symbol: str) -> dict[str, int]:
        return {
            **self._engine.stats(symbol),
            "callback_errors": self.callback_errors,
            "callbacks_dropped": self.callbacks_dropped,
        }

    def start_clock(self) -> asyncio.Task[None]:
        """Run ``advance`` at every boundary + grace on the running loop (switches to ``time.time`` if no clock)."""
        if self._clock is None:
            self._clock = time.time
            self._bind_add_tick()
        if self._clock_task is None or self._clock_task.done():
            self._clock_task = asyncio.get_running_loop().create_task(self._run_clock(), name="candle-clock")
        return self._clock_task

    async def stop_clock(self) -> None:
        task, self._clock_task = self._clock_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_clock(self) -> None:
        clock = self._clock or time.time
        while True:
            now = clock()
            wait = self._engine.next_deadline(now) - now
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                self.advance()
            except Exception:  # a broken candle must not stop the clock
                log.exception("candle clock: advance failed")

    # ------------------------------------------------------------------------------------------- callbacks
    def _collect(self, method: Callable[[Any], Any], arg: Any) -> list[RealtimeCandle]:
        """Run an engine call and return the candles it delivered to the callbacks."""
        self._collected = collected = []
        try:
            method(arg)
        finally:
            self._collected = None
        return collected

    def _deliver(self, candles: list[Candle]) -> None:
        """The engine's handler: every final candle (and revision) goes to every callback."""
        wrapped = [RealtimeCandle(c) for c in candles]
        if self._collected is not None:
            self._collected.extend(wrapped)
        for candle in wrapped:
            for callback in self._callbacks:
                try:
                    result = callback(candle)
                except Exception:
                    self.callback_errors += 1
                    log.exception("candle callback %r failed on %r", callback, candle)
                    continue
                if inspect.isawaitable(result):
                    self._schedule(result, callback)

    def _schedule(self, awaitable: Awaitable[Any], callback: CandleCallback) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or len(self._pending) >= self._max_pending:
            self.callbacks_dropped += 1
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            reason = "no running event loop" if loop is None else f"{self._max_pending} callbacks still pending"
            log.warning("async candle callback %r dropped: %s", callback, reason)
            return
        future = asyncio.ensure_future(awaitable)
        self._pending.add(future)
        future.add_done_callback(self._callback_done)

    def _callback_done(self, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if not future.cancelled() and future.exception() is not None:
            self.callback_errors += 1
            log.error("async candle callback failed", exc_info=future.exception())
