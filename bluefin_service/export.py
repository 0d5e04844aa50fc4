"""``bluefin-service export``: recorded ticks, candles or order books of one symbol to Parquet or CSV, for
pandas/DuckDB.

Reads the store page by page and writes incrementally, so memory stays flat however long the range; a
range of more than ``PROGRESS_MIN_ROWS`` ticks (or snapshots) shows a rich progress bar on stderr.

Order books come out one row per recorded snapshot, in the flat layout research tools expect:
``bid_price_0, bid_size_0, ask_price_0, ask_size_0, ...`` best first, ``--depth`` levels a side (empty where
the snapshot had fewer). A snapshot that does not decode is skipped and counted on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from bluefin_service.config import load_settings
from bluefin_service.store import Store, TickQuery, TickRow, open_store, parse_timestamp, recorded_book, redact
from bluefin_service.store.aggregate import TickColumns, aggregate, parse_interval
from bluefin_service.store.sqlite import SqliteStore
from marketdata.errors import ConfigError
from marketdata.protocol import ProtocolError, normalize_symbol

PROGRESS_MIN_ROWS = 200_000
WRITE_ROWS = 100_000
CANDLE_CHUNK_SECONDS = 6 * 3600

TICK_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("timestamp", pa.float64()),
        ("symbol", pa.string()),
        ("seq", pa.int64()),
        ("type", pa.string()),
        ("price", pa.float64()),
        ("size", pa.float64()),
        ("side", pa.string()),
        ("trade_id", pa.string()),
    ]
)
BOOK_HEAD = [
    ("time", pa.timestamp("us", tz="UTC")),
    ("timestamp", pa.float64()),
    ("symbol", pa.string()),
    ("version", pa.int64()),
    ("venue", pa.string()),
    ("update_id", pa.int64()),
    ("best_bid", pa.float64()),
    ("best_ask", pa.float64()),
    ("spread", pa.float64()),
    ("mid", pa.float64()),
]
MAX_BOOK_DEPTH = 50


def book_schema(depth: int) -> pa.Schema:
    levels = [
        (f"{side}_{part}_{level}", pa.float64())
        for level in range(depth)
        for side in ("bid", "ask")
        for part in ("price", "size")
    ]
    return pa.schema(BOOK_HEAD + levels)


CANDLE_FIELDS = ("start", "end", "open", "high", "low", "close", "volume", "trade_count", "vwap", "buy_volume",
                 "sell_volume", "final")  # fmt: skip
_CANDLE_TYPES = {"trade_count": pa.int64(), "final": pa.bool_()}
CANDLE_SCHEMA = pa.schema(
    [("time", pa.timestamp("us", tz="UTC")), ("symbol", pa.string()), ("interval", pa.int64())]
    + [(name, _CANDLE_TYPES.get(name, pa.float64())) for name in CANDLE_FIELDS]
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bluefin-service export", description="Export recorded ticks or candles to Parquet or CSV"
    )
    parser.add_argument("--symbol", required=True, help="symbol such as ETH-PERP")
    parser.add_argument("--start", required=True, help="epoch seconds or ISO-8601 (2026-11-25T20:00:00Z)")
    parser.add_argument("--end", required=True, help="epoch seconds or ISO-8601 (exclusive)")
    parser.add_argument("--format", choices=("parquet", "csv"), default=None, help="default: from --out's suffix")
    parser.add_argument("--out", required=True, type=Path, help="output file")
    parser.add_argument(
        "--what", choices=("ticks", "candles", "books"), default="ticks", help="ticks (default), candles or books"
    )
    parser.add_argument("--interval", default="1m", help="candle interval for --what candles (15s, 1m, ...)")
    parser.add_argument("--depth", type=int, default=20, help="levels a side for --what books (1-50, default 20)")
    parser.add_argument("--store", help="store URL (default: STORE_URL, or SQLite in DATA_DIR)")
    parser.add_argument("--env-file", action="append", type=Path, default=None, help="extra .env file(s) to read")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        symbol = normalize_symbol(args.symbol)
        start, end = parse_timestamp(args.start), parse_timestamp(args.end)
        if end <= start:
            raise ValueError(f"--end ({args.end}) must be after --start ({args.start})")
        interval = parse_interval(args.interval)
        if not 1 <= args.depth <= MAX_BOOK_DEPTH:
            raise ValueError(f"--depth must be 1 to {MAX_BOOK_DEPTH} levels a side, got {args.depth}")
        fmt = args.format or ("csv" if args.out.suffix.lower() == ".csv" else "parquet")
        url = args.store or load_settings((Path(".env"), *(args.env_file or ()))).resolved_store_url
    except (ValueError, ProtocolError, ConfigError) as exc:
        print(f"bluefin-service export: {exc}", file=sys.stderr)
        return 2
    store = open_store(url)
    if isinstance(store, SqliteStore) and not store.path.exists():
        print(f"bluefin-service export: no recorded data: {store.path} does not exist", file=sys.stderr)
        return 1
    try:
        count = asyncio.run(export(store, symbol, start, end, fmt, args.out, args.what, interval, args.depth))
    except Exception as exc:  # store down, unreadable file, full disk: one clear line, exit 1
        print(f"bluefin-service export: failed reading {redact(url)}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"exported {count} {args.what} of {symbol} to {args.out} ({fmt})", file=sys.stderr)
    return 0


class _Sink:
    """Incremental Parquet or CSV writer with one schema."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.writer: Any = pq.ParquetWriter(path, schema) if fmt == "parquet" else pacsv.CSVWriter(path, schema)

    def write(self, columns: dict[str, list[Any]]) -> None:
        self.writer.write_table(pa.Table.from_pydict(columns, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


async def export(
    store: Store,
    symbol: str,
    start: float,
    end: float,
    fmt: str,
    out: Path,
    what: str,
    interval: int,
    depth: int = 20,
) -> int:
    await store.open()
    try:
        if what == "books":
            total = await store.count_books(symbol, start, end)
            schema = book_schema(depth)
        else:
            total = await store.count(symbol, start, end)
            schema = TICK_SCHEMA if what == "ticks" else CANDLE_SCHEMA
        sink = _Sink(out, fmt, schema)
        try:
            with _progress(total) as progress:
                task = progress.add_task(f"{symbol} {what}", total=total)
                if what == "ticks":
                    return await _export_ticks(store, symbol, start, end, sink, lambda n: progress.advance(task, n))
                if what == "books":
                    return await _export_books(
                        store, symbol, start, end, depth, sink, lambda n: progress.advance(task, n)
                    )
                return await _export_candles(
                    store, symbol, start, end, interval, sink, lambda n: progress.advance(task, n)
                )
        finally:
            sink.close()
    finally:
        await store.close()


def _progress(total: int) -> Progress:
    console = Console(stderr=True)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=total < PROGRESS_MIN_ROWS,
        transient=False,
    )


async def _export_ticks(store: Store, symbol: str, start: float, end: float, sink: _Sink, advance: Any) -> int:
    written = 0
    pending: list[TickRow] = []
    async for page in store.iter_range(symbol, start, end):
        pending.extend(page)
        advance(len(page))
        if len(pending) >= WRITE_ROWS:
            sink.write(_tick_columns(pending))
            written += len(pending)
            pending = []
    if pending or written == 0:
        sink.write(_tick_columns(pending))
        written += len(pending)
    return written


def _tick_columns(rows: list[TickRow]) -> dict[str, list[Any]]:
    return {
        "time": [int(row.ts * 1_000_000) for row in rows],
        "timestamp": [row.ts for row in rows],
        "symbol": [row.symbol for row in rows],
        "seq": [row.seq for row in rows],
        "type": [row.kind for row in rows],
        "price": [row.price for row in rows],
        "size": [row.size for row in rows],
        "side": [row.side for row in rows],
        "trade_id": [row.trade_id for row in rows],
    }


async def _export_books(
    store: Store, symbol: str, start: float, end: float, depth: int, sink: _Sink, advance: Any
) -> int:
    written = skipped = 0
    async for page in store.iter_books(symbol, start, end):
        table: dict[str, list[Any]] = {name: [] for name in sink.schema.names}
        for row in page:
            try:
                message = recorded_book(row)
            except ValueError:
                skipped += 1
                continue
            data = message.data
            head = (int(row.ts * 1_000_000), row.ts, row.symbol, row.version, data.venue, data.update_id,
                    data.best_bid, data.best_ask, data.spread, data.mid)  # fmt: skip
            for (name, _type), value in zip(BOOK_HEAD, head, strict=True):
                table[name].append(value)
            for side, levels in (("bid", data.bids), ("ask", data.asks)):
                for level in range(depth):
                    price, size = levels[level] if level < len(levels) else (None, None)
                    table[f"{side}_price_{level}"].append(price)
                    table[f"{side}_size_{level}"].append(size)
        advance(len(page))
        if table["time"]:
            sink.write(table)
            written += len(table["time"])
    if written == 0:
        sink.write({name: [] for name in sink.schema.names})
    if skipped:
        print(f"bluefin-service export: skipped {skipped} recorded book(s) that do not decode", file=sys.stderr)
    return written


async def _export_candles(
    store: Store, symbol: str, start: float, end: float, interval: int, sink: _Sink, advance: Any
) -> int:
    """Candles in chunks of whole intervals, carrying the previous close from one chunk to the next.

    The range is trimmed to the recorded ticks, so a generous --start/--end does not produce years of flat candles.
    """
    oldest = await store.ticks(TickQuery(symbol, start, end, limit=1))
    newest = await store.ticks(TickQuery(symbol, None, end, limit=1))
    if not oldest or not newest:
        sink.write({name: [] for name in CANDLE_SCHEMA.names})
        return 0
    start, end = oldest[0].ts, min(end, newest[0].ts + interval)
    first = math.floor(start / interval) * interval
    chunk = max(interval, CANDLE_CHUNK_SECONDS // interval * interval)
    previous = await store.last_before(symbol, first)
    prev_close = previous.price if previous else None
    written = 0
    while first < end:
        last = min(first + chunk, math.ceil(end / interval) * interval)
        columns = TickColumns()
        async for page in store.iter_range(symbol, first, last):
            columns.add(page)
            advance(len(page))
        candles = aggregate(columns, interval, first, int((last - first) // interval), prev_close, time.time())
        if candles:
            prev_close = candles[-1].close
            table: dict[str, list[Any]] = {
                "time": [int(c.start * 1_000_000) for c in candles],
                "symbol": [symbol] * len(candles),
                "interval": [interval] * len(candles),
            }
            for name in CANDLE_FIELDS:
                table[name] = [getattr(c, name) for c in candles]
            sink.write(table)
            written += len(candles)
        first = last
    if written == 0:
        sink.write({name: [] for name in CANDLE_SCHEMA.names})
    return written
