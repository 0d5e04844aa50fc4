"""DRY_RUN mock data: reproducible, on tick size, near the issue's prices, Poisson trades.

``MockMarket`` is pure (events due by a given time), so most checks drive it with a fake clock.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from svc_helpers import collect_market, connect

from bluefin_service.sources.mock import DEFAULT_PROFILE, PROFILES, MockMarket
from marketdata.ticks import MarketEvent, PriceUpdate, Trade

START = 1_700_000_000.0
SYMBOLS = ["ETH-PERP", "BTC-PERP", "SUI-PERP", "SOL-PERP", "DOGE-PERP"]
EXPECTED_START = {"ETH-PERP": 2500, "BTC-PERP": 45000, "SUI-PERP": 3.5, "SOL-PERP": 150, "DOGE-PERP": 100}


def run_market(
    seed: int, seconds: float, symbols: list[str] = SYMBOLS, price_interval: float = 1.0, trade_interval: float = 5.0
) -> list[MarketEvent]:
    market = MockMarket(symbols, price_interval, trade_interval, seed, START)
    events: list[MarketEvent] = []
    clock = START
    while clock < START + seconds:
        clock += 7.3  # an uneven fake clock: what is due must not depend on when we ask
        events += market.advance(min(clock, START + seconds), limit=1_000_000)
    return events


def of(events: list[MarketEvent], symbol: str, kind: type) -> list[Any]:
    return [e for e in events if e.symbol == symbol and type(e) is kind]


def test_same_seed_same_path_and_another_seed_another() -> None:
    first, again = run_market(42, 600), run_market(42, 600)
    assert first == again
    assert len(first) > 3000
    other = run_market(43, 600)
    eth_prices = [e.price for e in of(first, "ETH-PERP", PriceUpdate)]
    assert eth_prices != [e.price for e in of(other, "ETH-PERP", PriceUpdate)]


def test_a_symbols_path_does_not_depend_on_the_other_symbols() -> None:
    alone = run_market(42, 300, symbols=["SOL-PERP"])
    together = run_market(42, 300)
    assert of(alone, "SOL-PERP", PriceUpdate) == of(together, "SOL-PERP", PriceUpdate)
    assert of(alone, "SOL-PERP", Trade) == of(together, "SOL-PERP", Trade)


def test_the_clock_granularity_does_not_change_the_events() -> None:
    market = MockMarket(SYMBOLS, 1.0, 5.0, 42, START)
    fine: list[MarketEvent] = []
    for step in range(1, 3001):
        fine += market.advance(START + step * 0.1)
    assert fine == run_market(42, 300)


def test_prices_sit_on_each_symbols_tick_and_start_near_the_issues_figures() -> None:
    events = run_market(7, 3600)
    for symbol in SYMBOLS:
        profile = PROFILES.get(symbol, DEFAULT_PROFILE)
        decimals = max(0, -math.floor(math.log10(profile.tick_size) + 1e-9))
        prices = [e.price for e in events if e.symbol == symbol]
        for price in prices:
            assert round(price, decimals) == price, f"{symbol} {price} has more decimals than tick {profile.tick_size}"
            ticks = price / profile.tick_size
            assert abs(ticks - round(ticks)) < 1e-6, f"{symbol} {price} is off tick {profile.tick_size}"
        updates = of(events, symbol, PriceUpdate)
        assert updates[0].price == pytest.approx(EXPECTED_START[symbol], rel=0.01)
        # A random walk, not a runaway: an hour stays within a believable band, and it does move.
        assert all(abs(p / EXPECTED_START[symbol] - 1) < 0.2 for p in prices)
        assert len(set(prices)) > 20


def test_trades_have_plausible_sizes_sides_prices_and_ids() -> None:
    events = run_market(3, 3600, price_interval=0.5, trade_interval=0.5)
    for symbol in SYMBOLS:
        profile = PROFILES.get(symbol, DEFAULT_PROFILE)
        trades = of(events, symbol, Trade)
        sides = Counter(t.side for t in trades)
        assert set(sides) == {"buy", "sell"}
        assert 0.45 < sides["buy"] / len(trades) < 0.55  # 7000+ fair coin flips (fixed seed)
        sizes = [t.size for t in trades]
        assert min(sizes) >= profile.size_step
        assert all(abs(s / profile.size_step - round(s / profile.size_step)) < 1e-6 for s in sizes)
        assert statistics.median(sizes) == pytest.approx(profile.typical_size, rel=0.3)
        assert max(sizes) < profile.typical_size * 100
        assert len({t.trade_id for t in trades}) == len(trades)
        assert all(t.trade_id.startswith(f"trade_{int(t.timestamp * 1000)}_") for t in trades)
        # Trades print within a few ticks of the current price, buys at or above, sells at or below.
        last_price = None
        for event in (e for e in events if e.symbol == symbol):
            if type(event) is PriceUpdate:
                last_price = event.price
            elif last_price is not None:
                assert abs(event.price - last_price) / last_price < 0.01
        # The price update's volume is the running total of traded size.
        updates = of(events, symbol, PriceUpdate)
        assert updates[-1].volume == pytest.approx(sum(t.size for t in trades if t.timestamp <= updates[-1].timestamp))


def test_price_updates_keep_their_schedule_and_trades_arrive_as_a_poisson_process() -> None:
    seconds, mean_gap = 4000.0, 0.5
    events = run_market(11, seconds, symbols=["ETH-PERP"], price_interval=0.25, trade_interval=mean_gap)
    stamps = [e.timestamp for e in of(events, "ETH-PERP", PriceUpdate)]
    assert len(stamps) == int(seconds / 0.25)
    assert all(b - a == pytest.approx(0.25) for a, b in itertools.pairwise(stamps))
    times = [e.timestamp for e in of(events, "ETH-PERP", Trade)]
    expected = seconds / mean_gap  # 8000; a Poisson count's sd is sqrt(8000) ~ 89
    assert abs(len(times) - expected) < 5 * math.sqrt(expected)
    gaps = [b - a for a, b in zip([START, *times], times, strict=False)]
    assert statistics.fmean(gaps) == pytest.approx(mean_gap, rel=0.06)
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.06)  # exponential gaps
    assert sum(g < mean_gap for g in gaps) / len(gaps) == pytest.approx(1 - math.exp(-1), abs=0.03)


async def test_two_services_with_the_same_seed_stream_the_same_prices(start_service: Any, tmp_path: Path) -> None:
    env = {"MOCK_SEED": "1234", "STREAM_INTERVAL_SECONDS": "0.01", "TRADE_FREQUENCY": "0.03", "SYMBOLS": "BTC-PERP"}
    services = await asyncio.gather(
        *(asyncio.to_thread(start_service, **env, DATA_DIR=str(tmp_path / f"data{i}")) for i in range(2))
    )
    paths = []
    for service in services:
        async with connect(f"{service.ws_url}/ws/BTC-PERP?last_seq=0") as ws:  # from the very first tick
            market = await collect_market(ws, 60)
        paths.append([(m["seq"], m["type"], m["data"]["price"], m["data"].get("size")) for m in market])
        service.stop()
    assert paths[0] == paths[1]
    assert paths[0][0][0] == 1
    assert paths[0][0][2] == pytest.approx(45000, rel=0.01)
