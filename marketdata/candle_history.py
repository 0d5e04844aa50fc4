"""Bounded, compact storage of final candles for one symbol and interval.

A row costs 57 bytes, so 24 h of 1 s candles (86,400 rows) take 4.9 MB:

- open/high/low/close, volume and buy volume as float64 (exact trade prices and sums);
- vwap as a float32 offset from the open: its error is at most ~6e-8 x (high - low), far below any tick size;
- trade count as uint32 and the quality flags as one byte;
- the start time is not stored per row: rows are kept in time order and consecutive rows are usually one
  interval apart, so an "anchor" (row number, start) is recorded only where that run breaks;
- late-tick counts are rare, so they live in a small dict keyed by row number.

Rows are numbered from 0 for the whole life of the history; the oldest are overwritten when it is full.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from typing import Any

import numpy as np

ROW_DTYPE = np.dtype(
    [
        ("open", "<f8"),
        ("high", "<f8"),
        ("low", "<f8"),
        ("close", "<f8"),
        ("volume", "<f8"),
        ("buy_volume", "<f8"),
        ("vwap_offset", "<f4"),
        ("trade_count", "<u4"),
        ("flags", "u1"),
    ]
)

# Bits of the ``flags`` byte.
GAP = 1
RECONNECT = 2
FILLED = 4  # a flat candle made for an interval without ticks
REVISED = 8  # changed after it was first emitted as final


class CandleHistory:
    """A ring of final candles, oldest first; ``capacity`` rows at most (oldest dropped when full)."""

    def __init__(self, interval: int, capacity: int) -> None:
        self.interval = interval
        self.capacity = capacity
        self.rows = np.zeros(capacity, dtype=ROW_DTYPE)
        self.written = 0  # rows ever appended; row number n lives at position n % capacity
        self._anchor_rows = array("q")
        self._anchor_starts = array("d")
        self._anchor_head = 0
        self._late: dict[int, int] = {}
        self.last_start: float | None = None
        self.last_close: float | None = None

    def __len__(self) -> int:
        return min(self.written, self.capacity)

    @property
    def first_row(self) -> int:
        return max(0, self.written - self.capacity)

    def append(self, start: float, values: tuple[float, float, float, float, float, float, float, int, int]) -> int:
        """Store one candle: ``values`` is (open, high, low, close, volume, buy_volume, vwap, trade_count, flags)."""
        row = self.written
        if self.last_start is None or start != self.last_start + self.interval:
            self._anchor_rows.append(row)
            self._anchor_starts.append(start)
        self.rows[row % self.capacity] = _encode(values)
        self.written = row + 1
        self.last_start = start
        self.last_close = values[3]
        dropped = row - self.capacity
        if dropped >= 0:
            if self._late:
                self._late.pop(dropped, None)
            self._prune_anchors()
        return row

    def _prune_anchors(self) -> None:
        first = self.first_row
        rows, head = self._anchor_rows, self._anchor_head
        while head + 1 < len(rows) and rows[head + 1] <= first:
            head += 1
        if head > 64 and head * 2 > len(rows):
            del self._anchor_rows[:head]
            del self._anchor_starts[:head]
            head = 0
        self._anchor_head = head

    def start_of(self, row: int) -> float:
        i = bisect_right(self._anchor_rows, row, self._anchor_head) - 1
        return self._anchor_starts[i] + (row - self._anchor_rows[i]) * self.interval

    def find(self, start: float) -> int | None:
        """The row number holding the candle that starts at ``start``, if it is still stored."""
        if not self.written:
            return None
        i = bisect_right(self._anchor_starts, start, self._anchor_head) - 1
        if i < self._anchor_head:
            return None
        offset, rest = divmod(start - self._anchor_starts[i], self.interval)
        row = self._anchor_rows[i] + int(offset)
        next_anchor = self._anchor_rows[i + 1] if i + 1 < len(self._anchor_rows) else self.written
        if rest or row >= next_anchor or row < self.first_row:
            return None
        return row

    def get(self, row: int) -> tuple[float, float, float, float, float, float, float, int, int]:
        r = self.rows[row % self.capacity]
        o = float(r["open"])
        return (
            o,
            float(r["high"]),
            float(r["low"]),
            float(r["close"]),
            float(r["volume"]),
            float(r["buy_volume"]),
            o + float(r["vwap_offset"]),
            int(r["trade_count"]),
            int(r["flags"]),
        )

    def replace(self, row: int, values: tuple[float, float, float, float, float, float, float, int, int]) -> None:
        self.rows[row % self.capacity] = _encode(values)
        if row == self.written - 1:
            self.last_close = values[3]

    def set_flags(self, row: int, bits: int) -> None:
        self.rows[row % self.capacity]["flags"] |= bits

    def late_ticks(self, row: int) -> int:
        return self._late.get(row, 0)

    def add_late_tick(self, row: int) -> int:
        count = self._late.get(row, 0) + 1
        self._late[row] = count
        return count

    def columns(self, limit: int | None = None) -> dict[str, Any]:
        """The newest ``limit`` candles (all if None), oldest first, as numpy columns."""
        count = len(self) if limit is None else max(0, min(limit, len(self)))
        first = self.written - count
        positions = np.arange(first, self.written) % self.capacity
        rows = self.rows[positions]
        numbers = np.arange(first, self.written)
        starts = self._starts(first, count)
        flags = rows["flags"]
        open_ = rows["open"].copy()
        volume = rows["volume"].copy()
        buy = rows["buy_volume"].copy()
        late = np.zeros(count, dtype=np.int64)
        for row, n in self._late.items():
            if row >= first:
                late[row - first] = n
        return {
            "start": starts,
            "end": starts + self.interval,
            "open": open_,
            "high": rows["high"].copy(),
            "low": rows["low"].copy(),
            "close": rows["close"].copy(),
            "volume": volume,
            "trade_count": rows["trade_count"].astype(np.int64),
            "vwap": open_ + rows["vwap_offset"].astype(np.float64),
            "buy_volume": buy,
            "sell_volume": np.maximum(volume - buy, 0.0),
            "late_ticks": late,
            "gap": (flags & GAP) != 0,
            "reconnect": (flags & RECONNECT) != 0,
            "filled": (flags & FILLED) != 0,
            "revised": (flags & REVISED) != 0,
            "row": numbers,
        }

    def _starts(self, first: int, count: int) -> np.ndarray:
        starts = np.empty(count, dtype=np.float64)
        if not count:
            return starts
        rows = self._anchor_rows
        i = max(bisect_right(rows, first, self._anchor_head) - 1, self._anchor_head)
        end = first + count
        while i < len(rows) and rows[i] < end:
            seg_start = max(rows[i], first)
            seg_end = min(rows[i + 1] if i + 1 < len(rows) else end, end)
            base = self._anchor_starts[i] + (seg_start - rows[i]) * self.interval
            starts[seg_start - first : seg_end - first] = base + np.arange(seg_end - seg_start) * self.interval
            i += 1
        return starts


def _encode(values: tuple[float, float, float, float, float, float, float, int, int]) -> tuple[Any, ...]:
    o, h, low, c, vol, buy, vwap, count, flags = values
    return (o, h, low, c, vol, buy, vwap - o, count, flags)
