"""Candle engine benchmark: ticks/s per tick (guide API) and in batch, vs nautilus_trader on the same trades.

    .venv/bin/python bench/aggregator.py [--trades 1000000] [--latency-seconds 20]

nautilus_trader runs in its own interpreter (bench/.venv-nautilus, see docs/benchmarks.md) as a subprocess on the
same trades, saved to a temporary .npz file. Also measured in the same run: a plain ``__slots__`` Python
aggregator (the baseline when nautilus is missing), pandas resample, the candle-final latency after the boundary
on a real asyncio loop, and the memory of 24 h of 1 s candles.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.data.tick_aggregator import RealtimeCandle, Tick, TickAggregator
from marketdata.candles import CandleEngine

INTERVALS = (1, 5, 15, 60)
SYMBOL = "ETH-PERP"
NAUTILUS_PYTHON = Path(__file__).resolve().parent / ".venv-nautilus" / "bin" / "python"
NAUTILUS_SCRIPT = Path(__file__).resolve().parent / "nautilus_bars.py"


def make_trades(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """n trades at ~278/s (1 M trades = 1 hour), a random-walk price with 2 decimals, sizes with 3."""
    rng = np.random.default_rng(seed)
    return {
        "ts": 1_700_000_000 + np.cumsum(rng.exponential(1 / 278, n)),
        "price": np.round(2500 + np.cumsum(rng.normal(0, 0.05, n)), 2),
        "size": np.round(rng.uniform(0.001, 5, n), 3),
        "buy": rng.random(n) < 0.5,
    }


def best_of(runs: int, fn) -> float:  # type: ignore[no-untyped-def]
    results = []
    for _ in range(runs):
        gc.collect()
        results.append(fn())
    return max(results)


def guide_per_tick(trades: dict[str, np.ndarray], with_ids: bool = True) -> float:
    ts, px, sz = trades["ts"].tolist(), trades["price"].tolist(), trades["size"].tolist()
    sides = ["buy" if b else "sell" for b in trades["buy"].tolist()]
    agg = TickAggregator(list(INTERVALS))
    add = agg.add_tick
    start = time.perf_counter()
    if with_ids:
        for i in range(len(ts)):  # the trade id is made per tick, as a decoder would (and as the nautilus run does)
            add(Tick(SYMBOL, ts[i], px[i], sz[i], sides[i], str(i)))
    else:  # no trade_id: nothing to de-duplicate (nautilus does not de-duplicate either)
        for i in range(len(ts)):
            add(Tick(SYMBOL, ts[i], px[i], sz[i], sides[i]))
    return len(ts) / (time.perf_counter() - start)


def batch(trades: dict[str, np.ndarray], chunk: int) -> float:
    agg = TickAggregator(list(INTERVALS))
    n = trades["ts"].size
    start = time.perf_counter()
    for lo in range(0, n, chunk):
        hi = lo + chunk
        chunk_of = {name: column[lo:hi] for name, column in trades.items()}
        agg.add_ticks_batch(SYMBOL, chunk_of["ts"], chunk_of["price"], chunk_of["size"], chunk_of["buy"])
    return n / (time.perf_counter() - start)


class _Bar:
    __slots__ = ("close", "high", "low", "open", "start", "volume")

    def __init__(self, start: float, price: float) -> None:
        self.start = start
        self.open = self.high = self.low = self.close = price
        self.volume = 0.0


def slots_baseline(trades: dict[str, np.ndarray]) -> float:
    """A plain Python aggregator: per interval, close the bar when a tick of a new bucket arrives. No dedupe,
    no watermark, no out-of-order handling: the least a per-tick Python aggregator can do."""
    ts, px, sz = trades["ts"].tolist(), trades["price"].tolist(), trades["size"].tolist()
    bars: list[list[_Bar]] = [[] for _ in INTERVALS]
    current: list[_Bar | None] = [None] * len(INTERVALS)
    start = time.perf_counter()
    for i in range(len(ts)):
        t, p, s = ts[i], px[i], sz[i]
        for k, interval in enumerate(INTERVALS):
            bar = current[k]
            bucket = t - t % interval
            if bar is None or bar.start != bucket:
                if bar is not None:
                    bars[k].append(bar)
                bar = current[k] = _Bar(bucket, p)
            if p > bar.high:
                bar.high = p
            elif p < bar.low:
                bar.low = p
            bar.close = p
            bar.volume += s
    return len(ts) / (time.perf_counter() - start)


def pandas_resample(trades: dict[str, np.ndarray]) -> float:
    start = time.perf_counter()
    df = pd.DataFrame({"price": trades["price"], "size": trades["size"]}, index=pd.to_datetime(trades["ts"], unit="s"))
    for interval in INTERVALS:
        r = df.resample(f"{interval}s", origin="epoch")
        r["price"].ohlc()
        r["size"].sum()
    return trades["ts"].size / (time.perf_counter() - start)


def nautilus(path: Path) -> dict | None:
    if not NAUTILUS_PYTHON.exists():
        return None
    done = subprocess.run(
        [str(NAUTILUS_PYTHON), str(NAUTILUS_SCRIPT), str(path)], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        print("nautilus run failed:\n" + done.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def per_tick_interleaved(trades: dict[str, np.ndarray], runs: int) -> tuple[float, dict | None]:
    """Alternate nautilus and the guide API run by run (the machine is shared): best of each."""
    ours: list[float] = []
    theirs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trades.npz"
        np.savez(path, **trades)
        for _ in range(runs):
            result = nautilus(path)
            if result is not None:
                theirs.append(result)
            gc.collect()
            ours.append(guide_per_tick(trades))
    if not theirs:
        return max(ours), None
    best = {
        key: max((r[key] for r in theirs), key=lambda x: x["ticks_per_s"])
        for key in ("with_tick_build", "prebuilt_ticks")
    }
    return max(ours), best


async def final_latency(seconds: float, symbols: int = 5) -> tuple[list[float], int]:
    """Real clock and loop: ticks every ~2 ms; latency = time the final candle reaches a callback - its end."""
    agg = TickAggregator(list(INTERVALS), clock=time.time, grace=0.25)
    latencies: list[float] = []
    boundaries: set[float] = set()

    def on_candle(candle: RealtimeCandle) -> None:
        if candle.is_final and candle.revision == 0:
            latencies.append(time.time() - candle.end)
            boundaries.add(candle.end)

    agg.subscribe_to_candles(on_candle)
    agg.start_clock()
    deadline = time.time() + seconds
    n = 0
    while time.time() < deadline:
        now = time.time()
        for k in range(symbols):
            agg.add_tick(Tick(f"SYM{k}-PERP", now, 100.0 + (n % 7), 1.0, "buy" if n % 2 else "sell", f"{k}-{n}"))
        n += 1
        await asyncio.sleep(0.002)
    await agg.stop_clock()
    return latencies, len(boundaries)


def memory_24h() -> tuple[int, int]:
    n = 86_400
    rng = np.random.default_rng(5)
    ts = 1_700_000_000 + np.arange(n) + 0.5
    prices = np.round(2500 + np.cumsum(rng.normal(0, 0.5, n)), 2)
    sizes, buys = rng.uniform(0.1, 3, n), rng.random(n) < 0.5
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    engine = CandleEngine([1], history_limit=n)
    engine.add_trades_batch(SYMBOL, ts, prices, sizes, buys)
    engine.advance(float(ts[-1]) + 1)
    engine.take_output()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used, len(engine.history(SYMBOL, 1)["start"])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    args = parser.parse_args()
    trades = make_trades(args.trades)
    print(f"{args.trades:,} trades over {trades['ts'][-1] - trades['ts'][0]:.0f} s, intervals {INTERVALS}")
    print(f"load average at start: {_load()} (2 cores shared: figures move with it)")

    guide, naut = per_tick_interleaved(trades, args.runs)
    baseline = best_of(args.runs, lambda: slots_baseline(trades))
    batch_all = best_of(args.runs, lambda: batch(trades, args.trades))
    batch_10k = best_of(args.runs, lambda: batch(trades, 10_000))
    resample = best_of(args.runs, lambda: pandas_resample(trades))

    no_ids = best_of(args.runs, lambda: guide_per_tick(trades, with_ids=False))
    print(f"load average after the per-tick runs: {_load()}")
    rows = [("guide API per tick (Tick built + add_tick)", guide)]
    rows += [("guide API per tick, trades without trade_id (no dedupe)", no_ids)]
    rows += [("batch, one call of all trades", batch_all), ("batch, chunks of 10,000", batch_10k)]
    rows += [("plain __slots__ Python aggregator (baseline)", baseline), ("pandas resample (reference)", resample)]
    if naut is not None:
        rows += [("nautilus_trader TimeBarAggregator, TradeTick built", naut["with_tick_build"]["ticks_per_s"])]
        rows += [("nautilus_trader TimeBarAggregator, ticks prebuilt", naut["prebuilt_ticks"]["ticks_per_s"])]
    else:
        print("nautilus_trader is not installed in bench/.venv-nautilus: ratios are against the __slots__ baseline")
    reference = naut["with_tick_build"]["ticks_per_s"] if naut is not None else baseline
    print(f"\n| path | ticks/s | vs {'nautilus (TradeTick built)' if naut else '__slots__ baseline'} |")
    print("|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate / 1e6:.3f} M | {rate / reference:.2f}x |")

    latencies, boundaries = asyncio.run(final_latency(args.latency_seconds))
    ms = sorted(x * 1000 for x in latencies)
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(
        f"\nfinal-candle latency after the boundary (grace 250 ms): p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {ms[-1]:.1f} ms over {len(ms)} final candles at {boundaries} boundaries "
        f"(target p99 <= 260 ms: {'met' if p99 <= 260 else 'MISSED'})"
    )
    used, rows_kept = memory_24h()
    print(f"24 h of 1 s candles: {rows_kept:,} candles in {used / 1e6:.2f} MB ({used / rows_kept:.1f} B/candle)")


if __name__ == "__main__":
    main()
