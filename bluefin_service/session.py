"""One client's incoming side: parse its frames, answer them, keep it within its limits.

Every bad frame gets an ``error`` message with a code and the connection stays open; only a flood (more
messages than the token bucket allows) ends it, with ``CLOSE_POLICY_VIOLATION``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from bluefin_service.books import BookStreams
from bluefin_service.candle_streams import CandleStreams
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
    normalize_key,
    normalize_symbol,
    parse_stream_key,
    requested_symbols,
    stream_key,
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
    def __init__(
        self,
        hub: Hub,
        conn: Connection,
        *,
        max_symbols: int,
        rate: float,
        burst: int,
        candles: CandleStreams | None = None,
        books: BookStreams | None = None,
    ) -> None:
        self.hub = hub
        self.conn = conn
        self.max_symbols = max_symbols
        self.candles = candles
        self.books = books
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
            streams = [parse_stream_key(key) for key in request.last_seq]
            symbols = [stream[0] if stream else key for key, stream in zip(request.last_seq, streams, strict=True)]
            intervals = {stream[1] for stream in streams if stream}
            self.subscribe(dict.fromkeys(symbols), request.last_seq, intervals)
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
        accepted = self.subscribe(symbols, request.resume, request.candles, request.candle_rate)
        if request.orderbook:
            self._subscribe_books(accepted, request.orderbook_depth, request.orderbook_rate)

    def _subscribe_books(self, symbols: list[str], depth: int | None, rate: float | None) -> None:
        if self.books is None:
            self.error(ErrorCode.INVALID_MESSAGE, "no order books from this source; use SOURCE=bluefin|binance|okx")
            return
        for symbol in symbols:
            problem = self.books.subscribe(self.conn, symbol, depth, rate)
            if problem is not None:
                self.error(ErrorCode.INVALID_MESSAGE, problem, symbol)
                return

    def _unsubscribe_request(self, request: UnsubscribeRequest) -> None:
        try:
            raw_symbols = requested_symbols(request)
        except ProtocolError as exc:
            self.error(exc.code, exc.message)
            return
        removed: list[str] = []
        if request.orderbook:  # only the books; the symbols keep streaming
            for symbol in self._valid_symbols(raw_symbols):
                if self.books is not None and self.books.unsubscribe(self.conn, symbol):
                    removed.append(symbol)
            data = SubscriptionData(removed, list(self.conn.subscriptions))
            self.hub.send(self.conn, encode(UnsubscribedMessage(SYSTEM, time.time(), data)))
            return
        for symbol in self._valid_symbols(raw_symbols):
            if self.books is not None:
                self.books.unsubscribe(self.conn, symbol)
            self.hub.unsubscribe(self.conn, symbol)
            for key in self.candles.unsubscribe(self.conn, symbol) if self.candles else ():
                self.hub.unsubscribe(self.conn, key)
            removed.append(symbol)
        if removed:
            data = SubscriptionData(removed, list(self.conn.subscriptions))
            self.hub.send(self.conn, encode(UnsubscribedMessage(SYSTEM, time.time(), data)))

    def subscribe(
        self,
        raw_symbols: Iterable[str],
        resume: dict[str, int] | None = None,
        candle_intervals: Iterable[int] = (),
        candle_rate: float | None = None,
    ) -> list[str]:
        """Validate, then subscribe; sends the ack first, then any replay, then live data follows.

        ``resume`` is keyed by symbol (``ETH-PERP``) or candle stream (``ETH-PERP@15s``).
        """
        resume_by_key: dict[str, int] = {}
        for raw, seq in (resume or {}).items():
            key = self._resume_key(raw)
            if key is None:
                continue  # a bad symbol is reported below when the symbol itself is checked
            if seq < 0:
                self.error(ErrorCode.INVALID_MESSAGE, f"resume seq for {raw} is negative: {seq}")
                continue
            resume_by_key[key] = seq
        intervals = self._valid_intervals(candle_intervals, candle_rate)
        subscribed_symbols = sum(1 for key in self.conn.subscriptions if "@" not in key)
        accepted: list[str] = []
        for symbol in self._valid_symbols(raw_symbols):
            already = symbol in self.conn.subscriptions
            if not already and subscribed_symbols + len(accepted) >= self.max_symbols:
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
        streams = [stream_key(symbol, interval) for symbol in accepted for interval in intervals]
        keys = accepted + streams
        channels = self.hub.channels
        subscriptions = list(self.conn.subscriptions) + [k for k in keys if k not in self.conn.subscriptions]
        last_seq = {key: channels[key].seq for key in keys}
        data = SubscriptionData(accepted, subscriptions, last_seq, intervals)
        self.hub.send(self.conn, encode(SubscribedMessage(SYSTEM, time.time(), data)))
        for symbol in keys:
            resume_after = resume_by_key.get(symbol)
            if resume_after is not None and symbol in self.conn.subscriptions:
                # Live frames already went out; a replay now would arrive as duplicates, out of order.
                self.error(
                    ErrorCode.INVALID_MESSAGE,
                    f"{symbol} is already streaming on this connection, so nothing was replayed; resume with "
                    f"?resume={symbol}:SEQ when connecting, or unsubscribe first",
                    symbol,
                )
                resume_after = None
            self.hub.subscribe(self.conn, symbol, resume_after)
        if self.candles is not None:
            for symbol in accepted:
                for interval in intervals:
                    self.candles.subscribe(self.conn, symbol, interval, candle_rate)
        return accepted

    def _resume_key(self, raw: str) -> str | None:
        try:
            return normalize_key(raw)
        except ProtocolError:
            return None

    def _valid_intervals(self, requested: Iterable[int], rate: float | None) -> list[int]:
        wanted = sorted(set(requested))
        if not wanted:
            return []
        if self.candles is None:
            self.error(ErrorCode.INVALID_MESSAGE, "this service computes no candles")
            return []
        if rate is not None and not rate > 0:
            self.error(ErrorCode.INVALID_MESSAGE, f"candle_rate must be > 0 updates per second, got {rate}")
        offered = self.candles.intervals
        bad = [interval for interval in wanted if interval not in offered]
        if bad:
            listed = ", ".join(str(i) for i in offered)
            self.error(
                ErrorCode.UNSUPPORTED_INTERVAL, f"no candles for interval(s) {bad}; this service computes {listed}"
            )
        return [interval for interval in wanted if interval in offered]

    def _valid_symbols(self, raw_symbols: Iterable[str]) -> list[str]:
        valid: list[str] = []
        for raw in raw_symbols:
            try:
                symbol = normalize_symbol(raw) if isinstance(raw, str) else normalize_symbol(str(raw))
            except ProtocolError as exc:
                self.error(exc.code, exc.message)
                continue
            if symbol not in self.hub.channels:
                known = ", ".join(key for key in self.hub.channels if "@" not in key)
                self.error(ErrorCode.UNKNOWN_SYMBOL, f"unknown symbol {symbol}; this service streams {known}", symbol)
                continue
            valid.append(symbol)
        return valid
