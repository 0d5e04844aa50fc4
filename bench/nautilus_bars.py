"""nautilus_trader's time-bar aggregation on the trades in an .npz file; prints one JSON line of results.

Run by bench/aggregator.py with the bench-only interpreter (bench/.venv-nautilus/bin/python): nautilus-trader
1.221.0 pins pandas 2.x, which the project's venv does not use.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from nautilus_trader.common.component import TestClock
from nautilus_trader.data.aggregation import TimeBarAggregator
from nautilus_trader.model.data import BarType, TradeTick
from nautilus_trader.model.enums import AggressorSide
from nautilus_trader.model.identifiers import TradeId
from nautilus_trader.model.objects import Price, Quantity
from nautilus_trader.test_kit.providers import TestInstrumentProvider

INTERVALS = (1, 5, 15, 60)


def run(path: str, build_ticks: bool) -> dict[str, float]:
    data = np.load(path)
    ts_ns = (data["ts"] * 1e9).astype(np.int64).tolist()
    prices = data["price"].tolist()
    sizes = data["size"].tolist()
    buys = data["buy"].tolist()
    instrument = TestInstrumentProvider.ethusdt_binance()
    iid = instrument.id
    clock = TestClock()
    clock.set_time(ts_ns[0])
    bars: list[object] = []
    aggregators = [
        TimeBarAggregator(instrument, BarType.from_str(f"{iid}-{seconds}-SECOND-LAST-INTERNAL"), bars.append, clock)
        for seconds in INTERVALS
    ]
    pp, sp = instrument.price_precision, instrument.size_precision
    buyer, seller = AggressorSide.BUYER, AggressorSide.SELLER
    n = len(ts_ns)
    prebuilt = None
    if not build_ticks:
        prebuilt = [
            TradeTick(
                iid,
                Price(prices[i], pp),
                Quantity(sizes[i], sp),
                buyer if buys[i] else seller,
                TradeId(str(i)),
                ts_ns[i],
                ts_ns[i],
            )
            for i in range(n)
        ]
    handlers = [a.handle_trade_tick for a in aggregators]
    start = time.perf_counter()
    for i in range(n):
        ts = ts_ns[i]
        for event in clock.advance_time(ts):
            event.handle()
        if prebuilt is None:
            tick = TradeTick(
                iid, Price(prices[i], pp), Quantity(sizes[i], sp), buyer if buys[i] else seller, TradeId(str(i)), ts, ts
            )
        else:
            tick = prebuilt[i]
        for handle in handlers:
            handle(tick)
    elapsed = time.perf_counter() - start
    return {"ticks_per_s": n / elapsed, "seconds": elapsed, "bars": len(bars)}


def main() -> None:
    path = sys.argv[1]
    with_build = run(path, build_ticks=True)
    prebuilt = run(path, build_ticks=False)
    print(json.dumps({"with_tick_build": with_build, "prebuilt_ticks": prebuilt}))


if __name__ == "__main__":
    main()
