"""History candles from stored ticks, built by the live candle engine (``marketdata.candles``) itself.

DESIGN: live and replay run the same code, so the same ticks give identical candles. ``GET /market_data``
therefore feeds the stored ticks, in seq order, one by one into a ``CandleEngine`` set up like the service's
(same grace, same base interval), calling ``add_trade`` / ``add_price`` exactly as the live candle stream
does. The final candles are taken from the engine's handler, as the live stream takes them, so every field
(vwap included) is bit for bit what a ``?candles=1`` client received.

Differences, by construction (also stated in ``bluefin_service/history.py``):
- the engine runs in event time (each tick's own timestamp moves the watermark) where the live one ran on the
  wall clock, so a tick the live engine received after its candle's watermark (counted in ``late_ticks`` and
  left out) is inside the history candle, and ``late_ticks`` is 0 here;
- ``gap``/``reconnect`` flags come from the exchange feed's status, which is not stored: they are False here;
- a candle that began before the service (re)started has all its stored ticks here, the live one only those
  after the start.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from bluefin_service.store import SeqRow
from marketdata.candles import Candle, CandleEngine, to_candle_data
from marketdata.errors import InvalidTick
from marketdata.protocol import CandleData


class HistoryCandles:
    """Feed one symbol's rows (any number of pages, each in seq order), then ``finish(now)``."""

    def __init__(
        self,
        symbol: str,
        interval: int,
        live_intervals: Sequence[int],
        grace: float,
        first_start: float,
        count: int,
        prev_close: float | None,
    ) -> None:
        self.symbol = symbol
        self.interval = interval
        self.first_start = first_start
        self.range_end = first_start + count * interval
        # The live engine's base (the gcd of its intervals) decides how ticks are summed: use the same one.
        self.base = math.gcd(*live_intervals, interval)
        self._finals: dict[float, Candle] = {}
        self.engine = CandleEngine(
            sorted({self.base, interval}), grace=grace, history_limit=count + 2, handler=self._collect
        )
        self.rejected = 0
        self.max_seq = 0
        if prev_close is not None and prev_close > 0:
            # the previous close, placed in the base bucket just before the range: it makes empty candles at
            # the start of the range flat at that close, as the live engine's were
            self.engine.add_price(symbol, first_start - self.base, prev_close)

    def _collect(self, candles: list[Candle]) -> None:
        interval, low, high = self.interval, self.first_start, self.range_end
        for candle in candles:
            if candle.interval == interval and low <= candle.start < high:
                self._finals[candle.start] = candle

    def feed(self, rows: Iterable[SeqRow]) -> None:
        engine, symbol = self.engine, self.symbol
        add_trade, add_price = engine.add_trade, engine.add_price
        max_seq = self.max_seq
        for ts, seq, is_trade, price, size, is_buy, trade_id in rows:
            if seq > max_seq:
                max_seq = seq
            try:
                if is_trade:
                    add_trade(symbol, ts, price, size, bool(is_buy), trade_id)
                else:
                    add_price(symbol, ts, price)
            except (InvalidTick, TypeError):  # TypeError: a hand-edited row with text where a number belongs
                self.rejected += 1  # the live stream rejected (and skipped) such a tick too
        self.max_seq = max_seq

    def finish(self, now: float) -> list[CandleData]:
        """The range's candles, oldest first: final up to ``now`` minus grace, then those still forming."""
        engine = self.engine
        engine.advance(min(now, self.range_end + engine.grace))
        final = set(self._finals)
        engine.force_complete(self.symbol)  # the candles still forming (one per interval in the grace window)
        out = []
        for start, candle in sorted(self._finals.items()):
            data = to_candle_data(candle)
            data.final = start in final
            out.append(data)
        if out:  # intervals not final yet with no tick so far: flat at the last close, as the live stream shows
            step, close = self.interval, out[-1].close
            start = out[-1].start + step
            while start < self.range_end:
                out.append(CandleData(step, start, start + step, close, close, close, close, 0.0, 0, close, 0.0, 0.0,
                                      False))  # fmt: skip
                start += step
        return out
