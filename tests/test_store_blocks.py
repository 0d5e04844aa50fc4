"""The SQLite store's tick blocks: every query against a plain-Python oracle, out-of-order event times, retried
and overlapping batches, corrupt blocks, and the migration from the one-row-per-tick layout."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_helpers import make_rows, run_sync, spoil_block

from bluefin_service.store import PRICE_UPDATE, TRADE, TickQuery, TickRow, open_store
from bluefin_service.store.sqlite import SCHEMA_VERSION, SqliteStore
from marketdata.tick_blocks import BLOCK_SPAN_SECONDS

SYMBOL = "ETH-PERP"
V1_SCHEMA = """
CREATE TABLE ticks (
    symbol TEXT NOT NULL, ts REAL NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, price REAL NOT NULL,
    size REAL NOT NULL, side TEXT, trade_id TEXT, PRIMARY KEY (symbol, ts, seq)
) WITHOUT ROWID;
CREATE INDEX ticks_by_seq ON ticks (symbol, seq);
PRAGMA user_version = 1;
"""


def jittered_rows(offsets: list[float]) -> list[TickRow]:
    """Rows in seq order whose event times wander: late and early ticks, equal timestamps."""
    rows = []
    for i, offset in enumerate(offsets):
        ts = 1_700_000_000.0 + i * 0.5 + offset
        if i % 3:
            rows.append(TickRow(SYMBOL, ts, i + 1, TRADE, 100.0 + i % 7, 0.5, "buy" if i % 2 else "sell", f"t{i}"))
        else:
            rows.append(TickRow(SYMBOL, ts, i + 1, PRICE_UPDATE, 100.0 + i % 5, 10.0 + i, None, None))
    return rows


def by_time(rows: list[TickRow]) -> list[TickRow]:
    return sorted(rows, key=lambda r: (r.ts, r.seq))


async def check_against_oracle(store: SqliteStore, rows: list[TickRow], start: float, end: float) -> None:
    inside = [r for r in by_time(rows) if start <= r.ts < end]
    assert await store.ticks(TickQuery(SYMBOL, start, end, limit=10**6)) == inside
    assert await store.count(SYMBOL, start, end) == len(inside)
    assert await store.ticks(TickQuery(SYMBOL, None, end, limit=7)) == [r for r in by_time(rows) if r.ts < end][-7:]
    trades = [r for r in by_time(rows) if r.ts < end and r.kind == TRADE][-5:]
    assert await store.ticks(TickQuery(SYMBOL, None, end, kind=TRADE, limit=5)) == trades
    before = [r for r in by_time(rows) if r.ts < start]
    assert await store.last_before(SYMBOL, start) == (before[-1] if before else None)
    paged = [row async for page in store.iter_range(SYMBOL, start, end, page=13) for row in page]
    assert paged == inside
    seq_order = [row async for page in store.iter_seq_pages(SYMBOL, start, end, page=11) for row in page]
    assert [row[1] for row in seq_order] == sorted(r.seq for r in inside)
    after = sorted(rows, key=lambda r: r.seq)[len(rows) // 3].seq
    by_seq = await store.ticks(TickQuery(SYMBOL, start, end, after_seq=after, limit=10**6))
    assert by_seq == sorted((r for r in inside if r.seq > after), key=lambda r: r.seq)
    columns = await store.range_columns(SYMBOL, start, end)
    assert len(columns) == len(inside)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    offsets=st.lists(st.sampled_from([0.0, 0.0, 0.0, 0.25, -3.0, 40.0, -0.5]), min_size=1, max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=4),
    window=st.tuples(st.floats(-50, 200), st.floats(0.1, 200)),
)
def test_every_query_matches_a_plain_oracle(
    tmp_path: Path, offsets: list[float], cuts: list[int], window: tuple[float, float]
) -> None:
    rows = jittered_rows(offsets)
    path = tmp_path / f"oracle-{abs(hash((tuple(offsets), tuple(cuts), window)))}.db"

    async def run() -> None:
        store = open_store(f"sqlite:///{path}")
        assert isinstance(store, SqliteStore)
        await store.open()
        bounds = [0, *sorted(min(c, len(rows)) for c in cuts), len(rows)]
        for low, high in itertools.pairwise(bounds):  # batches of any size, each cut into blocks
            await store.write(rows[low:high])
        await store.write(rows[len(rows) // 2 :])  # a retried batch overlapping what is stored: nothing twice
        start = rows[0].ts + window[0]
        await check_against_oracle(store, rows, start, start + window[1])
        await store.close()

    run_sync(run())
    path.unlink()


async def test_a_retry_that_partly_overlaps_stores_only_the_new_ticks(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ticks.db'}")
    await store.open()
    rows = make_rows(SYMBOL, 3000)
    await store.write(rows[:1500])
    await store.write(rows[1000:2200])  # half stored already
    await store.write(rows[2200:] + rows[:10])
    assert await store.ticks(TickQuery(SYMBOL, start=0, limit=10_000)) == rows
    assert await store.last_seq(SYMBOL) == 3000
    await store.close()


async def test_corrupt_blocks_are_skipped_and_the_rest_still_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ticks.db"
    store = open_store(f"sqlite:///{path}")
    await store.open()
    rows = make_rows(SYMBOL, 400)
    for i in range(0, 400, 100):
        await store.write(rows[i : i + 100])
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE tick_blocks SET trade_ids = x'c1' WHERE first_seq = 101")  # torn
        conn.execute("UPDATE tick_blocks SET seqs = x'0102' WHERE first_seq = 201")  # columns that disagree
        spoil_block(conn, 301, bad_flags=(5,))  # one tick no writer would produce
    got = await store.ticks(TickQuery(SYMBOL, start=0, limit=10_000))
    assert got == rows[:100] + rows[300:305] + rows[306:]
    assert await store.ticks(TickQuery(SYMBOL, after_seq=0, limit=10_000)) == got
    assert "corrupt block" in caplog.text and "invalid ticks" in caplog.text
    await store.write(make_rows(SYMBOL, 450)[400:])  # and writing goes on
    assert await store.last_seq(SYMBOL) == 450
    await store.close()


async def test_a_store_of_the_row_layout_is_moved_to_blocks_at_open(tmp_path: Path) -> None:
    path = tmp_path / "ticks.db"
    rows = make_rows(SYMBOL, 2500) + make_rows("BTC-PERP", 30)
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_SCHEMA)
        conn.executemany("INSERT INTO ticks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    store = open_store(f"sqlite:///{path}")
    await store.open()
    assert await store.ticks(TickQuery(SYMBOL, start=0, limit=10_000)) == rows[:2500]
    assert await store.ticks(TickQuery("BTC-PERP", start=0, limit=100)) == rows[2500:]
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'ticks'").fetchone()[0] == 0
        shapes = conn.execute("SELECT n, ts_max - ts_min FROM tick_blocks").fetchall()
    assert sum(n for n, _ in shapes) == len(rows)
    assert all(n <= 1000 and span <= BLOCK_SPAN_SECONDS for n, span in shapes)  # 625 s of ETH-PERP: 11 blocks
    assert len(shapes) == 11 + 1


async def test_a_store_from_newer_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ticks.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(Exception, match="newer than this code"):
        await asyncio.wait_for(store.open(), 10)
