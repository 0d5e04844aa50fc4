"""Recorded ticks for backtests: from the service's ``GET /trades`` (paged by ``after_seq``) or a SQLite store file.

Both readers yield pages of ``RecordedTick`` in ``seq`` order, the order the WebSocket delivered them, and keep at
most one page in memory. The SQLite reader opens the file read-only (``mode=ro``), so a backtest can run beside a
recording service; it reads the store's tick blocks with plain ``sqlite3`` and ``marketdata.tick_blocks`` and
imports nothing of the service. A block that does not decode counts its ticks as skipped.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp

from marketdata.errors import MarketDataError
from marketdata.tick_blocks import BLOCK_COLUMNS, Block, CorruptBlock, block_arrays, block_rows

PAGE = 5000
_TRADE = "trade"
_PRICE = "price_update"


class BacktestError(MarketDataError):
    """A backtest that cannot run: bad arguments, no data, or a source that cannot be read."""


class RecordedTick(NamedTuple):
    timestamp: float
    seq: int
    is_trade: bool
    price: float
    size: float
    side: str | None
    trade_id: str | None


def parse_time(raw: str) -> float:
    """Epoch seconds (``1764100000.5``) or ISO-8601 (``2026-11-25T20:00:00Z``; no zone means UTC)."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise BacktestError(
                f"{raw!r} is not a time: use epoch seconds (1764100000.5) or ISO-8601 (2026-11-25T20:00:00Z)"
            ) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise BacktestError(f"{raw!r} is out of range for a time in epoch seconds")
    return value


def _tick(ts: Any, seq: Any, kind: Any, price: Any, size: Any, side: Any, trade_id: Any) -> RecordedTick | None:
    """One validated tick, or None for a row no live client would have accepted."""
    try:
        ts, price, size, seq = float(ts), float(price), float(size or 0.0), int(seq)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(ts) and 0 < price < math.inf and 0 <= size < math.inf) or kind not in (_TRADE, _PRICE):
        return None
    if kind == _TRADE:
        if side not in ("buy", "sell"):
            return None
        return RecordedTick(ts, seq, True, price, size, side, None if trade_id is None else str(trade_id))
    return RecordedTick(ts, seq, False, price, 0.0, None, None)  # a price update's volume is never traded size


class Skipped:
    """Counts rows dropped as invalid, so the summary can say so."""

    def __init__(self) -> None:
        self.count = 0


async def sqlite_pages(
    path: Path, symbol: str, start: float, end: float, skipped: Skipped, page: int = PAGE
) -> AsyncIterator[list[RecordedTick]]:
    """Pages of ``symbol``'s ticks with ``start <= ts < end`` from a store file, opened read-only."""
    conn = await asyncio.to_thread(_open_store, path, symbol)
    try:
        pages = _block_pages(conn, path, symbol, start, end, skipped, page)
        while ticks := await asyncio.to_thread(next, pages, None):
            yield ticks
    finally:
        conn.close()


_SEQ_BOUNDS = (
    "SELECT min(first_seq), max(last_seq) FROM tick_blocks WHERE symbol = ? AND ts_min >= ? AND ts_min < ? "
    "AND ts_max >= ?"
)
_BLOCKS = (
    f"SELECT {BLOCK_COLUMNS} FROM tick_blocks WHERE symbol = ? AND last_seq > ? AND first_seq <= ? "
    "ORDER BY last_seq LIMIT 64"  # ~2 MB of blocks at a time
)


def _block_pages(
    conn: sqlite3.Connection, path: Path, symbol: str, start: float, end: float, skipped: Skipped, page: int
) -> Iterator[list[RecordedTick]]:
    """The store's blocks that reach into ``[start, end)``, in seq order, as pages of valid ticks."""
    try:
        span_row = conn.execute("SELECT max_span FROM tick_spans WHERE symbol = ?", (symbol,)).fetchone()
        span = float(span_row[0]) if span_row else 0.0
        first, last = conn.execute(_SEQ_BOUNDS, (symbol, start - span, end, start)).fetchone()
        ticks: list[RecordedTick] = []
        after = -1 if first is None else first - 1
        while first is not None:
            rows = conn.execute(_BLOCKS, (symbol, after, last)).fetchall()
            for row in rows:
                block = Block(*row)
                if block.ts_max < start or block.ts_min >= end:
                    continue
                try:
                    stamps = block_arrays(block)[1]
                    found, bad = block_rows(block, (stamps >= start) & (stamps < end))
                except CorruptBlock:
                    skipped.count += block.n
                    continue
                skipped.count += bad
                valid = [t for t in (_tick(*r[1:]) for r in found) if t is not None]
                skipped.count += len(found) - len(valid)
                ticks += valid
                while len(ticks) >= page:
                    yield ticks[:page]
                    ticks = ticks[page:]
            if len(rows) < 64:
                break
            after = rows[-1][2]
        if ticks:
            yield ticks
    except sqlite3.Error as exc:
        raise BacktestError(f"cannot read the store {path}: {exc}") from None


def _open_store(path: Path, symbol: str) -> sqlite3.Connection:
    if not path.is_file():
        raise BacktestError(f"store {path} does not exist (give the service's DATA_DIR/ticks.db)")
    try:
        conn = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise BacktestError(f"cannot open the store {path}: {exc}") from None
    try:
        known = conn.execute("SELECT 1 FROM tick_blocks WHERE symbol = ? LIMIT 1", (symbol,)).fetchone()
    except sqlite3.Error as exc:
        conn.close()
        raise BacktestError(
            f"cannot read the store {path}: {exc} (is it the service's ticks.db? a store from before the block "
            "layout is converted when the service next opens it)"
        ) from None
    if known is None:
        conn.close()
        raise BacktestError(f"unknown symbol {symbol}: nothing recorded for it in {path}")
    return conn


async def http_pages(
    service_url: str, symbol: str, start: float, end: float, skipped: Skipped, page: int = PAGE
) -> AsyncIterator[list[RecordedTick]]:
    """Pages of ``GET {service}/trades/{symbol}?start=&end=&after_seq=&limit=`` until a short page."""
    url = f"{service_url.rstrip('/')}/trades/{symbol}"
    after = 0
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            params = {"start": repr(start), "end": repr(end), "after_seq": str(after), "limit": str(page)}
            payload = await _get_json(session, url, params)
            messages = payload.get("ticks") if isinstance(payload, dict) else None
            if not isinstance(messages, list):
                raise BacktestError(f"{url} did not answer with a list of ticks")
            if not messages:
                return
            ticks: list[RecordedTick] = []
            for message in messages:
                tick = _from_message(message)
                if tick is None:
                    skipped.count += 1
                else:
                    ticks.append(tick)
                    after = max(after, tick.seq)
            last_seq = payload.get("last_seq")
            if isinstance(last_seq, int) and last_seq > after:
                after = last_seq
            yield ticks
            if len(messages) < page or not ticks:
                return


async def _get_json(session: aiohttp.ClientSession, url: str, params: dict[str, str]) -> Any:
    try:
        async with session.get(url, params=params) as response:
            if response.status == 404:
                raise BacktestError(f"unknown symbol: the service at {url} has no data recorded for it")
            body = await response.read()
            if response.status != 200:
                text = body[:300].decode("utf-8", "replace")
                raise BacktestError(f"{url} answered HTTP {response.status}: {text}")
    except aiohttp.ClientError as exc:
        raise BacktestError(f"cannot read ticks from {url}: {exc}") from None
    except TimeoutError:
        raise BacktestError(f"cannot read ticks from {url}: timed out") from None
    try:
        import orjson

        return orjson.loads(body)
    except ValueError:
        raise BacktestError(f"{url} did not answer with JSON") from None


def _from_message(message: Any) -> RecordedTick | None:
    """A ``/trades`` tick is the wire message: ``{"type", "symbol", "timestamp", "data", "seq"}``."""
    if not isinstance(message, dict) or not isinstance(message.get("data"), dict):
        return None
    data = message["data"]
    return _tick(
        message.get("timestamp"),
        message.get("seq"),
        message.get("type"),
        data.get("price"),
        data.get("size") if message.get("type") == _TRADE else 0.0,
        data.get("side"),
        data.get("trade_id"),
    )
