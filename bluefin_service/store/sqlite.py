"""The default store: one SQLite file (WAL) of per-symbol tick blocks (``sqlite_blocks.py``), written in batches.

One writer connection (the recorder serializes its calls) and one read connection per worker thread, so
HTTP reads never wait for a write (WAL readers see the last committed batch). A committed batch survives a
``kill -9`` of the process: WAL with ``synchronous=NORMAL`` only risks the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from itertools import islice
from pathlib import Path

from bluefin_service.store import COLUMNS, BookRow, SeqRow, Store, StoreError, TickQuery, TickRow
from bluefin_service.store import sqlite_blocks as blocks
from bluefin_service.store.aggregate import TickColumns
from marketdata.tick_blocks import TRADE, Block

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 1: one row per tick in `ticks`; 2: per-symbol blocks in `tick_blocks` (migrated at open)


def sqlite_path(url: str) -> Path:
    """``sqlite:///relative/file.db`` or ``sqlite:////absolute/file.db`` -> the file's path."""
    rest = url.removeprefix("sqlite://")
    if not rest.startswith("/") or len(rest) < 2:
        raise StoreError(f"bad SQLite URL {url!r}: use sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return Path(rest[1:])


class SqliteStore(Store):
    def __init__(self, url: str) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # -- connections -------------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    def _open_sync(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise StoreError(f"{self.path}: cannot switch to WAL (journal_mode={mode})")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA cache_size = -65536")  # 64 MiB: index pages stay hot under bulk inserts
                conn.execute("PRAGMA wal_autocheckpoint = 10000")  # fewer, larger checkpoints
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: schema version {version} is newer than this code's")
                conn.executescript(blocks.SCHEMA)
                if _has_table(conn, "ticks"):
                    _migrate_rows_to_blocks(conn, self.path)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            except BaseException:
                conn.close()
                raise
            self._writer = conn
            self.is_open = True

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._writer is None:
                raise StoreError(f"store {self.path} is not open yet")
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)

    async def close(self) -> None:
        def close_all() -> None:
            with self._write_lock:
                self.is_open = False
                if self._writer is not None:
                    self._writer.close()
                    self._writer = None
            with self._readers_lock:
                for conn in self._readers:
                    conn.close()
                self._readers.clear()

        await asyncio.to_thread(close_all)
        self._local = threading.local()

    # -- writing ---------------------------------------------------------------------------------------------
    def _open_writer(self) -> sqlite3.Connection:
        conn = self._writer
        if conn is None:
            raise StoreError(f"store {self.path} is not open")
        return conn

    def write_blocks_sync(self, new_blocks: list[Block]) -> None:
        """Store blocks in one transaction (ticks already stored, by seq, are left out)."""
        with self._write_lock, transaction(self._open_writer()) as conn:
            blocks.insert_blocks(conn, new_blocks)

    async def write(self, rows: list[TickRow]) -> None:
        await asyncio.to_thread(lambda: self.write_blocks_sync(blocks.blocks_from_rows(rows)))

    def write_books_sync(self, rows: list[BookRow]) -> None:
        with self._write_lock, transaction(self._open_writer()) as conn:
            conn.executemany("INSERT OR IGNORE INTO book_snapshots VALUES (?, ?, ?, ?)", rows)

    async def write_books(self, rows: list[BookRow]) -> None:
        await asyncio.to_thread(self.write_books_sync, rows)

    async def books(
        self, symbol: str, start: float | None, end: float | None, limit: int, after: tuple[float, int] | None = None
    ) -> list[BookRow]:
        def run() -> list[BookRow]:
            conn = self._reader()
            sql = "SELECT symbol, ts, version, payload FROM book_snapshots WHERE symbol = ? AND ts >= ? AND ts < ?"
            low = -math.inf if start is None else start
            high = math.inf if end is None else end
            if after is not None:
                sql += " AND (ts, version) > (?, ?) ORDER BY ts, version LIMIT ?"
                return [BookRow(*row) for row in conn.execute(sql, (symbol, low, high, *after, limit))]
            if start is None:
                found = conn.execute(f"{sql} ORDER BY ts DESC, version DESC LIMIT ?", (symbol, low, high, limit))
                return [BookRow(*row) for row in reversed(found.fetchall())]
            found = conn.execute(f"{sql} ORDER BY ts, version LIMIT ?", (symbol, low, high, limit))
            return [BookRow(*row) for row in found.fetchall()]

        return await asyncio.to_thread(run)

    # -- reading ---------------------------------------------------------------------------------------------
    def _ticks_sync(self, q: TickQuery) -> list[TickRow]:
        conn = self._reader()
        if q.after_seq is not None:
            found = blocks.rows_by_seq(conn, q.symbol, q.after_seq, q.start, q.end)
        elif q.start is None and q.kind is None:  # no lower bound: the newest `limit` rows
            return [TickRow._make(row) for row in blocks.newest_rows(conn, q.symbol, q.end, q.limit)]
        elif q.start is None:  # the newest `limit` of one kind: widen the newest window until it holds enough
            scan = q.limit * 2
            while True:
                newest = blocks.newest_rows(conn, q.symbol, q.end, scan)
                kept = [row for row in newest if row[3] == q.kind]
                if len(kept) >= q.limit or len(newest) < scan:
                    return [TickRow._make(row) for row in kept[-q.limit :]]
                scan *= 4
        else:
            found = blocks.rows_by_time(conn, q.symbol, q.start, q.end)
        if q.kind is not None:
            found = (row for row in found if row[3] == q.kind)
        return [TickRow._make(row) for row in islice(found, q.limit)]

    async def ticks(self, query: TickQuery) -> list[TickRow]:
        return await asyncio.to_thread(self._ticks_sync, query)

    async def _page(
        self, symbol: str, start: float | None, end: float | None, cursor: tuple[float, int] | None, limit: int
    ) -> list[TickRow]:
        def run() -> list[TickRow]:
            found = blocks.rows_by_time(self._reader(), symbol, start, end, cursor)
            return [TickRow._make(row) for row in islice(found, limit)]

        return await asyncio.to_thread(run)

    async def range_columns(self, symbol: str, start: float | None, end: float | None) -> TickColumns:
        """The whole range as columns, built in the worker thread from plain tuples (no row objects)."""

        def run() -> TickColumns:
            columns = TickColumns()
            for chunk in blocks.page(blocks.rows_by_time(self._reader(), symbol, start, end), 50_000):
                columns.add(chunk)  # type: ignore[arg-type]
            return columns

        return await asyncio.to_thread(run)

    async def iter_seq_pages(
        self, symbol: str, start: float | None, end: float | None, page: int = 50_000
    ) -> AsyncIterator[list[SeqRow]]:
        """The range in seq order, a page at a time from one cursor over the blocks (bounded memory)."""
        conn = self._connect()  # its own connection: the scan stays open across awaits and threads
        try:
            pages = blocks.page(blocks.rows_in_seq_order(conn, symbol, start, end), page)
            while rows := await asyncio.to_thread(next, pages, None):
                yield [_seq_row(row) for row in rows]
        finally:
            conn.close()

    async def last_before(self, symbol: str, ts: float) -> TickRow | None:
        rows = await asyncio.to_thread(lambda: blocks.newest_rows(self._reader(), symbol, ts, 1))
        return TickRow._make(rows[0]) if rows else None

    async def last_seq(self, symbol: str) -> int:
        def run() -> int:
            sql = "SELECT max(last_seq) FROM tick_blocks WHERE symbol = ?"
            return int(self._reader().execute(sql, (symbol,)).fetchone()[0] or 0)

        return await asyncio.to_thread(run)

    async def count(self, symbol: str, start: float | None, end: float | None) -> int:
        return await asyncio.to_thread(lambda: blocks.count_rows(self._reader(), symbol, start, end))

    async def count_books(self, symbol: str, start: float | None, end: float | None) -> int:
        sql = "SELECT count(*) FROM book_snapshots WHERE symbol = ? AND ts >= ? AND ts < ?"
        low, high = -math.inf if start is None else start, math.inf if end is None else end
        return await asyncio.to_thread(lambda: int(self._reader().execute(sql, (symbol, low, high)).fetchone()[0]))

    async def symbols(self) -> list[str]:
        return await asyncio.to_thread(lambda: [row[0] for row in self._reader().execute(blocks.SYMBOLS)])

    # -- retention ---------------------------------------------------------------------------------------------
    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * conn.execute("PRAGMA page_size").fetchone()[0])

    async def size_bytes(self) -> int:
        return await asyncio.to_thread(lambda: self._used_bytes(self._reader()))

    def _retention_sync(self, max_age: float | None, max_bytes: int | None, now: float) -> int:
        with self._write_lock:
            conn = self._open_writer()
            symbols = [row[0] for row in conn.execute(blocks.SYMBOLS)]
            symbols += [s for (s,) in conn.execute(blocks.BOOK_SYMBOLS) if s not in symbols]
            deleted = 0
            if max_age is not None:
                deleted += _delete_before(conn, symbols, now - max_age)
            for _ in range(20):  # each pass deletes the oldest slice of the time span
                if max_bytes is None:
                    break
                used = self._used_bytes(conn)
                if used <= max_bytes:
                    break
                bounds = [
                    conn.execute("SELECT min(ts_min), max(ts_max) FROM tick_blocks WHERE symbol = ?", (s,)).fetchone()
                    for s in symbols
                ]
                lows = [b[0] for b in bounds if b[0] is not None]
                highs = [b[1] for b in bounds if b[1] is not None]
                if not lows:
                    break
                first, last = min(lows), max(highs)
                fraction = min(0.5, (used - max_bytes) / used + 0.02)
                removed = _delete_before(conn, symbols, first + (last - first) * fraction)
                if removed == 0:
                    removed = _delete_before(conn, symbols, last + 1e-9)  # a single instant left: drop it all
                deleted += removed
            return deleted

    async def enforce_retention(self, max_age_seconds: float | None, max_bytes: int | None, now: float) -> int:
        return await asyncio.to_thread(self._retention_sync, max_age_seconds, max_bytes, now)


def _seq_row(row: tuple[object, ...]) -> SeqRow:
    side = row[6]
    return (row[1], row[2], row[3] == TRADE, row[4], row[5], None if side is None else side == "buy", row[7])  # type: ignore[return-value]


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (the connection is in autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _delete_before(conn: sqlite3.Connection, symbols: list[str], cutoff: float) -> int:
    with transaction(conn):
        return sum(blocks.delete_before(conn, symbol, cutoff) for symbol in symbols)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() is not None


def _migrate_rows_to_blocks(conn: sqlite3.Connection, path: Path) -> None:
    """Schema 1 -> 2: move the one-row-per-tick ``ticks`` table into blocks, a symbol at a time, in one
    transaction (an interrupted migration leaves the file as it was and runs again at the next start)."""
    started = time.monotonic()
    moved = 0
    with transaction(conn):
        symbols = [row[0] for row in conn.execute(_V1_SYMBOLS)]
        for symbol in symbols:
            cursor = conn.execute(
                f"SELECT {', '.join(COLUMNS)} FROM ticks WHERE symbol = ? ORDER BY seq, ts", (symbol,)
            )
            while rows := cursor.fetchmany(blocks.BLOCK_TICKS * 10):
                blocks.insert_blocks(conn, blocks.blocks_from_rows(rows))
                moved += len(rows)
        conn.execute("DROP TABLE ticks")
    log.warning("store %s: moved %d recorded ticks of %d symbols to the block layout in %.1f s",
                path, moved, len(symbols), time.monotonic() - started)  # fmt: skip


_V1_SYMBOLS = """
WITH RECURSIVE s(symbol) AS (
    SELECT min(symbol) FROM ticks
    UNION ALL SELECT (SELECT min(symbol) FROM ticks WHERE symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL
) SELECT symbol FROM s WHERE symbol IS NOT NULL
"""
