"""``python -m bot.main backtest``: recorded ticks through the live engine in event time, and the equivalence test.

The heart: ticks recorded by a real service, (a) backtested straight from the store file and (b) replayed by a
second service (``SOURCE=replay``) over its WebSocket to ``BluefinServiceClient`` and the same event-time bot, give
exactly the same candles and trades; (c) the CLI reading the replay service's ``GET /trades`` agrees too.
Fast settings as in test_bot_e2e: 1 s candles, WaveTrend 2/3/2, entry on any cross, a 0.01 % stop.
"""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from store_helpers import spoil_block, stored_rows
from svc_helpers import wait_for_status

from bluefin_service.store import PRICE_UPDATE, TRADE, TickRow, open_store
from bot.backtest import BacktestSource, run_backtest
from bot.config import BotSettings, load_settings
from bot.live_event_time import StreamEventTimeBot
from bot.main import main as bot_main

REPO = Path(__file__).resolve().parent.parent
FAST_TRADING = {
    "symbol": "ETH-PERP",
    "interval": "1s",
    "wt_channel_len": 2,
    "wt_average_len": 3,
    "wt_ma_len": 2,
    "entry_level": 0,
    "stop_loss_pct": 0.01,
    "take_profit_pct": 5,
    "max_hold_candles": 0,
    "min_trading_interval_seconds": 0,
}
FAST_ENV = {
    "TRADING__WT_CHANNEL_LEN": "2",
    "TRADING__WT_AVERAGE_LEN": "3",
    "TRADING__WT_MA_LEN": "2",
    "TRADING__ENTRY_LEVEL": "0",
    "TRADING__STOP_LOSS_PCT": "0.01",
    "TRADING__TAKE_PROFIT_PCT": "5",
    "TRADING__MAX_HOLD_CANDLES": "0",
    "TRADING__MIN_TRADING_INTERVAL_SECONDS": "0",
}


def fast_settings(journal: Path, service_url: str = "http://127.0.0.1:9") -> BotSettings:
    return load_settings(
        (),
        trading=FAST_TRADING,
        risk={"stale_after_seconds": 1.5},
        exchange={"bluefin_service_url": service_url},
        journal_path=journal,
    )


def position_events(journal: Path) -> list[dict[str, Any]]:
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    return [r for r in records if r["event"] in ("position_opened", "position_closed", "position_left_open")]


def store_count(path: Path) -> int:
    return len(stored_rows(path).get("ETH-PERP", {}))


async def test_backtest_equals_the_replay_streamed_through_service_websocket_and_client(
    start_service: Any, tmp_path: Path
) -> None:
    # Record: 45 s of mock history generated at start (the mock backfill, published and recorded like live ticks)
    # plus a few seconds of live ticks, 20 price updates and 10 trades a second.
    began = time.time() - 120
    recorder = start_service(
        STREAM_INTERVAL_SECONDS="0.05",
        TRADE_FREQUENCY="0.1",
        SYMBOLS="ETH-PERP",
        MOCK_SEED="11",
        MOCK_BACKFILL_SECONDS="45",
        FLUSH_INTERVAL_SECONDS="0.2",
        DATA_DIR=str(tmp_path / "rec"),
    )
    await asyncio.sleep(2)
    assert recorder.stop() == 0
    ended = time.time() + 1
    copy = tmp_path / "copy.db"
    for suffix in ("", "-wal", "-shm"):
        if (tmp_path / "rec" / f"ticks.db{suffix}").exists():
            shutil.copy(tmp_path / "rec" / f"ticks.db{suffix}", tmp_path / f"copy.db{suffix}")
    recorded = store_count(copy)
    assert recorded > 1200

    # (a) backtest straight from the store file
    settings = fast_settings(tmp_path / "a.jsonl")
    a = await run_backtest(
        settings, BacktestSource(store=copy), began, ended, tmp_path / "a.jsonl", tmp_path / "a.png", keep_candles=True
    )
    assert a.bot.ticks == recorded and a.skipped == 0

    # (b) a replay service on the same ticks, streamed over its WebSocket to the client and the same bot
    replay = start_service(
        SOURCE="replay",
        STORE_URL=f"sqlite:///{copy}",
        REPLAY_START=repr(began),
        REPLAY_END=repr(ended),
        REPLAY_SPEED="0",
        RING_SIZE="8192",
        SYMBOLS="ETH-PERP",
        DATA_DIR=str(tmp_path / "replay"),
    )
    await wait_for_status(replay, lambda s: not s["running"])
    streamed = StreamEventTimeBot(fast_settings(tmp_path / "b.jsonl", replay.http_url), keep_candles=True)
    text = await asyncio.wait_for(streamed.run(), 30)
    b = streamed.bot
    assert "the replay has finished and every tick was handled" in text
    assert b.ticks == recorded and streamed.client.get_websocket_status()["gap_count"] == 0

    assert a.bot.candles is not None and b.candles is not None
    assert len(a.bot.candles) >= 40
    assert b.candles == a.bot.candles  # every OHLCV value, exactly
    a_trades, b_trades = position_events(tmp_path / "a.jsonl"), position_events(tmp_path / "b.jsonl")
    closed = [e for e in a_trades if e["event"] == "position_closed"]
    assert len(closed) >= 3, "the fast settings should trade several times in a minute"
    assert b_trades == a_trades  # entry/exit times (simulated), sides, prices, sizes, reasons: identical
    assert any(e["reason"] == "stop_loss" and e["trigger"].startswith("tick") for e in closed)
    assert a.summary == b.engine.stats.as_dict()
    assert a.plot is not None and a.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # (c) the command lines: backtest reading the replay service's GET /trades page by page, and
    # live --event-time streaming the replay again, side by side
    env = {
        **_clean_env(),
        **FAST_ENV,
        "RISK__STALE_AFTER_SECONDS": "1.5",
        "EXCHANGE__BLUEFIN_SERVICE_URL": replay.http_url,
    }
    span = ["--symbol", "ETH-PERP", "--interval", "1s"]
    backtest_cli, live_cli = await asyncio.gather(
        run_bot(env, tmp_path, "backtest", *span, "--start", repr(began), "--end", repr(ended),
                "--service", replay.http_url, "--journal", str(tmp_path / "c.jsonl")),
        run_bot(env, tmp_path, "live", "--event-time", *span, "--journal", str(tmp_path / "d.jsonl"),
                "--duration", "30"),
    )  # fmt: skip
    for code, _out, err in (backtest_cli, live_cli):
        assert code == 0, err
    assert position_events(tmp_path / "c.jsonl") == a_trades
    assert position_events(tmp_path / "d.jsonl") == a_trades
    for out in (backtest_cli[1], live_cli[1]):
        assert f"Trades: {a.summary['trades']}" in out and "Max drawdown" in out and f"{recorded:,} ticks" in out
    plot = tmp_path / "c_equity.png"
    assert f"Equity curve: {plot}" in backtest_cli[1] and plot.read_bytes()[:4] == b"\x89PNG"


async def run_bot(env: dict[str, str], cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.main", *args, cwd=cwd, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, stdout.decode(), stderr.decode()


def _clean_env() -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRADING__", "RISK__", "EXCHANGE__", "PAPER__"))}
    return {**env, "PYTHONPATH": str(REPO)}


# ---- synthetic stores: determinism, no wall clock, garbage -------------------------------------------------------
def synthetic_rows(count: int, start_ts: float = 1_700_000_000.0) -> list[TickRow]:
    """A price that swings up and down every few seconds: 10 ticks a second, trades and price updates alternating."""
    rows = []
    for i in range(count):
        ts = start_ts + i * 0.1
        price = 2500.0 + 3.0 * ((i // 7) % 9) - 1.5 * ((i // 31) % 5) + 0.01 * (i % 3)
        if i % 2 == 0:
            rows.append(TickRow("ETH-PERP", ts, i + 1, TRADE, price, 0.5, "buy" if i % 4 else "sell", f"t{i}"))
        else:
            rows.append(TickRow("ETH-PERP", ts, i + 1, PRICE_UPDATE, price, 1000.0, None, None))
    return rows


async def write_store(path: Path, rows: list[TickRow]) -> Path:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    await store.write(rows)
    await store.close()
    return path


def run_cli(*args: str) -> int:
    return bot_main(["backtest", "--symbol", "ETH-PERP", "--interval", "1s", *args])


async def test_backtest_is_deterministic_and_runs_on_simulated_time(tmp_path: Path, capsys: Any) -> None:
    store = await write_store(tmp_path / "ticks.db", synthetic_rows(400))
    first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    settings = fast_settings(first)
    one = await run_backtest(settings, BacktestSource(store=store), 1_699_999_999, 1_700_001_000, first, None)
    await run_backtest(settings, BacktestSource(store=store), 1_699_999_999, 1_700_001_000, second, None)
    assert first.read_text() == second.read_text() and one.summary["trades"] >= 1
    stamps = [json.loads(line)["ts"] for line in first.read_text().splitlines()]
    assert min(stamps) >= 1_700_000_000 and max(stamps) <= 1_700_000_040, "every time is the data's, not the wall's"
    assert stamps == sorted(stamps)
    # the first candle (holding the first tick) saw only part of its second: dropped, as live drops it
    assert one.bot.candle_count == 39


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--start", "yesterday", "--end", "1700000100"], "is not a time"),
        (["--start", "1700000100", "--end", "1700000000"], "must be after"),
        (["--start", "1e20", "--end", "1700000000"], "out of range"),
        (["--start", "2023-11-14T22:13:20Z", "--end", "2023-11-14T22:13:30", "--symbol", "XRP-PERP"], "unknown symbol"),
        (["--start", "1600000000", "--end", "1600000100"], "no ticks"),
        (["--start", "1700000000", "--end", "1700000100", "--service", "http://127.0.0.1:9"], "both"),
    ],
)
async def test_bad_arguments_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: Any, args: list[str], message: str
) -> None:
    store = await write_store(tmp_path / "ticks.db", synthetic_rows(200))
    code = await asyncio.to_thread(run_cli, "--store", str(store), "--journal", str(tmp_path / "j.jsonl"), *args)
    assert code == 2
    assert message in capsys.readouterr().err


async def test_unreadable_sources_exit_2(tmp_path: Path, capsys: Any) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    cases = {
        str(tmp_path / "missing.db"): "does not exist",
        str(garbage): "cannot",
        str(empty): "cannot read the store",
    }
    span = ["--start", "1700000000", "--end", "1700000100", "--journal", str(tmp_path / "j.jsonl")]
    for path, message in cases.items():
        assert await asyncio.to_thread(run_cli, "--store", path, *span) == 2
        assert message in capsys.readouterr().err
    assert await asyncio.to_thread(run_cli, "--service", "http://127.0.0.1:9", *span) == 2
    assert "cannot read ticks from http://127.0.0.1:9" in capsys.readouterr().err
    assert await asyncio.to_thread(run_cli, "--service", "not a url", *span) == 2
    assert "must start with http://" in capsys.readouterr().err


async def test_invalid_rows_in_the_store_are_skipped_and_counted(tmp_path: Path, capsys: Any) -> None:
    rows = synthetic_rows(600)
    store = tmp_path / "ticks.db"
    for i in range(0, 600, 100):  # six blocks of 100
        await write_store(store, rows[i : i + 100])
    with sqlite3.connect(store) as conn:  # what the service's writer would never store, written behind its back
        spoil_block(conn, 1, prices={12: -5.0, 16: math.nan}, bad_flags=(14,))  # seqs 13, 17 and 15
        conn.execute("UPDATE tick_blocks SET trade_ids = x'c1ff00' WHERE first_seq = 201")  # a torn block: 100 ticks
        conn.execute("UPDATE tick_blocks SET stamps = x'00' WHERE first_seq = 301")  # columns that disagree: 100
    journal = tmp_path / "j.jsonl"
    code = await asyncio.to_thread(
        run_cli, "--store", str(store), "--start", "1700000000", "--end", "1700000060", "--journal", str(journal)
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "397 ticks" in out and "203 invalid ticks skipped" in out
    assert (tmp_path / "j_equity.png").read_bytes()[:4] == b"\x89PNG"


async def test_a_service_answering_garbage_exits_2(tmp_path: Path, capsys: Any) -> None:
    """A real HTTP server whose /trades answers are not what the service sends."""
    answers = {
        "NOTJSON-PERP": web.Response(text="<html>oops</html>"),
        "SHAPE-PERP": web.json_response({"ticks": 5}),
        "BROKEN-PERP": web.Response(status=500, text="internal error"),
    }

    async def trades(request: web.Request) -> web.Response:
        return answers[request.match_info["symbol"]]

    app = web.Application()
    app.router.add_get("/trades/{symbol}", trades)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        span = ["--start", "1700000000", "--end", "1700000100", "--journal", str(tmp_path / "j.jsonl")]
        for symbol, message in (
            ("NOTJSON-PERP", "did not answer with JSON"),
            ("SHAPE-PERP", "did not answer with a list of ticks"),
            ("BROKEN-PERP", "answered HTTP 500"),
        ):
            code = await asyncio.to_thread(
                bot_main,
                ["backtest", "--symbol", symbol, "--interval", "1s", "--service", f"http://127.0.0.1:{port}", *span],
            )
            assert code == 2
            assert message in capsys.readouterr().err
    finally:
        await runner.cleanup()
