"""What every venue parser returns besides ticks, and the helpers they share.

A parser turns one frame (bytes or str) into a list of events:

- ``marketdata.ticks.Trade`` / ``PriceUpdate``: normalized ticks, timestamps in the venue's event time;
- ``marketdata.book.BookDelta``: a book snapshot or diff with the venue's update ids;
- ``VenueControl``: subscription acks, errors, pongs and notices the connection layer acts on.

Unknown event types are returned as ``VenueControl("unknown", ...)`` (logged, never fatal); frames that are not
valid JSON or not the documented shape raise ``VenueMessageError``.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

import msgspec

from marketdata.book import BookDelta
from marketdata.errors import MarketDataError
from marketdata.ticks import PriceUpdate, Trade

ControlKind = Literal["ack", "error", "pong", "notice", "unknown"]
StatusKind = Literal["connected", "reconnect", "resync", "stale", "error"]


class VenueMessageError(MarketDataError):
    """A venue frame that is not valid JSON or does not have the documented shape."""


class VenueControl(msgspec.Struct, frozen=True):
    kind: ControlKind
    ok: bool = True
    message: str = ""


class FeedStatus(msgspec.Struct, frozen=True):
    """A source's report that its stream of ``symbol`` was interrupted or repaired.

    ``reconnect``: the connection dropped (or was recycled) and was re-established; trades in between may be
    missing. ``resync``: the book was rebuilt after a sequence gap or checksum failure. ``stale``: no data
    for longer than the stale limit; the connection is being replaced. The service turns each into a
    sequenced ``gap`` message on the symbol's channel (see ``bluefin_service/books.py``).
    """

    symbol: str
    timestamp: float
    venue: str
    kind: StatusKind
    detail: str = ""


VenueEvent = Trade | PriceUpdate | BookDelta | VenueControl


def scaled(raw: str, factor: tuple[int, int] | None) -> float:
    """A decimal string times an exact ratio (OKX contract value ``0.1`` = (1, 10)), rounded once.

    ``"3"`` x 0.1 gives 0.3, not 0.30000000000000004: the product is formed in integers and Python's int/int
    true division is correctly rounded. Plain ``float`` without a factor; Decimal for exponent notation.
    """
    if factor is None:
        return float(raw)
    num, den = factor
    whole, _, frac = raw.partition(".")
    try:
        return int(whole + frac) * num / (den * 10 ** len(frac))
    except ValueError:
        return float(Decimal(raw) * num / den)


def ratio(value: Decimal) -> tuple[int, int] | None:
    """An exact factor for ``scaled``; None for 1 (no scaling)."""
    return None if value == 1 else value.as_integer_ratio()


def bad_frame(venue: str, frame: bytes | str, exc: Exception) -> VenueMessageError:
    shown = frame[:120] if isinstance(frame, str) else frame[:120].decode("utf-8", "replace")
    return VenueMessageError(f"{venue}: malformed frame ({exc}): {shown!r}")
