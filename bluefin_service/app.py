"""HTTP and WebSocket routes. They parse, check and hand over: the hub does the streaming.

aiohttp does the handshakes, HTTP and the incoming frames; after the handshake the hub writes pre-built
frames straight to the connection's transport (see ``hub.py``), so no per-client ``await send()`` exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from typing import Any

from aiohttp import WSMsgType, web

from bluefin_service.config import ServiceSettings
from bluefin_service.handshake import LenientWebSocketResponse
from bluefin_service.history import history_routes
from bluefin_service.hub import Connection
from bluefin_service.service import StreamingService
from bluefin_service.session import ClientSession
from marketdata.protocol import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    ErrorCode,
    ProtocolError,
    parse_resume_param,
    parse_symbol_list,
)

log = logging.getLogger(__name__)

SERVICE_KEY = web.AppKey("service", StreamingService)
CLOSE_TIMEOUT = 2.0
_connection_ids = itertools.count(1)
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 426: "upgrade_required"}


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        if exc.status == 404:
            message = f"no route for {request.method} {request.path}"
        elif exc.status == 405:
            message = f"{request.method} is not allowed on {request.path}"
        else:
            message = exc.text or exc.reason
        extra = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return json_error(exc.status, code, message, **extra)


async def health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE_KEY].health())


async def streaming_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE_KEY].status())


async def streaming_start(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    changed = service.start_streaming()
    return web.json_response({"running": True, "changed": changed})


async def streaming_stop(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    changed = await service.stop_streaming()
    return web.json_response({"running": False, "changed": changed})


async def ws_single(request: web.Request) -> web.StreamResponse:
    return await _stream(request, request.match_info["symbol"], single=True)


async def ws_multi(request: web.Request) -> web.StreamResponse:
    return await _stream(request, request.match_info["symbols"], single=False)


async def _stream(request: web.Request, raw_symbols: str, single: bool) -> web.StreamResponse:
    service = request.app[SERVICE_KEY]
    settings = service.settings
    ws = LenientWebSocketResponse(
        max_msg_size=settings.max_message_bytes, compress=settings.ws_compression, autoping=True
    )
    if not ws.can_prepare(request).ok:
        return json_error(
            426,
            "upgrade_required",
            "this endpoint speaks WebSocket; connect with a WebSocket client",
            Upgrade="websocket",
        )
    await ws.prepare(request)
    transport = request.transport
    if transport is None:
        return ws
    closers: set[asyncio.Task[None]] = set()

    def close(code: int, reason: str) -> None:
        task = asyncio.create_task(_close(ws, transport, code, reason))
        closers.add(task)
        task.add_done_callback(closers.discard)

    on_slow = "latest" if request.query.get("on_slow") == "latest" else "close"
    conn = Connection(
        next(_connection_ids),
        transport,
        close,
        codec=int(ws.compress or 0),
        on_slow=on_slow,
        max_buffer=settings.max_buffer_bytes,
    )
    hub = service.hub
    hub.attach(conn)
    session = ClientSession(
        hub,
        conn,
        max_symbols=settings.max_symbols_per_connection,
        rate=settings.client_message_rate,
        burst=settings.client_message_burst,
        candles=service.candles,
        books=service.books,
    )
    try:
        _open_subscriptions(session, request, raw_symbols, single)
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                keep = session.on_text(message.data)
            elif message.type is WSMsgType.BINARY:
                keep = session.on_binary()
            else:
                break
            if not keep:
                limit = f"{settings.client_message_rate:g}/s after a burst of {settings.client_message_burst}"
                hub.flush()  # first: replies to the messages accepted before the flood are still owed
                hub.detach(conn)
                await _close(ws, transport, CLOSE_POLICY_VIOLATION, f"message flood: more than {limit}")
                break
    finally:
        hub.detach(conn)
    return ws


def _open_subscriptions(session: ClientSession, request: web.Request, raw: str, single: bool) -> None:
    """Subscribe to the path's symbols, resuming from ``?resume=SYM:SEQ,...`` or ``?last_seq=N``."""
    try:
        symbols = parse_symbol_list(raw)
    except ProtocolError as exc:
        session.error(exc.code, exc.message)
        return
    if single and len(symbols) != 1:
        session.error(ErrorCode.INVALID_SYMBOL, f"/ws/{{symbol}} takes one symbol; use /ws/multi/{raw}")
        return
    resume: dict[str, int] = {}
    try:
        if "resume" in request.query:
            resume.update(parse_resume_param(request.query["resume"], symbols[0] if single else None))
        if "last_seq" in request.query:
            if not single:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, "last_seq=N is for /ws/{symbol}; use resume=SYM:SEQ")
            resume.update(parse_resume_param(request.query["last_seq"], symbols[0]))
    except ProtocolError as exc:
        session.error(exc.code, f"{exc.message}; streaming live without resume")
        resume = {}
    intervals, rate = _candle_params(session, request)
    session.subscribe(symbols, resume, intervals, rate)


def _candle_params(session: ClientSession, request: web.Request) -> tuple[list[int], float | None]:
    """``?candles=1,15,60&candle_rate=2``: server-side candle streams and provisional updates per second."""
    intervals: list[int] = []
    for part in request.query.get("candles", "").split(","):
        part = part.strip().removesuffix("s")
        if not part:
            continue
        if not part.isdigit():
            session.error(ErrorCode.INVALID_MESSAGE, f"candles=... takes whole seconds like 1,15,60; got {part!r}")
            continue
        intervals.append(int(part))
    rate: float | None = None
    if "candle_rate" in request.query:
        try:
            rate = float(request.query["candle_rate"])
        except ValueError:
            session.error(
                ErrorCode.INVALID_MESSAGE, f"candle_rate must be a number, got {request.query['candle_rate']!r}"
            )
    return intervals, rate


async def _close(ws: web.WebSocketResponse, transport: asyncio.BaseTransport, code: int, reason: str) -> None:
    try:
        await asyncio.wait_for(ws.close(code=code, message=reason.encode()[:123], drain=False), CLOSE_TIMEOUT)
    except (TimeoutError, ConnectionError, RuntimeError):
        pass
    finally:
        if not transport.is_closing() or (
            isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size()
        ):
            transport.abort()


async def _on_startup(app: web.Application) -> None:
    await app[SERVICE_KEY].start()


async def _on_shutdown(app: web.Application) -> None:
    service = app[SERVICE_KEY]
    await service.stop_streaming()
    hub = service.hub
    hub.flush()
    conns = list(hub.connections)
    for conn in conns:
        hub.detach(conn)
        conn.close(CLOSE_GOING_AWAY, "service shutting down")
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.sleep(0.05 if conns else 0)


async def _on_cleanup(app: web.Application) -> None:
    await app[SERVICE_KEY].close()


def create_app(settings: ServiceSettings, service: StreamingService | None = None) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=1024 * 1024)
    app[SERVICE_KEY] = service or StreamingService(settings)
    app.add_routes(
        [
            web.get("/health", health),
            web.get("/streaming/status", streaming_status),
            web.post("/streaming/start", streaming_start),
            web.post("/streaming/stop", streaming_stop),
            web.get("/ws/multi/{symbols}", ws_multi),
            web.get("/ws/{symbol}", ws_single),
        ]
    )
    app.add_routes(history_routes(lambda request: request.app[SERVICE_KEY]))
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app
