"""The L2 order book: snapshot + deltas, sequence checks, OKX checksum, best bid/ask, spread, top-N.

Pure: no I/O, no clock. Levels arrive as the venue's raw ``[price, size, ...]`` string arrays and are parsed
once, here, with a per-venue ``parse`` (``float`` for decimal strings, ``e9`` for Bluefin's scaled integers);
``float("3366.1")`` is correctly rounded, so two strings name the same level exactly when they are the same
number. A size of zero removes a level (absent levels are ignored: Binance's sync rule 9 says that is normal).

Each side keeps a dict ``price -> size`` plus a sorted key list (bids stored negated, so both sides sort
ascending and ``bisect`` finds best-first positions). With ``keep_raw`` the book also keeps the strings as
received, which the OKX CRC32 checksum is defined over.

Sequencing is shared by every venue: ``DiffSync`` is the "buffer diffs, fetch a snapshot, drop what the
snapshot already holds, bridge, then require continuity" procedure, parameterized by each venue's two rules.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import msgspec

from marketdata.errors import MarketDataError

Level = Sequence[str]  # [price, size, ...] as received
BIDS = 0
ASKS = 1


class BookError(MarketDataError):
    """The local book can no longer be trusted; the feed must resync it."""


class SequenceGap(BookError):
    def __init__(self, symbol: str, expected: int, got: int) -> None:
        super().__init__(f"{symbol}: book sequence gap: expected to continue from {expected}, got {got}")
        self.expected = expected
        self.got = got


class ChecksumMismatch(BookError):
    def __init__(self, symbol: str, expected: int, computed: int) -> None:
        super().__init__(f"{symbol}: book checksum mismatch: venue says {expected}, local book gives {computed}")
        self.expected = expected
        self.computed = computed


def e9(raw: str) -> float:
    """Bluefin's ``…E9`` integer strings; int/int true division is correctly rounded, unlike ``x * 1e-9``."""
    return int(raw) / 1_000_000_000


class BookDelta(msgspec.Struct, frozen=True):
    """One venue book message: absolute sizes at prices, with the venue's update ids.

    ``first_id``/``last_id`` are the update-id range this message covers; ``prev_id`` is what the venue says
    the previous message ended at (Binance ``pu``, OKX ``prevSeqId``; -1 when the venue has no such field).
    """

    symbol: str
    timestamp: float
    first_id: int
    last_id: int
    prev_id: int
    bids: list[list[str]]
    asks: list[list[str]]
    checksum: int | None = None
    snapshot: bool = False


class BookView(msgspec.Struct, frozen=True):
    """The top of one symbol's book, as published to the service: ``[price, size]`` best first."""

    symbol: str
    timestamp: float
    bids: list[tuple[float, float]]
    asks: list[tuple[float, float]]
    venue: str = ""
    update_id: int = 0


class OrderBook:
    """One symbol's L2 book."""

    __slots__ = ("_keys", "_levels", "_parse", "_raw", "keep_raw", "symbol", "timestamp", "update_id")

    def __init__(self, symbol: str, parse: Callable[[str], float] = float, keep_raw: bool = False) -> None:
        self.symbol = symbol
        self._parse = parse
        self.keep_raw = keep_raw
        self._levels: tuple[dict[float, float], dict[float, float]] = ({}, {})
        self._keys: tuple[list[float], list[float]] = ([], [])  # bids negated; both ascending = best first
        self._raw: tuple[dict[float, tuple[str, str]], dict[float, tuple[str, str]]] = ({}, {})
        self.update_id = -1
        self.timestamp = 0.0

    # -- updating ------------------------------------------------------------------------------------------
    def clear(self) -> None:
        for side in (BIDS, ASKS):
            self._levels[side].clear()
            self._keys[side].clear()
            self._raw[side].clear()
        self.update_id = -1

    def apply_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], update_id: int, timestamp: float) -> None:
        self.clear()
        self.apply(bids, asks, update_id, timestamp)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level], update_id: int, timestamp: float) -> None:
        """Apply absolute sizes; the caller has already checked the sequence.

        A level that is not ``[price, size, ...]`` numbers raises ``BookError``; the book may then be half-updated
        and must be resynced, which is what every caller does with a ``BookError``.
        """
        try:
            self._apply_side(BIDS, bids)
            self._apply_side(ASKS, asks)
        except (ValueError, TypeError, IndexError) as exc:
            raise BookError(f"{self.symbol}: unusable book level ({exc})") from None
        self.update_id = update_id
        self.timestamp = timestamp

    def _apply_side(self, side: int, levels: Iterable[Level]) -> None:
        parse = self._parse
        book = self._levels[side]
        keys = self._keys[side]
        raw = self._raw[side] if self.keep_raw else None
        sign = -1.0 if side == BIDS else 1.0
        for level in levels:
            price = parse(level[0])
            size = parse(level[1])
            if size == 0.0:
                if book.pop(price, None) is not None:
                    key = sign * price
                    del keys[bisect_left(keys, key)]
                    if raw is not None:
                        del raw[price]
                continue
            if price not in book:
                key = sign * price
                keys.insert(bisect_left(keys, key), key)
            book[price] = size
            if raw is not None:
                raw[price] = (level[0], level[1])

    # -- reading ---------------------------------------------------------------------------------------------
    def levels(self, side: int) -> dict[float, float]:
        return self._levels[side]

    def depth(self, side: int, n: int | None = None) -> list[tuple[float, float]]:
        """Up to ``n`` levels of one side, best first."""
        book = self._levels[side]
        keys = self._keys[side] if n is None else self._keys[side][:n]
        if side == BIDS:
            return [(-key, book[-key]) for key in keys]
        return [(key, book[key]) for key in keys]

    def best(self, side: int) -> tuple[float, float] | None:
        keys = self._keys[side]
        if not keys:
            return None
        price = -keys[0] if side == BIDS else keys[0]
        return price, self._levels[side][price]

    @property
    def best_bid(self) -> tuple[float, float] | None:
        return self.best(BIDS)

    @property
    def best_ask(self) -> tuple[float, float] | None:
        return self.best(ASKS)

    @property
    def spread(self) -> float | None:
        bid, ask = self.best(BIDS), self.best(ASKS)
        # Rounded to the venues' finest unit (1e-9) so 3366.8 - 3366.1 reads 0.7, not 0.7000000000002728.
        return None if bid is None or ask is None else round(ask[0] - bid[0], 9)

    @property
    def crossed(self) -> bool:
        bid, ask = self.best(BIDS), self.best(ASKS)
        return bid is not None and ask is not None and bid[0] >= ask[0]

    def view(self, depth: int, venue: str = "", size_factor: float = 1.0) -> BookView:
        """The top ``depth`` levels; ``size_factor`` turns venue units into base units (OKX contracts)."""
        bids, asks = self.depth(BIDS, depth), self.depth(ASKS, depth)
        if size_factor != 1.0:
            bids = [(p, round(s * size_factor, 12)) for p, s in bids]
            asks = [(p, round(s * size_factor, 12)) for p, s in asks]
        return BookView(self.symbol, self.timestamp, bids, asks, venue, self.update_id)

    def okx_checksum(self) -> int:
        """OKX's CRC32 over the top 25 levels, bid/ask interleaved, ``price:size`` from the raw strings, signed."""
        if not self.keep_raw:
            raise BookError("okx_checksum needs a book built with keep_raw=True")
        bid_keys = self._keys[BIDS][:25]
        ask_keys = self._keys[ASKS][:25]
        bid_raw, ask_raw = self._raw
        parts: list[str] = []
        for i in range(max(len(bid_keys), len(ask_keys))):
            if i < len(bid_keys):
                parts.extend(bid_raw[-bid_keys[i]])
            if i < len(ask_keys):
                parts.extend(ask_raw[ask_keys[i]])
        crc = zlib.crc32(":".join(parts).encode())
        return crc - (1 << 32) if crc >= 1 << 31 else crc


@dataclass(frozen=True)
class SyncRules:
    """A venue's diff-sync rules (Binance and Bluefin differ only here)."""

    keeps: Callable[[BookDelta, int], bool]  # is this diff newer than the snapshot's update id?
    bridges: Callable[[BookDelta, int], bool]  # may it be the first diff applied on top of the snapshot?
    continues: Callable[[BookDelta, int], bool]  # does it follow the last applied update id?


class DiffSync:
    """Keeps a book in sync from a diff stream plus REST snapshots.

    States: *buffering* (diffs kept until a snapshot arrives; bounded: overflow drops the oldest, and the bridge
    check then decides whether the snapshot still connects), *bridging* (snapshot installed, waiting for the
    first diff that spans it) and *live*. ``on_delta``/``on_snapshot`` raise ``SequenceGap`` when continuity
    breaks; the caller then calls ``reset()`` and fetches a new snapshot.
    """

    def __init__(self, book: OrderBook, rules: SyncRules, max_buffer: int = 10_000) -> None:
        self.book = book
        self.rules = rules
        self.buffer: deque[BookDelta] = deque(maxlen=max_buffer)
        self.has_snapshot = False
        self.live = False

    def reset(self) -> None:
        self.book.clear()
        self.buffer.clear()
        self.has_snapshot = False
        self.live = False

    def on_delta(self, delta: BookDelta) -> bool:
        """Feed one diff; returns True if the book changed."""
        if not self.has_snapshot:
            self.buffer.append(delta)
            return False
        book = self.book
        if self.live:
            if not self.rules.continues(delta, book.update_id):
                got = delta.prev_id if delta.prev_id >= 0 else delta.first_id
                raise SequenceGap(delta.symbol, book.update_id, got)
        elif not self.rules.keeps(delta, book.update_id):
            return False
        elif self.rules.bridges(delta, book.update_id):
            self.live = True
        else:
            raise SequenceGap(delta.symbol, book.update_id, delta.first_id)
        book.apply(delta.bids, delta.asks, delta.last_id, delta.timestamp)
        return True

    def on_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], update_id: int, timestamp: float) -> None:
        """Install a snapshot and replay the buffered diffs on top of it."""
        buffered = list(self.buffer)
        self.buffer.clear()
        self.book.apply_snapshot(bids, asks, update_id, timestamp)
        self.has_snapshot = True
        self.live = False
        for delta in buffered:
            self.on_delta(delta)
