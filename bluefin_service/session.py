"""One client's incoming side: parse its frames, answer them, keep it within its limits.

Every bad frame gets an ``error`` message with a code and the connection stays open; only a flood (more
messages than the token bucket allows) ends it, with ``CLOSE_POLICY_VIOLATION``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from bluefin_service.hub import Connection, Hub
from marketdata.protocol import (
    SYSTEM,
    ErrorCode,
    PingRequest,
    PongData,
    PongMessage,
    ProtocolError,
    ResumeRequest,
    SubscribedMessage,
    SubscribeRequest,
    SubscriptionData,
    UnsubscribedMessage,
    UnsubscribeRequest,
    decode_client,
    encode,
    error_message,
    normalize_symbol,
    requested_symbols,
)

log = logging.getLogger(__name__)


class TokenBucket:
    __slots__ = ("_capacity", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, capacity: int) -> None:
        self._rate = rate
        self._capacity = float(capacity)
        self._tokens = float(capacity)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class ClientSession:
    def __init__(self, hub: Hub, conn: Connection, *, max_symbols: int, rate: float, burst: int) -> None:
        self.hub = hub
        self.conn = conn
        self.max_symbols = max_symbols
        self._bucket = TokenBucket(rate, burst)

    # -- entry points from the transport -----------------------------------------------------------------
    def on_text(self, text: str) -> bool:
        """Handle one text frame; False means the client is flooding and must be closed."""
        if not self._bucket.take():
            return False
        try:
            request = decode_client(text)
        except ProtocolError as exc:
            self.error(exc.code, exc.message)
            return True
        if isinstance(request, PingRequest):
            self.pong(request.timestamp)
        elif isinstance(request, SubscribeRequest):
            self._subscribe_request(request)
        elif isinstance(request, UnsubscribeRequest):
            self._unsubscribe_request(request)
        elif isinstance(request, ResumeRequest):
            self.subscribe(request.last_seq.keys(), request.last_seq)
        return True

    def on_binary(self) -> bool:
        if not self._bucket.take():
            return False
        self.error(ErrorCode.BINARY_NOT_SUPPORTED, "binary frames are not supported; send JSON text frames")
        return True

    # -- replies ------------------------------------------------------------------------------------------
    def error(self, code: str, message: str, symbol: str = SYSTEM) -> None:
        self.hub.send(self.conn, error_message(code, message, time.time(), symbol))

    def pong(self, client_timestamp: float | None) -> None:
        self.hub.send(self.conn, encode(PongMessage(SYSTEM, time.time(), PongData(client_timestamp))))

    # -- subscriptions ------------------------------------------------------------------------------------
    def _subscribe_request(self, request: SubscribeRequest) -> None:
        try:
            symbols = requested_symbols(request)
        except ProtocolError as exc:
            self.error(exc.code, exc.message)
            return
        if request.candles:
            self.error(ErrorCode.INVALID_MESSAGE, "server-side candle streams are not available yet")
        self.subscribe(symbols, request.resume)

    def _unsubscribe_request(self, request: UnsubscribeRequest) -> None:
        try:
            raw_symbols = requested_symbols(request)
        except ProtocolError as exc:
            self.error(exc.code, exc.message)
            return
        removed: list[str] = []
        for symbol in self._valid_symbols(raw_symbols):
            self.hub.unsubscribe(self.conn, symbol)
            removed.append(symbol)
        if removed:
            data = SubscriptionData(removed, list(self.conn.subscriptions))
            self.hub.send(self.conn, encode(UnsubscribedMessage(SYSTEM, time.time(), data)))

    def subscribe(self, raw_symbols: Iterable[str], resume: dict[str, int] | None = None) -> list[str]:
        """Validate, then subscribe; sends the ack first, then any replay, then live data follows."""
        resume_by_symbol: dict[str, int] = {}
        for raw, seq in (resume or {}).items():
            try:
                resume_by_symbol[normalize_symbol(raw)] = seq
            except ProtocolError:
                continue  # reported below when the symbol itself is checked
            if seq < 0:
                self.error(ErrorCode.INVALID_MESSAGE, f"resume seq for {raw} is negative: {seq}")
                resume_by_symbol.pop(normalize_symbol(raw))
        accepted: list[str] = []
        for symbol in self._valid_symbols(raw_symbols):
            already = symbol in self.conn.subscriptions
            if not already and len(self.conn.subscriptions) + len(accepted) >= self.max_symbols:
                self.error(
                    ErrorCode.TOO_MANY_SYMBOLS,
                    f"a connection may subscribe to at most {self.max_symbols} symbols; {symbol} not added",
                    symbol,
                )
                continue
            if symbol not in accepted:
                accepted.append(symbol)
        if not accepted:
            return accepted
        channels = self.hub.channels
        subscriptions = list(self.conn.subscriptions) + [s for s in accepted if s not in self.conn.subscriptions]
        last_seq = {symbol: channels[symbol].seq for symbol in accepted}
        data = SubscriptionData(accepted, subscriptions, last_seq)
        self.hub.send(self.conn, encode(SubscribedMessage(SYSTEM, time.time(), data)))
        for symbol in accepted:
            self.hub.subscribe(self.conn, symbol, resume_by_symbol.get(symbol))
        return accepted

    def _valid_symbols(self, raw_symbols: Iterable[str]) -> list[str]:
        valid: list[str] = []
        for raw in raw_symbols:
            try:
                symbol = normalize_symbol(raw) if isinstance(raw, str) else normalize_symbol(str(raw))
            except ProtocolError as exc:
                self.error(exc.code, exc.message)
                continue
            if symbol not in self.hub.channels:
                known = ", ".join(self.hub.channels)
                self.error(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {symbol}; this service streams {known}", symbol)
                continue
            valid.append(symbol)
        return valid
