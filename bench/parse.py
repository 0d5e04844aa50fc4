"""Venue frames parsed into normalized ticks per second, and book deltas applied per second, vs cryptofeed.

    .venv/bin/python bench/parse.py [--n 100000]

Both sides get the same generated frames, in each venue's documented format (Binance in its combined-stream
wrapper, which is what cryptofeed subscribes to). Ours runs in the project venv; cryptofeed (PyPI, bench-only)
runs the same workloads in ``bench/.venv-cryptofeed`` via ``--cryptofeed`` and reports back as JSON; each of its
feeds' ``message_handler`` is called directly with a no-op callback, its books pre-seeded (no network).
Bluefin has no cryptofeed connector, so its figures are ours alone. One core, one process per side.

Workloads: ``*_trades`` = one trade per frame; ``*_book`` = depth frames of 10 level changes each on a
~1,000-level book, through the full path (parse, sequence check, apply); ``book_apply`` = ``OrderBook.apply``
alone. "deltas" are price-level changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CRYPTOFEED_PYTHON = HERE / ".venv-cryptofeed" / "bin" / "python"
LEVELS_PER_FRAME = 10
ROUNDS = 2  # ours and cryptofeed alternate this many times; each keeps its best (the machine is shared)


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))  # compact, as the venues send it


# -- frames (stdlib only: the cryptofeed side imports nothing of ours) ------------------------------------------
def _px(ticks: int) -> str:
    return f"{ticks // 100}.{ticks % 100:02d}"


def _book_levels(rng: random.Random) -> tuple[list[list[str]], list[list[str]]]:
    bids = [[_px(250_000 - i), str(rng.randint(1, 500))] for i in range(1, 500)]
    asks = [[_px(250_000 + i), str(rng.randint(1, 500))] for i in range(1, 500)]
    return bids, asks


def _changes(rng: random.Random) -> tuple[list[list[str]], list[list[str]]]:
    bids, asks = [], []
    for _ in range(LEVELS_PER_FRAME):
        size = "0" if rng.random() < 0.2 else str(rng.randint(1, 500))
        if rng.random() < 0.5:
            bids.append([_px(250_000 - rng.randint(1, 600)), size])
        else:
            asks.append([_px(250_000 + rng.randint(1, 600)), size])
    return bids, asks


def make_frames(n: int, seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    frames: dict[str, Any] = {"snapshot": _book_levels(rng), "first_id": 1000}
    binance_trades, okx_trades, bluefin_trades = [], [], []
    for i in range(n):
        price, qty, ms = (
            _px(250_000 + rng.randint(-50, 50)),
            f"{rng.randint(1, 9999) / 1000:.3f}",
            1_764_000_000_000 + i,
        )
        buy = rng.random() < 0.5
        agg = {"e": "aggTrade", "E": ms + 1, "s": "ETHUSDT", "a": 5_000_000 + i, "p": price, "q": qty, "nq": qty,
               "f": 100 + i, "l": 100 + i, "T": ms, "m": not buy}  # fmt: skip
        binance_trades.append(_dump({"stream": "ethusdt@aggTrade", "data": agg}))
        item = {"instId": "ETH-USDT-SWAP", "tradeId": str(9_000_000 + i), "px": price, "sz": str(rng.randint(1, 99)),
                "side": "buy" if buy else "sell", "ts": str(ms), "count": "1", "seqId": i}  # fmt: skip
        okx_trades.append(_dump({"arg": {"channel": "trades", "instId": "ETH-USDT-SWAP"}, "data": [item]}))
        e9_price = str(int(price.replace(".", "")) * 10_000_000)
        trade = {"id": str(i), "symbol": "ETH-PERP", "side": "LONG" if buy else "SHORT", "tradeType": "ORDER",
                 "priceE9": e9_price, "quantityE9": str(int(float(qty) * 1000) * 1_000_000),
                 "quoteQuantityE9": "0", "executedAtMillis": ms}  # fmt: skip
        bluefin_trades.append(_dump({"event": "RecentTradesUpdates", "payload": {"trades": [trade]}}))
    frames.update(binance_trades=binance_trades, okx_trades=okx_trades, bluefin_trades=bluefin_trades)
    books = max(1, n // 4)
    binance_book, okx_book, deltas = [], [], []
    prev = frames["first_id"] - 1
    for i in range(books):
        bids, asks = _changes(rng)
        deltas.append((bids, asks))
        last = prev + 2
        binance_book.append(_dump({"stream": "ethusdt@depth@100ms", "data": {
            "e": "depthUpdate", "E": 1_764_000_000_000 + i, "T": 1_764_000_000_000 + i, "s": "ETHUSDT",
            "U": prev + 1, "u": last, "pu": prev, "b": bids, "a": asks}}))  # fmt: skip
        data = {"asks": [[p, s, "0", "1"] for p, s in asks], "bids": [[p, s, "0", "1"] for p, s in bids],
                "ts": str(1_764_000_000_000 + i), "checksum": 0, "prevSeqId": prev, "seqId": last}  # fmt: skip
        okx_book.append(_dump({"arg": {"channel": "books", "instId": "ETH-USDT-SWAP"}, "action": "update",
                                    "data": [data]}))  # fmt: skip
        prev = last
    snap_bids, snap_asks = frames["snapshot"]
    okx_snapshot = {"asks": [[p, s, "0", "1"] for p, s in snap_asks], "bids": [[p, s, "0", "1"] for p, s in snap_bids],
                    "ts": "1764000000000", "checksum": 0, "prevSeqId": -1, "seqId": frames["first_id"] - 1}  # fmt: skip
    frames["okx_snapshot"] = _dump(
        {"arg": {"channel": "books", "instId": "ETH-USDT-SWAP"}, "action": "snapshot", "data": [okx_snapshot]}
    )
    frames.update(binance_book=binance_book, okx_book=okx_book, deltas=deltas)
    return frames


def timed(run: Callable[[], int]) -> tuple[float, int]:
    best, count = float("inf"), 0
    for _ in range(3):  # best of three: the machine is shared
        start = time.perf_counter()
        count = run()
        best = min(best, time.perf_counter() - start)
    return best, count


# -- ours ----------------------------------------------------------------------------------------------------
def bench_ours(frames: dict[str, Any]) -> dict[str, float]:
    sys.path.insert(0, str(HERE.parent))
    from decimal import Decimal

    from marketdata.book import DiffSync, OrderBook
    from marketdata.venues import binance, bluefin, okx

    results: dict[str, float] = {}
    parsers = {
        "binance_trades": binance.BinanceParser({"ETHUSDT": "ETH-PERP"}),
        "okx_trades": okx.OkxParser({"ETH-USDT-SWAP": "ETH-PERP"}, {"ETH-USDT-SWAP": Decimal("0.1")}),
        "bluefin_trades": bluefin.BluefinParser({"ETH-PERP": "ETH-PERP"}),
    }
    for name, parser in parsers.items():
        batch = frames[name]

        def run(parse: Any = parser.parse, batch: list[str] = batch) -> int:
            return sum(len(parse(frame, 0.0)) for frame in batch)

        elapsed, count = timed(run)
        assert count == len(batch), (name, count)
        results[name] = len(batch) / elapsed

    snap_bids, snap_asks = frames["snapshot"]

    def binance_book() -> int:
        parser = parsers["binance_trades"]
        sync = DiffSync(OrderBook("ETH-PERP"), binance.SYNC_RULES)
        sync.on_snapshot(snap_bids, snap_asks, frames["first_id"], 0.0)
        applied = 0
        for frame in frames["binance_book"]:
            for delta in parser.parse(frame, 0.0):
                applied += sync.on_delta(delta)  # type: ignore[arg-type]
        return applied

    def okx_book() -> int:
        parser = parsers["okx_trades"]
        book = OrderBook("ETH-PERP", keep_raw=True)
        okx.apply_book_delta(book, parser.parse(frames["okx_snapshot"], 0.0)[0])  # type: ignore[arg-type]
        for frame in frames["okx_book"]:
            for delta in parser.parse(frame, 0.0):
                okx.apply_book_delta(book, delta)  # type: ignore[arg-type]
        return len(frames["okx_book"])

    def book_apply() -> int:
        book = OrderBook("ETH-PERP")
        book.apply_snapshot(snap_bids, snap_asks, 0, 0.0)
        for i, (bids, asks) in enumerate(frames["deltas"]):
            book.apply(bids, asks, i, 0.0)
        return len(frames["deltas"])

    for name, run in (("binance_book", binance_book), ("okx_book", okx_book), ("book_apply", book_apply)):
        elapsed, count = timed(run)
        assert count == len(frames["deltas"]), (name, count)
        results[name] = count * LEVELS_PER_FRAME / elapsed
    return results


# -- cryptofeed (runs in bench/.venv-cryptofeed) -------------------------------------------------------------
def bench_cryptofeed(frames: dict[str, Any]) -> dict[str, float]:
    from cryptofeed.defines import BINANCE_FUTURES, L2_BOOK, PERPETUAL, TRADES
    from cryptofeed.defines import OKX as OKX_ID
    from cryptofeed.exchanges import OKX, BinanceFutures
    from cryptofeed.symbols import Symbols

    info = {"instrument_type": {"ETH-USDT-PERP": PERPETUAL}, "tick_size": {}}
    Symbols.set(BINANCE_FUTURES, {"ETH-USDT-PERP": "ETHUSDT"}, info)
    Symbols.set(OKX_ID, {"ETH-USDT-PERP": "ETH-USDT-SWAP"}, info)
    seen = [0]

    async def callback(obj: Any, receipt: float) -> None:
        seen[0] += 1

    callbacks = {TRADES: callback, L2_BOOK: callback}
    results: dict[str, float] = {}

    async def run_all() -> None:
        binance = BinanceFutures(symbols=["ETH-USDT-PERP"], channels=[TRADES, L2_BOOK], callbacks=callbacks)
        okx = OKX(symbols=["ETH-USDT-PERP"], channels=[TRADES, L2_BOOK], callbacks=callbacks)

        async def feed(handler: Any, batch: list[str]) -> int:
            seen[0] = 0
            for frame in batch:
                await handler(frame, None, 0.0)
            return seen[0]

        for name, handler in (("binance_trades", binance.message_handler), ("okx_trades", okx.message_handler)):
            best = float("inf")
            for _ in range(3):
                start = time.perf_counter()
                count = await feed(handler, frames[name])
                best = min(best, time.perf_counter() - start)
            assert count == len(frames[name]), (name, count)
            results[name] = len(frames[name]) / best

        snap_bids, snap_asks = frames["snapshot"]
        best = float("inf")
        for _ in range(3):
            binance._reset()
            binance._l2_book["ETH-USDT-PERP"] = _wrap_book(binance, snap_bids, snap_asks)
            binance.last_update_id["ETH-USDT-PERP"] = frames["first_id"]
            start = time.perf_counter()
            count = await feed(binance.message_handler, frames["binance_book"])
            best = min(best, time.perf_counter() - start)
        assert count == len(frames["binance_book"]), ("binance_book", count)
        results["binance_book"] = count * LEVELS_PER_FRAME / best

        best = float("inf")
        for _ in range(3):
            okx._l2_book = {}
            await okx.message_handler(frames["okx_snapshot"], None, 0.0)
            start = time.perf_counter()
            count = await feed(okx.message_handler, frames["okx_book"])
            best = min(best, time.perf_counter() - start)
        assert count == len(frames["okx_book"]), ("okx_book", count)
        results["okx_book"] = count * LEVELS_PER_FRAME / best

    asyncio.run(run_all())
    return results


def _wrap_book(feed: Any, bids: list[list[str]], asks: list[list[str]]) -> Any:
    from decimal import Decimal

    from cryptofeed.types import OrderBook

    return OrderBook(
        feed.id,
        "ETH-USDT-PERP",
        bids={Decimal(p): Decimal(s) for p, s in bids},
        asks={Decimal(p): Decimal(s) for p, s in asks},
    )


def _run_cryptofeed(n: int) -> dict[str, float]:
    if not CRYPTOFEED_PYTHON.exists():
        return {}
    done = subprocess.run(
        [str(CRYPTOFEED_PYTHON), __file__, "--cryptofeed", "--n", str(n)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""}, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        print(f"cryptofeed run failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- driver ---------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="trade frames per venue (book frames: n/4)")
    parser.add_argument("--cryptofeed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    frames = make_frames(args.n)
    if args.cryptofeed:
        print(json.dumps(bench_cryptofeed(frames)))
        return
    ours: dict[str, float] = {}
    theirs: dict[str, float] = {}
    if not CRYPTOFEED_PYTHON.exists():
        print(f"no {CRYPTOFEED_PYTHON}: pip install cryptofeed into bench/.venv-cryptofeed for ratios", file=sys.stderr)
    for _ in range(ROUNDS):
        for name, rate in bench_ours(frames).items():
            ours[name] = max(rate, ours.get(name, 0.0))
        for name, rate in _run_cryptofeed(args.n).items():
            theirs[name] = max(rate, theirs.get(name, 0.0))
    print(f"{'workload':<16} {'unit':<9} {'ours/s':>12} {'cryptofeed/s':>13} {'ratio':>7}")
    for name, rate in ours.items():
        unit = "deltas" if name.endswith(("_book", "_apply")) else "frames"
        other = theirs.get(name)
        shown = f"{other:>13,.0f} {rate / other:>6.2f}x" if other else f"{'n/a':>13} {'':>7}"
        print(f"{name:<16} {unit:<9} {rate:>12,.0f} {shown}")


if __name__ == "__main__":
    main()
