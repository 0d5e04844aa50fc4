"""Reading and writing the SQLite store's tick blocks (``marketdata/tick_blocks.py``), on one connection.

Blocks are found by their bounds: ``(symbol, last_seq)`` for seq reads and ``(symbol, ts_min, ts_max)`` for time
reads. Timestamps are event times, so a block's ticks need not be in time order and blocks may overlap in time;
each symbol's widest block (``tick_spans.max_span``) bounds how far before a time range a block that reaches into
it can start. Writers cut a block once its ticks span ``BLOCK_SPAN_SECONDS`` (a burst of backfilled history would
otherwise make one block span many minutes, and every time read scan that far back); only ticks out of time order
widen a block beyond it. Time reads merge the blocks' rows into ``(ts, seq)`` order, holding only the blocks
that overlap.

A block that does not decode is skipped and logged, and so is a tick within a block that does not: the rest of
the history stays readable.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import islice
from operator import itemgetter

import numpy as np

from marketdata.tick_blocks import (
    BLOCK_COLUMNS,
    BLOCK_SPAN_SECONDS,
    Block,
    CorruptBlock,
    RowTuple,
    block_arrays,
    block_from_rows,
    block_rows,
)

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS tick_blocks (
    symbol TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    ts_min REAL NOT NULL,
    ts_max REAL NOT NULL,
    n INTEGER NOT NULL,
    seqs BLOB NOT NULL,
    stamps BLOB NOT NULL,
    prices BLOB NOT NULL,
    sizes BLOB NOT NULL,
    flags BLOB NOT NULL,
    trade_ids BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS tick_blocks_by_seq ON tick_blocks (symbol, last_seq);
DROP INDEX IF EXISTS tick_blocks_by_time;
CREATE INDEX IF NOT EXISTS tick_blocks_by_times ON tick_blocks (symbol, ts_min, ts_max);
CREATE TABLE IF NOT EXISTS tick_spans (symbol TEXT PRIMARY KEY, max_span REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS book_snapshots (
    symbol TEXT NOT NULL,
    ts REAL NOT NULL,
    version INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (symbol, ts, version)
);
"""
BLOCK_TICKS = 1000  # ticks per block when blocks are cut from rows (the recorder's chunks are the same size)
# Blocks are read in pages that start small and double: a query for a few ticks reads a block or two, a long
# scan reads up to 64 at a time (~2 MB), never the whole range at once.
_FIRST_PAGE, _MAX_PAGE = 2, 64
_COLUMNS = BLOCK_COLUMNS
_INSERT = f"INSERT INTO tick_blocks ({BLOCK_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SPAN = (
    "INSERT INTO tick_spans VALUES (?, ?) "
    "ON CONFLICT (symbol) DO UPDATE SET max_span = max(max_span, excluded.max_span)"
)
SYMBOLS = """
WITH RECURSIVE s(symbol) AS (
    SELECT min(symbol) FROM tick_blocks
    UNION ALL SELECT (SELECT min(symbol) FROM tick_blocks WHERE symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL
) SELECT symbol FROM s WHERE symbol IS NOT NULL
"""
BOOK_SYMBOLS = SYMBOLS.replace("tick_blocks", "book_snapshots")
_by_time = itemgetter(1, 2)


def _skip(block: Block, exc: CorruptBlock) -> None:
    log.error("store: skipped a corrupt block of %s (seq %s-%s, %d ticks): %s", block.symbol, block.first_seq,
              block.last_seq, block.n, exc)  # fmt: skip


def rows_of(block: Block, keep: np.ndarray | None = None) -> list[RowTuple]:
    try:
        rows, bad = block_rows(block, keep)
    except CorruptBlock as exc:
        _skip(block, exc)
        return []
    if bad:
        log.error("store: skipped %d invalid ticks in the block of %s at seq %s-%s", bad, block.symbol,
                  block.first_seq, block.last_seq)  # fmt: skip
    return rows


def arrays_of(block: Block) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        return block_arrays(block)
    except CorruptBlock as exc:
        _skip(block, exc)
        return None


# -- writing ------------------------------------------------------------------------------------------------
def blocks_from_rows(rows: Iterable[RowTuple]) -> list[Block]:
    """Rows in any order -> blocks of up to ``BLOCK_TICKS`` per symbol in seq order (one row per seq)."""
    by_symbol: dict[str, dict[int, RowTuple]] = {}
    for row in rows:
        by_symbol.setdefault(row[0], {}).setdefault(row[2], row)
    blocks = []
    for symbol, by_seq in by_symbol.items():
        part: list[RowTuple] = []
        for seq in sorted(by_seq):
            row = by_seq[seq]
            if part and (len(part) >= BLOCK_TICKS or abs(row[1] - part[0][1]) > BLOCK_SPAN_SECONDS):
                blocks.append(block_from_rows(symbol, part))
                part = []
            part.append(row)
        if part:
            blocks.append(block_from_rows(symbol, part))
    return blocks


def insert_blocks(conn: sqlite3.Connection, blocks: list[Block]) -> None:
    """Insert blocks inside the caller's transaction, leaving out ticks whose seq is already stored (a batch
    retried after an ambiguous commit): blocks past a symbol's last stored seq, the normal case, go in as they are."""
    last_seq: dict[str, int] = {}
    fresh: list[Block] = []
    for block in blocks:
        last = last_seq.get(block.symbol)
        if last is None:
            row = conn.execute("SELECT max(last_seq) FROM tick_blocks WHERE symbol = ?", (block.symbol,)).fetchone()
            last = row[0] if row[0] is not None else -1
        if block.first_seq <= last:
            block = _without_stored(conn, block)
            if block is None:
                continue
        conn.execute(_INSERT, block)  # now, so a later block of this batch is checked against it
        fresh.append(block)
        last_seq[block.symbol] = max(last, block.last_seq)
    spans: dict[str, float] = {}
    for block in fresh:
        spans[block.symbol] = max(spans.get(block.symbol, 0.0), block.ts_max - block.ts_min)
    conn.executemany(_SPAN, spans.items())


def _without_stored(conn: sqlite3.Connection, block: Block) -> Block | None:
    stored: set[int] = set()
    sql = f"SELECT {_COLUMNS} FROM tick_blocks WHERE symbol = ? AND last_seq >= ? AND first_seq <= ?"
    for row in conn.execute(sql, (block.symbol, block.first_seq, block.last_seq)):
        arrays = arrays_of(Block(*row))
        if arrays is not None:
            stored.update(arrays[0].tolist())
    rows = [row for row in rows_of(block) if row[2] not in stored]
    return block_from_rows(block.symbol, rows) if rows else None


# -- finding blocks ----------------------------------------------------------------------------------------------
def max_span(conn: sqlite3.Connection, symbol: str) -> float:
    row = conn.execute("SELECT max_span FROM tick_spans WHERE symbol = ?", (symbol,)).fetchone()
    return float(row[0]) if row else 0.0


def blocks_by_time(
    conn: sqlite3.Connection, symbol: str, start: float | None, end: float | None, span: float
) -> Iterator[Block]:
    """Blocks that may hold ticks in ``[start, end)``, by ``ts_min``, read a page at a time."""
    low = -math.inf if start is None else start - span
    high = math.inf if end is None else end
    sql = (
        f"SELECT rowid, {_COLUMNS} FROM tick_blocks WHERE symbol = ? AND ts_min < ? AND ts_max >= ? "
        "AND (ts_min > ? OR (ts_min = ? AND rowid > ?)) ORDER BY ts_min, rowid LIMIT ?"
    )  # ts_max is in the index: blocks that end before `start` are passed over without reading them
    floor = -math.inf if start is None else start
    cursor = (low, -1)
    size = _FIRST_PAGE
    while True:
        page = conn.execute(sql, (symbol, high, floor, cursor[0], cursor[0], cursor[1], size)).fetchall()
        for row in page:
            yield Block(*row[1:])
        if len(page) < size:
            return
        cursor = (page[-1][4], page[-1][0])
        size = min(2 * size, _MAX_PAGE)


def blocks_by_seq(conn: sqlite3.Connection, symbol: str, after_seq: int, last_seq: float = math.inf) -> Iterator[Block]:
    """Blocks holding seqs after ``after_seq`` (up to ``last_seq``), in seq order, a page at a time."""
    sql = f"SELECT {_COLUMNS} FROM tick_blocks WHERE symbol = ? AND last_seq > ? ORDER BY last_seq LIMIT ?"
    size = _FIRST_PAGE
    while True:
        page = conn.execute(sql, (symbol, after_seq, size)).fetchall()
        for row in page:
            if row[1] > last_seq:
                return
            yield Block(*row)
        if len(page) < size:
            return
        after_seq = page[-1][2]
        size = min(2 * size, _MAX_PAGE)


# -- reading rows ---------------------------------------------------------------------------------------------
def _mask(ts: np.ndarray, start: float | None, end: float | None) -> np.ndarray | None:
    if start is None and end is None:
        return None
    keep = np.ones(len(ts), dtype=bool)
    if start is not None:
        keep &= ts >= start
    if end is not None:
        keep &= ts < end
    return keep


def rows_by_time(
    conn: sqlite3.Connection,
    symbol: str,
    start: float | None,
    end: float | None,
    after: tuple[float, int] | None = None,
) -> Iterator[RowTuple]:
    """Rows with ``start <= ts < end`` (and after the ``(ts, seq)`` cursor) in ``(ts, seq)`` order."""
    if after is not None:
        start = after[0] if start is None else max(start, after[0])
    pending: list[RowTuple] = []  # rows of blocks read so far that a later block may still precede
    for block in blocks_by_time(conn, symbol, start, end, max_span(conn, symbol)):
        ready = [row for row in pending if row[1] < block.ts_min]  # no later block can precede these
        pending = [row for row in pending if row[1] >= block.ts_min] if len(ready) < len(pending) else []
        ready.sort(key=_by_time)
        yield from ready
        arrays = arrays_of(block)
        if arrays is None:
            continue
        keep = _mask(arrays[1], start, end)
        if after is not None:
            seqs, ts = arrays
            later = (ts > after[0]) | ((ts == after[0]) & (seqs > after[1]))
            keep = later if keep is None else keep & later
        if keep is None or keep.any():
            pending += rows_of(block, keep)
    pending.sort(key=_by_time)
    yield from pending


def rows_by_seq(
    conn: sqlite3.Connection,
    symbol: str,
    after_seq: int,
    start: float | None,
    end: float | None,
    last_seq: float = math.inf,
) -> Iterator[RowTuple]:
    """Rows with seq after ``after_seq`` (up to ``last_seq``) and ``start <= ts < end``, in seq order."""
    for block in blocks_by_seq(conn, symbol, after_seq, last_seq):
        if (start is not None and block.ts_max < start) or (end is not None and block.ts_min >= end):
            continue
        arrays = arrays_of(block)
        if arrays is None:
            continue
        keep = _mask(arrays[1], start, end)
        later = arrays[0] > after_seq
        keep = later if keep is None else keep & later
        if keep.any():
            yield from rows_of(block, keep)


def rows_in_seq_order(
    conn: sqlite3.Connection, symbol: str, start: float | None, end: float | None
) -> Iterator[RowTuple]:
    """Rows with ``start <= ts < end`` in seq order (how the hub published them): the seq range of the blocks
    that may reach into the time range, then those blocks by seq."""
    sql = "SELECT min(first_seq), max(last_seq) FROM tick_blocks WHERE symbol = ? AND ts_min >= ? AND ts_min < ?"
    low = -math.inf if start is None else start - max_span(conn, symbol)
    first, last = conn.execute(sql, (symbol, low, math.inf if end is None else end)).fetchone()
    if first is not None:
        yield from rows_by_seq(conn, symbol, first - 1, start, end, last)


def newest_rows(conn: sqlite3.Connection, symbol: str, end: float | None, limit: int) -> list[RowTuple]:
    """The newest ``limit`` rows with ``ts < end``, oldest first."""
    sql = f"SELECT {_COLUMNS} FROM tick_blocks WHERE symbol = ? AND ts_min < ? ORDER BY ts_min DESC"
    counted = 0
    low: float | None = None
    for row in conn.execute(sql, (symbol, math.inf if end is None else end)):
        block = Block(*row)
        arrays = arrays_of(block)
        if arrays is None:
            continue
        counted += block.n if end is None or block.ts_max < end else int((arrays[1] < end).sum())
        if counted >= limit:
            low = block.ts_min  # at least `limit` rows are at or after it, so the newest all are
            break
    return list(deque(rows_by_time(conn, symbol, low, end), maxlen=limit))


def count_rows(conn: sqlite3.Connection, symbol: str, start: float | None, end: float | None) -> int:
    total = 0
    for block in blocks_by_time(conn, symbol, start, end, max_span(conn, symbol)):
        inside = (start is None or block.ts_min >= start) and (end is None or block.ts_max < end)
        if inside:
            total += block.n
            continue
        arrays = arrays_of(block)
        if arrays is not None:
            keep = _mask(arrays[1], start, end)
            total += len(arrays[1]) if keep is None else int(keep.sum())
    return total


def page(rows: Iterator[RowTuple], size: int) -> Iterator[list[RowTuple]]:
    while chunk := list(islice(rows, size)):
        yield chunk


# -- retention ------------------------------------------------------------------------------------------------
def delete_before(conn: sqlite3.Connection, symbol: str, cutoff: float) -> int:
    """Delete ``symbol``'s ticks (and book snapshots) older than ``cutoff`` inside the caller's transaction;
    returns how many ticks."""
    conn.execute("DELETE FROM book_snapshots WHERE symbol = ? AND ts < ?", (symbol, cutoff))
    deleted = conn.execute(
        "SELECT coalesce(sum(n), 0) FROM tick_blocks WHERE symbol = ? AND ts_max < ?", (symbol, cutoff)
    ).fetchone()[0]
    conn.execute("DELETE FROM tick_blocks WHERE symbol = ? AND ts_max < ?", (symbol, cutoff))
    straddling = conn.execute(
        f"SELECT rowid, {_COLUMNS} FROM tick_blocks WHERE symbol = ? AND ts_min < ? AND ts_max >= ?",
        (symbol, cutoff, cutoff),
    ).fetchall()
    for row in straddling:
        block = Block(*row[1:])
        kept = [r for r in rows_of(block) if r[1] >= cutoff]
        deleted += block.n - len(kept)
        conn.execute("DELETE FROM tick_blocks WHERE rowid = ?", (row[0],))
        if kept:
            conn.execute(_INSERT, block_from_rows(symbol, kept))
    return int(deleted)
