"""Repairing a gap over HTTP, and keeping each symbol in seq order while it runs.

``GET /trades/{symbol}?after_seq=N&limit=L`` answers the exact wire messages the service recorded, so a gap the
ring can no longer replay (``ring_overflow``), one the service skipped for a slow reader (``slow_consumer``) or a
seq jump seen by the client is filled from the store. While a symbol is being repaired, everything else of that
symbol (live messages, gap reports, feed interruptions, further repairs) waits in a bounded hold and follows the
repaired messages in order; other symbols flow on. When the hold is full the reader stops reading until the
repair is done (backpressure, as with a full dispatch queue: the socket fills, and at worst the service drops us
and the client resumes from the last seq it received). What the store cannot give is reported as an unrepaired gap.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import msgspec

from bot.exchange.client_messages import market_payload
from marketdata.errors import MarketDataError
from marketdata.protocol import PriceUpdateMessage, TradeMessage

log = logging.getLogger(__name__)

REPAIRABLE = frozenset({"ring_overflow", "slow_consumer", "seq_jump"})
MAX_PAGE = 10_000  # the service's cap on ?limit
Deliver = Callable[[str, dict[str, Any]], Awaitable[None]]
Market = PriceUpdateMessage | TradeMessage


class GapRepairError(MarketDataError):
    """The service could not give the missing messages (unreachable, an HTTP error, or a body we cannot read)."""


class _Page(msgspec.Struct):
    ticks: list[Market]


_decode_page = msgspec.json.Decoder(_Page).decode


async def fetch_pages(
    session: aiohttp.ClientSession, http_base: str, symbol: str, from_seq: int, to_seq: int, page_size: int
) -> AsyncIterator[list[Market]]:
    """Pages of the symbol's messages with ``from_seq <= seq <= to_seq``, in seq order, until ``to_seq`` or until
    the store has nothing more (then fewer than asked: the caller finds the holes). Raises GapRepairError."""
    url = f"{http_base}/trades/{symbol}"
    cursor = from_seq - 1
    while cursor < to_seq:
        params = {"after_seq": str(cursor), "limit": str(min(page_size, to_seq - cursor, MAX_PAGE))}
        try:
            async with session.get(url, params=params) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise GapRepairError(f"GET {url} failed: {exc!r}") from exc
        if status != 200:
            raise GapRepairError(f"GET {url} answered {status}: {body[:200]!r}")
        try:
            ticks = _decode_page(body).ticks
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise GapRepairError(f"GET {url}: unreadable body: {exc}") from exc
        page: list[Market] = []
        for message in sorted(ticks, key=lambda m: m.seq):
            if message.symbol == symbol and cursor < message.seq <= to_seq:
                page.append(message)
                cursor = message.seq
        if not page:
            return
        yield page


class GapRepairer:
    """Per-symbol holds and the repair task that drains each one; ``deliver(kind, payload)`` is the client's sink."""

    def __init__(self, deliver: Deliver, *, page_size: int, timeout: float, hold_size: int, history: int) -> None:
        self._deliver = deliver
        self.page_size = page_size
        self.timeout = timeout
        self.hold_size = hold_size
        self._holds: dict[str, deque[tuple[str, dict[str, Any]]]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.waiting = False  # the reader waits for a repair: its silence is ours, not the service's
        self.repaired: deque[dict[str, Any]] = deque(maxlen=history)
        self.stats = {"gaps_repaired": 0, "gaps_unrepaired": 0, "messages_repaired": 0, "repair_hold_waits": 0}

    def active(self, symbol: str) -> bool:
        return symbol in self._holds

    def held(self) -> int:
        return sum(len(hold) for hold in self._holds.values())

    async def emit(self, symbol: str, kind: str, payload: dict[str, Any]) -> None:
        """Deliver now, or after the symbol's running repair (waiting if its hold is full)."""
        hold = self._holds.get(symbol)
        if hold is not None and len(hold) >= self.hold_size:
            self.stats["repair_hold_waits"] += 1
            self.waiting = True
            try:
                await asyncio.wait({self._tasks[symbol]})  # not the task itself: our cancel must not cancel it
            finally:
                self.waiting = False
            hold = self._holds.get(symbol)
        if hold is None:
            await self._deliver(kind, payload)
        else:
            hold.append((kind, payload))

    async def repair(self, symbol: str, http_base: str, gap: dict[str, Any]) -> None:
        """Fill ``gap`` (``symbol``, ``from_seq``, ``to_seq``, ``reason``) from ``http_base``, in stream order."""
        item = ("repair", {**gap, "http_base": http_base})
        if symbol in self._holds:
            await self.emit(symbol, *item)
            return
        self._holds[symbol] = deque([item])
        self._tasks[symbol] = asyncio.create_task(self._drain(symbol), name=f"gap-repair-{symbol}")

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._holds.clear()
        self._tasks.clear()

    async def _drain(self, symbol: str) -> None:
        hold = self._holds[symbol]
        session: aiohttp.ClientSession | None = None
        try:
            while hold:  # no await between the last check and the removal below, so nothing is left behind
                kind, payload = hold.popleft()
                try:
                    if kind == "repair":
                        if session is None:
                            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
                        await self._repair(session, symbol, payload)
                    else:
                        await self._deliver(kind, payload)
                except Exception:  # a bug in one item must not strand the rest of the symbol's stream
                    log.exception("gap repair of %s: %s item failed", symbol, kind)
        finally:
            self._holds.pop(symbol, None)
            self._tasks.pop(symbol, None)
            if session is not None:
                await session.close()

    async def _repair(self, session: aiohttp.ClientSession, symbol: str, gap: dict[str, Any]) -> None:
        first, last, reason = gap["from_seq"], gap["to_seq"], gap["reason"]
        expected, holes, error = first, [], None
        try:
            async for page in fetch_pages(session, gap["http_base"], symbol, first, last, self.page_size):
                for message in page:
                    if message.seq > expected:
                        holes.append((expected, message.seq - 1))
                    expected = message.seq + 1
                    self.stats["messages_repaired"] += 1
                    await self._deliver(*market_payload(message, time.time()))
        except GapRepairError as exc:
            error = str(exc)
        if expected <= last:
            holes.append((expected, last))
        if not holes:
            self.stats["gaps_repaired"] += 1
            self.repaired.append({"symbol": symbol, "from_seq": first, "to_seq": last, "reason": reason})
            log.info("gap in %s: seq %d..%d repaired from the store (%s)", symbol, first, last, reason)
            return
        self.stats["gaps_unrepaired"] += 1
        log.warning("gap in %s: seq %d..%d only partly repaired (%s)", symbol, first, last, error or "store lacks them")
        for lo, hi in holes:
            report = {"symbol": symbol, "from_seq": lo, "to_seq": hi, "reason": reason, "time": time.time()}
            if error:
                report["error"] = error
            await self._deliver("gap", report)
