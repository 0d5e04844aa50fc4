"""Strategy, paper broker, position manager, risk manager, engine, journal, summary and config: pure and fast."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bot.config import load_settings
from bot.main import main as bot_main
from bot.trading.broker import PaperBroker
from bot.trading.engine import TradingEngine
from bot.trading.journal import Journal
from bot.trading.models import ClosedTrade, Fill, OrderRequest, TradingError
from bot.trading.position import PositionManager
from bot.trading.risk import RiskManager
from bot.trading.strategy import CipherScalpStrategy
from bot.trading.summary import TradeStats
from bot.warmup import merge_history, parse_history, recent_contiguous
from marketdata.errors import ConfigError

NOON = dt.datetime(2026, 3, 2, 12, tzinfo=dt.UTC).timestamp()


def sine_candles(n: int, period: int = 30) -> pd.DataFrame:
    """Price swinging ±2 around 100: WaveTrend crosses at the extremes, so the strategy's signals are known."""
    close = 100 + 2 * np.sin(2 * np.pi * np.arange(n) / period)
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame(
        {
            "open": open_,
            "high": np.maximum(open_, close) + 0.05,
            "low": np.minimum(open_, close) - 0.05,
            "close": close,
            "volume": 1.0,
        },
        index=pd.date_range("2026-03-02", periods=n, freq="15s", tz="UTC"),
    )


def fill(side: str, price: float, size: float = 1.0, fee: float = 0.0, ts: float = NOON) -> Fill:
    return Fill("t-1", "ETH-PERP", side, size, price, fee, ts, "test")  # type: ignore[arg-type]


# ---- strategy -------------------------------------------------------------------------------------------
def test_strategy_holds_until_wavetrend_is_warm_then_trades_the_swings() -> None:
    strategy = CipherScalpStrategy()
    df = sine_candles(120)
    assert strategy.min_candles == 31
    assert strategy.on_candle(df.iloc[:30]).signal == "hold"
    signals = {k: strategy.on_candle(df.iloc[:k]).signal for k in range(31, 121)}
    active = {k: s for k, s in signals.items() if s != "hold"}
    assert active == {40: "short", 55: "long", 70: "short", 85: "long", 100: "short", 115: "long"}


def test_strategy_entry_level_is_respected() -> None:
    df = sine_candles(120)
    strict = CipherScalpStrategy(entry_level=80)  # swings reach |wt2| ≈ 58 only
    assert {strict.on_candle(df.iloc[:k]).signal for k in (40, 55, 70, 85)} <= {"hold", "exit_long", "exit_short"}


# ---- paper broker -----------------------------------------------------------------------------------------
async def test_paper_broker_fills_at_live_price_with_slippage_and_fee() -> None:
    price = {"now": 2000.0}
    broker = PaperBroker(lambda: price["now"], fee_rate=0.001, slippage_bps=5, clock=lambda: NOON)
    buy = await broker.submit_market_order(OrderRequest("ETH-PERP", "buy", 2.0, "entry"))
    assert buy.price == pytest.approx(2001.0) and buy.fee == pytest.approx(2001.0 * 2 * 0.001)
    price["now"] = 1990.0
    sell = await broker.submit_market_order(OrderRequest("ETH-PERP", "sell", 2.0, "exit"))
    assert sell.price == pytest.approx(1990.0 * (1 - 0.0005)) and sell.order_id != buy.order_id


async def test_paper_broker_rejects_garbage_orders_and_missing_prices() -> None:
    for bad_price in (None, 0.0, float("inf"), float("nan")):
        broker = PaperBroker(lambda bad_price=bad_price: bad_price)
        with pytest.raises(TradingError, match="no live price"):
            await broker.submit_market_order(OrderRequest("ETH-PERP", "buy", 1.0, "x"))
    broker = PaperBroker(lambda: 100.0)
    for size in (0.0, -1.0, float("nan")):
        with pytest.raises(TradingError, match="size must be positive"):
            await broker.submit_market_order(OrderRequest("ETH-PERP", "buy", size, "x"))


# ---- positions --------------------------------------------------------------------------------------------
def test_long_stop_loss_and_take_profit_levels() -> None:
    pm = PositionManager(stop_loss_pct=1.0, take_profit_pct=2.0)
    pos = pm.open("long", fill("buy", 100.0))
    assert (pos.stop_loss, pos.take_profit) == (pytest.approx(99.0), pytest.approx(102.0))
    assert pm.update_positions(99.5) is None
    assert pm.unrealized_pnl() == pytest.approx(-0.5)
    assert pm.update_positions(98.99) == "stop_loss"
    assert pm.update_positions(102.0) == "take_profit"


def test_short_levels_are_mirrored() -> None:
    pm = PositionManager(stop_loss_pct=1.0, take_profit_pct=2.0)
    pm.open("short", fill("sell", 100.0))
    assert pm.update_positions(100.5) is None
    assert pm.update_positions(101.0) == "stop_loss"
    assert pm.update_positions(97.9) == "take_profit"
    trade = pm.close(fill("buy", 98.0, fee=0.1), "take_profit")
    assert trade.gross_pnl == pytest.approx(2.0) and trade.net_pnl == pytest.approx(1.9)
    assert pm.position is None and pm.update_positions(50.0) is None


def test_trailing_stop_follows_the_best_price_and_never_loosens() -> None:
    pm = PositionManager(stop_loss_pct=1.0, take_profit_pct=50.0, trailing_stop_pct=0.5)
    pos = pm.open("long", fill("buy", 100.0))
    assert pm.update_positions(104.0) is None
    assert pos.stop_loss == pytest.approx(104.0 * 0.995)
    assert pm.update_positions(103.6) is None
    assert pos.stop_loss == pytest.approx(104.0 * 0.995), "a pullback does not move the stop down"
    assert pm.update_positions(103.4) == "trailing_stop"


# ---- risk -------------------------------------------------------------------------------------------------
def test_risk_caps_size_by_max_position_and_leverage() -> None:
    risk = RiskManager(max_position_notional=300.0, leverage=2.0, max_daily_loss=100, cooldown_seconds=0)
    assert risk.check_entry(5.0, price=100.0, equity=10_000, now=NOON).size == 3.0
    risk = RiskManager(max_position_notional=1e9, leverage=2.0, max_daily_loss=100, cooldown_seconds=0)
    verdict = risk.check_entry(5.0, price=2500.0, equity=1000, now=NOON)
    assert verdict.allowed and verdict.size == pytest.approx(0.8) and "capped" in verdict.reason


def test_risk_cooldown_between_entries() -> None:
    risk = RiskManager(10, 5, 100, cooldown_seconds=5)
    risk.record_entry(NOON)
    verdict = risk.check_entry(1, 100, 10_000, NOON + 2)
    assert not verdict.allowed and "cooldown" in verdict.reason
    assert risk.check_entry(1, 100, 10_000, NOON + 5).allowed


def test_daily_loss_limit_halts_until_the_next_utc_day() -> None:
    risk = RiskManager(10, 5, max_daily_loss=50, cooldown_seconds=0)
    risk.record_close(-30, NOON)
    assert risk.check_entry(1, 100, 10_000, NOON).allowed
    risk.record_close(-25, NOON + 60)
    verdict = risk.check_entry(1, 100, 10_000, NOON + 61)
    assert not verdict.allowed and "daily loss 55.00" in verdict.reason
    assert risk.check_entry(1, 100, 10_000, NOON + 86_400).allowed


# ---- summary ----------------------------------------------------------------------------------------------
def trade(net: float, fees: float = 1.0) -> ClosedTrade:
    return ClosedTrade("ETH-PERP", "long", 1, 100, 100, NOON, NOON, gross_pnl=net + fees, fees=fees, exit_reason="x")


def test_summary_win_rate_pnl_fees_and_max_drawdown() -> None:
    stats = TradeStats(starting_equity=1000)
    for net in (10, -4, -8, 5, -20, 30):
        stats.record(trade(net))
    d = stats.as_dict()
    assert (d["trades"], d["wins"], d["losses"]) == (6, 3, 3)
    assert d["win_rate"] == 0.5
    assert d["net_pnl"] == pytest.approx(13) and d["fees"] == pytest.approx(6) and d["gross_pnl"] == pytest.approx(19)
    assert d["max_drawdown"] == pytest.approx(27)  # peak 1010 -> trough 983
    assert "win rate 50.0%" in stats.format()


# ---- engine -----------------------------------------------------------------------------------------------
def make_engine(tmp_path: Path, price: dict[str, float], **risk: float) -> TradingEngine:
    journal = Journal(tmp_path / "journal.jsonl", clock=lambda: NOON)
    return TradingEngine(
        symbol="ETH-PERP",
        strategy=CipherScalpStrategy(),
        broker=PaperBroker(lambda: price["now"], fee_rate=0.0005, slippage_bps=0, clock=lambda: NOON),
        positions=PositionManager(stop_loss_pct=0.5, take_profit_pct=1.0),
        risk=RiskManager(
            risk.get("max_position_notional", 500), 5, risk.get("max_daily_loss", 1000), risk.get("cooldown", 0)
        ),
        journal=journal,
        stats=TradeStats(10_000),
        position_notional=100.0,
        clock=lambda: NOON,
    )


def journal_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_engine_enters_on_signal_and_exits_on_a_stop_touched_between_candles(tmp_path: Path) -> None:
    price = {"now": 100.0}
    engine = make_engine(tmp_path, price)
    engine.set_stale(None)
    df = sine_candles(55)
    engine.on_price(100.0)
    decision = await engine.on_candle(df)
    assert decision.signal == "long"
    pos = engine.positions.position
    assert pos is not None and pos.side == "long" and pos.entry_price == 100.0
    price["now"] = 99.4  # a tick below the 0.5 % stop, no candle in between
    engine.on_price(99.4)
    engine.on_price(99.3)  # a second tick while the exit is in flight must not send a second order
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert engine.positions.position is None
    assert engine.stats.trades == 1 and engine.stats.wins == 0
    engine.journal.close()
    events = journal_events(tmp_path / "journal.jsonl")
    kinds = [e["event"] for e in events]
    assert kinds == ["data_state", "signal", "order", "fill", "position_opened", "order", "fill", "position_closed"]
    closed = events[-1]
    assert closed["reason"] == "stop_loss" and closed["exit_price"] == 99.4
    assert closed["net_pnl"] == pytest.approx(-0.6 - 0.0005 * (100 + 99.4))


async def test_engine_closes_on_the_opposite_signal_and_respects_staleness(tmp_path: Path) -> None:
    price = {"now": 100.0}
    engine = make_engine(tmp_path, price)
    engine.on_price(100.0)
    await engine.on_candle(sine_candles(55))
    assert engine.positions.position is None, "no entry while data is stale"
    engine.set_stale(None)
    await engine.on_candle(sine_candles(55))
    assert engine.positions.position is not None
    price["now"] = 100.2
    engine.on_price(100.2)
    await engine.on_candle(sine_candles(70))  # the next short signal closes the long (no reversal)
    assert engine.positions.position is None
    assert engine.stats.trades == 1 and engine.stats.wins == 1


async def test_engine_reports_rejected_orders_and_keeps_going(tmp_path: Path) -> None:
    price = {"now": 100.0}
    engine = make_engine(tmp_path, price)
    engine.set_stale(None)
    engine.on_price(100.0)
    price["now"] = float("nan")  # the broker sees garbage
    await engine.on_candle(sine_candles(55))
    assert engine.positions.position is None and "rejected" in engine.last_note
    engine.journal.close()
    assert journal_events(tmp_path / "journal.jsonl")[-1]["event"] == "order_rejected"


# ---- config and history parsing --------------------------------------------------------------------------
def test_settings_from_env_with_nested_names_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE__BLUEFIN_SERVICE_URL", "http://127.0.0.1:9999/")
    monkeypatch.setenv("TRADING__MIN_TRADING_INTERVAL_SECONDS", "7")
    monkeypatch.setenv("TRADING__SYMBOL", "sui-perp")
    settings = load_settings((), trading={"interval": "5s"})
    assert settings.exchange.bluefin_service_url == "http://127.0.0.1:9999"
    assert settings.exchange.websocket_url == "ws://127.0.0.1:9999"
    assert settings.trading.symbol == "SUI-PERP" and settings.trading.interval_seconds == 5
    assert settings.trading.min_trading_interval_seconds == 7


def test_bad_settings_stop_the_bot_naming_the_setting(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RISK__LEVERAGE", "lots")
    monkeypatch.setenv("EXCHANGE__EXCHANGE_TYPE", "ftx")
    with pytest.raises(ConfigError) as info:
        load_settings(())
    assert "RISK__LEVERAGE='lots'" in str(info.value) and "EXCHANGE__EXCHANGE_TYPE='ftx'" in str(info.value)
    monkeypatch.delenv("RISK__LEVERAGE")
    monkeypatch.delenv("EXCHANGE__EXCHANGE_TYPE")
    assert bot_main(["live", "--interval", "fast"]) == 2
    assert "TRADING__INTERVAL='fast'" in capsys.readouterr().err


def test_history_parser_takes_what_parses_and_skips_garbage() -> None:
    rows = [
        {"start": NOON, "open": 1, "high": 2, "low": 0.5, "close": 1.5, "volume": 3},
        {"timestamp": NOON + 15, "open": "1.5", "high": 2, "low": 1, "close": 1.8, "volume": 1},
        {"start": NOON + 30, "open": "x", "high": 2, "low": 1, "close": 1.8, "volume": 1},
        {"open": 1},
        "garbage",
        None,
    ]
    frame = parse_history({"candles": rows})
    assert list(frame["close"]) == [1.5, 1.8]
    assert frame.index[0] == pd.Timestamp(NOON, unit="s", tz="UTC")
    for payload in (None, "text", 42, {"candles": "no"}, []):
        assert len(parse_history(payload)) == 0
    live = sine_candles(3)
    merged = merge_history(sine_candles(5).shift(-2, freq="15s"), live, limit=10)
    assert merged.index.is_monotonic_increasing and len(merged) == 5


# ---- live helpers and the status line --------------------------------------------------------------------
def test_provider_intervals_follow_the_guide() -> None:
    from bot.live import provider_intervals

    assert provider_intervals(15) == [15, 1, 5]
    assert provider_intervals(5) == [5, 1]
    assert provider_intervals(1) == [1, 5]
    assert provider_intervals(300) == [300]


def test_only_closed_candles_reach_the_strategy() -> None:
    from bot.live import closed_candles

    df = sine_candles(4)  # starts at 00:00:00, 00:00:15, 00:00:30, 00:00:45
    now = df.index[3].timestamp() + 10  # the 00:00:45 candle is still forming
    assert list(closed_candles(df, 15, now).index) == list(df.index[:3])


def test_status_line_shows_the_guides_tick_rate_and_websocket_state() -> None:
    from bot.ui import StatusSnapshot, TickRate, render, websocket_state

    rate = TickRate(window=10)
    for i in range(50):
        rate.add(NOON + i * 0.1)
    assert rate.rate(NOON + 5) == pytest.approx(10, rel=0.05)
    assert rate.rate(NOON + 100) == 0.0
    assert websocket_state(True, 0.5, 10) == "✓ Connected"
    assert websocket_state(True, None, 10) == "⚠ Waiting for data"
    assert websocket_state(False, 0.5, 10).startswith("✗")
    line = render(
        StatusSnapshot("ETH-PERP", "15s", 2500.5, 12.34, "✓ Connected", "candle", "flat", "PnL +0.00", "", "")
    ).plain
    assert "Tick rate: 12.3 ticks/sec, WebSocket: ✓ Connected" in line and "2,500.5000" in line


def test_history_across_a_service_stop_is_cut_at_the_seam() -> None:
    before = sine_candles(10)
    after = sine_candles(5).shift(60, freq="15s")  # the service was down for 45 candles
    history = pd.concat([before, after])
    now = after.index[-1].timestamp() + 20
    assert list(recent_contiguous(history, 15, now).index) == list(after.index)
    assert len(recent_contiguous(history, 15, now + 3600)) == 0, "history that ended an hour ago is not warm"
    assert len(recent_contiguous(before, 15, before.index[-1].timestamp() + 15)) == 10


async def test_live_bot_ignores_garbage_ticks(tmp_path: Path) -> None:
    from bot.live import LiveBot
    from bot.ui import StatusDisplay

    settings = load_settings((), journal_path=tmp_path / "j.jsonl")
    bot = LiveBot(settings, StatusDisplay())
    for payload in (
        {},
        {"price": "2500"},
        {"price": -1},
        {"price": float("nan")},
        {"price": float("inf")},
        {"price": None},
    ):
        bot._on_tick(payload)
    assert bot.last_price is None and bot.bad_ticks == 6
    bot._on_tick({"price": 2500.5})
    assert bot.last_price == 2500.5 and bot.engine.positions.last_price == 2500.5
    bot.journal.close()
