"""The wire protocol, defined once for the service and the client.

Every server message is the guide's envelope: ``type``, ``symbol``, ``timestamp`` (float seconds) and ``data``.
Market messages add ``seq``, monotonic per symbol. Fields are only ever added, so a client written against
the guide alone keeps working. ``docs/protocol.md`` documents each struct here; a test keeps the two in step.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec

from marketdata.errors import ProtocolError
from marketdata.ticks import PriceUpdate, Trade

SYSTEM = "system"
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){0,2}$")

# Close codes the service uses (RFC 6455 §7.4 for the standard ones, 4000-4999 for ours).
CLOSE_GOING_AWAY = 1001  # service shutting down
CLOSE_POLICY_VIOLATION = 1008  # message flood
CLOSE_MESSAGE_TOO_BIG = 1009  # frame over MAX_MESSAGE_BYTES
CLOSE_SLOW_CONSUMER = 4001  # outgoing buffer over its limit


class ErrorCode:
    """The ``code`` of an ``error`` message. The connection stays open after every one of these."""

    INVALID_JSON = "invalid_json"
    BINARY_NOT_SUPPORTED = "binary_not_supported"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_MESSAGE = "invalid_message"
    INVALID_SYMBOL = "invalid_symbol"
    UNKNOWN_SYMBOL = "unknown_symbol"
    TOO_MANY_SYMBOLS = "too_many_symbols"
    RATE_LIMITED = "rate_limited"
    UNSUPPORTED_INTERVAL = "unsupported_interval"


# ---------------------------------------------------------------------------------------------------------
# Server -> client
# ---------------------------------------------------------------------------------------------------------
class _Message(msgspec.Struct, tag_field="type", omit_defaults=True):
    pass


class PriceData(msgspec.Struct):
    price: float
    volume: float


class TradeData(msgspec.Struct):
    price: float
    size: float
    side: Literal["buy", "sell"]
    trade_id: str


class HeartbeatData(msgspec.Struct, omit_defaults=True):
    connections: int
    active_symbols: int
    running: bool
    last_seq: dict[str, int] = {}


class PongData(msgspec.Struct, omit_defaults=True):
    client_timestamp: float | None = None


class SubscriptionData(msgspec.Struct, omit_defaults=True):
    symbols: list[str]
    subscriptions: list[str]
    last_seq: dict[str, int] = {}
    candles: list[int] = []


class GapData(msgspec.Struct):
    from_seq: int
    to_seq: int
    reason: str


class CandleFlags(msgspec.Struct, frozen=True, omit_defaults=True):
    late_ticks: int = 0
    gap: bool = False
    reconnect: bool = False


class CandleData(msgspec.Struct):
    interval: int
    start: float
    end: float
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    vwap: float
    buy_volume: float
    sell_volume: float
    final: bool
    flags: CandleFlags = CandleFlags()


class PriceUpdateMessage(_Message, tag="price_update"):
    symbol: str
    timestamp: float
    data: PriceData
    seq: int = 0


class TradeMessage(_Message, tag="trade"):
    symbol: str
    timestamp: float
    data: TradeData
    seq: int = 0


class CandleMessage(_Message, tag="candle"):
    symbol: str
    timestamp: float
    data: CandleData
    seq: int = 0


class HeartbeatMessage(_Message, tag="heartbeat"):
    symbol: str
    timestamp: float
    data: HeartbeatData


class PongMessage(_Message, tag="pong"):
    symbol: str
    timestamp: float
    data: PongData


class SubscribedMessage(_Message, tag="subscribed"):
    symbol: str
    timestamp: float
    data: SubscriptionData


class UnsubscribedMessage(_Message, tag="unsubscribed"):
    symbol: str
    timestamp: float
    data: SubscriptionData


class GapMessage(_Message, tag="gap"):
    symbol: str
    timestamp: float
    data: GapData


class OrderBookData(msgspec.Struct, omit_defaults=True):
    """Top-N levels ``[price, size]`` best first (sizes in base units), and the spread."""

    bids: list[list[float]]
    asks: list[list[float]]
    best_bid: float | None = None
    best_ask: float | None = None
    spread: float | None = None
    mid: float | None = None
    venue: str = ""
    update_id: int = 0


class OrderBookMessage(_Message, tag="orderbook"):
    """Latest-state, not sequenced: sent to clients that subscribed with ``orderbook``, at most at their rate."""

    symbol: str
    timestamp: float
    data: OrderBookData


class ErrorMessage(_Message, tag="error"):
    symbol: str
    timestamp: float
    code: str
    message: str


ServerMessage = (
    PriceUpdateMessage
    | TradeMessage
    | CandleMessage
    | HeartbeatMessage
    | PongMessage
    | SubscribedMessage
    | UnsubscribedMessage
    | GapMessage
    | ErrorMessage
    | OrderBookMessage
)
SERVER_MESSAGES: tuple[type[_Message], ...] = ServerMessage.__args__  # type: ignore[attr-defined]
MARKET_MESSAGES = (PriceUpdateMessage, TradeMessage, CandleMessage)

_encoder = msgspec.json.Encoder()
encode = _encoder.encode
_server_decoder = msgspec.json.Decoder(ServerMessage)


def decode_server(frame: bytes | str) -> ServerMessage:
    """Decode one server frame (used by the client). Unknown fields are ignored, unknown types raise."""
    try:
        return _server_decoder.decode(frame)
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"bad server frame: {exc}") from exc


def market_message(event: Trade | PriceUpdate, seq: int) -> PriceUpdateMessage | TradeMessage:
    if type(event) is Trade:
        return TradeMessage(
            event.symbol,
            event.timestamp,
            TradeData(event.price, event.size, event.side, event.trade_id),
            seq,
        )
    return PriceUpdateMessage(event.symbol, event.timestamp, PriceData(event.price, event.volume), seq)


def error_message(code: str, message: str, timestamp: float, symbol: str = SYSTEM) -> bytes:
    return encode(ErrorMessage(symbol, timestamp, code, message))


# ---------------------------------------------------------------------------------------------------------
# Client -> server
# ---------------------------------------------------------------------------------------------------------
class PingRequest(_Message, tag="ping", forbid_unknown_fields=False):
    timestamp: float | None = None


class SubscribeRequest(_Message, tag="subscribe"):
    symbols: list[str] = []
    symbol: str | None = None
    candles: list[int] = []
    candle_rate: float | None = None
    resume: dict[str, int] = {}
    orderbook: bool = False  # also stream the L2 book of these symbols
    orderbook_depth: int | None = None  # levels per side, 1-50 (default 10)
    orderbook_rate: float | None = None  # books per second at most, up to 20 (default 1)


class UnsubscribeRequest(_Message, tag="unsubscribe"):
    symbols: list[str] = []
    symbol: str | None = None
    orderbook: bool = False  # true: stop only the order book of these symbols


class ResumeRequest(_Message, tag="resume"):
    last_seq: dict[str, int]


ClientMessage = PingRequest | SubscribeRequest | UnsubscribeRequest | ResumeRequest
CLIENT_MESSAGES: tuple[type[_Message], ...] = ClientMessage.__args__  # type: ignore[attr-defined]
_CLIENT_TYPES = {cls.__struct_config__.tag: cls for cls in CLIENT_MESSAGES}


def decode_client(frame: str | bytes) -> ClientMessage:
    """Parse one client frame, raising ProtocolError with the ``error`` code to send back."""
    try:
        raw: Any = msgspec.json.decode(frame)
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.INVALID_JSON, f"frame is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message must be a JSON object")
    kind = raw.get("type")
    cls = _CLIENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        known = ", ".join(sorted(_CLIENT_TYPES))
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind!r}; expected one of: {known}")
    try:
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"invalid {kind!r} message: {exc}") from exc


def requested_symbols(request: SubscribeRequest | UnsubscribeRequest) -> list[str]:
    symbols = list(request.symbols)
    if request.symbol is not None:
        symbols.append(request.symbol)
    if not symbols:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "name at least one symbol in `symbols` or `symbol`")
    return symbols


def normalize_symbol(raw: str) -> str:
    """Upper-case a symbol and check its shape (``ETH-PERP``); raise ``invalid_symbol`` otherwise."""
    symbol = raw.strip().upper()
    if not SYMBOL_PATTERN.match(symbol):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise ProtocolError(
            ErrorCode.INVALID_SYMBOL,
            f"malformed symbol {shown!r}: expected letters/digits in up to three dash-separated parts, like ETH-PERP",
        )
    return symbol


def stream_key(symbol: str, interval: int) -> str:
    """The key of a server-side candle stream: ``ETH-PERP@15s``. Its final candles are sequenced on it."""
    return f"{symbol}@{interval}s"


def parse_stream_key(key: str) -> tuple[str, int] | None:
    """``ETH-PERP@15s`` -> ("ETH-PERP", 15); None if ``key`` is not a candle stream key."""
    symbol, sep, rest = key.partition("@")
    if not sep or not rest.endswith("s") or not rest[:-1].isdigit():
        return None
    return symbol, int(rest[:-1])


def normalize_key(raw: str) -> str:
    """Normalize a symbol or a candle stream key (``eth-perp@15s`` -> ``ETH-PERP@15s``)."""
    stream = parse_stream_key(raw.strip())
    if stream is not None:
        return stream_key(normalize_symbol(stream[0]), stream[1])
    return normalize_symbol(raw)


def parse_symbol_list(raw: str) -> list[str]:
    """Parse a comma-separated list (the ``/ws/multi/{symbols}`` path), dropping empty items and duplicates."""
    seen: dict[str, None] = {}
    for part in raw.split(","):
        if part.strip():
            seen[normalize_symbol(part)] = None
    if not seen:
        raise ProtocolError(ErrorCode.INVALID_SYMBOL, "no symbol given")
    return list(seen)


def parse_resume_param(raw: str, default_symbol: str | None = None) -> dict[str, int]:
    """Parse ``?resume=ETH-PERP:120,BTC-PERP:98`` (or ``?last_seq=120`` on a single-symbol stream)."""
    result: dict[str, int] = {}
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        symbol_part, sep, seq_part = part.rpartition(":")
        if not sep:
            if default_symbol is None:
                raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"resume item {part!r} needs SYMBOL:SEQ")
            symbol_part, seq_part = default_symbol, part
        try:
            seq = int(seq_part)
        except ValueError:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"resume seq {seq_part!r} is not an integer") from None
        if seq < 0:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"resume seq {seq} is negative")
        result[normalize_key(symbol_part)] = seq
    return result
