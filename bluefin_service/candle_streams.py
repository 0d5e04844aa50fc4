"""Server-side candles: the client's own engine, run once in the service so every client sees identical candles.

Final candles (and revisions) are sequenced per stream ``SYMBOL@Ns`` (for example ``ETH-PERP@15s``): they go
through the hub like ticks, into that stream's resume ring, so a reconnecting client resumes them without a gap.
Provisional candles carry no ``seq``: each is the newest state of a forming candle, so each subscriber simply
gets the latest one at most ``candle_rate`` times a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from bluefin_service.hub import Connection, Hub
from marketdata.candles import Candle, CandleEngine, to_candle_message
from marketdata.errors import InvalidTick
from marketdata.protocol import encode, stream_key
from marketdata.ticks import MarketEvent, Trade

log = logging.getLogger(__name__)

MAX_CANDLE_RATE = 20.0  # provisional updates per second per subscription
DEFAULT_CANDLE_RATE = 1.0
PUSH_PERIOD = 1.0 / MAX_CANDLE_RATE


class _Subscription:
    __slots__ = ("next_push", "period")

    def __init__(self, rate: float) -> None:
        self.period = 1.0 / rate
        self.next_push = 0.0


class CandleStreams:
    def __init__(self, hub: Hub, symbols: Iterable[str], intervals: Iterable[int], grace: float) -> None:
        self.hub = hub
        self.engine = CandleEngine(intervals, grace=grace)
        self.intervals = self.engine.intervals
        self.rejected_ticks = 0
        self._subscribers: dict[str, dict[Connection, _Subscription]] = {}
        self._changed: set[str] = set()  # symbols with ticks since the last provisional push
        for symbol in symbols:
            for interval in self.intervals:
                hub.ensure_channel(stream_key(symbol, interval))

    # -- input ---------------------------------------------------------------------------------------------
    def on_events(self, events: Iterable[MarketEvent], now: float | None) -> None:
        """Feed ticks; ``now`` moves the watermark first (None: each tick's own time does, for replayed data)."""
        engine = self.engine
        changed = self._changed
        for event in events:
            try:
                if type(event) is Trade:
                    engine.add_trade(
                        event.symbol, event.timestamp, event.price, event.size, event.side == "buy", event.trade_id, now
                    )
                else:
                    engine.add_price(event.symbol, event.timestamp, event.price, now)
            except InvalidTick as exc:
                self.rejected_ticks += 1
                log.warning("candle engine rejected a tick: %s", exc)
                continue
            changed.add(event.symbol)
        self._publish_finals(engine.take_output())

    def mark_gap(self, symbol: str, at: float, reconnect: bool = False) -> None:
        """Flag the candles containing ``at``: the upstream feed had a gap (or reconnected) there."""
        self.engine.mark_gap(symbol, at, reconnect)
        self._publish_finals(self.engine.take_output())

    # -- clock ----------------------------------------------------------------------------------------------
    def next_wakeup(self, now: float) -> float:
        return min(self.engine.next_deadline(now), now + PUSH_PERIOD)

    def on_clock(self, now: float, wall: float | None = None) -> None:
        """``now`` is the source's time (it moves the watermark); ``wall`` paces provisional pushes."""
        self._publish_finals(self.engine.advance(now))
        self._push_provisional(now if wall is None else wall)

    def _publish_finals(self, candles: list[Candle]) -> None:
        for candle in candles:
            self.hub.publish_payload(
                stream_key(candle.symbol, candle.interval),
                lambda seq, c=candle: encode(to_candle_message(c, time.time(), seq)),
            )

    def _push_provisional(self, now: float) -> None:
        if not self._changed:
            return
        changed, self._changed = self._changed, set()
        for symbol in changed:
            current = None
            for interval in self.intervals:
                subscribers = self._subscribers.get(stream_key(symbol, interval))
                if not subscribers:
                    continue
                if current is None:
                    current = self.engine.current(symbol)
                candle = current.get(interval)
                if candle is None:
                    continue
                payload = encode(to_candle_message(candle, now))
                for conn, subscription in list(subscribers.items()):
                    if conn.closed:
                        del subscribers[conn]
                    elif now >= subscription.next_push:
                        subscription.next_push = now + subscription.period
                        self.hub.send(conn, payload)
                    else:
                        self._changed.add(symbol)  # deliver this state once the subscriber's period allows

    # -- subscriptions ------------------------------------------------------------------------------------
    def subscribe(self, conn: Connection, symbol: str, interval: int, rate: float | None) -> None:
        rate = min(MAX_CANDLE_RATE, rate) if rate is not None and rate > 0 else DEFAULT_CANDLE_RATE
        self._subscribers.setdefault(stream_key(symbol, interval), {})[conn] = _Subscription(rate)
        self._changed.add(symbol)

    def unsubscribe(self, conn: Connection, symbol: str) -> list[str]:
        removed = []
        for interval in self.intervals:
            key = stream_key(symbol, interval)
            if self._subscribers.get(key, {}).pop(conn, None) is not None:
                removed.append(key)
        return removed

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
