"""The candles still forming: what ``CandleEngine.current`` shows, read from the engine's state without changing it.

A forming candle of interval N is its partial (base buckets already folded in) merged with the open base buckets
that fall inside it. A series with nothing forming but a previous close shows the flat candle it would become.
"""

from __future__ import annotations

import math

from marketdata.candle_acc import Acc, bucket_values, flat_values
from marketdata.candle_history import FILLED
from marketdata.candle_state import SeriesState, SymbolState
from marketdata.candle_types import Candle, make_candle


def forming_candles(st: SymbolState, fill_empty: bool) -> dict[int, Candle]:
    """The newest forming (provisional) candle of each of the symbol's intervals."""
    base_accs = sorted(st.open_base.values(), key=lambda acc: acc.start)
    result: dict[int, Candle] = {}
    for ser in st.series:
        interval = ser.interval
        flags_of = ser.pending_flags
        acc = _newest_forming(ser, base_accs)
        if acc is not None:
            values = bucket_values(acc, flags_of.get(acc.start, 0))
            result[interval] = make_candle(st.name, interval, acc.start, values, False, 0, 0)
        elif fill_empty and ser.history.last_close is not None and ser.next_start > -math.inf:
            start = ser.next_start
            values = flat_values(ser.history.last_close, flags_of.get(start, 0) | FILLED)
            result[interval] = make_candle(st.name, interval, start, values, False, 0, 0)
    return result


def _newest_forming(ser: SeriesState, base_accs: list[Acc]) -> Acc | None:
    """A copy of the series' newest forming candle, merged from its partial and open base buckets; None if none."""
    interval = ser.interval
    starts = [a.start - a.start % interval for a in base_accs]
    starts.extend(ser.partials)
    if not starts:
        return None
    start = max(starts)
    end = start + interval
    partial = ser.partials.get(start)
    acc = partial.copy(start, end) if partial is not None else None
    for base in base_accs:
        if start <= base.start < end:
            if acc is None:
                acc = base.copy(start, end)
            else:
                acc.merge(base)
    return acc
