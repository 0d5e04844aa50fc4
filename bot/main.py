"""``python -m bot.main live --symbol ETH-PERP --interval 15s``: the scalping bot, on paper by default.

Settings come from the environment and ``.env`` (see ``bot/config.py``); the flags below override them.
``--with-service`` first starts the streaming service on the configured URL (this is what ``make run`` does).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bot.config import BotSettings, load_settings
from marketdata.errors import ConfigError, MarketDataError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bot.main", description="VuManChu Cipher scalping bot")
    commands = parser.add_subparsers(dest="command", required=True)
    live = commands.add_parser("live", help="trade live market data (paper broker)")
    live.add_argument("--symbol", help="symbol such as ETH-PERP (TRADING__SYMBOL)")
    live.add_argument("--interval", help="candle interval: 1s, 5s, 15s, 1m ... (TRADING__INTERVAL)")
    live.add_argument("--service-url", help="service URL (EXCHANGE__BLUEFIN_SERVICE_URL)")
    live.add_argument("--journal", type=Path, help="JSON-lines journal file (JOURNAL_PATH)")
    live.add_argument("--size", type=float, help="base units per entry (TRADING__POSITION_SIZE)")
    live.add_argument("--stop-loss", type=float, help="stop-loss in percent (TRADING__STOP_LOSS_PCT)")
    live.add_argument("--take-profit", type=float, help="take-profit in percent (TRADING__TAKE_PROFIT_PCT)")
    live.add_argument(
        "--trailing-stop", type=float, help="trailing stop in percent, 0 = off (TRADING__TRAILING_STOP_PCT)"
    )
    live.add_argument("--paper", action="store_true", default=True, help="paper trading (the default and only mode)")
    live.add_argument("--duration", type=float, help="stop after this many seconds (demos, tests)")
    live.add_argument("--with-service", action="store_true", help="start the streaming service first (make run)")
    live.add_argument(
        "--event-time",
        action="store_true",
        help="trade on the stream's own clock from the first tick the service holds (a SOURCE=replay service): "
        "the same candles and trades as backtest; stops when the replay is done",
    )
    live.add_argument("--env-file", action="append", type=Path, default=None, help="extra .env file(s) to read")
    live.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"), help="DEBUG|INFO|WARNING|ERROR")
    add_backtest_parser(commands)
    return parser.parse_args(argv)


def add_backtest_parser(commands: Any) -> None:
    bt = commands.add_parser("backtest", help="run the strategy over recorded ticks (see docs/backtest.md)")
    bt.add_argument("--symbol", help="symbol such as ETH-PERP (TRADING__SYMBOL)")
    bt.add_argument("--interval", help="candle interval: 1s, 5s, 15s, 1m ... (TRADING__INTERVAL)")
    bt.add_argument("--start", required=True, help="epoch seconds or ISO-8601 (2026-11-25T20:00:00Z)")
    bt.add_argument("--end", required=True, help="epoch seconds or ISO-8601; ticks before it are used")
    bt.add_argument("--store", type=Path, help="the service's SQLite store file (default: $DATA_DIR/ticks.db)")
    bt.add_argument("--service", dest="service_url", help="read ticks from this service's GET /trades instead")
    bt.add_argument("--journal", type=Path, help="JSON-lines journal (default data/backtest_journal.jsonl)")
    bt.add_argument("--plot", type=Path, help="equity curve PNG (default: next to the journal)")
    bt.add_argument("--size", type=float, help="base units per entry (TRADING__POSITION_SIZE)")
    bt.add_argument("--stop-loss", type=float, help="stop-loss in percent (TRADING__STOP_LOSS_PCT)")
    bt.add_argument("--take-profit", type=float, help="take-profit in percent (TRADING__TAKE_PROFIT_PCT)")
    bt.add_argument("--trailing-stop", type=float, help="trailing stop in percent (TRADING__TRAILING_STOP_PCT)")
    bt.add_argument("--env-file", action="append", type=Path, default=None, help="extra .env file(s) to read")
    bt.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "WARNING"), help="DEBUG|INFO|WARNING|ERROR")


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    trading = {
        key: value
        for key, value in (
            ("symbol", args.symbol),
            ("interval", args.interval),
            ("position_size", args.size),
            ("stop_loss_pct", args.stop_loss),
            ("take_profit_pct", args.take_profit),
            ("trailing_stop_pct", args.trailing_stop),
        )
        if value is not None
    }
    overrides: dict[str, Any] = {}
    if trading:
        overrides["trading"] = trading
    if args.service_url:
        overrides["exchange"] = {"bluefin_service_url": args.service_url}
    if args.journal:
        overrides["journal_path"] = args.journal
    return overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    env_files = (Path(".env"), *(args.env_file or ()))
    try:
        settings = load_settings(env_files, **overrides_from(args))
    except ConfigError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 2
    if args.command == "live" and args.event_time:
        return run_live_event_time(settings, args.duration)
    if args.command == "live":
        return run_live(settings, args.duration, args.with_service)
    if args.command == "backtest":
        return run_backtest_command(settings, args)
    return 2  # pragma: no cover - argparse enforces the command


def run_backtest_command(settings: BotSettings, args: argparse.Namespace) -> int:
    from bot.backtest import DEFAULT_JOURNAL, choose_source, default_plot, report, run_backtest, time_range
    from bot.data.history_reader import BacktestError

    journal = args.journal or DEFAULT_JOURNAL  # never the live JOURNAL_PATH: a backtest rewrites its journal
    try:
        start, end = time_range(args.start, args.end)
        source = choose_source(args.store, args.service_url, settings)
        result = asyncio.run(run_backtest(settings, source, start, end, journal, args.plot or default_plot(journal)))
    except BacktestError as exc:
        print(f"bot backtest: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(report(result, source, start, end))
    return 0


def run_live_event_time(settings: BotSettings, duration: float | None) -> int:
    from bot.live_event_time import StreamEventTimeBot

    try:
        print(asyncio.run(StreamEventTimeBot(settings, duration).run()))
    except MarketDataError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 1
    return 0


def run_live(settings: BotSettings, duration: float | None, with_service: bool) -> int:
    from bot.live import LiveBot
    from bot.service_launcher import ServiceProcess, service_answers
    from bot.ui import StatusDisplay

    service: ServiceProcess | None = None
    url = settings.exchange.bluefin_service_url
    display = StatusDisplay()
    try:
        if with_service:
            if service_answers(url):
                display.event(f"a service already answers at {url}; using it")
            else:
                service = ServiceProcess(url, Path("data/service.log"))
                service.start()
                display.event(f"started the streaming service (mock data) at {url}; its log: {service.log_path}")
        display.event(
            f"bot: {settings.trading.symbol} {settings.trading.interval} on paper; journal {settings.journal_path}; "
            "Ctrl-C stops and prints the summary"
        )
        with display:
            return asyncio.run(LiveBot(settings, display, duration).run())
    except MarketDataError as exc:
        print(f"bot: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if service is not None:
            service.stop()


if __name__ == "__main__":
    raise SystemExit(main())
