"""Store test helpers: real SQLite files and a real PostgreSQL schema per test (dropped afterwards)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import numpy as np
import pytest

from bluefin_service.books import book_data
from bluefin_service.store import PRICE_UPDATE, TRADE, BookRow, TickRow
from marketdata.book import BookView
from marketdata.protocol import OrderBookMessage, encode
from marketdata.tick_blocks import BLOCK_COLUMNS, Block, block_rows

PG_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
T = TypeVar("T")
IN_CI = os.environ.get("CI", "").lower() == "true"


async def postgres_problem() -> str | None:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return None


def unavailable(what: str, problem: str) -> None:
    """Outside CI skip with what to install; in CI (CI=true) a missing database is a failure."""
    message = (
        f"{what} is not reachable at {PG_URL} ({problem}); install and start PostgreSQL "
        "(apt-get install postgresql, or pg_ctl -D DIR start) or set TEST_POSTGRES_URL"
    )
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop (a fixture)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A STORE_URL pointing at a fresh schema of the local PostgreSQL (dropped afterwards)."""
    problem = run_sync(postgres_problem())
    if problem:
        unavailable("PostgreSQL", problem)
    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield f"{PG_URL}?schema={schema}"
    run_sync(_drop_schema(schema))


def make_rows(symbol: str, count: int, start_ts: float = 1_700_000_000.0, step: float = 0.25) -> list[TickRow]:
    """Alternating trades and price updates, seq 1..count, prices that move."""
    rows = []
    for i in range(count):
        ts = start_ts + i * step
        price = 100.0 + (i % 17) - (i % 5) * 0.5
        if i % 2 == 0:
            side = "buy" if i % 4 == 0 else "sell"
            rows.append(TickRow(symbol, ts, i + 1, TRADE, price, 0.5 + i % 3, side, f"t{i}"))
        else:
            rows.append(TickRow(symbol, ts, i + 1, PRICE_UPDATE, price, 1000.0 + i, None, None))
    return rows


def book_row(symbol: str, ts: float, version: int, best: float) -> BookRow:
    """A recorded snapshot as the service stores it: two bid levels, one ask, around ``best``."""
    view = BookView(symbol, ts, [(best, 1.5), (best - 0.5, 3.0)], [(best + 0.5, 2.0)], "okx", 1000 + version)
    return BookRow(symbol, ts, version, encode(OrderBookMessage(symbol, ts, book_data(view, 20))))


def short_level_book(symbol: str, ts: float, version: int) -> BookRow:
    """A recorded snapshot that decodes but has a level without its size (``[99.5]``)."""
    good = book_row(symbol, ts, version, 100.0)
    payload = good.payload.replace(b"[99.5,3.0]", b"[99.5]")
    assert payload != good.payload
    return good._replace(payload=payload)


def stored_rows(db: Path) -> dict[str, dict[int, tuple[Any, ...]]]:
    """symbol -> seq -> row tuple, decoded straight from a SQLite store file's blocks (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        result: dict[str, dict[int, tuple[Any, ...]]] = {}
        sql = f"SELECT {BLOCK_COLUMNS} FROM tick_blocks"
        for row in conn.execute(sql):
            for tick in block_rows(Block(*row))[0]:
                assert tick[2] not in result.get(tick[0], {}), f"seq {tick[2]} of {tick[0]} stored twice"
                result.setdefault(tick[0], {})[tick[2]] = tick
        return result
    finally:
        conn.close()


def spoil_block(
    conn: sqlite3.Connection, first_seq: int, prices: dict[int, float] | None = None, bad_flags: tuple[int, ...] = ()
) -> None:
    """Edit one stored block behind the store's back: set prices, and give ticks a flag no writer produces
    (keeping the trade bit, so the block's trade-id count still agrees). Indexes are positions in the block."""
    price_blob, flag_blob = conn.execute(
        "SELECT prices, flags FROM tick_blocks WHERE first_seq = ?", (first_seq,)
    ).fetchone()
    price_values = np.frombuffer(price_blob, "<f8").copy()
    for index, price in (prices or {}).items():
        price_values[index] = price
    flags = bytearray(flag_blob)
    for index in bad_flags:
        flags[index] = 5 if flags[index] & 1 else 2
    conn.execute(
        "UPDATE tick_blocks SET prices = ?, flags = ? WHERE first_seq = ?",
        (price_values.tobytes(), bytes(flags), first_seq),
    )
