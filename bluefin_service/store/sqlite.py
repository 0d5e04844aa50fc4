"""The default store: one SQLite file (WAL), written in batches from a worker thread.

One writer connection (the recorder serializes its calls) and one read connection per worker thread, so
HTTP reads never wait for a write (WAL readers see the last committed batch). A committed batch survives a
``kill -9`` of the process: WAL with ``synchronous=NORMAL`` only risks the last commits on power loss.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from bluefin_service.store import SCHEMA_VERSION, SeqRow, Store, StoreError, TickQuery, TickRow
from bluefin_service.store.aggregate import TickColumns

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ticks (
    symbol TEXT NOT NULL,
    ts REAL NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    price REAL NOT NULL,
    size REAL NOT NULL,
    side TEXT,
    trade_id TEXT,
    PRIMARY KEY (symbol, ts, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ticks_by_seq ON ticks (symbol, seq);
"""
_INSERT = "INSERT OR IGNORE INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
_SELECT = "SELECT symbol, ts, seq, kind, price, size, side, trade_id FROM ticks"
_SYMBOLS = """
WITH RECURSIVE s(symbol) AS (
    SELECT min(symbol) FROM ticks
    UNION ALL SELECT (SELECT min(symbol) FROM ticks WHERE symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL
) SELECT symbol FROM s WHERE symbol IS NOT NULL
"""


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
                conn.executescript(_SCHEMA)
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
    def write_sync(self, rows: Iterable[list[TickRow]] | list[TickRow]) -> None:
        """One transaction. ``rows`` may also be an iterable of row lists (chunks decoded while this inserts)."""
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise StoreError(f"store {self.path} is not open")
            conn.execute("BEGIN IMMEDIATE")
            try:
                if isinstance(rows, list) and (not rows or isinstance(rows[0], tuple)):
                    conn.executemany(_INSERT, rows)
                else:
                    for chunk in rows:
                        conn.executemany(_INSERT, chunk)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    async def write(self, rows: list[TickRow]) -> None:
        await asyncio.to_thread(self.write_sync, rows)

    # -- reading ---------------------------------------------------------------------------------------------
    def _fetch(self, sql: str, params: tuple[object, ...]) -> list[TickRow]:
        return [TickRow(*row) for row in self._reader().execute(sql, params).fetchall()]

    def _ticks_sync(self, q: TickQuery) -> list[TickRow]:
        where, params = _where(q.symbol, q.start, q.end)
        if q.kind is not None:
            where += " AND kind = ?"
            params.append(q.kind)
        if q.after_seq is not None:
            sql = f"{_SELECT} WHERE {where} AND seq > ? ORDER BY seq, ts LIMIT ?"
            return self._fetch(sql, (*params, q.after_seq, q.limit))
        if q.start is None:  # no lower bound: the newest `limit` rows
            rows = self._fetch(f"{_SELECT} WHERE {where} ORDER BY ts DESC, seq DESC LIMIT ?", (*params, q.limit))
            rows.reverse()
            return rows
        return self._fetch(f"{_SELECT} WHERE {where} ORDER BY ts, seq LIMIT ?", (*params, q.limit))

    async def ticks(self, query: TickQuery) -> list[TickRow]:
        return await asyncio.to_thread(self._ticks_sync, query)

    async def _page(
        self, symbol: str, start: float | None, end: float | None, cursor: tuple[float, int] | None, limit: int
    ) -> list[TickRow]:
        where, params = _where(symbol, start, end)
        if cursor is not None:
            where += " AND (ts > ? OR (ts = ? AND seq > ?))"
            params += [cursor[0], cursor[0], cursor[1]]
        sql = f"{_SELECT} WHERE {where} ORDER BY ts, seq LIMIT ?"
        return await asyncio.to_thread(self._fetch, sql, (*params, limit))

    async def range_columns(self, symbol: str, start: float | None, end: float | None) -> TickColumns:
        """The whole range as columns, built in the worker thread from plain tuples (no row objects)."""
        where, params = _where(symbol, start, end)

        def run() -> TickColumns:
            columns = TickColumns()
            cursor = self._reader().execute(f"{_SELECT} WHERE {where} ORDER BY ts, seq", params)
            while chunk := cursor.fetchmany(50_000):
                columns.add(chunk)
            return columns

        return await asyncio.to_thread(run)

    async def iter_seq_pages(
        self, symbol: str, start: float | None, end: float | None, page: int = 50_000
    ) -> AsyncIterator[list[SeqRow]]:
        """The range in seq order: SQLite finds it by the (symbol, ts) key and sorts by seq (spilling to a temp
        file if large), and the rows come out a page at a time, so memory stays bounded."""
        where, params = _where(symbol, start, end)
        # 0/1 instead of the kind and side strings: small ints are shared objects, strings are built per row
        sql = (
            "SELECT ts, seq, kind = 'trade', price, size, side = 'buy', trade_id "
            f"FROM ticks WHERE {where} ORDER BY seq, ts"
        )
        conn = self._connect()  # its own connection: the cursor stays open across awaits and threads
        try:
            cursor = await asyncio.to_thread(conn.execute, sql, params)
            while rows := await asyncio.to_thread(cursor.fetchmany, page):
                yield rows
        finally:
            conn.close()

    async def last_before(self, symbol: str, ts: float) -> TickRow | None:
        sql = f"{_SELECT} WHERE symbol = ? AND ts < ? ORDER BY ts DESC, seq DESC LIMIT 1"
        rows = await asyncio.to_thread(self._fetch, sql, (symbol, ts))
        return rows[0] if rows else None

    async def last_seq(self, symbol: str) -> int:
        def run() -> int:
            row = self._reader().execute("SELECT MAX(seq) FROM ticks WHERE symbol = ?", (symbol,)).fetchone()
            return int(row[0] or 0)

        return await asyncio.to_thread(run)

    async def count(self, symbol: str, start: float | None, end: float | None) -> int:
        where, params = _where(symbol, start, end)

        def run() -> int:
            return int(self._reader().execute(f"SELECT count(*) FROM ticks WHERE {where}", params).fetchone()[0])

        return await asyncio.to_thread(run)

    async def symbols(self) -> list[str]:
        return await asyncio.to_thread(lambda: [row[0] for row in self._reader().execute(_SYMBOLS)])

    # -- retention ---------------------------------------------------------------------------------------------
    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((pages - free) * conn.execute("PRAGMA page_size").fetchone()[0])

    async def size_bytes(self) -> int:
        return await asyncio.to_thread(lambda: self._used_bytes(self._reader()))

    def _retention_sync(self, max_age: float | None, max_bytes: int | None, now: float) -> int:
        with self._write_lock:
            conn = self._writer
            if conn is None:
                raise StoreError(f"store {self.path} is not open")
            symbols = [row[0] for row in conn.execute(_SYMBOLS)]
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
                    conn.execute("SELECT min(ts), max(ts) FROM ticks WHERE symbol = ?", (s,)).fetchone()
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


def _where(symbol: str, start: float | None, end: float | None) -> tuple[str, list[object]]:
    where = "symbol = ?"
    params: list[object] = [symbol]
    if start is not None:
        where += " AND ts >= ?"
        params.append(start)
    if end is not None:
        where += " AND ts < ?"
        params.append(end)
    return where, params


def _delete_before(conn: sqlite3.Connection, symbols: list[str], cutoff: float) -> int:
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = sum(
            conn.execute("DELETE FROM ticks WHERE symbol = ? AND ts < ?", (s, cutoff)).rowcount for s in symbols
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return deleted
