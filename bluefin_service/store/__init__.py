"""Long-term tick history: the Store interface, the row format and ``open_store(url)``.

A row is a plain tuple ``(symbol, ts, seq, kind, price, size, side, trade_id)`` in that column order, cheap
to build at 100k+/s and to hand to ``executemany`` / ``COPY`` as is. ``kind`` is ``"trade"`` or
``"price_update"``; for a price update ``size`` holds the venue's rolling volume and ``side``/``trade_id``
are None. ``seq`` is the hub's per-symbol sequence number, unique per symbol in a store.

How a store keeps rows is its own: PostgreSQL has one row per tick (``COPY``); SQLite keeps per-symbol blocks of
up to 1000 ticks (``sqlite_blocks.py``), which is what lets the recorder keep up at 100k ticks/s on a few
percent of a core.
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, TypeVar

import msgspec

from marketdata.errors import MarketDataError, ProtocolError
from marketdata.protocol import (
    OrderBookMessage,
    PriceData,
    PriceUpdateMessage,
    TradeData,
    TradeMessage,
    decode_server,
)
from marketdata.ticks import MarketEvent, PriceUpdate, Trade

if TYPE_CHECKING:
    from bluefin_service.store.aggregate import TickColumns

TRADE = "trade"
PRICE_UPDATE = "price_update"
COLUMNS = ("symbol", "ts", "seq", "kind", "price", "size", "side", "trade_id")
SCHEMA_VERSION = 2  # PostgreSQL's: 1 ticks, 2 order-book snapshots (SQLite has its own, in sqlite.py)
PAGE_ROWS = 10_000
BOOK_PAGE_ROWS = 500  # a snapshot is a few KB of JSON


class TickRow(NamedTuple):
    symbol: str
    ts: float
    seq: int
    kind: str
    price: float
    size: float
    side: str | None
    trade_id: str | None


class BookRow(NamedTuple):
    """A recorded order-book snapshot: the ``orderbook`` message (JSON) exactly as clients received it, with the
    book's timestamp and the service's version counter of that symbol's book (unique per snapshot)."""

    symbol: str
    ts: float
    version: int
    payload: bytes


# (ts, seq, is_trade, price, size, is_buy, trade_id): a row as the candle engine reads it, without its symbol
SeqRow = tuple[float, int, int, float, float, int | None, str | None]


def seq_row(row: TickRow) -> SeqRow:
    side = row.side
    return (row.ts, row.seq, row.kind == TRADE, row.price, row.size, None if side is None else side == "buy",
            row.trade_id)  # fmt: skip


class StoreError(MarketDataError):
    """The store cannot be opened, written or read (the message says which and why)."""


class TickQuery(msgspec.Struct, frozen=True):
    """Which ticks to read: one symbol, a half-open time range ``[start, end)``, seq after ``after_seq``."""

    symbol: str
    start: float | None = None
    end: float | None = None
    after_seq: int | None = None
    kind: str | None = None
    limit: int = 1000


class Store(abc.ABC):
    """Where recorded ticks live. Every method may raise StoreError (or the driver's own errors)."""

    url: str
    is_open: bool = False

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create or migrate the schema. Safe to call again after a failure."""

    @abc.abstractmethod
    async def write(self, rows: list[TickRow]) -> None:
        """Append rows atomically: either all of them are stored or none (so a retry never duplicates)."""

    @abc.abstractmethod
    async def write_books(self, rows: list[BookRow]) -> None:
        """Append order-book snapshots atomically; a snapshot already stored is left as it is."""

    @abc.abstractmethod
    async def books(
        self, symbol: str, start: float | None, end: float | None, limit: int, after: tuple[float, int] | None = None
    ) -> list[BookRow]:
        """Snapshots of one symbol with ``start <= ts < end``, oldest first; the newest ``limit`` if no start and
        no ``after``; with ``after`` (a snapshot's ``(ts, version)``) only those ordered after it (keyset paging)."""

    @abc.abstractmethod
    async def ticks(self, query: TickQuery) -> list[TickRow]:
        """Rows of one symbol ordered by (ts, seq); by seq when ``after_seq`` is given."""

    @abc.abstractmethod
    async def last_before(self, symbol: str, ts: float) -> TickRow | None:
        """The newest row of ``symbol`` strictly before ``ts`` (the previous close for a candle range)."""

    @abc.abstractmethod
    async def last_seq(self, symbol: str) -> int:
        """The highest seq stored for ``symbol`` (0 when none): where a restarted hub must number on from."""

    @abc.abstractmethod
    async def count(self, symbol: str, start: float | None, end: float | None) -> int: ...

    @abc.abstractmethod
    async def count_books(self, symbol: str, start: float | None, end: float | None) -> int: ...

    @abc.abstractmethod
    async def symbols(self) -> list[str]: ...

    @abc.abstractmethod
    async def enforce_retention(self, max_age_seconds: float | None, max_bytes: int | None, now: float) -> int:
        """Delete the oldest rows beyond the age and size limits; returns how many were deleted."""

    @abc.abstractmethod
    async def size_bytes(self) -> int: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def iter_range(
        self, symbol: str, start: float | None, end: float | None, page: int = PAGE_ROWS
    ) -> AsyncIterator[list[TickRow]]:
        """Pages of one symbol's rows in (ts, seq) order, read with keyset pagination (bounded memory)."""
        fetch = lambda cursor: self._page(symbol, start, end, cursor, page)  # noqa: E731
        async for rows in _keyset_pages(fetch, None, page, lambda row: (row.ts, row.seq)):
            yield rows

    async def iter_books(
        self, symbol: str, start: float | None, end: float | None, page: int = BOOK_PAGE_ROWS
    ) -> AsyncIterator[list[BookRow]]:
        """Pages of one symbol's book snapshots in (ts, version) order (bounded memory, like ``iter_range``)."""
        first = (-math.inf if start is None else start, -(2**63))  # (ts, version) > this: every ts >= start
        fetch = lambda cursor: self.books(symbol, None, end, page, after=cursor)  # noqa: E731
        async for rows in _keyset_pages(fetch, first, page, lambda row: (row.ts, row.version)):
            yield rows

    async def range_columns(self, symbol: str, start: float | None, end: float | None) -> TickColumns:
        """A range of one symbol as columns for candle building (stores may override with a faster path)."""
        from bluefin_service.store.aggregate import TickColumns

        columns = TickColumns()
        async for page in self.iter_range(symbol, start, end, page=50_000):
            columns.add(page)
        return columns

    async def iter_seq_pages(
        self, symbol: str, start: float | None, end: float | None, page: int = 50_000
    ) -> AsyncIterator[list[SeqRow]]:
        """Pages of ``SeqRow`` in seq order (the order the hub published them), for building candles with the
        live engine. This default sorts each (ts, seq) page by seq."""
        async for rows in self.iter_range(symbol, start, end, page):
            batch = [seq_row(r) for r in rows]
            batch.sort(key=_seq_of)
            yield batch

    @abc.abstractmethod
    async def _page(
        self, symbol: str, start: float | None, end: float | None, cursor: tuple[float, int] | None, limit: int
    ) -> list[TickRow]: ...


_Row = TypeVar("_Row", TickRow, BookRow)


async def _keyset_pages(
    fetch: Callable[[tuple[float, int] | None], Awaitable[list[_Row]]],
    cursor: tuple[float, int] | None,
    page: int,
    key: Callable[[_Row], tuple[float, int]],
) -> AsyncIterator[list[_Row]]:
    """Pages from ``fetch(cursor)`` (rows ordered after ``cursor``) until one comes back short."""
    while True:
        rows = await fetch(cursor)
        if not rows:
            return
        yield rows
        if len(rows) < page:
            return
        cursor = key(rows[-1])


def recorded_book(row: BookRow) -> OrderBookMessage:
    """A recorded snapshot as the ``orderbook`` message it was; raises ValueError saying why it cannot be one."""
    try:
        message = decode_server(row.payload)
    except ProtocolError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(message, OrderBookMessage):
        raise ValueError(f"a {type(message).__name__}, not an orderbook message")
    if any(len(level) != 2 for level in (*message.data.bids, *message.data.asks)):
        raise ValueError("a level that is not [price, size]")
    return message


def _seq_of(row: tuple[object, ...]) -> int:
    return row[1]  # type: ignore[return-value]


def default_store_url(data_dir: Path) -> str:
    return f"sqlite:///{(data_dir / 'ticks.db').resolve()}"


def open_store(url: str) -> Store:
    """Build the store for ``sqlite:///PATH`` or ``postgresql://...`` (not connected yet: call ``open()``)."""
    if url.startswith("sqlite://"):
        from bluefin_service.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("postgresql://", "postgres://")):
        from bluefin_service.store.postgres import PostgresStore

        return PostgresStore(url)
    raise StoreError(f"unsupported STORE_URL {redact(url)!r}: use sqlite:///path/to/file.db or postgresql://...")


def redact(url: str) -> str:
    """The URL without its password, for logs and /streaming/status."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _at, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


# ---------------------------------------------------------------------------------------------------------
# Event <-> row <-> wire message
# ---------------------------------------------------------------------------------------------------------
def event_row(event: MarketEvent, seq: int) -> TickRow:
    """The row a published event is stored as."""
    if isinstance(event, Trade):
        return TickRow(event.symbol, event.timestamp, seq, TRADE, event.price, event.size, event.side, event.trade_id)
    return TickRow(event.symbol, event.timestamp, seq, PRICE_UPDATE, event.price, event.volume, None, None)


def row_event(row: TickRow) -> MarketEvent:
    """The normalized event a row was recorded from (what replay publishes again)."""
    if row[3] == TRADE:
        return Trade(row[0], row[1], row[4], row[5], row[6] or "buy", row[7] or "")  # type: ignore[arg-type]
    return PriceUpdate(row[0], row[1], row[4], row[5])


def row_message(row: TickRow) -> TradeMessage | PriceUpdateMessage:
    """The wire message a row was recorded from, with its original seq (what ``GET /trades`` returns)."""
    if row[3] == TRADE:
        data = TradeData(row[4], row[5], row[6] or "buy", row[7] or "")  # type: ignore[arg-type]
        return TradeMessage(row[0], row[1], data, row[2])
    return PriceUpdateMessage(row[0], row[1], PriceData(row[4], row[5]), row[2])


def parse_timestamp(raw: str | float | int) -> float:
    """Epoch seconds (``1764100000.5``) or ISO-8601 (``2026-11-25T20:00:00Z``; no zone means UTC)."""
    if isinstance(raw, int | float):
        value = float(raw)
    else:
        text = raw.strip()
        try:
            value = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                raise ValueError(
                    f"{raw!r} is not a time: use epoch seconds (1764100000.5) or ISO-8601 (2026-11-25T20:00:00Z)"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            value = parsed.timestamp()
    if not math.isfinite(value) or not 0 <= value < 1e11:
        raise ValueError(f"{raw!r} is out of range for a timestamp in epoch seconds")
    return value
