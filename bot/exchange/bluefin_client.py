"""BluefinServiceClient: the guide's WebSocket client, resumable by ``seq``.

One supervisor task connects, reads and reconnects; one dispatcher task runs the callbacks, in stream order,
from a bounded queue. When the queue is full the reader waits (backpressure): the socket fills, the service's
slow-consumer policy may close us, and the reconnect resumes from the last ``seq``, so nothing is lost.

Every reconnect resumes with ``?resume=SYM:SEQ,...``: the service replays what we missed, or sends a ``gap``
saying what it no longer has. Messages at or below the last ``seq`` seen are dropped as duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from marketdata.errors import ConfigError
from marketdata.protocol import (
    CandleMessage,
    ErrorMessage,
    GapMessage,
    HeartbeatMessage,
    PingRequest,
    PongMessage,
    PriceUpdateMessage,
    ProtocolError,
    SubscribedMessage,
    TradeMessage,
    decode_server,
    encode,
    normalize_symbol,
)

log = logging.getLogger(__name__)

DEFAULT_SERVICE_URL = "http://localhost:8080"
SERVICE_URL_ENV = "EXCHANGE__BLUEFIN_SERVICE_URL"
Callback = Callable[[dict[str, Any]], Any]
_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_COUNTERS = (  # noqa: SIM905
    "connections reconnects resumes gap_count messages_received duplicates_dropped invalid_messages server_errors"
    " callback_errors connect_failures stale_disconnects backpressure_waits unexpected_symbol"
).split()


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with full jitter: before retry n (n >= 1) wait U(0, min(max_delay, base * factor**(n-1))).

    The first retry after a connection that lived ``stable_after`` seconds is immediate. The default cap keeps a
    reconnect under a second once the service is back; raise it for a remote service shared by many clients.
    """

    base_delay: float = 0.05
    max_delay: float = 0.75
    factor: float = 2.0
    stable_after: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.base_delay <= self.max_delay) or self.factor < 1 or self.stable_after < 0:
            raise ConfigError(f"reconnect policy needs 0 < base_delay <= max_delay and factor >= 1, got {self}")

    def delay(self, failures: int, rng: random.Random) -> float:
        if failures <= 0:
            return 0.0
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * self.factor ** min(failures - 1, 64)))


def ws_base_url(service_url: str) -> str:
    """``http://host:8080`` -> ``ws://host:8080`` (https -> wss; ws/wss pass through)."""
    parts = urlsplit(service_url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if scheme is None or not parts.hostname or not port_ok:
        raise ConfigError(f"service URL {service_url!r} must look like http://host:port (or https://, ws://, wss://)")
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, path.removesuffix("/ws"), "", ""))


def stream_url(base: str, symbols: Sequence[str], resume: dict[str, int]) -> str:
    path = f"/ws/{symbols[0]}" if len(symbols) == 1 else "/ws/multi/" + ",".join(symbols)
    query = "?resume=" + ",".join(f"{symbol}:{seq}" for symbol, seq in resume.items()) if resume else ""
    return base + path + query


def service_urls_from(service_url: str | Sequence[str] | None) -> list[str]:
    """The URL(s) given, else ``EXCHANGE__BLUEFIN_SERVICE_URL`` (comma-separated allowed), else the default."""
    raw = service_url if service_url is not None else os.environ.get(SERVICE_URL_ENV) or DEFAULT_SERVICE_URL
    urls = [u.strip() for u in raw.split(",")] if isinstance(raw, str) else [str(u).strip() for u in raw]
    urls = [u for u in urls if u]
    if not urls:
        raise ConfigError("no Bluefin service URL given")
    return urls


class BluefinServiceClient:
    def __init__(
        self,
        service_url: str | Sequence[str] | None = None,
        *,
        reconnect: ReconnectPolicy | None = None,
        heartbeat_interval: float = 30.0,
        stale_after_heartbeats: float = 2.5,
        open_timeout: float = 5.0,
        max_message_bytes: int = 1 << 20,
        compression: str | None = None,
        queue_size: int = 10_000,
        gap_history: int = 100,
        proxy: str | None = None,
        seed: int | None = None,
    ) -> None:
        if heartbeat_interval <= 0 or stale_after_heartbeats < 1 or queue_size < 1 or open_timeout <= 0:
            raise ConfigError("heartbeat_interval, open_timeout > 0, stale_after_heartbeats >= 1, queue_size >= 1")
        self.service_urls = service_urls_from(service_url)
        self._bases = [ws_base_url(u) for u in self.service_urls]
        self.policy = reconnect or ReconnectPolicy()
        self.heartbeat_interval = heartbeat_interval
        self.stale_timeout = heartbeat_interval * stale_after_heartbeats
        self._connect_options: dict[str, Any] = {
            "open_timeout": open_timeout,
            "max_size": max_message_bytes,
            "compression": compression,
            "ping_interval": None,  # liveness is ours: heartbeats, app pings and the stale watchdog
            "close_timeout": 1.0,
            "proxy": proxy,
        }
        self._queue_size = queue_size
        self._rng = random.Random(seed)
        self._callbacks: dict[str, list[Callback]] = {"price": [], "trade": [], "gap": [], "reconnect": []}
        self.symbols: list[str] = []
        self._subscribed: frozenset[str] = frozenset()
        self._last_seq: dict[str, int] = {}
        self._server_seq: dict[str, int] = {}
        self._latest_price: dict[str, float] = {}
        self._gaps: deque[dict[str, Any]] = deque(maxlen=gap_history)
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._ws: ClientConnection | None = None
        self._url: str | None = None
        self._url_index = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._first_round = asyncio.Event()
        self._stopping = False
        self._backpressured = False
        self._last_message_mono = 0.0
        self._disconnected_at: float | None = None
        self._disconnected_wall: float | None = None
        self._invalid_logged_at = 0.0
        self.stats: dict[str, Any] = dict.fromkeys(_COUNTERS, 0)
        self.stats.update(last_message_time=None, last_error=None, last_disconnect_reason=None)
        self.stats.update(last_reconnect_seconds=None, rtt_ms=None)

    # -- the guide's API ---------------------------------------------------------------------------------
    async def connect_websocket(self, symbols: list[str]) -> bool:
        """Start streaming ``symbols``; True once connected. If the first try of every URL fails it returns
        False and keeps retrying in the background until ``disconnect_websocket()``."""
        wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
        if not wanted:
            raise ConfigError("connect_websocket needs at least one symbol")
        if self._supervisor is not None:
            await self.disconnect_websocket()
        self.symbols = wanted
        self._subscribed = frozenset(wanted)
        self._stopping = False
        self._first_round = asyncio.Event()
        self._queue = asyncio.Queue(self._queue_size)
        self._dispatcher = asyncio.create_task(self._dispatch(self._queue), name="bluefin-dispatch")
        self._supervisor = asyncio.create_task(self._run(), name="bluefin-websocket")
        await self._first_round.wait()
        if not self.is_websocket_connected():
            log.error("Failed to connect to WebSocket: %s (retrying in the background)", self.stats["last_error"])
        return self.is_websocket_connected()

    async def disconnect_websocket(self) -> None:
        self._stopping = True
        ws, supervisor, dispatcher = self._ws, self._supervisor, self._dispatcher
        self._supervisor = self._dispatcher = None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        current = asyncio.current_task()
        for task in (supervisor, dispatcher):
            if task is not None:
                task.cancel()
                if task is not current:  # a callback may call this from the dispatcher itself
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        self._ws = None

    def subscribe_to_price_updates(self, callback: Callback) -> None:
        """``callback({"symbol", "price", "volume", "timestamp", "seq", "received_at"})``; sync or async."""
        self._callbacks["price"].append(callback)

    def subscribe_to_trades(self, callback: Callback) -> None:
        """``callback({"symbol", "price", "size", "side", "trade_id", "timestamp", "seq", "received_at"})``."""
        self._callbacks["trade"].append(callback)

    def subscribe_to_gaps(self, callback: Callback) -> None:
        """``callback({"symbol", "from_seq", "to_seq", "reason", "time"})`` for messages that cannot be replayed."""
        self._callbacks["gap"].append(callback)

    def subscribe_to_reconnects(self, callback: Callback) -> None:
        """``callback({"url", "resumed", "time", "down_since"})`` after each reconnection, in stream order."""
        self._callbacks["reconnect"].append(callback)

    def get_latest_price(self, symbol: str) -> float | None:
        return self._latest_price.get(str(symbol).strip().upper())

    def is_websocket_connected(self) -> bool:
        return self._ws is not None

    def get_websocket_status(self) -> dict[str, Any]:
        queue = self._queue
        return {
            "connected": self.is_websocket_connected(),
            "url": self._url,
            "service_urls": list(self.service_urls),
            "symbols": list(self.symbols),
            **self.stats,
            "gaps": list(self._gaps),
            "last_seq": dict(self._last_seq),
            "server_last_seq": dict(self._server_seq),
            "queue_size": queue.qsize() if queue is not None else 0,
            "queue_capacity": self._queue_size,
        }

    # -- connection lifecycle ----------------------------------------------------------------------------
    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            await asyncio.sleep(self.policy.delay(failures, self._rng))
            base = self._bases[self._url_index]
            resume = {s: self._last_seq[s] for s in self.symbols if s in self._last_seq}
            url = stream_url(base, self.symbols, resume)
            try:
                ws = await connect(url, **self._connect_options)
            except Exception as exc:  # every connect failure is retryable; the URL was checked up front
                failures += 1
                self.stats["connect_failures"] += 1
                self.stats["last_error"] = f"{base}: {exc!r}"
                log.debug("connect to %s failed: %r", base, exc)
                self._url_index = (self._url_index + 1) % len(self._bases)
                if failures >= len(self._bases):
                    self._first_round.set()
                continue
            opened = time.monotonic()
            await self._on_open(ws, base, resumed=bool(resume))
            self._first_round.set()
            reason = await self._serve(ws)
            self._ws = None
            self._disconnected_at = time.monotonic()
            self._disconnected_wall = time.time()
            self.stats["last_disconnect_reason"] = reason
            if not self._stopping:
                log.warning("WebSocket to %s lost (%s); reconnecting", base, reason)
            failures = 0 if time.monotonic() - opened >= self.policy.stable_after else failures + 1

    async def _on_open(self, ws: ClientConnection, base: str, resumed: bool) -> None:
        self._ws, self._url = ws, base
        self._last_message_mono = time.monotonic()
        stats = self.stats
        stats["connections"] += 1
        stats["resumes"] += resumed
        if stats["connections"] > 1:
            stats["reconnects"] += 1
            if self._disconnected_at is not None:
                stats["last_reconnect_seconds"] = round(time.monotonic() - self._disconnected_at, 4)
            event = {"url": base, "resumed": resumed, "time": time.time(), "down_since": self._disconnected_wall}
            await self._put("reconnect", event)
        log.info("WebSocket connected to %s (%s)", base, "resuming" if resumed else "fresh")

    async def _serve(self, ws: ClientConnection) -> str:
        reader = asyncio.create_task(self._receive(ws))
        watchdog = asyncio.create_task(self._watch(ws))
        try:
            done, _ = await asyncio.wait({reader, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            finished = reader if reader in done else watchdog
            try:
                return finished.result()
            except Exception as exc:  # a bug here must cost a reconnect, never the stream
                log.exception("WebSocket reader failed")
                return f"internal error: {exc!r}"
        finally:
            for task in (reader, watchdog):
                task.cancel()
            await asyncio.gather(reader, watchdog, return_exceptions=True)
            ws.transport.abort()  # after a clean close this is a no-op; after a stale one, no close handshake

    async def _receive(self, ws: ClientConnection) -> str:
        try:
            async for frame in ws:
                self._last_message_mono = time.monotonic()
                self.stats["messages_received"] += 1
                self.stats["last_message_time"] = time.time()
                try:
                    message = decode_server(frame)
                except ProtocolError as exc:
                    self._invalid(frame, exc)
                    continue
                await self._handle(message)
        except ConnectionClosed as exc:
            return f"connection closed: {exc}"
        return f"closed by server: code {ws.close_code} {ws.close_reason or ''}".rstrip()

    async def _watch(self, ws: ClientConnection) -> str:
        check = min(max(self.heartbeat_interval / 4, 0.01), 1.0)
        pinged_at = 0.0
        while True:
            await asyncio.sleep(check)
            now = time.monotonic()
            if self._backpressured:  # we are not reading, so the silence is ours
                self._last_message_mono = now
                continue
            idle = now - self._last_message_mono
            if idle >= self.stale_timeout:
                await asyncio.sleep(0)  # after a blocked loop, let frames already received be read first
                idle = time.monotonic() - self._last_message_mono
                if idle < self.stale_timeout:
                    continue
                self.stats["stale_disconnects"] += 1
                return f"stale: no message for {idle:.2f}s (limit {self.stale_timeout:g}s)"
            if idle >= self.heartbeat_interval and pinged_at < self._last_message_mono:
                pinged_at = now
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.send(encode(PingRequest(time.time())).decode()), check)

    # -- incoming messages -------------------------------------------------------------------------------
    async def _handle(self, message: Any) -> None:
        kind = type(message)
        if kind is CandleMessage:
            return  # server-side candles are sequenced per SYMBOL@Ns stream; this client builds its own
        if kind is PriceUpdateMessage or kind is TradeMessage:
            if message.symbol not in self._subscribed:  # keeps every per-symbol map bounded
                self.stats["unexpected_symbol"] += 1
                return
            if not await self._accept_seq(message.symbol, message.seq):
                return
            data = message.data
            if kind is PriceUpdateMessage:
                self._latest_price[message.symbol] = data.price
                payload = {"price": data.price, "volume": data.volume}
                kind_name = "price"
            else:
                self._latest_price[message.symbol] = data.price
                payload = {"price": data.price, "size": data.size, "side": data.side, "trade_id": data.trade_id}
                kind_name = "trade"
            payload.update(symbol=message.symbol, timestamp=message.timestamp, seq=message.seq, received_at=time.time())
            await self._put(kind_name, payload)
        elif kind is HeartbeatMessage or kind is SubscribedMessage:
            for symbol, head in message.data.last_seq.items():
                if symbol in self._subscribed:
                    self._server_seq[symbol] = head
                    if kind is SubscribedMessage:
                        self._last_seq.setdefault(symbol, head)  # a fresh stream starts after the head
        elif kind is GapMessage:
            await self._on_gap_message(message)
        elif kind is PongMessage:
            sent = message.data.client_timestamp
            if sent is not None:
                self.stats["rtt_ms"] = round((time.time() - sent) * 1000, 3)
        elif kind is ErrorMessage:
            self.stats["server_errors"] += 1
            log.warning("service error %s: %s", message.code, message.message)

    async def _accept_seq(self, symbol: str, seq: int) -> bool:
        if seq <= 0:  # a server without sequence numbers: nothing to check
            return True
        last = self._last_seq.get(symbol)
        if last is not None:
            if seq <= last:
                self.stats["duplicates_dropped"] += 1
                return False
            if seq > last + 1:
                await self._record_gap(symbol, last + 1, seq - 1, "seq_jump")
        self._last_seq[symbol] = seq
        return True

    async def _on_gap_message(self, message: GapMessage) -> None:
        gap, symbol = message.data, message.symbol
        if symbol not in self._subscribed:
            self.stats["unexpected_symbol"] += 1
            return
        last = self._last_seq.get(symbol, 0)
        if gap.from_seq <= last:  # the service's head is behind us: it restarted without its history
            self._last_seq[symbol] = gap.from_seq - 1
        else:
            self._last_seq[symbol] = max(last, gap.to_seq)
        await self._record_gap(symbol, gap.from_seq, gap.to_seq, gap.reason)

    async def _record_gap(self, symbol: str, from_seq: int, to_seq: int, reason: str) -> None:
        gap = {"symbol": symbol, "from_seq": from_seq, "to_seq": to_seq, "reason": reason, "time": time.time()}
        self._gaps.append(gap)
        self.stats["gap_count"] += 1
        log.warning("gap in %s: seq %d..%d cannot be replayed (%s)", symbol, from_seq, to_seq, reason)
        await self._put("gap", gap)

    def _invalid(self, frame: str | bytes, exc: ProtocolError) -> None:
        self.stats["invalid_messages"] += 1
        now = time.monotonic()
        if now - self._invalid_logged_at >= 1.0:  # at most one line a second for a server spewing garbage
            self._invalid_logged_at = now
            shown = frame[:200] if isinstance(frame, str) else frame[:200].decode("utf-8", "replace")
            log.warning(
                "skipped invalid message (%d so far): %s; frame: %r", self.stats["invalid_messages"], exc, shown
            )

    # -- dispatch ----------------------------------------------------------------------------------------
    async def _put(self, kind: str, payload: dict[str, Any]) -> None:
        queue = self._queue
        if queue is None or not self._callbacks[kind]:
            return
        if queue.full():
            self.stats["backpressure_waits"] += 1
            self._backpressured = True
            try:
                await queue.put((kind, payload))
            finally:
                self._backpressured = False
        else:
            queue.put_nowait((kind, payload))

    async def _dispatch(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        callbacks = self._callbacks
        while True:
            kind, payload = await queue.get()
            for callback in callbacks[kind]:
                try:
                    result = callback(payload)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self.stats["callback_errors"] += 1
                    log.exception("%s callback %r failed; the stream continues", kind, callback)
