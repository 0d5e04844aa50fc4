"""The Store contract, run against a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_helpers import make_rows, pg_url  # noqa: F401 - pg_url is a fixture

from bluefin_service.store import BookRow, Store, StoreError, TickQuery, event_row, open_store, row_event, row_message
from marketdata.protocol import market_message

SYMBOL = "ETH-PERP"


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nested' / 'ticks.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    opened = open_store(url)
    await opened.open()
    yield opened
    await opened.close()


async def test_rows_come_back_exactly_and_in_order(store: Store) -> None:
    rows = make_rows(SYMBOL, 500) + make_rows("BTC-PERP", 10)
    await store.write(rows[:300])
    await store.write(rows[300:])
    got = await store.ticks(TickQuery(SYMBOL, start=0, limit=10_000))
    assert got == rows[:500]
    assert sorted(await store.symbols()) == ["BTC-PERP", SYMBOL]
    assert await store.count(SYMBOL, rows[10].ts, rows[20].ts) == 10


async def test_last_seq_is_the_highest_stored_per_symbol(store: Store) -> None:
    assert await store.last_seq(SYMBOL) == 0
    rows = make_rows(SYMBOL, 40) + make_rows("BTC-PERP", 7)
    await store.write(rows[30:] + rows[:30])  # in any order
    assert await store.last_seq(SYMBOL) == max(row.seq for row in rows[:40])
    assert await store.last_seq("BTC-PERP") == max(row.seq for row in rows[40:])
    assert await store.last_seq("SOL-PERP") == 0


async def test_a_retried_batch_is_not_stored_twice(store: Store) -> None:
    rows = make_rows(SYMBOL, 50)
    await store.write(rows)
    await store.write(rows)  # the retry after an ambiguous commit
    assert await store.count(SYMBOL, None, None) == 50


async def test_queries_by_time_seq_kind_and_newest(store: Store) -> None:
    rows = make_rows(SYMBOL, 100)
    await store.write(rows)
    assert await store.ticks(TickQuery(SYMBOL, start=rows[10].ts, end=rows[15].ts)) == rows[10:15]
    assert await store.ticks(TickQuery(SYMBOL, after_seq=95, limit=3)) == rows[95:98]
    assert await store.ticks(TickQuery(SYMBOL, limit=4)) == rows[-4:]  # no start: the newest, oldest first
    trades = await store.ticks(TickQuery(SYMBOL, start=0, kind="trade", limit=1000))
    assert trades == [row for row in rows if row.kind == "trade"]
    assert await store.last_before(SYMBOL, rows[7].ts) == rows[6]
    assert await store.last_before(SYMBOL, rows[0].ts) is None


async def test_iter_range_pages_cover_the_range_once(store: Store) -> None:
    rows = make_rows(SYMBOL, 1000, step=0.001)
    rows += [rows[-1]._replace(seq=2000)]  # same timestamp, later seq: keyset pagination must not skip it
    await store.write(rows)
    pages = [page async for page in store.iter_range(SYMBOL, rows[5].ts, None, page=97)]
    assert max(len(page) for page in pages) == 97
    assert [row for page in pages for row in page] == rows[5:]


async def test_retention_by_age_and_by_size(store: Store) -> None:
    rows = make_rows(SYMBOL, 4000, start_ts=1_000_000.0, step=1.0)
    await store.write(rows)
    deleted = await store.enforce_retention(1000.0, None, now=1_000_000.0 + 4000)
    assert deleted == 3000
    assert (await store.ticks(TickQuery(SYMBOL, start=0, limit=1)))[0] == rows[3000]
    if store.url.startswith("sqlite"):  # PostgreSQL only reuses freed space, the contract there is "deletes oldest"
        await store.write(make_rows(SYMBOL, 20_000, start_ts=2_000_000.0, step=0.01))
        limit = await store.size_bytes() // 3
        await store.enforce_retention(None, limit, now=2_000_000.0)
        assert await store.size_bytes() <= limit
        newest = await store.ticks(TickQuery(SYMBOL, limit=1))
        assert newest[0].ts == pytest.approx(2_000_000.0 + 19_999 * 0.01)  # the newest survive


async def test_published_events_round_trip_to_wire_messages(store: Store) -> None:
    rows = make_rows(SYMBOL, 6)
    events = [row_event(row) for row in rows]
    await store.write([event_row(event, row.seq) for event, row in zip(events, rows, strict=True)])
    stored = await store.ticks(TickQuery(SYMBOL, start=0))
    assert stored == rows
    assert [row_message(row) for row in stored] == [market_message(e, r.seq) for e, r in zip(events, rows, strict=True)]


async def test_bad_urls_say_what_to_use(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="sqlite:///"):
        open_store("mysql://localhost/ticks")
    with pytest.raises(StoreError, match="schema"):
        open_store("postgresql://postgres@127.0.0.1:5432/test?schema=x;drop")
    not_a_db = tmp_path / "garbage.db"
    not_a_db.write_bytes(b"this is not an sqlite file" * 100)
    broken = open_store(f"sqlite:///{not_a_db}")
    with pytest.raises(Exception, match="not a database"):
        await broken.open()
    assert not broken.is_open


async def test_order_book_snapshots_come_back_by_time_and_are_not_stored_twice(store: Store) -> None:
    rows = [
        BookRow(SYMBOL, 1_700_000_000.0 + i, i + 1, b'{"type":"orderbook","symbol":"ETH-PERP","n":%d}' % i)
        for i in range(20)
    ]
    await store.write_books(rows[:15])
    await store.write_books(rows[10:])  # a retried batch overlapping what is stored
    assert await store.books(SYMBOL, rows[3].ts, rows[8].ts, 100) == rows[3:8]
    assert await store.books(SYMBOL, None, None, 4) == rows[-4:]  # no start: the newest, oldest first
    assert await store.books(SYMBOL, rows[0].ts, None, 5) == rows[:5]
    assert await store.books("BTC-PERP", None, None, 10) == []
    await store.enforce_retention(10.5, None, now=rows[-1].ts)
    assert [row.version for row in await store.books(SYMBOL, None, None, 100)] == list(range(10, 21))


async def test_iter_books_pages_in_time_then_version_order_through_ties(store: Store) -> None:
    # Snapshots that share a timestamp (a book stamped by the venue's last update) and a restart whose version
    # counter started over: paging must neither skip nor repeat any of them.
    base = 1_700_000_000.0
    rows = [BookRow(SYMBOL, base + i // 4, 100 + i, b'{"n":%d}' % i) for i in range(23)]
    rows += [BookRow(SYMBOL, base + 10 + i, i, b'{"after restart":%d}' % i) for i in range(5)]
    await store.write_books(rows[::-1])
    for page in (1, 3, 4, 7, 100):
        pages = [p async for p in store.iter_books(SYMBOL, None, None, page)]
        assert [row for p in pages for row in p] == rows, page
        assert all(len(p) <= page for p in pages)
    ranged = [row async for p in store.iter_books(SYMBOL, base + 2, base + 11, 3) for row in p]
    assert ranged == [row for row in rows if base + 2 <= row.ts < base + 11]
    assert await store.count_books(SYMBOL, base + 2, base + 11) == len(ranged)
    assert await store.count_books(SYMBOL, None, None) == len(rows)
    assert await store.count_books("BTC-PERP", None, None) == 0
