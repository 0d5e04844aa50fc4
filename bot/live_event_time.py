"""``python -m bot.main live --event-time``: the live client's stream driving ``EventTimeBot`` on the stream's clock.

For a service replaying recorded ticks (``SOURCE=replay``): the bot asks for everything the service still holds
(resume from seq 0), trades on the ticks' own times exactly as ``backtest`` does, and stops by itself once the
replay has finished and every replayed tick has been handled (or at ``--duration``, SIGINT or SIGTERM). Against a
live source it runs until stopped. The wall-clock ``live`` loop cannot give backtest's trades: it decides when its
timer fires, and a replay delivers minutes of ticks between two wake-ups.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import aiohttp

from bot.config import BotSettings
from bot.event_time import EventTimeBot
from bot.exchange.bluefin_client import BluefinServiceClient

POLL_SECONDS = 0.25


class StreamEventTimeBot:
    def __init__(self, settings: BotSettings, duration: float | None = None, keep_candles: bool = False) -> None:
        self.settings = settings
        self.symbol = settings.trading.symbol
        self.url = settings.exchange.bluefin_service_url
        self.duration = duration
        self.bot = EventTimeBot(settings, settings.journal_path, keep_candles=keep_candles)
        self.client = BluefinServiceClient(self.url)
        self.last_seq = 0
        self.stop = asyncio.Event()
        self.client.subscribe_to_price_updates(self._on_price)
        self.client.subscribe_to_trades(self._on_trade)

    async def _on_price(self, update: dict[str, Any]) -> None:
        if update.get("symbol") == self.symbol:
            await self.bot.on_tick(update["timestamp"], update["price"])
            self.last_seq = max(self.last_seq, int(update.get("seq") or 0))

    async def _on_trade(self, trade: dict[str, Any]) -> None:
        if trade.get("symbol") == self.symbol:
            await self.bot.on_tick(trade["timestamp"], trade["price"], trade["size"], trade["side"], trade["trade_id"])
            self.last_seq = max(self.last_seq, int(trade.get("seq") or 0))

    async def run(self) -> str:
        """Stream until done; returns the summary text to print."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop.set)
        # Start from the first message the service holds, not its head: a fast replay may be over already.
        self.client.resume_from(self.symbol, 0)
        started = time.monotonic()
        notes: list[str] = []
        if not await self.client.connect_websocket([self.symbol]):
            notes.append(f"cannot reach the service at {self.url}; retrying in the background")
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
                while not self.stop.is_set():
                    if self.duration is not None and time.monotonic() - started >= self.duration:
                        break
                    if await self._replay_done(session):
                        notes.append("the replay has finished and every tick was handled")
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop.wait(), POLL_SECONDS)
        finally:
            await self.client.disconnect_websocket()
            await self.bot.finish()
        stats = self.bot.engine.stats
        done = f"stopped after {self.bot.ticks:,} ticks, {self.bot.candle_count:,} candles. Summary:"
        return "\n".join([*notes, done, stats.format(), f"Journal: {self.bot.journal.path}"])

    async def _replay_done(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(f"{self.url}/streaming/status") as response:
                status = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False
        if not isinstance(status, dict) or status.get("source") != "replay" or status.get("running", True):
            return False
        head = (status.get("symbols") or {}).get(self.symbol, {}).get("last_seq")
        return isinstance(head, int) and self.last_seq >= head
