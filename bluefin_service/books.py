"""Order books and feed status from the exchange sources, delivered to the clients that ask.

Books are *state*, not a stream: only the latest top-N per symbol matters, so they bypass the sequenced
fan-out (no ring, no seq) and the market-data path stays untouched. Each client that subscribes with
``"orderbook": true`` gets at most ``orderbook_rate`` messages a second with ``orderbook_depth`` levels, and
only when the book changed since its last one; ``tick()`` runs every ``TICK_SECONDS`` and queues them with
``hub.send`` (one encode per symbol/depth/version, shared by every client that wants it). Memory: one view per
symbol, one small record per (connection, symbol); closed connections are dropped on the next tick.

With a recorder attached (``record``), a snapshot of each changed book goes to the store every
``record_interval`` seconds (``RECORD_BOOK_SECONDS``), ``record_depth`` levels deep: the same ``orderbook``
message clients get, so ``GET /orderbooks/{symbol}`` serves them back as they were.

A ``FeedStatus`` (reconnect, resync, stale) becomes a ``gap`` message to every subscriber of the symbol, with
``reason="upstream_<kind>"`` and ``from_seq == to_seq ==`` the symbol's last seq: nothing in our own sequence is
missing, but the venue's data around that point may be (trades during a reconnect) or was repaired (books). The
hub keeps the newest of them (``Hub.notify``), so a client that resumes from before one still gets it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bluefin_service.hub import Connection, Hub
from bluefin_service.store import BookRow
from marketdata.book import BookView
from marketdata.protocol import GapData, GapMessage, OrderBookData, OrderBookMessage, encode
from marketdata.ticks import MarketEvent, PriceUpdate, Trade
from marketdata.venues.common import FeedStatus

TICK_SECONDS = 0.02
MAX_DEPTH = 50
MAX_RATE = 20.0  # books per second per client; more is noise for a human or a scalping bot
DEFAULT_DEPTH = 10
DEFAULT_RATE = 1.0


@dataclass
class _BookSub:
    depth: int
    interval: float
    next_at: float = 0.0
    sent_version: int = -1


class BookStreams:
    def __init__(self, hub: Hub, symbols: Iterable[str]) -> None:
        self.hub = hub
        self.latest: dict[str, BookView] = {}
        self.versions: dict[str, int] = dict.fromkeys(symbols, 0)
        self.subs: dict[Connection, dict[str, _BookSub]] = {}
        self._encoded: dict[tuple[str, int], tuple[int, bytes]] = {}
        self.statuses_sent = 0
        # Others that must know the venue feed was interrupted (the candle engine's quality flags).
        self.status_listeners: list[Callable[[FeedStatus], None]] = []
        # Recording: a snapshot of each changed book every `record_interval` seconds, `record_depth` levels.
        self.record: Callable[[BookRow], None] | None = None
        self.record_interval = 1.0
        self.record_depth = 20
        self._record_due: dict[str, tuple[int, float]] = {}  # symbol -> (version recorded, next time due)

    # -- from the source ---------------------------------------------------------------------------------
    def route(self, events: list[Any], publish_market: Callable[[list[MarketEvent]], None]) -> None:
        """Split a source batch: ticks to the hub (in order), books to ``update``, statuses to ``on_status``."""
        market: list[MarketEvent] = []
        for event in events:
            kind = type(event)
            if kind is Trade or kind is PriceUpdate:
                market.append(event)
            elif kind is BookView:
                self.update(event)
            elif kind is FeedStatus:
                if market:
                    publish_market(market)
                    market = []
                self.on_status(event)
        if market:
            publish_market(market)

    def update(self, view: BookView) -> None:
        if view.symbol in self.versions:
            self.latest[view.symbol] = view
            self.versions[view.symbol] += 1

    def on_status(self, status: FeedStatus) -> None:
        for listener in self.status_listeners:
            listener(status)
        channel = self.hub.channels.get(status.symbol)
        if channel is None:
            return
        gap = GapData(channel.seq, channel.seq, f"upstream_{status.kind}")
        self.statuses_sent += self.hub.notify(status.symbol, encode(GapMessage(status.symbol, status.timestamp, gap)))

    # -- client subscriptions ----------------------------------------------------------------------------
    def subscribe(self, conn: Connection, symbol: str, depth: int | None, rate: float | None) -> str | None:
        """Add or change a book subscription; returns an error message for a bad depth or rate."""
        depth = DEFAULT_DEPTH if depth is None else depth
        rate = DEFAULT_RATE if rate is None else rate
        if not 1 <= depth <= MAX_DEPTH:
            return f"orderbook_depth must be 1 to {MAX_DEPTH} levels, got {depth}"
        if not 0 < rate <= MAX_RATE:
            return f"orderbook_rate must be above 0 and at most {MAX_RATE:g} books per second, got {rate}"
        self.subs.setdefault(conn, {})[symbol] = _BookSub(depth, 1.0 / rate)
        return None

    def unsubscribe(self, conn: Connection, symbol: str) -> bool:
        subs = self.subs.get(conn)
        if subs is None or subs.pop(symbol, None) is None:
            return False
        if not subs:
            del self.subs[conn]
        return True

    def subscribed(self, conn: Connection) -> list[str]:
        return list(self.subs.get(conn, ()))

    # -- delivery ----------------------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> int:
        """Queue every due book; returns how many were queued."""
        now = time.monotonic() if now is None else now
        sent = 0
        for conn, subs in list(self.subs.items()):
            if conn.closed:
                del self.subs[conn]
                continue
            for symbol, sub in subs.items():
                version = self.versions.get(symbol, 0)
                if version == sub.sent_version or now < sub.next_at or symbol not in self.latest:
                    continue
                self.hub.send(conn, self._payload(symbol, sub.depth, version))
                sub.sent_version = version
                sub.next_at = now + sub.interval
                sent += 1
        if self.record is not None:
            self._record_books(now)
        return sent

    def _record_books(self, now: float) -> None:
        """Hand the recorder a snapshot of each book that changed, at most every ``record_interval``."""
        assert self.record is not None
        for symbol, view in self.latest.items():
            version = self.versions[symbol]
            recorded, due = self._record_due.get(symbol, (-1, 0.0))
            if version == recorded or now < due:
                continue
            self.record(BookRow(symbol, view.timestamp, version, self._payload(symbol, self.record_depth, version)))
            self._record_due[symbol] = (version, now + self.record_interval)

    def _payload(self, symbol: str, depth: int, version: int) -> bytes:
        cached = self._encoded.get((symbol, depth))
        if cached is not None and cached[0] == version:
            return cached[1]
        view = self.latest[symbol]
        payload = encode(OrderBookMessage(symbol, view.timestamp, book_data(view, depth)))
        self._encoded[(symbol, depth)] = (version, payload)
        return payload


def book_data(view: BookView, depth: int) -> OrderBookData:
    bids = [list(level) for level in view.bids[:depth]]
    asks = [list(level) for level in view.asks[:depth]]
    best_bid = bids[0][0] if bids else None
    best_ask = asks[0][0] if asks else None
    spread = mid = None
    if best_bid is not None and best_ask is not None:
        spread = round(best_ask - best_bid, 9)
        mid = round((best_ask + best_bid) / 2, 9)
    return OrderBookData(bids, asks, best_bid, best_ask, spread, mid, view.venue, view.update_id)
