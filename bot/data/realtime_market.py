"""RealtimeMarketDataProvider: one symbol's live ticks, candles and DataFrame, fed by BluefinServiceClient.

The provider owns a client (``provider.client``) and a TickAggregator. Ticks reach the aggregator in stream order
from the client's dispatcher; a clock task moves the aggregator's watermark so candles become final on time even
when no tick arrives. While the WebSocket is down the clock is held, and after a reconnect it stays held until the
replay has caught up (a tick from after the reconnect, or ``catch_up_seconds``), so replayed ticks land in their
candles instead of arriving late; the same while the client repairs a gap over HTTP. Reconnects, gaps that could
not be repaired and interruptions of the service's venue feed are flagged on the candles they fall in. With
``orderbook=True`` the provider also exposes the symbol's L2 book, best bid/ask and spread, as Decimals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from bot.data.tick_aggregator import RealtimeCandle, Tick, TickAggregator
from bot.exchange.bluefin_client import BluefinServiceClient
from bot.types import MarketData
from marketdata.errors import ConfigError, InvalidTick
from marketdata.protocol import normalize_symbol

__all__ = ["MarketData", "RealtimeCandle", "RealtimeMarketDataProvider", "Tick", "TickAggregator"]

log = logging.getLogger(__name__)

DEFAULT_INTERVALS = (1, 5, 15, 60)
_FLOAT_COLUMNS = ("open", "high", "low", "close", "volume", "vwap", "buy_volume", "sell_volume")


def _decimal(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(str(value))


class _Samples:
    """The newest ``size`` values, for percentiles."""

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self.values.append(value)

    def percentiles(self) -> dict[str, float | None]:
        if not self.values:
            return {"p50": None, "p99": None}
        p50, p99 = np.percentile(np.fromiter(self.values, float), [50, 99])
        return {"p50": round(float(p50), 3), "p99": round(float(p99), 3)}


class RealtimeMarketDataProvider:
    def __init__(
        self,
        symbol: str,
        intervals: list[int] | None = None,
        *,
        client: BluefinServiceClient | None = None,
        service_url: str | list[str] | None = None,
        tick_buffer: int = 10_000,
        catch_up_seconds: float = 2.0,
        latency_samples: int = 10_000,
        orderbook: bool = False,
        orderbook_depth: int = 10,
        orderbook_rate: float = 1.0,
        **aggregator_options: Any,
    ) -> None:
        if tick_buffer < 1 or latency_samples < 1 or catch_up_seconds < 0:
            raise ConfigError("tick_buffer and latency_samples must be >= 1, catch_up_seconds >= 0")
        self.symbol = normalize_symbol(symbol)
        self.intervals = sorted(set(intervals if intervals is not None else DEFAULT_INTERVALS))
        # Event time inside (each tick moves the watermark to its own timestamp, so a replay lands in order);
        # the clock task below moves it to wall time while the feed is live.
        self.aggregator = TickAggregator(self.intervals, **aggregator_options)
        self.client = client if client is not None else BluefinServiceClient(service_url)
        self.client.subscribe_to_price_updates(self._on_price)
        self.client.subscribe_to_trades(self._on_trade)
        self.client.subscribe_to_gaps(self._on_gap)
        self.client.subscribe_to_reconnects(self._on_reconnect)
        self.client.subscribe_to_feed_interruptions(self._on_interruption)
        self._book_options: dict[str, Any] = {
            "orderbook": orderbook,
            "orderbook_depth": orderbook_depth,
            "orderbook_rate": orderbook_rate,
        }
        self.aggregator.subscribe_to_candles(self._count_candle)
        self.catch_up_seconds = catch_up_seconds
        self._ticks: deque[Tick] = deque(maxlen=tick_buffer)
        self._clock_task: asyncio.Task[None] | None = None
        self._started = False
        self._catching_up_after: float | None = None  # wall time of the last reconnect, until caught up
        self._reconnects_seen = 0  # reconnect events handled; the client counts them before it delivers them
        self._catch_up_deadline = 0.0
        self._arrivals: deque[float] = deque(maxlen=latency_samples)
        self._local_latency = _Samples(latency_samples)
        self._feed_latency = _Samples(latency_samples)
        self._last_tick_time: float | None = None
        self.stats = {"ticks": 0, "invalid_ticks": 0, "candles_emitted": 0}

    # -- lifecycle ---------------------------------------------------------------------------------------
    async def connect(self) -> bool:
        """Connect and start the clock; False if the service is unreachable (the client keeps retrying)."""
        if not self._started:
            self._started = True
            self._clock_task = asyncio.create_task(self._run_clock(), name=f"candle-clock-{self.symbol}")
        return await self.client.connect_websocket([self.symbol], **self._book_options)

    async def disconnect(self) -> None:
        self._started = False
        await self.client.disconnect_websocket()
        task, self._clock_task = self._clock_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def is_connected(self) -> bool:
        """Started, connected and not catching up on a replay: the data is live."""
        return self._started and self.client.is_websocket_connected() and self._catching_up_after is None

    def is_websocket_connected(self) -> bool:
        return self.client.is_websocket_connected()

    # -- reading -----------------------------------------------------------------------------------------
    def get_current_price(self) -> Decimal | None:
        price = self.client.get_latest_price(self.symbol)
        return None if price is None else Decimal(str(price))

    def get_order_book(self) -> dict[str, Any] | None:
        """The latest book (needs ``orderbook=True``): the client's dict with Decimal ``bids``/``asks`` levels
        ``(price, size)`` best first and Decimal ``best_bid``, ``best_ask``, ``spread``, ``mid``; None before one."""
        book = self.client.get_orderbook(self.symbol)
        if book is None:
            return None
        decimal = {key: _decimal(book[key]) for key in ("best_bid", "best_ask", "spread", "mid")}
        levels = {side: [(_decimal(p), _decimal(q)) for p, q in book[side]] for side in ("bids", "asks")}
        return {**book, **levels, **decimal}

    def get_best_bid_ask(self) -> tuple[Decimal | None, Decimal | None] | None:
        pair = self.client.get_best_bid_ask(self.symbol)
        return None if pair is None else (_decimal(pair[0]), _decimal(pair[1]))

    def get_spread(self) -> Decimal | None:
        return _decimal(self.client.get_spread(self.symbol))

    def get_current_candles(self) -> dict[int, RealtimeCandle]:
        return self.aggregator.get_current_candles(self.symbol)

    def get_candle_history(self, interval_seconds: int, limit: int = 100) -> list[MarketData]:
        return self.aggregator.get_candle_history(self.symbol, interval_seconds, limit)

    def get_recent_ticks(self, limit: int = 100) -> list[Tick]:
        if limit <= 0:
            return []
        ticks = self._ticks
        return list(ticks)[-limit:] if limit < len(ticks) else list(ticks)

    def to_dataframe(self, interval_seconds: int, limit: int = 100) -> pd.DataFrame:
        """Final candles, oldest first: UTC ``DatetimeIndex`` of candle starts; float OHLCV plus the extras."""
        columns = self.aggregator.get_candle_columns(self.symbol, interval_seconds, max(0, limit))
        starts = pd.to_datetime(columns["start"], unit="s", utc=True)
        index = pd.DatetimeIndex(starts, name="timestamp").as_unit("ns")
        data: dict[str, Any] = {name: np.asarray(columns[name], dtype=np.float64) for name in _FLOAT_COLUMNS}
        data["trade_count"] = np.asarray(columns["trade_count"], dtype=np.int64)
        data["late_ticks"] = np.asarray(columns["late_ticks"], dtype=np.int64)
        for flag in ("gap", "reconnect", "filled"):
            data[flag] = np.asarray(columns[flag], dtype=bool)
        return pd.DataFrame(data, index=index)

    def subscribe_to_candles(self, callback: Callable[[Any], Any]) -> None:
        """``callback(candle)`` for every final candle (a ``RealtimeCandle``); sync or async, errors are logged."""
        self.aggregator.subscribe_to_candles(callback)

    def get_performance_stats(self) -> dict[str, Any]:
        status = self.client.get_websocket_status()
        now = time.time()
        arrivals = [t for t in self._arrivals if now - t <= 10.0]
        span = (now - arrivals[0]) if arrivals else 0.0
        return {
            "symbol": self.symbol,
            "intervals": list(self.intervals),
            "tick_rate": round(len(arrivals) / span, 3) if span > 0 else 0.0,
            "ticks_received": self.stats["ticks"],
            "last_tick_time": self._last_tick_time,
            "tick_to_candle_latency_ms": self._local_latency.percentiles(),
            "exchange_to_candle_latency_ms": self._feed_latency.percentiles(),
            "invalid_ticks": self.stats["invalid_ticks"],
            "candles_emitted": self.stats["candles_emitted"],
            **{f"candle_{k}": v for k, v in self.aggregator.stats(self.symbol).items()},
            "websocket_connected": status["connected"],
            "catching_up": self._catching_up_after is not None,
            "reconnects": status["reconnects"],
            "resumes": status["resumes"],
            "gaps": status["gap_count"],
            "gaps_repaired": status["gaps_repaired"],
            "gaps_unrepaired": status["gaps_unrepaired"],
            "messages_repaired": status["messages_repaired"],
            "feed_interruptions": sum(1 for i in status["interruptions"] if i["symbol"] == self.symbol),
            "gap_ranges": [g for g in status["gaps"] if g["symbol"] == self.symbol],
            "messages_received": status["messages_received"],
            "last_message_time": status["last_message_time"],
        }

    # -- the stream (called by the client's dispatcher, in stream order) ---------------------------------
    def _on_price(self, update: dict[str, Any]) -> None:
        if update["symbol"] == self.symbol:
            self._add(update, None)

    def _on_trade(self, trade: dict[str, Any]) -> None:
        if trade["symbol"] == self.symbol:
            self._add(trade, trade)

    def _add(self, payload: dict[str, Any], trade: dict[str, Any] | None) -> None:
        try:
            if trade is None:  # a price update's ``volume`` is the venue's rolling figure, never traded size
                tick = Tick(self.symbol, payload["timestamp"], payload["price"])
            else:
                tick = Tick(
                    self.symbol, trade["timestamp"], trade["price"], trade["size"], trade["side"], trade["trade_id"]
                )
            self.aggregator.add_tick(tick)
        except InvalidTick as exc:
            self.stats["invalid_ticks"] += 1
            log.warning("skipped invalid tick seq %s: %s", payload.get("seq"), exc)
            return
        now = time.time()
        self._local_latency.add((now - payload["received_at"]) * 1000)
        self._feed_latency.add((now - payload["timestamp"]) * 1000)
        self._ticks.append(tick)
        self._arrivals.append(now)
        self._last_tick_time = payload["timestamp"]
        self.stats["ticks"] += 1
        if self._catching_up_after is not None and payload["timestamp"] >= self._catching_up_after:
            self._catching_up_after = None

    def _on_gap(self, gap: dict[str, Any]) -> None:
        if gap["symbol"] != self.symbol:
            return
        for at in {self._last_tick_time or gap["time"], gap["time"]}:
            self.aggregator.mark_gap(self.symbol, at)

    def _on_interruption(self, event: dict[str, Any]) -> None:
        if event["symbol"] == self.symbol:  # as the service flags its own candles: a resync touched only the book
            self.aggregator.mark_gap(self.symbol, event["time"], reconnect=event["kind"] != "resync")

    def _on_reconnect(self, event: dict[str, Any]) -> None:
        self._reconnects_seen += 1
        for at in {event["down_since"] or event["time"], event["time"]}:
            self.aggregator.mark_gap(self.symbol, at, reconnect=True)
        self._catching_up_after = event["time"]
        self._catch_up_deadline = time.monotonic() + self.catch_up_seconds

    # -- clock and candle callbacks ----------------------------------------------------------------------
    async def _run_clock(self) -> None:
        engine = self.aggregator.engine
        while True:
            now = time.time()
            await asyncio.sleep(min(max(engine.next_deadline(now) - now, 0.001), 0.5))
            if not self.client.is_websocket_connected():
                continue  # hold: what the service replays after the reconnect still belongs in these candles
            if self._reconnects_seen < self.client.stats["reconnects"]:
                continue  # reconnected, but its event (which starts the catch-up hold) is still queued for us
            if self.client.is_repairing(self.symbol):
                continue  # the same for what a gap repair fetches over HTTP
            if self._catching_up_after is not None:
                if time.monotonic() < self._catch_up_deadline:
                    continue
                self._catching_up_after = None
            try:
                self.aggregator.advance(time.time())
            except Exception:  # a bug in one candle must not stop the clock
                log.exception("candle clock: advance failed")

    def _count_candle(self, _candle: RealtimeCandle) -> None:
        self.stats["candles_emitted"] += 1
