"""BluefinServiceClient: the guide's WebSocket client, resumable by ``seq``.

One supervisor task connects, reads and reconnects; one dispatcher task runs the callbacks, in stream order,
from a bounded queue. When the queue is full the reader waits (backpressure): the socket fills, the service's
slow-consumer policy may close us, and the reconnect resumes from the last ``seq``, so nothing is lost.

Every reconnect resumes with ``?resume=SYM:SEQ,...``: the service replays what we missed, or sends a ``gap``
saying what it no longer has; such a gap (or a seq jump) is filled over HTTP from the service's store
(``sequencing.py``, ``gap_repair.py``) before the symbol's live messages go on. Messages at or below the last
``seq`` seen are dropped as duplicates. ``gap`` messages with an ``upstream_*`` reason are not gaps in our
sequence: the venue's feed was interrupted, and they are reported as feed interruptions. With ``orderbook=True``
the client also keeps the latest L2 book of each symbol (``orderbook`` messages, latest state, not sequenced).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bot.exchange.client_config import ReconnectPolicy, service_urls_from, stream_url, ws_base_url
from bot.exchange.client_messages import book_payload, market_payload
from bot.exchange.dispatch import Callback, CallbackDispatcher
from bot.exchange.liveness import Liveness
from bot.exchange.sequencing import StreamSequencer
from marketdata.errors import ConfigError
from marketdata.protocol import (
    CandleMessage,
    ErrorMessage,
    GapMessage,
    HeartbeatMessage,
    OrderBookMessage,
    PongMessage,
    PriceUpdateMessage,
    ProtocolError,
    SubscribedMessage,
    SubscribeRequest,
    TradeMessage,
    decode_server,
    encode,
    normalize_symbol,
)

__all__ = ["BluefinServiceClient", "ReconnectPolicy", "service_urls_from", "stream_url", "ws_base_url"]

log = logging.getLogger(__name__)

_COUNTERS = (  # noqa: SIM905
    "connections reconnects resumes gap_count messages_received duplicates_dropped invalid_messages server_errors"
    " callback_errors connect_failures stale_disconnects backpressure_waits unexpected_symbol feed_interruptions"
    " orderbooks_received"
).split()


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
        repair_gaps: bool = True,
        repair_page_size: int = 1000,
        repair_timeout: float = 5.0,
        repair_hold: int = 10_000,
    ) -> None:
        if heartbeat_interval <= 0 or stale_after_heartbeats < 1 or queue_size < 1 or open_timeout <= 0:
            raise ConfigError("heartbeat_interval, open_timeout > 0, stale_after_heartbeats >= 1, queue_size >= 1")
        if repair_page_size < 1 or repair_timeout <= 0 or repair_hold < 1:
            raise ConfigError("repair_page_size >= 1, repair_timeout > 0 and repair_hold >= 1")
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
        self._rng = random.Random(seed)
        self.symbols: list[str] = []
        self._subscribed: frozenset[str] = frozenset()
        self._server_seq: dict[str, int] = {}
        self._latest_price: dict[str, float] = {}
        self._books: dict[str, dict[str, Any]] = {}
        self._book_request: SubscribeRequest | None = None
        self._ws: ClientConnection | None = None
        self._url: str | None = None
        self._url_index = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._first_round = asyncio.Event()
        self._stopping = False
        self._liveness = Liveness(heartbeat_interval, self.stale_timeout)
        self._disconnected_at: float | None = None
        self._disconnected_wall: float | None = None
        self._invalid_logged_at = 0.0
        self.stats: dict[str, Any] = dict.fromkeys(_COUNTERS, 0)
        self.stats.update(last_message_time=None, last_error=None, last_disconnect_reason=None)
        self.stats.update(last_reconnect_seconds=None, rtt_ms=None)
        self._dispatcher = CallbackDispatcher(queue_size, self.stats)
        self._callbacks = self._dispatcher.callbacks
        self._put = self._dispatcher.put
        self._sequencer = StreamSequencer(
            self._put, self.stats, repair_gaps=repair_gaps, page_size=repair_page_size, timeout=repair_timeout,
            hold_size=repair_hold, history=gap_history,
        )  # fmt: skip
        self._last_seq = self._sequencer.last_seq
        self._repairer = self._sequencer.repairer

    # -- the guide's API ---------------------------------------------------------------------------------
    async def connect_websocket(
        self, symbols: list[str], *, orderbook: bool = False, orderbook_depth: int = 10, orderbook_rate: float = 1.0
    ) -> bool:
        """Start streaming ``symbols``; True once connected. If the first try of every URL fails it returns
        False and keeps retrying in the background until ``disconnect_websocket()``.

        ``orderbook=True`` also streams each symbol's L2 book (``orderbook_depth`` levels per side, 1-50, at most
        ``orderbook_rate`` books a second, up to 20), asked again after every reconnect; the service has books only
        with an exchange source (SOURCE=binance|okx|bluefin)."""
        wanted = list(dict.fromkeys(normalize_symbol(s) for s in symbols))
        if not wanted:
            raise ConfigError("connect_websocket needs at least one symbol")
        if orderbook and not (1 <= orderbook_depth <= 50 and 0 < orderbook_rate <= 20):
            raise ConfigError(f"orderbook_depth must be 1-50 and orderbook_rate in (0, 20], got {orderbook_depth}, "
                              f"{orderbook_rate}")  # fmt: skip
        if self._supervisor is not None:
            await self.disconnect_websocket()
        self._book_request = (
            SubscribeRequest(wanted, orderbook=True, orderbook_depth=orderbook_depth, orderbook_rate=orderbook_rate)
            if orderbook
            else None
        )
        self.symbols = wanted
        self._subscribed = frozenset(wanted)
        self._stopping = False
        self._first_round = asyncio.Event()
        self._dispatcher.start()
        self._supervisor = asyncio.create_task(self._run(), name="bluefin-websocket")
        await self._first_round.wait()
        if not self.is_websocket_connected():
            log.error("Failed to connect to WebSocket: %s (retrying in the background)", self.stats["last_error"])
        return self.is_websocket_connected()

    async def disconnect_websocket(self) -> None:
        self._stopping = True
        ws, supervisor, self._supervisor = self._ws, self._supervisor, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2.0)
        if supervisor is not None:
            supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor
        await self._repairer.close()
        self._ws = None
        await self._dispatcher.stop()  # last: when a callback called us, this cancels the task we run in

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

    def subscribe_to_orderbook(self, callback: Callback) -> None:
        """``callback(book)`` for every book received (see ``get_orderbook``); needs ``orderbook=True``."""
        self._callbacks["orderbook"].append(callback)

    def subscribe_to_feed_interruptions(self, callback: Callback) -> None:
        """``callback({"symbol", "kind", "reason", "seq", "time"})`` when the service's venue feed reconnected,
        resynced its book or went stale (``kind``) around ``seq``: trades there may be missing upstream."""
        self._callbacks["interruption"].append(callback)

    def resume_from(self, symbol: str, seq: int) -> None:
        """Start ``symbol`` after ``seq`` on the next connect (0: from the oldest message the service holds)."""
        if seq < 0:
            raise ConfigError(f"resume seq must be >= 0, got {seq}")
        self._last_seq[symbol] = seq

    def get_latest_price(self, symbol: str) -> float | None:
        return self._latest_price.get(str(symbol).strip().upper())

    def get_orderbook(self, symbol: str) -> dict[str, Any] | None:
        """The latest book: ``{"symbol", "timestamp", "bids", "asks", "best_bid", "best_ask", "spread", "mid",
        "venue", "update_id", "received_at"}``, levels ``(price, size)`` best first; None before the first one."""
        return self._books.get(str(symbol).strip().upper())

    def get_best_bid_ask(self, symbol: str) -> tuple[float | None, float | None] | None:
        book = self.get_orderbook(symbol)
        return None if book is None else (book["best_bid"], book["best_ask"])

    def get_spread(self, symbol: str) -> float | None:
        book = self.get_orderbook(symbol)
        return None if book is None else book["spread"]

    def is_repairing(self, symbol: str) -> bool:
        """True while a gap of ``symbol`` is being filled over HTTP (its live messages wait until then)."""
        return self._repairer.active(str(symbol).strip().upper())

    def is_websocket_connected(self) -> bool:
        return self._ws is not None

    def get_websocket_status(self) -> dict[str, Any]:
        """Connection state and counters. Gaps: ``gaps_repaired`` were filled from the store (``repaired_gaps``
        lists them); ``gaps_unrepaired`` could not be, and ``gaps`` lists their lost ranges (``gap_count``).
        ``interruptions`` are the service's venue-feed interruptions (``upstream_*``), not gaps of ours."""
        return {
            "connected": self.is_websocket_connected(),
            "url": self._url,
            "service_urls": list(self.service_urls),
            "symbols": list(self.symbols),
            **self.stats,
            "gaps": list(self._sequencer.gaps),
            **self._repairer.stats,
            "repaired_gaps": list(self._repairer.repaired),
            "repair_held_messages": self._repairer.held(),
            "interruptions": list(self._sequencer.interruptions),
            "orderbook_symbols": sorted(self._books),
            "last_seq": dict(self._last_seq),
            "server_last_seq": dict(self._server_seq),
            "queue_size": self._dispatcher.size(),
            "queue_capacity": self._dispatcher.capacity,
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
        self._liveness.touch()
        stats = self.stats
        stats["connections"] += 1
        stats["resumes"] += resumed
        if stats["connections"] > 1:
            stats["reconnects"] += 1
            if self._disconnected_at is not None:
                stats["last_reconnect_seconds"] = round(time.monotonic() - self._disconnected_at, 4)
            event = {"url": base, "resumed": resumed, "time": time.time(), "down_since": self._disconnected_wall}
            await self._put("reconnect", event)
        if self._book_request is not None:
            with contextlib.suppress(Exception):  # a dead socket shows up in the reader; the next open asks again
                await ws.send(encode(self._book_request).decode())
        log.info("WebSocket connected to %s (%s)", base, "resuming" if resumed else "fresh")

    async def _serve(self, ws: ClientConnection) -> str:
        reader = asyncio.create_task(self._receive(ws))
        watchdog = asyncio.create_task(self._liveness.watch(ws, self._paused))
        try:
            done, _ = await asyncio.wait({reader, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            if reader not in done:
                self.stats["stale_disconnects"] += 1
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
                self._liveness.touch()
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

    def _paused(self) -> bool:
        """We stopped reading (a full callback queue or repair hold), so the socket's silence is ours."""
        return self._dispatcher.waiting > 0 or self._repairer.waiting

    # -- incoming messages -------------------------------------------------------------------------------
    async def _handle(self, message: Any) -> None:
        kind = type(message)
        if kind is CandleMessage:
            return  # server-side candles are sequenced per SYMBOL@Ns stream; this client builds its own
        if kind is PriceUpdateMessage or kind is TradeMessage:
            symbol = message.symbol
            if symbol not in self._subscribed:  # keeps every per-symbol map bounded
                self.stats["unexpected_symbol"] += 1
                return
            if not await self._sequencer.accept(symbol, message.seq, self._url):
                return
            self._latest_price[symbol] = message.data.price
            await self._repairer.emit(symbol, *market_payload(message, time.time()))
        elif kind is OrderBookMessage:
            await self._on_book(message)
        elif kind is HeartbeatMessage or kind is SubscribedMessage:
            for symbol, head in message.data.last_seq.items():
                if symbol in self._subscribed:
                    self._server_seq[symbol] = head
                    if kind is SubscribedMessage:
                        self._last_seq.setdefault(symbol, head)  # a fresh stream starts after the head
        elif kind is GapMessage:
            if message.symbol in self._subscribed:
                await self._sequencer.on_gap_message(message, self._url)
            else:
                self.stats["unexpected_symbol"] += 1
        elif kind is PongMessage:
            sent = message.data.client_timestamp
            if sent is not None:
                self.stats["rtt_ms"] = round((time.time() - sent) * 1000, 3)
        elif kind is ErrorMessage:
            self.stats["server_errors"] += 1
            log.warning("service error %s: %s", message.code, message.message)

    async def _on_book(self, message: OrderBookMessage) -> None:
        if message.symbol not in self._subscribed:
            self.stats["unexpected_symbol"] += 1
            return
        try:
            book = book_payload(message, time.time())
        except ProtocolError as exc:
            self._invalid(encode(message), exc)
            return
        self.stats["orderbooks_received"] += 1
        self._books[message.symbol] = book
        await self._put("orderbook", book)  # latest state, not sequenced: never waits behind a repair

    def _invalid(self, frame: str | bytes, exc: ProtocolError) -> None:
        self.stats["invalid_messages"] += 1
        now = time.monotonic()
        if now - self._invalid_logged_at >= 1.0:  # at most one line a second for a server spewing garbage
            self._invalid_logged_at = now
            shown = frame[:200] if isinstance(frame, str) else frame[:200].decode("utf-8", "replace")
            log.warning(
                "skipped invalid message (%d so far): %s; frame: %r", self.stats["invalid_messages"], exc, shown
            )
