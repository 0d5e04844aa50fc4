"""Wire messages -> the dicts the client hands to callbacks (pure: the receive time is passed in)."""

from __future__ import annotations

import math
from typing import Any

from marketdata.protocol import ErrorCode, OrderBookMessage, PriceUpdateMessage, ProtocolError, TradeMessage

Level = tuple[float, float]


def market_payload(message: PriceUpdateMessage | TradeMessage, received_at: float) -> tuple[str, dict[str, Any]]:
    """``("price", {...})`` or ``("trade", {...})`` in the guide's callback format, plus ``seq``/``received_at``."""
    data = message.data
    if type(message) is PriceUpdateMessage:
        kind, payload = "price", {"price": data.price, "volume": data.volume}
    else:
        kind, payload = "trade", {"price": data.price, "size": data.size, "side": data.side, "trade_id": data.trade_id}
    payload.update(symbol=message.symbol, timestamp=message.timestamp, seq=message.seq, received_at=received_at)
    return kind, payload


def book_payload(message: OrderBookMessage, received_at: float) -> dict[str, Any]:
    """The book as ``{"symbol", "timestamp", "bids", "asks", "best_bid", "best_ask", "spread", "mid", ...}``.

    Levels are ``(price, size)`` best first. Best bid/ask, spread and mid are computed from the levels (the
    optional fields of the message are not trusted). Raises ProtocolError for a book no trader should act on:
    a level that is not two finite numbers, a price <= 0, a size < 0, levels out of order, or a crossed book.
    """
    data = message.data
    bids = _levels(data.bids, "bids", descending=True)
    asks = _levels(data.asks, "asks", descending=False)
    best_bid = bids[0][0] if bids else None
    best_ask = asks[0][0] if asks else None
    spread = mid = None
    if best_bid is not None and best_ask is not None:
        if best_bid >= best_ask:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"crossed book: best bid {best_bid} >= best ask {best_ask}")
        spread = round(best_ask - best_bid, 9)
        mid = round((best_ask + best_bid) / 2, 9)
    return {
        "symbol": message.symbol,
        "timestamp": message.timestamp,
        "bids": bids,
        "asks": asks,
        "best_bid": best_bid,
        "best_ask": best_ask,
        "spread": spread,
        "mid": mid,
        "venue": data.venue,
        "update_id": data.update_id,
        "received_at": received_at,
    }


def _levels(raw: list[list[float]], side: str, descending: bool) -> list[Level]:
    levels: list[Level] = []
    for level in raw:
        if len(level) != 2 or not all(math.isfinite(x) for x in level) or level[0] <= 0 or level[1] < 0:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"bad {side} level {level!r}: want [price > 0, size >= 0]")
        if levels and (level[0] >= levels[-1][0] if descending else level[0] <= levels[-1][0]):
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"{side} out of order at {level!r}: best first")
        levels.append((level[0], level[1]))
    return levels
