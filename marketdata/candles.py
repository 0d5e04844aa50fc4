"""The candle engine: ticks and a clock in, provisional and final candles out. Pure: time is always passed in.

- Candles are aligned to epoch multiples of each interval and bucketed by the tick's own (exchange) timestamp.
- Every tick updates one bucket of the *base* interval (the gcd of all intervals); a base bucket that becomes final
  is folded into the candle of every interval, so the per-tick cost does not grow with the number of intervals.
- The watermark: a bucket is final once ``now >= end + grace``. ``advance(now)`` moves it, with or without ticks.
  Ticks that arrive out of order but before the watermark are folded in time order (open = earliest timestamp,
  close = latest; equal timestamps keep arrival order).
- A tick for a bucket that is already final is *late*: it never changes the stored candle silently. It is counted
  on that candle's ``late_ticks``; with ``revisions=True`` (and the candle still within ``revision_window``) the
  candle is recomputed and emitted again with ``revision`` 1, 2, ...
- An interval with no tick becomes a flat candle at the previous close with zero volume (``fill_empty``).
- Volume, vwap, trade count and buy/sell volume come from trades only; trades are de-duplicated by ``trade_id``
  within their base bucket (a re-delivered trade carries its original timestamp): per symbol, the ids of every
  open bucket and of the newest final buckets holding at least ``dedupe_size`` ids are remembered (an open
  bucket keeps at most its newest ``2 * dedupe_size``).
- Every ``now`` argument is the clock's time; ``None`` means event time: the tick's own timestamp (or a batch's
  newest) moves the watermark, as in a replay or backtest.

Final candles (and revisions) go to ``handler(candles)`` if one is given (as soon as they exist); otherwise they
collect in a bounded output queue that ``advance()`` returns and ``take_output()`` drains.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from marketdata import candle_batch
from marketdata.candle_acc import BUY, PRICE_ONLY, SELL, Acc, bucket_values, flat_values
from marketdata.candle_forming import forming_candles
from marketdata.candle_history import FILLED, GAP, RECONNECT, REVISED
from marketdata.candle_state import NO_BUCKET, SeriesState, SymbolState, check_options, trim_ids
from marketdata.candle_types import (
    Candle,
    FloatTick,
    TickValues,
    candles_from_columns,
    make_candle,
    to_candle_data,
    to_candle_message,
)
from marketdata.errors import ConfigError, InvalidTick

__all__ = ["Candle", "CandleEngine", "FloatTick", "to_candle_data", "to_candle_message"]

INF = math.inf
_MAX_PENDING_FLAGS = 256


class CandleEngine:
    """Candles for many symbols and several whole-second intervals; see the module docstring."""

    def __init__(
        self,
        intervals: Iterable[int],
        *,
        grace: float = 0.25,
        history_limit: int = 1000,
        fill_empty: bool = True,
        revisions: bool = False,
        revision_window: int = 16,
        dedupe_size: int = 10_000,
        max_output: int = 100_000,
        handler: Callable[[list[Candle]], Any] | None = None,
    ) -> None:
        chosen = check_options(intervals, grace, history_limit, dedupe_size, revision_window)
        self.intervals = tuple(chosen)
        self.base = math.gcd(*chosen)
        self.grace = float(grace)
        self.history_limit = history_limit
        self.fill_empty = fill_empty
        self.revisions = revisions
        self.revision_window = revision_window
        self.dedupe_size = dedupe_size
        self.watermark = -INF  # every bucket ending at or before this is final
        self.deadline = -INF  # the `now` at which the watermark next moves
        self._bucket_id_limit = 2 * dedupe_size
        self.handler = handler
        self.output: deque[Candle] = deque(maxlen=max_output)  # without a handler, oldest dropped when full
        self.output_dropped = 0
        self._symbols: dict[str, SymbolState] = {}

    # ----------------------------------------------------------------------------------------------- ticks
    def add_tick(self, tick: FloatTick, now: float | None = None) -> bool:
        """Add a checked tick object (the bot's ``Tick``); the hot path. False for a duplicate ``trade_id``.

        ``now`` is the clock's time; None means event time: the tick's own timestamp moves the watermark.
        """
        try:
            ts, symbol, is_trade = tick.timestamp, tick.symbol, tick.is_trade
        except AttributeError as exc:
            raise InvalidTick(f"add_tick needs a Tick, got {type(tick).__name__}: {exc}") from None
        try:
            st = self._symbols[symbol]
        except KeyError:
            st = self._new_symbol(symbol)
        if now is None:
            now = ts
        if now >= self.deadline:
            self._move_watermark(now)
        price = tick.price_float
        b = st.cur
        if ts < b.start or ts >= b.end:
            b = self._base_bucket(st, ts, price)
            if b is None:
                return self._add_late(st, tick, ts, price, is_trade)
        if is_trade:
            trade_id = tick.trade_id
            if trade_id is not None:  # SymbolState.remember, inlined: the bucket's own ids
                ids = b.ids
                if ids is None:  # a bucket the batch path opened without ids
                    ids = b.ids = st.bucket_ids(b.start)
                if trade_id in ids:
                    st.duplicates += 1
                    return False
                ids[trade_id] = None
                if len(ids) >= self._bucket_id_limit:
                    trim_ids(ids, self.dedupe_size)
        if ts < b.first_ts:
            b.first_ts = ts
            b.open = price
        if ts >= b.last_ts:
            b.last_ts = ts
            b.close = price
        if price > b.high:
            b.high = price
        elif price < b.low:
            b.low = price
        if is_trade:
            size = tick.volume_float
            b.volume += size
            b.notional += price * size
            if tick.side == "buy":
                b.buy += size
            b.count += 1
        return True

    def add_trade(
        self,
        symbol: str,
        ts: float,
        price: float,
        size: float,
        is_buy: bool,
        trade_id: Any = None,
        now: float | None = None,
    ) -> bool:
        """Add one trade given as values (checked here); False if its ``trade_id`` was seen already."""
        if not (0.0 < price < INF and 0.0 <= size < INF and ts - ts == 0.0):
            raise InvalidTick(f"trade for {symbol!r} rejected: ts={ts!r} price={price!r} size={size!r}")
        return self.add_tick(TickValues(symbol, ts, price, size, "buy" if is_buy else "sell", trade_id, True), now)

    def add_price(self, symbol: str, ts: float, price: float, now: float | None = None) -> None:
        """Add a price update: it moves open/high/low/close, never volume."""
        if not (0.0 < price < INF and ts - ts == 0.0):
            raise InvalidTick(f"price update for {symbol!r} rejected: ts={ts!r} price={price!r}")
        self.add_tick(TickValues(symbol, ts, price, 0.0, None, None, False), now)

    def add_trades_batch(
        self,
        symbol: str,
        timestamps: Any,
        prices: Any,
        sizes: Any,
        is_buy: Any,
        trade_ids: Any = None,
        now: float | None = None,
    ) -> int:
        """Add many trades of one symbol as numpy columns (see candle_batch.py); returns how many were new."""
        return candle_batch.add_trades_batch(self, symbol, timestamps, prices, sizes, is_buy, trade_ids, now)

    def _add_late(self, st: SymbolState, tick: FloatTick, ts: float, price: float, is_trade: bool) -> bool:
        if is_trade:
            trade_id = tick.trade_id
            if trade_id is not None and not st.remember(trade_id, ts - ts % self.base, self.dedupe_size):
                return False
            self._late_tick(st, ts, price, tick.volume_float, BUY if tick.side == "buy" else SELL)
        else:
            self._late_tick(st, ts, price, 0.0, PRICE_ONLY)
        return True

    def _new_symbol(self, symbol: str) -> SymbolState:
        w = self.watermark
        series = [SeriesState(i, self.history_limit, w - w % i if w > -INF else -INF) for i in self.intervals]
        st = self._symbols[symbol] = SymbolState(symbol, series, w)
        return st

    def _base_bucket(self, st: SymbolState, ts: float, price: float) -> Acc | None:
        start = ts - ts % self.base
        if start < st.base_next:
            return None
        acc = st.open_base.get(start)
        if acc is None:
            acc = st.open_base[start] = Acc(start, start + self.base, price)
            acc.ids = st.bucket_ids(start)
            if st.cur is NO_BUCKET or start > st.cur.start:
                st.cur = acc
        return acc

    def _late_tick(self, st: SymbolState, ts: float, price: float, size: float, side: int) -> None:
        st.late_ticks += 1
        for ser in st.series:
            interval = ser.interval
            start = ts - ts % interval
            if start >= ser.next_start:  # its base bucket is final, but this interval's candle is still open
                partial = ser.partials.get(start)
                if partial is None:
                    partial = ser.partials[start] = Acc(start, start + interval, price)
                partial.add(ts, price, size, side)
                continue
            hist = ser.history
            row = hist.find(start)
            if row is None:
                st.late_unplaced += 1
                continue
            late = hist.add_late_tick(row)
            entry = ser.revisable.get(start) if self.revisions else None
            if entry is None:
                continue
            acc = entry[0]
            if acc is None:
                acc = entry[0] = Acc(start, start + interval, price)
            acc.add(ts, price, size, side)
            entry[1] += 1
            flags = (hist.get(row)[8] & ~FILLED) | REVISED
            hist.replace(row, bucket_values(acc, flags))
            self._emit_row(st, ser, row, start, entry[1], late)
        self._flush()

    # ----------------------------------------------------------------------------------------------- clock
    def advance(self, now: float) -> list[Candle]:
        """Finalize every bucket with ``end + grace <= now``; return the output queue (empty with a handler)."""
        self._move_watermark(now)
        return self.take_output()

    def _move_watermark(self, now: float) -> None:
        x = now - self.grace
        boundary = x - x % self.base
        if boundary > self.watermark:
            self.watermark = boundary
            for st in self._symbols.values():
                self._finalize(st, boundary)
            self._flush()
        self.deadline = self.watermark + self.base + self.grace

    def next_deadline(self, now: float) -> float:
        """When ``advance`` will next have work: the next base boundary plus grace."""
        if self.deadline > -INF:
            return self.deadline
        x = now - self.grace
        return x - x % self.base + self.base + self.grace

    def force_complete(self, symbol: str) -> list[Candle]:
        """Finalize the symbol's forming candles now, each at its aligned end (never at an unaligned time)."""
        st = self._symbols.get(symbol)
        if st is None:
            return []
        if st.open_base:
            self._fold_base(st, max(a.end for a in st.open_base.values()))
        for ser in st.series:
            if ser.partials:
                self._close_series(st, ser, max(ser.partials) + ser.interval)
        self._flush()
        return self.take_output()

    def take_output(self) -> list[Candle]:
        out = list(self.output)
        self.output.clear()
        return out

    def _flush(self) -> None:
        if self.handler is not None and self.output:
            self.handler(self.take_output())

    def _finalize(self, st: SymbolState, boundary: float) -> None:
        self._fold_base(st, boundary)
        for ser in st.series:
            self._close_series(st, ser, boundary)

    def _fold_base(self, st: SymbolState, upto: float) -> None:
        if st.open_base:
            due = sorted((a for a in st.open_base.values() if a.end <= upto), key=_start)
            if due:
                for acc in due:
                    del st.open_base[acc.start]
                    ids = st.ids.get(acc.start)  # acc.ids, or what the batch path remembered for it
                    if ids:
                        st.final_ids += len(ids)
                    elif ids is not None:  # no trade ids: nothing to remember for it
                        del st.ids[acc.start]
                    for ser in st.series:
                        ser.fold(acc)
                if len(due) > 64:  # a dict never shrinks by deleting: copy it after a big batch
                    st.open_base = dict(st.open_base)
                    st.ids = dict(st.ids)
                st.cur = max(st.open_base.values(), key=_start) if st.open_base else NO_BUCKET
        if upto > st.base_next:
            st.base_next = upto
        if st.final_ids > self.dedupe_size:
            st.forget_ids(self.dedupe_size)

    def _close_series(self, st: SymbolState, ser: SeriesState, upto: float) -> None:
        interval, partials, hist = ser.interval, ser.partials, ser.history
        nxt = ser.next_start
        if nxt == -INF:
            if not partials:
                return
            nxt = min(partials)
        begin = nxt
        while nxt + interval <= upto:
            acc = partials.pop(nxt, None)
            if acc is not None:
                self._emit_final(st, ser, nxt, acc, ser.pending_flags.pop(nxt, 0) if ser.pending_flags else 0)
                nxt += interval
                continue
            limit = min(min(partials, default=INF), upto - upto % interval)
            if self.fill_empty and hist.last_close is not None:
                skip = int((limit - nxt) // interval) - hist.capacity
                if skip > 0:
                    nxt += skip * interval
                while nxt < limit:
                    flags = ser.pending_flags.pop(nxt, 0) if ser.pending_flags else 0
                    self._emit_final(st, ser, nxt, None, flags)
                    nxt += interval
            else:
                nxt = limit
        if nxt - begin > 64 * interval:
            ser.partials = dict(partials)  # a dict never shrinks by deleting: copy it after a big batch
        ser.next_start = nxt
        if ser.pending_flags:
            for start in [s for s in ser.pending_flags if s < nxt]:
                del ser.pending_flags[start]

    def _emit_final(self, st: SymbolState, ser: SeriesState, start: float, acc: Acc | None, flags: int) -> None:
        hist = ser.history
        values = flat_values(hist.last_close or 0.0, flags | FILLED) if acc is None else bucket_values(acc, flags)
        hist.append(start, values)
        if self.revisions and self.revision_window:
            ser.revisable[start] = [acc, 0]
            if len(ser.revisable) > self.revision_window:
                del ser.revisable[next(iter(ser.revisable))]
        self._push(make_candle(st.name, ser.interval, start, values, True, 0, 0))

    def _emit_row(self, st: SymbolState, ser: SeriesState, row: int, start: float, revision: int, late: int) -> None:
        values = ser.history.get(row)
        self._push(make_candle(st.name, ser.interval, start, values, True, late, revision))

    def _push(self, candle: Candle) -> None:
        if len(self.output) == self.output.maxlen:
            self.output_dropped += 1
        self.output.append(candle)

    # ----------------------------------------------------------------------------------------------- quality
    def mark_gap(self, symbol: str, at: float, reconnect: bool = False) -> None:
        """Flag the candles containing ``at`` (every interval): the feed had a gap, or reconnected, there."""
        if not at - at == 0.0:
            raise InvalidTick(f"mark_gap needs a finite time, got {at!r}")
        st = self._symbols.get(symbol) or self._new_symbol(symbol)
        bit = RECONNECT if reconnect else GAP
        for ser in st.series:
            start = at - at % ser.interval
            if start >= ser.next_start:
                flags = ser.pending_flags
                flags[start] = flags.get(start, 0) | bit
                if len(flags) > _MAX_PENDING_FLAGS:
                    del flags[min(flags)]
                continue
            row = ser.history.find(start)
            if row is None:
                continue
            ser.history.set_flags(row, bit)
            entry = ser.revisable.get(start) if self.revisions else None
            if entry is not None:
                entry[1] += 1
                self._emit_row(st, ser, row, start, entry[1], ser.history.late_ticks(row))
        self._flush()

    # ----------------------------------------------------------------------------------------------- reading
    def symbols(self) -> list[str]:
        return list(self._symbols)

    def current(self, symbol: str) -> dict[int, Candle]:
        """The newest forming (provisional) candle of each interval."""
        st = self._symbols.get(symbol)
        return {} if st is None else forming_candles(st, self.fill_empty)

    def history(self, symbol: str, interval: int, limit: int | None = None) -> dict[str, Any]:
        """The newest ``limit`` final candles as numpy columns (oldest first); empty columns if none."""
        return self._series(symbol, interval).history.columns(limit)

    def last_candles(self, symbol: str, interval: int, limit: int | None = None) -> list[Candle]:
        return candles_from_columns(symbol, interval, self.history(symbol, interval, limit))

    def stats(self, symbol: str) -> dict[str, int]:
        st = self._symbols.get(symbol)
        if st is None:
            return {"duplicates": 0, "late_ticks": 0, "late_unplaced": 0}
        return {"duplicates": st.duplicates, "late_ticks": st.late_ticks, "late_unplaced": st.late_unplaced}

    def _series(self, symbol: str, interval: int) -> SeriesState:
        if interval not in self.intervals:
            raise ConfigError(f"interval {interval!r} is not configured; configured: {list(self.intervals)}")
        st = self._symbols.get(symbol)
        if st is None:
            return SeriesState(interval, 1, -INF)
        return st.series[self.intervals.index(interval)]

    def _symbol_state(self, symbol: str) -> SymbolState:
        return self._symbols.get(symbol) or self._new_symbol(symbol)


def _start(acc: Acc) -> float:
    return acc.start
