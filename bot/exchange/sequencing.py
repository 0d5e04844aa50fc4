"""Where each symbol's stream stands, and what the client does about what did not arrive.

A message at or below a symbol's last ``seq`` is a duplicate (dropped); a jump past ``last + 1`` is a gap; a
``gap`` message names a range the service can no longer replay, or, with an ``upstream_*`` reason, an
interruption of the service's own venue feed (reported, nothing to repair). Gaps the store can fill are repaired
over HTTP (``gap_repair.py``); the rest are recorded as lost. Everything sequenced reaches the callbacks through
``deliver``, in stream order.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from bot.exchange.client_config import http_base_url
from bot.exchange.gap_repair import REPAIRABLE, GapRepairer
from marketdata.protocol import GapMessage

log = logging.getLogger(__name__)

Put = Callable[[str, dict[str, Any]], Awaitable[None]]


class StreamSequencer:
    def __init__(
        self,
        put: Put,
        stats: dict[str, Any],
        *,
        repair_gaps: bool,
        page_size: int,
        timeout: float,
        hold_size: int,
        history: int,
    ) -> None:
        self.last_seq: dict[str, int] = {}  # what we received (some of it may still wait behind a repair)
        self.gaps: deque[dict[str, Any]] = deque(maxlen=history)  # lost ranges, newest last
        self.interruptions: deque[dict[str, Any]] = deque(maxlen=history)
        self.repair_gaps = repair_gaps
        self.repairer = GapRepairer(self._deliver, page_size=page_size, timeout=timeout, hold_size=hold_size,
                                    history=history)  # fmt: skip
        self._put = put
        self._stats = stats

    async def accept(self, symbol: str, seq: int, url: str | None) -> bool:
        """True if the message with ``seq`` is new (a jump before it is reported as a gap first)."""
        if seq <= 0:  # a server without sequence numbers: nothing to check
            return True
        last = self.last_seq.get(symbol)
        if last is not None:
            if seq <= last:
                self._stats["duplicates_dropped"] += 1
                return False
            if seq > last + 1:
                await self._gap(symbol, last + 1, seq - 1, "seq_jump", url)
        self.last_seq[symbol] = seq
        return True

    async def on_gap_message(self, message: GapMessage, url: str | None) -> None:
        gap, symbol = message.data, message.symbol
        if gap.reason.startswith("upstream_"):  # the venue's feed, not our sequence: nothing to repair
            event = {"symbol": symbol, "kind": gap.reason.removeprefix("upstream_"), "reason": gap.reason,
                     "seq": gap.to_seq, "time": message.timestamp}  # fmt: skip
            if event in self.interruptions:  # the service sends it again to a client resuming from before it
                return
            self.interruptions.append(event)
            self._stats["feed_interruptions"] += 1
            log.warning("%s: the service's venue feed was interrupted (%s) at seq %d", symbol, gap.reason, gap.to_seq)
            await self.repairer.emit(symbol, "interruption", event)
            return
        last = self.last_seq.get(symbol, 0)
        if gap.from_seq <= last:  # the service's head is behind us: it restarted without its history
            self.last_seq[symbol] = gap.from_seq - 1
        else:
            self.last_seq[symbol] = max(last, gap.to_seq)
        await self._gap(symbol, gap.from_seq, gap.to_seq, gap.reason, url)

    async def _gap(self, symbol: str, from_seq: int, to_seq: int, reason: str, url: str | None) -> None:
        gap = {"symbol": symbol, "from_seq": from_seq, "to_seq": to_seq, "reason": reason, "time": time.time()}
        if self.repair_gaps and reason in REPAIRABLE and url is not None:
            await self.repairer.repair(symbol, http_base_url(url), gap)
        else:
            self.repairer.stats["gaps_unrepaired"] += 1
            await self.repairer.emit(symbol, "gap", gap)

    async def _deliver(self, kind: str, payload: dict[str, Any]) -> None:
        """Every sequenced item ends here, in stream order: callbacks, and the record of lost ranges."""
        if kind == "gap":
            self.gaps.append(payload)
            self._stats["gap_count"] += 1
            log.warning(
                "gap in %s: seq %d..%d cannot be replayed (%s)",
                payload["symbol"], payload["from_seq"], payload["to_seq"], payload["reason"],
            )  # fmt: skip
        await self._put(kind, payload)
