"""DRY_RUN market data: a reproducible random walk per symbol with Poisson trade arrivals.

The generator is pure (``MockMarket.advance(now)`` returns the events due by ``now``); ``MockSource`` is the
thin asyncio loop around it. Events carry their scheduled times, so a busy loop that wakes late still emits
correctly spaced timestamps. At rates above what one wake-up can hold it emits in batches, and if it falls
more than ``MAX_LAG_SECONDS`` behind it skips ahead and says so in the log.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from marketdata.ticks import MarketEvent, PriceUpdate, Trade

log = logging.getLogger(__name__)

MAX_LAG_SECONDS = 1.0
MAX_EVENTS_PER_WAKE = 20_000
MAX_BACKFILL_EVENTS = 20_000
BACKFILL_CHUNK = 500


@dataclass(frozen=True)
class SymbolProfile:
    start_price: float
    tick_size: float
    typical_size: float
    size_step: float
    volatility: float = 4e-4  # per sqrt(second): lively enough to scalp, calm enough to look real


PROFILES: dict[str, SymbolProfile] = {
    "ETH-PERP": SymbolProfile(2500.0, 0.01, 0.8, 0.001),
    "BTC-PERP": SymbolProfile(45000.0, 0.1, 0.05, 0.0001),
    "SUI-PERP": SymbolProfile(3.5, 0.0001, 400.0, 0.1),
    "SOL-PERP": SymbolProfile(150.0, 0.001, 8.0, 0.01),
}
DEFAULT_PROFILE = SymbolProfile(100.0, 0.01, 10.0, 0.01)


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


class _SymbolWalk:
    def __init__(self, symbol: str, profile: SymbolProfile, rng: random.Random) -> None:
        self.symbol = symbol
        self.profile = profile
        self.rng = rng
        self.mid = profile.start_price
        self.price_decimals = _decimals(profile.tick_size)
        self.size_decimals = _decimals(profile.size_step)
        self.session_volume = 0.0
        self.last_time: float | None = None
        self.trade_count = 0

    def move_to(self, when: float) -> None:
        if self.last_time is not None and when > self.last_time:
            step = self.profile.volatility * math.sqrt(when - self.last_time)
            self.mid *= math.exp(self.rng.gauss(0.0, step))
        self.last_time = when

    def round_price(self, price: float) -> float:
        tick = self.profile.tick_size
        return round(round(price / tick) * tick, self.price_decimals)

    def price_update(self, when: float) -> PriceUpdate:
        self.move_to(when)
        volume = round(self.session_volume, self.size_decimals)
        return PriceUpdate(self.symbol, when, self.round_price(self.mid), volume)

    def trade(self, when: float) -> Trade:
        self.move_to(when)
        profile = self.profile
        side = "buy" if self.rng.random() < 0.5 else "sell"
        half_spread = profile.tick_size * self.rng.randint(1, 3) / 2
        price = self.round_price(self.mid + half_spread if side == "buy" else self.mid - half_spread)
        steps = max(1, round(profile.typical_size * self.rng.lognormvariate(0.0, 0.9) / profile.size_step))
        size = round(steps * profile.size_step, self.size_decimals)
        self.session_volume += size
        self.trade_count += 1
        trade_id = f"trade_{int(when * 1000)}_{self.trade_count}"
        return Trade(self.symbol, when, price, size, side, trade_id)


class MockMarket:
    """All symbols' walks and their event schedules. ``advance(now)`` returns events due by ``now``."""

    def __init__(
        self,
        symbols: Iterable[str],
        price_interval: float,
        mean_trade_interval: float,
        seed: int | None,
        start: float,
        last_prices: dict[str, float] | None = None,
    ) -> None:
        base_seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.price_interval = price_interval
        self.mean_trade_interval = mean_trade_interval
        self.walks: list[_SymbolWalk] = []
        self._schedule: list[tuple[float, int, int]] = []  # (due time, walk index, 0=price 1=trade)
        for index, symbol in enumerate(symbols):
            rng = random.Random(base_seed ^ zlib.crc32(symbol.encode()))
            walk = _SymbolWalk(symbol, PROFILES.get(symbol, DEFAULT_PROFILE), rng)
            walk.mid = (last_prices or {}).get(symbol, walk.mid)  # a restart carries on from the last price
            walk.last_time = start
            self.walks.append(walk)
            self._schedule.append((start + price_interval, index, 0))
            self._schedule.append((start + rng.expovariate(1.0 / mean_trade_interval), index, 1))
        heapq.heapify(self._schedule)

    def next_due(self) -> float:
        return self._schedule[0][0]

    def advance(self, now: float, limit: int = MAX_EVENTS_PER_WAKE) -> list[MarketEvent]:
        events: list[MarketEvent] = []
        schedule = self._schedule
        while schedule and schedule[0][0] <= now and len(events) < limit:
            due, index, kind = schedule[0]
            walk = self.walks[index]
            if kind == 0:
                events.append(walk.price_update(due))
                heapq.heapreplace(schedule, (due + self.price_interval, index, 0))
            else:
                events.append(walk.trade(due))
                gap = walk.rng.expovariate(1.0 / self.mean_trade_interval)
                heapq.heapreplace(schedule, (due + gap, index, 1))
        return events

    def skip_to(self, now: float) -> None:
        """Drop the backlog: reschedule everything from ``now`` (used when the loop cannot keep up)."""
        for i, (_due, index, kind) in enumerate(self._schedule):
            self._schedule[i] = (now, index, kind)
        heapq.heapify(self._schedule)
        for walk in self.walks:
            walk.last_time = now


class MockSource:
    """Live mock data; on a first start (no earlier prices) it can first generate ``backfill_seconds`` of history.

    The backfill goes out as ordinary, sequenced messages with their past timestamps, so the ring, the store and
    the candle streams hold history at once and a bot warms up without waiting. ``clock()`` is the source's
    time: the backfill's position while it runs, then the wall clock.
    """

    name = "mock"

    def __init__(
        self,
        symbols: Iterable[str],
        price_interval: float,
        mean_trade_interval: float,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
        last_prices: dict[str, float] | None = None,
        backfill_seconds: float = 0.0,
    ) -> None:
        self._wall_clock = clock
        symbols = list(symbols)
        now = clock()
        # Cap the backfill so fast load-test rates do not turn it into millions of events.
        events_per_second = len(symbols) * (1 / price_interval + 1 / mean_trade_interval)
        self.backfill_seconds = 0.0 if last_prices else min(backfill_seconds, MAX_BACKFILL_EVENTS / events_per_second)
        start = now - self.backfill_seconds
        self._market = MockMarket(symbols, price_interval, mean_trade_interval, seed, start, last_prices)
        self._position: float | None = start if self.backfill_seconds else None
        self.skipped_seconds = 0.0

    def clock(self) -> float:
        return self._position if self._position is not None else self._wall_clock()

    @property
    def event_time(self) -> bool:
        """While backfilling, ticks carry past times: candles must follow them, not the wall clock."""
        return self._position is not None

    async def run(self, publish: Callable[[list[MarketEvent]], None]) -> None:
        market = self._market
        if self._position is not None:
            await self._backfill(publish)
        while True:
            now = self._wall_clock()
            if now - market.next_due() > MAX_LAG_SECONDS:
                lag = now - market.next_due()
                self.skipped_seconds += lag
                log.warning("mock source fell %.2fs behind its schedule; skipping ahead", lag)
                market.skip_to(now)
            events = market.advance(now)
            if events:
                publish(events)
            await asyncio.sleep(max(0.0, market.next_due() - self._wall_clock()))

    async def _backfill(self, publish: Callable[[list[MarketEvent]], None]) -> None:
        market = self._market
        log.info("mock source: generating %.0f s of history before going live", self.backfill_seconds)
        while market.next_due() < self._wall_clock():
            events = market.advance(self._wall_clock(), limit=BACKFILL_CHUNK)
            self._position = events[-1].timestamp if events else self._wall_clock()
            publish(events)
            await asyncio.sleep(0)  # let clients and HTTP requests in between chunks
        self._position = None
