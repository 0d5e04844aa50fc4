"""``python -m bot.main live``: the provider's live candles and ticks driving the trading engine.

The loop wakes on a new candle (or every ``POLL_SECONDS``), checks the feed's health, hands each newly *closed*
candle to the engine, and redraws the status line. Ticks go straight from the client's callbacks to the
position manager, so stops and targets act between candles. The feed going away never stops the loop: entries
pause while data is stale and for one full candle after it returns; open positions stay managed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from bot.config import BotSettings
from bot.indicators.vumanchu import CipherBSettings, VuManChuIndicators
from bot.trading.broker import PaperBroker
from bot.trading.engine import TradingEngine
from bot.trading.journal import Journal
from bot.trading.position import PositionManager
from bot.trading.risk import RiskManager
from bot.trading.strategy import CipherScalpStrategy
from bot.trading.summary import TradeStats
from bot.ui import StatusDisplay, StatusSnapshot, TickRate, websocket_state
from bot.warmup import empty_frame, fetch_history, merge_history, recent_contiguous

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25
MIN_LOOP_SECONDS = 0.05
_ECHOED = {"position_opened", "position_closed", "order_rejected", "trading_halted", "data_state", "fill"}


def provider_intervals(interval_seconds: int) -> list[int]:
    """The guide's ``[interval_seconds, 1, 5]`` for intervals up to a minute (duplicates dropped)."""
    wanted = [interval_seconds, 1, 5] if interval_seconds <= 60 else [interval_seconds]
    return list(dict.fromkeys(wanted))


def closed_candles(df: pd.DataFrame, interval_seconds: int, now: float) -> pd.DataFrame:
    """Rows whose interval has ended (the index is the candle's start)."""
    if not len(df):
        return df
    ends = df.index + pd.Timedelta(seconds=interval_seconds)
    return df[ends <= pd.Timestamp(now, unit="s", tz="UTC")]


def build_engine(
    settings: BotSettings, journal: Journal, price_source: Any, clock: Callable[[], float] = time.time
) -> TradingEngine:
    t, r, p = settings.trading, settings.risk, settings.paper
    indicators = VuManChuIndicators(
        CipherBSettings(wt_channel_len=t.wt_channel_len, wt_average_len=t.wt_average_len, wt_ma_len=t.wt_ma_len)
    )
    return TradingEngine(
        symbol=t.symbol,
        strategy=CipherScalpStrategy(t.entry_level, indicators),
        broker=PaperBroker(price_source, fee_rate=p.fee_rate, slippage_bps=p.slippage_bps, clock=clock),
        positions=PositionManager(t.stop_loss_pct, t.take_profit_pct, t.trailing_stop_pct),
        risk=RiskManager(r.max_position_notional, r.leverage, r.max_daily_loss, t.min_trading_interval_seconds),
        journal=journal,
        stats=TradeStats(r.starting_equity),
        position_notional=t.position_notional,
        position_size=t.position_size,
        max_hold_candles=t.max_hold_candles,
        clock=clock,
    )


class LiveBot:
    def __init__(self, settings: BotSettings, display: StatusDisplay, duration: float | None = None) -> None:
        self.settings = settings
        self.display = display
        self.duration = duration
        self.symbol = settings.trading.symbol
        self.interval = settings.trading.interval_seconds
        self.journal = Journal(settings.journal_path, echo=self._echo)
        self.engine = build_engine(settings, self.journal, self._live_price)
        self.tick_rate = TickRate()
        self.history = empty_frame()
        self.stop = asyncio.Event()
        self.provider: Any = None
        self.last_price: float | None = None
        self.last_tick_at: float | None = None
        self.first_tick_at: float | None = None
        self.last_candle_start: pd.Timestamp | None = None
        self.last_candle_text = "no candle yet"
        self.candles_ready = 0
        self._candle_event = asyncio.Event()
        self._resume_block_until = 0.0
        self._was_live = False
        self.bad_ticks = 0
        self._refetches = 0
        self._next_refetch = 0.0
        self._outage = False

    # ---- callbacks (run inside the client's dispatcher, in stream order) -------------------------------
    def _on_tick(self, payload: dict[str, Any]) -> None:
        price = payload.get("price")
        if not isinstance(price, int | float) or not 0 < price < math.inf:
            self.bad_ticks += 1
            return
        now = time.time()
        self.last_price = float(price)
        self.last_tick_at = now
        if self.first_tick_at is None:
            self.first_tick_at = now
        self.tick_rate.add(now)
        self.engine.on_price(float(price))

    def _on_candle(self, _candle: Any) -> None:
        self._candle_event.set()

    def _live_price(self) -> float | None:
        """The broker's fill price: the last tick, unless it is older than the staleness limit."""
        if self.last_tick_at is None or time.time() - self.last_tick_at > self.settings.risk.stale_after_seconds:
            return None
        return self.last_price

    def _echo(self, record: dict[str, Any]) -> None:
        if record["event"] in _ECHOED:
            fields = " ".join(f"{k}={_short(v)}" for k, v in record.items() if k not in ("ts", "event"))
            self.display.event(f"{record['event']}: {fields}")

    # ---- main loop ----------------------------------------------------------------------------------------
    async def run(self) -> int:
        try:
            from bot.data.realtime_market import RealtimeMarketDataProvider
        except ImportError as exc:
            self.display.event(f"the market data provider is not available: {exc}")
            self.journal.close()
            return 1
        os.environ["EXCHANGE__BLUEFIN_SERVICE_URL"] = self.settings.exchange.bluefin_service_url
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        self.journal.write(
            "bot_started",
            symbol=self.symbol,
            interval=self.settings.trading.interval,
            broker=self.engine.broker.name,
            strategy=self.engine.strategy.name,
            service_url=self.settings.exchange.bluefin_service_url,
            settings=self.settings.model_dump(mode="json"),
        )
        self.provider = RealtimeMarketDataProvider(self.symbol, provider_intervals(self.interval))
        self.provider.client.subscribe_to_price_updates(self._on_tick)
        self.provider.client.subscribe_to_trades(self._on_tick)
        self.provider.subscribe_to_candles(self._on_candle)
        started = time.monotonic()
        try:
            if not await self.provider.connect():
                url = self.settings.exchange.bluefin_service_url
                self.display.event(f"cannot reach the service at {url}; retrying in the background")
            await self._warm_start()
            while not self.stop.is_set():
                if self.duration is not None and time.monotonic() - started >= self.duration:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wait_for_wakeup(), POLL_SECONDS)
                self._candle_event.clear()
                self._check_feed(time.time())
                await self._process_candles(time.time())
                self._refresh()
                await asyncio.sleep(MIN_LOOP_SECONDS)  # candle events can come at tick rate; the loop need not
        finally:
            await self._shutdown()
        return 0

    async def _wait_for_wakeup(self) -> None:
        stop_wait = asyncio.ensure_future(self.stop.wait())
        candle_wait = asyncio.ensure_future(self._candle_event.wait())
        try:
            await asyncio.wait({stop_wait, candle_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            candle_wait.cancel()

    async def _warm_start(self) -> None:
        self.history = await self._fetch_history()
        need = self.engine.strategy.min_candles
        if len(self.history) >= need:
            self.display.event(f"warm start: {len(self.history)} candles of history; indicators ready")
        else:
            wait = (need - len(self.history)) * self.interval
            self.display.event(
                f"warm start: {len(self.history)} candles of history, {need} needed; "
                f"warming up from live candles, ready in about {_duration(wait)}"
            )
        self.journal.write("warm_start", history_candles=len(self.history), needed=need)

    async def _fetch_history(self) -> pd.DataFrame:
        t = self.settings.trading
        url = self.settings.exchange.bluefin_service_url
        history = await fetch_history(url, self.symbol, t.interval, t.history_limit)
        now = time.time()
        return recent_contiguous(closed_candles(history, self.interval, now), self.interval, now)

    def _check_feed(self, now: float) -> None:
        stale_after = self.settings.risk.stale_after_seconds
        connected = bool(self.provider and self.provider.is_websocket_connected())
        if not connected:
            reason: str | None = "no connection to the service"
        elif not self.provider.is_connected():
            reason = "catching up on the replay after a reconnect"
        elif self.last_tick_at is None or now - self.last_tick_at > stale_after:
            reason = "no ticks yet" if self.last_tick_at is None else f"no ticks for over {stale_after:g}s"
        else:
            reason = None
        if reason is not None:
            self._outage = self._outage or self._was_live
        else:
            if self._outage:
                # The candle that spans the outage is incomplete: trust signals again after a whole new candle.
                self._resume_block_until = now + 2 * self.interval
                self._outage = False
            self._was_live = True
            if now < self._resume_block_until:
                reason = "recovering: waiting for a complete candle after the outage"
        self.engine.set_stale(reason)

    async def _process_candles(self, now: float) -> None:
        limit = self.settings.trading.history_limit
        try:
            live = self.provider.to_dataframe(self.interval, limit)
        except Exception:  # the provider is another component: never let it stop the bot
            log.exception("to_dataframe failed")
            return
        live = closed_candles(live, self.interval, now)
        if self.first_tick_at is not None and len(live):
            # The candle forming when we connected saw only part of its ticks.
            live = live[live.index >= pd.Timestamp(self.first_tick_at, unit="s", tz="UTC")]
        if len(self.history) and len(live) and self._history_hole(live):
            await self._refetch_history(now)
        frame = merge_history(self.history, live, limit)
        self.candles_ready = len(frame)
        if not len(frame):
            return
        start = frame.index[-1]
        if self.last_candle_start is not None and start <= self.last_candle_start:
            return
        self.last_candle_start = start
        row = frame.iloc[-1]
        self.last_candle_text = (
            f"candle {start.strftime('%H:%M:%S')} O {row['open']:.2f} H {row['high']:.2f} L {row['low']:.2f} "
            f"C {row['close']:.2f} V {row['volume']:.3f}"
        )
        try:
            await self.engine.on_candle(frame)
        except Exception:
            log.exception("strategy failed on candle %s; skipping it", start)

    def _history_hole(self, live: pd.DataFrame) -> bool:
        """True when candles are missing between the history fetched at start and the first live candle."""
        step = pd.Timedelta(seconds=self.interval)
        return bool(self.history.index[-1] + step < live.index[0] and self._refetches < 3)

    async def _refetch_history(self, now: float) -> None:
        """The candle forming at start-up was final neither in the history nor live: ask the service again."""
        if now < self._next_refetch:
            return
        self._refetches += 1
        self._next_refetch = now + self.interval
        fresh = await self._fetch_history()
        if len(fresh):
            self.history = fresh

    def _refresh(self) -> None:
        now = time.time()
        engine = self.engine
        pos = engine.positions.position
        if pos is None:
            position = "flat"
        else:
            position = (
                f"{pos.side.upper()} {pos.size:g} @ {pos.entry_price:.2f} SL {pos.stop_loss:.2f} "
                f"TP {pos.take_profit:.2f} uPnL {engine.positions.unrealized_pnl():+.2f}"
            )
        stats = engine.stats
        pnl = f"PnL {stats.net_pnl:+.2f} ({stats.trades} trades, win {stats.win_rate:.0%}, fees {stats.fees:.2f})"
        need = engine.strategy.min_candles
        warmup = ""
        if self.candles_ready < need:
            left = _duration((need - self.candles_ready) * self.interval)
            warmup = f"warming up {self.candles_ready}/{need} candles, ready in ~{left}"
        connected = bool(self.provider and self.provider.is_websocket_connected())
        since = None if self.last_tick_at is None else now - self.last_tick_at
        note = engine.risk.halted_reason or engine.stale_reason or engine.last_note
        self.display.update(
            StatusSnapshot(
                symbol=self.symbol,
                interval=self.settings.trading.interval,
                price=self.last_price,
                tick_rate=self.tick_rate.rate(now),
                websocket=websocket_state(connected, since, self.settings.risk.stale_after_seconds),
                last_candle=self.last_candle_text,
                position=position,
                pnl=pnl,
                warmup=warmup,
                note=note or "",
            )
        )

    async def _shutdown(self) -> None:
        engine = self.engine
        pos = engine.positions.position
        can_close = self.settings.trading.close_on_exit and self._live_price() is not None
        if await engine.close_or_report("shutdown", can_close) and pos is not None:
            self.display.event(
                f"OPEN POSITION left: {pos.side} {pos.size:g} {pos.symbol} @ {pos.entry_price:.4f} "
                f"(no live price to close it, or TRADING__CLOSE_ON_EXIT=false)"
            )
        self._refresh()  # the last status line shows the state before disconnecting
        self.display.close()
        if self.provider is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.provider.disconnect(), 5.0)
        summary = engine.stats.as_dict()
        self.journal.write("summary", **summary)
        self.journal.write("bot_stopped")
        self.journal.close()
        self.display.event("stopped. Summary:\n" + engine.stats.format() + f"\nJournal: {self.journal.path}")


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
