"""Per-symbol and per-interval state of the candle engine (plain containers; the engine holds the logic), and
the check of the engine's options."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from marketdata.candle_acc import Acc
from marketdata.candle_history import CandleHistory
from marketdata.errors import ConfigError

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

    __slots__ = ("base_next", "cur", "duplicates", "final_ids", "ids", "late_ticks", "late_unplaced", "name")
    __slots__ += ("open_base", "series")

    def __init__(self, name: str, series: list[SeriesState], base_next: float) -> None:
        self.name = name
        self.series = series
        self.open_base: dict[float, Acc] = {}
        self.cur: Acc = NO_BUCKET  # the newest open base bucket: the hot path's only stop
        self.base_next = base_next  # base buckets starting before this are final
        # Trade ids per base bucket (start -> ids): a re-delivered trade has the same timestamp, so it is looked
        # up in its own bucket's small dict (which stays in cache) rather than in one dict of every recent id.
        # An open bucket's dict is also its Acc's ``ids`` (the hot path); final buckets keep theirs until
        # ``forget_ids`` drops the oldest, keeping at least the newest ``dedupe_size`` final ids.
        self.ids: dict[float, dict[Any, None]] = {}
        self.final_ids = 0  # how many ids the final buckets in ``ids`` hold
        self.duplicates = 0
        self.late_ticks = 0
        self.late_unplaced = 0

    def bucket_ids(self, start: float) -> dict[Any, None]:
        ids = self.ids.get(start)
        if ids is None:
            ids = self.ids[start] = {}
        return ids

    def remember(self, trade_id: Any, start: float, keep: int) -> bool:
        """False (and counted) if ``trade_id`` is remembered in the base bucket ``start``; else remember it."""
        ids = self.bucket_ids(start)
        if trade_id in ids:
            self.duplicates += 1
            return False
        ids[trade_id] = None
        if start < self.base_next:
            self.final_ids += 1
        elif len(ids) >= 2 * keep:
            trim_ids(ids, keep)
        return True

    def forget_ids(self, keep: int) -> None:
        """Drop the oldest final buckets' ids while at least ``keep`` final ids would remain."""
        ids_of = self.ids
        while self.final_ids > keep and ids_of:
            start = next(iter(ids_of))  # registration order: time order but for late ticks
            if start >= self.base_next:
                break
            n = len(ids_of[start])
            if self.final_ids - n < keep:
                break
            del ids_of[start]
            self.final_ids -= n

    def remembered_ids(self) -> int:
        return sum(map(len, self.ids.values()))


def trim_ids(ids: dict[Any, None], keep: int) -> None:
    """Keep the newest ``keep`` ids of one bucket, in place (its Acc holds the same dict)."""
    for trade_id in list(ids)[:-keep]:
        del ids[trade_id]


def check_options(
    intervals: Iterable[int], grace: float, history_limit: int, dedupe_size: int, revision_window: int
) -> list[int]:
    """The engine's options, checked (ConfigError naming the bad one); returns the intervals sorted, unique."""
    chosen = list(intervals)
    if not chosen:
        raise ConfigError("at least one candle interval is needed")
    for interval in chosen:
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ConfigError(f"candle intervals are whole seconds >= 1, got {interval!r}")
    if not (isinstance(grace, (int, float)) and 0 <= grace < math.inf):
        raise ConfigError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
    for name, value in (("history_limit", history_limit), ("dedupe_size", dedupe_size)):
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
    if not (isinstance(revision_window, int) and revision_window >= 0):
        raise ConfigError(f"revision_window must be an integer >= 0, got {revision_window!r}")
    return sorted(set(chosen))
