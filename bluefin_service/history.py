"""History over HTTP: ``GET /market_data/{symbol}`` (candles) and ``GET /trades/{symbol}`` (raw ticks).

Both read the store plus what the recorder holds but has not flushed yet, so an answer reaches up to the
last published tick. ``/trades`` returns ticks exactly as the WebSocket sent them (``type``, ``symbol``,
``timestamp``, ``data``, ``seq``), so a client repairs a gap with the same code that handles live messages.
Bad parameters get a 400 ``{"error": {"code", "message"}}``; a store that cannot be read gets a 503.

``/market_data`` candles come from the live candle engine (``marketdata.candles``) fed with the stored ticks in
seq order (``store/history_candles.py``), so they equal, field by field, the final ``candle`` messages the
WebSocket sent for the same ticks. Where they may differ, by construction: a tick the live engine got after
its candle's watermark (the live candle's ``flags.late_ticks``) is inside the history candle; the ``gap`` and
``reconnect`` flags (from the exchange feed's status, not stored) are not set; and a candle that began before
the service (re)started holds every stored tick here, the live one only those after the start.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import msgspec
from aiohttp import web

from bluefin_service.store import (
    PRICE_UPDATE,
    TRADE,
    TickQuery,
    TickRow,
    parse_timestamp,
    row_message,
    seq_row,
)
from bluefin_service.store.aggregate import parse_interval
from bluefin_service.store.history_candles import HistoryCandles
from bluefin_service.store.recorder import pending_rows
from marketdata.protocol import ProtocolError, normalize_symbol

if TYPE_CHECKING:
    from bluefin_service.service import StreamingService

log = logging.getLogger(__name__)

MAX_TRADES = 10_000
MAX_CANDLES = 100_000
MAX_RANGE_TICKS = 5_000_000  # about 200 MB of columns: the bound on one candle request's memory
DEFAULT_TRADES = 1000
DEFAULT_CANDLES = 500
_TRADES_PARAMS = ("start", "end", "limit", "after_seq", "type")
_CANDLE_PARAMS = ("interval", "limit", "end")
_BOOK_PARAMS = ("start", "end", "limit")
MAX_BOOKS = 10_000
DEFAULT_BOOKS = 100
_encode = msgspec.json.Encoder().encode


class BadRequest(ValueError):
    pass


def history_routes(service_of: Callable[[web.Request], StreamingService]) -> list[web.RouteDef]:
    """The routes to add to the app; ``service_of(request)`` finds the running service."""

    async def trades(request: web.Request) -> web.Response:
        return await _guarded(service_of(request), request, _trades)

    async def market_data(request: web.Request) -> web.Response:
        return await _guarded(service_of(request), request, _market_data)

    async def orderbooks(request: web.Request) -> web.Response:
        return await _guarded(service_of(request), request, _orderbooks)

    return [
        web.get("/trades/{symbol}", trades),
        web.get("/market_data/{symbol}", market_data),
        web.get("/orderbooks/{symbol}", orderbooks),
    ]


async def _guarded(service: StreamingService, request: web.Request, handler: Callable) -> web.Response:
    try:
        symbol = normalize_symbol(request.match_info["symbol"])
    except ProtocolError as exc:
        return _error(400, exc.code, exc.message)
    try:
        if not service.store.is_open:
            await service.store.open()
        return await handler(service, symbol, request.query)
    except BadRequest as exc:
        return _error(400, "bad_request", str(exc))
    except Exception as exc:  # the store is down or broken: say so, keep serving
        log.warning("history read for %s failed: %s: %s", symbol, type(exc).__name__, exc)
        return _error(503, "store_unavailable", f"the tick store cannot be read right now: {exc}")


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _json(payload: object) -> web.Response:
    return web.Response(body=_encode(payload), content_type="application/json")


# -- parameters ----------------------------------------------------------------------------------------------
def _check_names(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    for name in query:
        if name not in allowed:
            raise BadRequest(f"unknown parameter {name!r}; accepted: {', '.join(allowed)}")


def _time(query: Mapping[str, str], name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_timestamp(raw)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None


def _time_range(query: Mapping[str, str]) -> tuple[float | None, float | None]:
    start, end = _time(query, "start"), _time(query, "end")
    if start is not None and end is not None and end <= start:
        raise BadRequest(f"end ({end}) must be after start ({start})")
    return start, end


def _int(query: Mapping[str, str], name: str, default: int | None, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw!r} is not an integer") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={value} is out of range: {low} to {high}")
    return value


# -- GET /trades/{symbol} ------------------------------------------------------------------------------------
async def _trades(service: StreamingService, symbol: str, query: Mapping[str, str]) -> web.Response:
    _check_names(query, _TRADES_PARAMS)
    start, end = _time_range(query)
    limit = _int(query, "limit", DEFAULT_TRADES, 1, MAX_TRADES) or DEFAULT_TRADES
    after_seq = _int(query, "after_seq", None, 0, 2**62)
    kind = query.get("type", "all")
    if kind not in ("all", TRADE, PRICE_UPDATE):
        raise BadRequest(f"type={kind!r}: use trade, price_update or all")
    q = TickQuery(symbol, start, end, after_seq, None if kind == "all" else kind, limit)
    stored = await service.store.ticks(q)
    rows = _merge_pending(stored, await _pending(service, symbol), q)
    if not rows and symbol not in service.hub.channels and symbol not in await service.store.symbols():
        return _error(404, "unknown_symbol", f"no data recorded for {symbol}")
    return _json(
        {
            "symbol": symbol,
            "count": len(rows),
            "ticks": [row_message(row) for row in rows],
            "last_seq": rows[-1].seq if rows else after_seq,
            "last_timestamp": rows[-1].ts if rows else None,
        }
    )


# -- GET /orderbooks/{symbol} ----------------------------------------------------------------------------
async def _orderbooks(service: StreamingService, symbol: str, query: Mapping[str, str]) -> web.Response:
    """Recorded order-book snapshots (exchange sources), each the ``orderbook`` message clients received."""
    _check_names(query, _BOOK_PARAMS)
    start, end = _time_range(query)
    limit = _int(query, "limit", DEFAULT_BOOKS, 1, MAX_BOOKS) or DEFAULT_BOOKS
    rows = await service.store.books(symbol, start, end, limit)
    recorder = service.recorder
    if recorder is not None:  # snapshots not stored yet, newest last
        seen = {(row.ts, row.version) for row in rows}
        low, high = -math.inf if start is None else start, math.inf if end is None else end
        pending = [
            row for row in recorder.pending_books(symbol) if (row.ts, row.version) not in seen and low <= row.ts < high
        ]
        rows = sorted(rows + pending, key=lambda row: (row.ts, row.version))
        rows = rows[:limit] if start is not None else rows[-limit:]
    if not rows and symbol not in service.hub.channels and symbol not in await service.store.symbols():
        return _error(404, "unknown_symbol", f"no data recorded for {symbol}")
    head = _encode({"symbol": symbol, "count": len(rows)})[:-1]
    body = head + b',"books":[' + b",".join(row.payload for row in rows) + b"]}"
    return web.Response(body=body, content_type="application/json")


async def _pending(service: StreamingService, symbol: str) -> list[TickRow]:
    recorder = service.recorder
    if recorder is None:
        return []
    pending = recorder.pending_blocks(symbol)
    if not pending:
        return []
    return await asyncio.to_thread(pending_rows, pending)


def _merge_pending(stored: list[TickRow], pending: list[TickRow], q: TickQuery) -> list[TickRow]:
    """Add not-yet-flushed rows that match the query (a batch being written may be in both)."""
    if not pending:
        return stored
    seen = {(row.ts, row.seq) for row in stored}
    extra = [
        row
        for row in pending
        if (row.ts, row.seq) not in seen
        and (q.kind is None or row.kind == q.kind)
        and (q.start is None or row.ts >= q.start)
        and (q.end is None or row.ts < q.end)
        and (q.after_seq is None or row.seq > q.after_seq)
    ]
    if not extra:
        return stored
    if q.after_seq is not None:
        return sorted(stored + extra, key=lambda r: (r.seq, r.ts))[: q.limit]
    merged = sorted(stored + extra, key=lambda r: (r.ts, r.seq))
    return merged[-q.limit :] if q.start is None else merged[: q.limit]


# -- GET /market_data/{symbol} -------------------------------------------------------------------------------
async def _market_data(service: StreamingService, symbol: str, query: Mapping[str, str]) -> web.Response:
    _check_names(query, _CANDLE_PARAMS)
    try:
        interval = parse_interval(query.get("interval", "1m"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    limit = _int(query, "limit", DEFAULT_CANDLES, 1, MAX_CANDLES) or DEFAULT_CANDLES
    now = time.time()
    end = _time(query, "end") or now
    last_bucket = math.floor(min(end, now) / interval)
    first_start = float((last_bucket - limit + 1) * interval)
    range_end = float((last_bucket + 1) * interval)
    store = service.store
    ticks = await store.count(symbol, first_start, range_end)
    if ticks > MAX_RANGE_TICKS:
        raise BadRequest(
            f"{limit} candles of {interval}s cover {ticks:,} ticks (at most {MAX_RANGE_TICKS:,}); "
            "ask for fewer candles, or use `bluefin-service export --what candles` for long ranges"
        )
    previous = await store.last_before(symbol, first_start)
    settings = service.settings
    builder = HistoryCandles(
        symbol,
        interval,
        settings.candle_intervals,
        settings.candle_grace_seconds,
        first_start,
        limit,
        previous.price if previous else None,
    )
    async for page in store.iter_seq_pages(symbol, first_start, range_end):
        await asyncio.to_thread(builder.feed, page)
    newest = builder.max_seq  # a batch being written may already be stored: take only what is newer
    pending = [
        seq_row(row)
        for row in await _pending(service, symbol)
        if first_start <= row.ts < range_end and row.seq > newest
    ]
    pending.sort(key=lambda row: row[1])
    builder.feed(pending)
    candles = await asyncio.to_thread(builder.finish, now)
    if not candles and symbol not in service.hub.channels and symbol not in await store.symbols():
        return _error(404, "unknown_symbol", f"no data recorded for {symbol}")
    return _json({"symbol": symbol, "interval": interval, "count": len(candles), "candles": candles})
