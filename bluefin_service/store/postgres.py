"""PostgreSQL store (``STORE_URL=postgresql://user@host:port/db[?schema=name]``) over asyncpg.

Batches go in with ``COPY`` (one statement, so all or nothing). If a retry meets rows that did commit
(the connection died after the commit but before its acknowledgement), the primary key rejects the COPY and
the batch is re-sent as ``INSERT ... ON CONFLICT DO NOTHING``, so nothing is stored twice. The schema is
created or migrated at ``open()``; ``?schema=`` selects (and creates) a schema, which tests use to isolate.
"""

from __future__ import annotations

import contextlib
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from bluefin_service.store import COLUMNS, SCHEMA_VERSION, BookRow, Store, StoreError, TickQuery, TickRow, redact

_MIGRATIONS = {
    1: """
    CREATE TABLE IF NOT EXISTS ticks (
        symbol text NOT NULL,
        ts double precision NOT NULL,
        seq bigint NOT NULL,
        kind text NOT NULL,
        price double precision NOT NULL,
        size double precision NOT NULL,
        side text,
        trade_id text,
        PRIMARY KEY (symbol, ts, seq)
    );
    CREATE INDEX IF NOT EXISTS ticks_by_seq ON ticks (symbol, seq);
    """,
    2: """
    CREATE TABLE IF NOT EXISTS book_snapshots (
        symbol text NOT NULL,
        ts double precision NOT NULL,
        version bigint NOT NULL,
        payload bytea NOT NULL,
        PRIMARY KEY (symbol, ts, version)
    );
    """,
}
_SELECT = "SELECT symbol, ts, seq, kind, price, size, side, trade_id FROM ticks"
_INSERT = "INSERT INTO ticks VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING"
_SYMBOLS = """
WITH RECURSIVE s(symbol) AS (
    SELECT min(symbol) FROM ticks
    UNION ALL SELECT (SELECT min(symbol) FROM ticks WHERE symbol > s.symbol) FROM s WHERE s.symbol IS NOT NULL
) SELECT symbol FROM s WHERE symbol IS NOT NULL
"""
CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0


def split_schema(url: str) -> tuple[str, str]:
    """Take ``schema=`` out of the URL (asyncpg does not know it); returns (dsn, schema)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((value for key, value in query if key == "schema"), "public")
    if not schema.replace("_", "").isalnum():
        raise StoreError(f"schema {schema!r} in STORE_URL must be letters, digits and underscores")
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


class PostgresStore(Store):
    def __init__(self, url: str, pool_size: int = 4) -> None:
        self.url = url
        self.dsn, self.schema = split_schema(url)
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            setup = await asyncpg.connect(self.dsn, timeout=CONNECT_TIMEOUT)
        except (OSError, asyncpg.PostgresError) as exc:
            raise StoreError(f"cannot connect to {redact(self.url)}: {exc}") from exc
        try:
            await setup.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await setup.execute(f'SET search_path TO "{self.schema}"')
            await self._migrate(setup)
        finally:
            await setup.close()
        self._pool = await asyncpg.create_pool(
            self.dsn,
            min_size=1,
            max_size=self.pool_size,
            timeout=CONNECT_TIMEOUT,
            command_timeout=COMMAND_TIMEOUT,
            server_settings={"search_path": self.schema},
        )
        self.is_open = True

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("CREATE TABLE IF NOT EXISTS store_meta (key text PRIMARY KEY, value text NOT NULL)")
            await conn.execute("LOCK TABLE store_meta IN EXCLUSIVE MODE")  # two services starting at once
            raw = await conn.fetchval("SELECT value FROM store_meta WHERE key = 'schema_version'")
            version = int(raw or 0)
            if version > SCHEMA_VERSION:
                raise StoreError(f"{redact(self.url)}: schema version {version} is newer than this code's")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(_MIGRATIONS[step])
            await conn.execute(
                "INSERT INTO store_meta VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = $1",
                str(SCHEMA_VERSION),
            )

    def _require(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError(f"store {redact(self.url)} is not open")
        return self._pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        self.is_open = False
        if pool is not None:
            with contextlib.suppress(Exception):
                await pool.close()

    async def write(self, rows: list[TickRow]) -> None:
        async with self._require().acquire() as conn:
            try:
                await conn.copy_records_to_table("ticks", records=rows, columns=COLUMNS, schema_name=self.schema)
            except asyncpg.UniqueViolationError:
                async with conn.transaction():
                    await conn.executemany(_INSERT, rows)

    async def _fetch(self, sql: str, *params: object) -> list[TickRow]:
        records = await self._require().fetch(sql, *params)
        return [TickRow(*record) for record in records]

    async def ticks(self, query: TickQuery) -> list[TickRow]:
        where, params = _where(query.symbol, query.start, query.end)
        if query.kind is not None:
            params.append(query.kind)
            where += f" AND kind = ${len(params)}"
        if query.after_seq is not None:
            params += [query.after_seq, query.limit]
            n = len(params)
            return await self._fetch(f"{_SELECT} WHERE {where} AND seq > ${n - 1} ORDER BY seq, ts LIMIT ${n}", *params)
        params.append(query.limit)
        if query.start is None:
            rows = await self._fetch(
                f"{_SELECT} WHERE {where} ORDER BY ts DESC, seq DESC LIMIT ${len(params)}", *params
            )
            rows.reverse()
            return rows
        return await self._fetch(f"{_SELECT} WHERE {where} ORDER BY ts, seq LIMIT ${len(params)}", *params)

    async def _page(
        self, symbol: str, start: float | None, end: float | None, cursor: tuple[float, int] | None, limit: int
    ) -> list[TickRow]:
        where, params = _where(symbol, start, end)
        if cursor is not None:
            params += [cursor[0], cursor[1]]
            where += f" AND (ts, seq) > (${len(params) - 1}, ${len(params)})"
        params.append(limit)
        return await self._fetch(f"{_SELECT} WHERE {where} ORDER BY ts, seq LIMIT ${len(params)}", *params)

    async def last_before(self, symbol: str, ts: float) -> TickRow | None:
        rows = await self._fetch(
            f"{_SELECT} WHERE symbol = $1 AND ts < $2 ORDER BY ts DESC, seq DESC LIMIT 1", symbol, ts
        )
        return rows[0] if rows else None

    async def last_seq(self, symbol: str) -> int:
        return int(await self._require().fetchval("SELECT MAX(seq) FROM ticks WHERE symbol = $1", symbol) or 0)

    async def count(self, symbol: str, start: float | None, end: float | None) -> int:
        where, params = _where(symbol, start, end)
        return int(await self._require().fetchval(f"SELECT count(*) FROM ticks WHERE {where}", *params))

    async def count_books(self, symbol: str, start: float | None, end: float | None) -> int:
        where, params = _where(symbol, start, end)
        return int(await self._require().fetchval(f"SELECT count(*) FROM book_snapshots WHERE {where}", *params))

    async def symbols(self) -> list[str]:
        return [record[0] for record in await self._require().fetch(_SYMBOLS)]

    async def write_books(self, rows: list[BookRow]) -> None:
        async with self._require().acquire() as conn, conn.transaction():
            await conn.executemany("INSERT INTO book_snapshots VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", rows)

    async def books(
        self, symbol: str, start: float | None, end: float | None, limit: int, after: tuple[float, int] | None = None
    ) -> list[BookRow]:
        where, params = _where(symbol, start, end)
        sql = f"SELECT symbol, ts, version, payload FROM book_snapshots WHERE {where}"
        if after is not None:
            params += after
            sql += f" AND (ts, version) > (${len(params) - 1}, ${len(params)})"
            rows = await self._require().fetch(f"{sql} ORDER BY ts, version LIMIT {int(limit)}", *params)
        elif start is None:
            rows = await self._require().fetch(f"{sql} ORDER BY ts DESC, version DESC LIMIT {int(limit)}", *params)
            rows.reverse()
        else:
            rows = await self._require().fetch(f"{sql} ORDER BY ts, version LIMIT {int(limit)}", *params)
        return [BookRow(row[0], row[1], row[2], bytes(row[3])) for row in rows]

    async def size_bytes(self) -> int:
        return int(await self._require().fetchval("SELECT pg_total_relation_size('ticks')"))

    async def enforce_retention(self, max_age_seconds: float | None, max_bytes: int | None, now: float) -> int:
        """Age: exact. Size: compared with the table's size on disk, which VACUUM reuses but rarely shrinks, so
        one pass per check deletes the oldest share of the time span that the excess represents."""
        pool = self._require()
        symbols = await self.symbols()
        symbols += [r[0] for r in await pool.fetch(_SYMBOLS.replace("ticks", "book_snapshots")) if r[0] not in symbols]
        deleted = 0
        if max_age_seconds is not None:
            deleted += await _delete_before(pool, symbols, now - max_age_seconds)
        if max_bytes is not None:
            used = await self.size_bytes()
            if used > max_bytes:
                sql = "SELECT min(ts), max(ts) FROM ticks WHERE symbol = $1"
                bounds = [await pool.fetchrow(sql, symbol) for symbol in symbols]
                lows = [b[0] for b in bounds if b[0] is not None]
                if lows:
                    first, last = min(lows), max(b[1] for b in bounds if b[1] is not None)
                    fraction = min(0.5, (used - max_bytes) / used + 0.02)
                    deleted += await _delete_before(pool, symbols, first + (last - first) * fraction)
        return deleted


def _where(symbol: str, start: float | None, end: float | None) -> tuple[str, list[object]]:
    where = "symbol = $1"
    params: list[object] = [symbol]
    if start is not None:
        params.append(start)
        where += f" AND ts >= ${len(params)}"
    if end is not None:
        params.append(end)
        where += f" AND ts < ${len(params)}"
    return where, params


async def _delete_before(pool: asyncpg.Pool, symbols: list[str], cutoff: float) -> int:
    deleted = 0
    for symbol in symbols:
        await pool.execute("DELETE FROM book_snapshots WHERE symbol = $1 AND ts < $2", symbol, cutoff)
        status = await pool.execute("DELETE FROM ticks WHERE symbol = $1 AND ts < $2", symbol, cutoff)
        deleted += int(status.split()[-1])
    return deleted
