"""``python -m bot.main backtest``: the bot's strategy, broker and risk manager over recorded ticks, in event time.

Ticks come from a SQLite store file (``--store``, read-only) or the service's ``GET /trades`` (``--service``), in
``seq`` order, and go through ``EventTimeBot`` one at a time, as a replay streamed to the live client would (see
docs/backtest.md for the rules). The output is the live summary, a JSON-lines journal and an equity curve PNG.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.config import BotSettings
from bot.data.history_reader import BacktestError, RecordedTick, Skipped, http_pages, parse_time, sqlite_pages
from bot.event_time import EventTimeBot

DEFAULT_JOURNAL = Path("data/backtest_journal.jsonl")


@dataclass(frozen=True)
class BacktestSource:
    """Where the ticks come from: exactly one of a store file and a service URL."""

    store: Path | None = None
    service_url: str | None = None

    def describe(self) -> str:
        return f"store {self.store}" if self.store is not None else f"service {self.service_url}"


def choose_source(store: Path | None, service_url: str | None, settings: BotSettings) -> BacktestSource:
    """``--store`` or ``--service``; with neither, the local store (``$DATA_DIR/ticks.db``) if it exists, else the
    configured service."""
    if store is not None and service_url is not None:
        raise BacktestError("give --store or --service, not both")
    if store is not None:
        return BacktestSource(store=store)
    if service_url is not None:
        return BacktestSource(service_url=settings.exchange.bluefin_service_url)
    local = Path(os.environ.get("DATA_DIR", "data")) / "ticks.db"
    if local.is_file():
        return BacktestSource(store=local)
    return BacktestSource(service_url=settings.exchange.bluefin_service_url)


def time_range(start: str, end: str) -> tuple[float, float]:
    begin, finish = parse_time(start), parse_time(end)
    if finish <= begin:
        raise BacktestError(f"--end ({end}) must be after --start ({start})")
    return begin, finish


@dataclass
class BacktestResult:
    bot: EventTimeBot
    summary: dict[str, Any]
    skipped: int
    plot: Path | None


def pages(source: BacktestSource, symbol: str, start: float, end: float, skipped: Skipped) -> AsyncIterator[Any]:
    if source.store is not None:
        return sqlite_pages(source.store, symbol, start, end, skipped)
    assert source.service_url is not None
    return http_pages(source.service_url, symbol, start, end, skipped)


async def run_backtest(
    settings: BotSettings,
    source: BacktestSource,
    start: float,
    end: float,
    journal: Path,
    plot: Path | None,
    keep_candles: bool = False,
) -> BacktestResult:
    """Run the bot over ``[start, end)``; raise BacktestError when there is nothing to run over."""
    await asyncio.to_thread(_fresh_file, journal)  # a backtest's journal is the record of this run only
    bot = EventTimeBot(settings, journal, keep_candles=keep_candles)
    skipped = Skipped()
    try:
        async for page in pages(source, settings.trading.symbol, start, end, skipped):
            tick: RecordedTick
            for tick in page:
                if tick.is_trade:
                    await bot.on_tick(tick.timestamp, tick.price, tick.size, tick.side, tick.trade_id)
                else:
                    await bot.on_tick(tick.timestamp, tick.price)
    except BaseException:
        bot.journal.close()
        raise
    if bot.ticks == 0:
        bot.journal.close()
        await asyncio.to_thread(journal.unlink, True)
        raise BacktestError(
            f"no ticks for {settings.trading.symbol} between {start:.3f} and {end:.3f} in the {source.describe()}"
            + (f" ({skipped.count} invalid rows skipped)" if skipped.count else "")
        )
    summary = await bot.finish()
    written = save_equity_curve(bot, plot) if plot is not None else None
    return BacktestResult(bot, summary, skipped.count, written)


def _fresh_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def save_equity_curve(bot: EventTimeBot, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    points = bot.curve.points or [(bot.clock.now, bot.engine.stats.equity)]
    times = pd.to_datetime([t for t, _ in points], unit="s", utc=True)
    fig, ax = plt.subplots(figsize=(10, 4), dpi=100)
    try:
        ax.plot(times, [e for _, e in points], color="tab:blue", linewidth=1.2, drawstyle="steps-post")
        ax.axhline(bot.engine.stats.starting_equity, color="grey", linewidth=0.8, linestyle="--")
        stats = bot.engine.stats
        ax.set_title(
            f"{bot.symbol} {bot.settings.trading.interval} backtest: {stats.trades} trades, "
            f"net {stats.net_pnl:+.2f}, max drawdown {stats.max_drawdown:.2f}"
        )
        ax.set_ylabel("equity (quote)")
        ax.set_xlabel("time (UTC)")
        ax.grid(alpha=0.3)
        fig.autofmt_xdate()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def report(result: BacktestResult, source: BacktestSource, start: float, end: float) -> str:
    bot = result.bot
    lines = [
        f"backtest {bot.symbol} {bot.settings.trading.interval} over {source.describe()}, "
        f"{_iso(start)} to {_iso(end)}: {bot.ticks:,} ticks, {bot.candle_count:,} candles"
        + (f", {result.skipped + bot.bad_ticks} invalid ticks skipped" if result.skipped + bot.bad_ticks else ""),
        "Summary:",
        bot.engine.stats.format(),
        f"Journal: {bot.journal.path}",
    ]
    if result.plot is not None:
        lines.append(f"Equity curve: {result.plot}")
    return "\n".join(lines)


def default_plot(journal: Path) -> Path:
    return journal.with_name(journal.stem + "_equity.png")


def _iso(seconds: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
