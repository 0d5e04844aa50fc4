"""Per-symbol and per-interval state of the candle engine (plain containers; the engine holds the logic)."""

from __future__ import annotations

from typing import Any

from marketdata.candle_acc import Acc
from marketdata.candle_history import CandleHistory

# "no open bucket": contains no time (start +inf, end -inf), so every tick takes the slow path
NO_BUCKET = Acc(float("inf"), float("-inf"), 0.0)


class SeriesState:
    """One interval of one symbol: candles still forming (``partials``) and the stored final ones."""

    __slots__ = ("history", "interval", "next_start", "partials", "pending_flags", "revisable")

    def __init__(self, interval: int, history_limit: int, next_start: float) -> None:
        self.interval = interval
        self.history = CandleHistory(interval, history_limit)
        self.partials: dict[float, Acc] = {}
        self.next_start = next_start  # start of the oldest candle not final yet (-inf: before any data)
        self.pending_flags: dict[float, int] = {}
        self.revisable: dict[float, list[Any]] = {}  # start -> [Acc | None, revision], the newest finals

    def fold(self, acc: Acc) -> None:
        interval = self.interval
        start = acc.start - acc.start % interval
        partial = self.partials.get(start)
        if partial is None:
            self.partials[start] = acc.copy(start, start + interval)
        else:
            partial.merge(acc)


class SymbolState:
    """One symbol: its open base buckets, its series and its trade-id memory."""

    __slots__ = ("base_next", "cur", "duplicates", "late_ticks", "late_unplaced", "name", "open_base", "seen")
    __slots__ += ("series",)

    def __init__(self, name: str, series: list[SeriesState], base_next: float) -> None:
        self.name = name
        self.series = series
        self.open_base: dict[float, Acc] = {}
        self.cur: Acc = NO_BUCKET  # the newest open base bucket: the hot path's only stop
        self.base_next = base_next  # base buckets starting before this are final
        # trade ids in arrival order; forget_old_ids keeps the newest ones when it grows past its limit
        self.seen: dict[Any, None] = {}
        self.duplicates = 0
        self.late_ticks = 0
        self.late_unplaced = 0

    def forget_old_ids(self, keep: int) -> None:
        """Keep the newest ``keep`` trade ids (called when ``seen`` reaches twice that: amortized O(1))."""
        self.seen = dict.fromkeys(list(self.seen)[-keep:])
