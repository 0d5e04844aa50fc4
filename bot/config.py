"""Bot settings: ``EXCHANGE__*``, ``TRADING__*``, ``RISK__*``, ``PAPER__*`` from the environment and ``.env``.

Nested with ``env_nested_delimiter="__"`` as the guide writes them (``TRADING__SYMBOL=ETH-PERP``). CLI flags
override the environment. ``load_settings`` turns a validation error into one message naming every bad variable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketdata.errors import ConfigError

_INTERVAL = re.compile(r"^\s*(\d+)\s*([smh]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_interval(raw: str | int) -> int:
    """``15s`` / ``1m`` / ``15`` -> seconds; raises ValueError with what is accepted."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        seconds = raw
    else:
        match = _INTERVAL.match(str(raw))
        if not match:
            raise ValueError(f"interval {raw!r} is not like 1s, 5s, 15s, 1m or a number of seconds")
        seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
    if not 1 <= seconds <= 86_400:
        raise ValueError(f"interval {raw!r} must be between 1 second and 1 day")
    return seconds


class ExchangeSettings(BaseModel):
    exchange_type: Literal["bluefin"] = Field("bluefin", description="bluefin")
    bluefin_service_url: str = Field("http://localhost:8080", description="an http:// or https:// URL of the service")

    @field_validator("bluefin_service_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must start with http:// or https:// and name a host")
        return value

    @property
    def websocket_url(self) -> str:
        return "ws" + self.bluefin_service_url[len("http") :]


class TradingSettings(BaseModel):
    symbol: str = Field("ETH-PERP", description="a symbol such as ETH-PERP")
    interval: str = Field("15s", description="candle interval such as 1s, 5s, 15s, 1m")
    min_trading_interval_seconds: float = Field(
        5.0, ge=0, le=86_400, description="seconds between entries (cooldown), 0 to 86400"
    )
    position_notional: float = Field(1250.0, gt=0, description="quote value per entry (size = notional / price), > 0")
    position_size: float | None = Field(None, gt=0, description="base units per entry; overrides the notional, > 0")
    stop_loss_pct: float = Field(0.25, gt=0, le=50, description="stop-loss distance in percent of entry, 0-50")
    take_profit_pct: float = Field(0.4, gt=0, le=100, description="take-profit distance in percent of entry, 0-100")
    trailing_stop_pct: float = Field(0.0, ge=0, le=50, description="trailing stop distance in percent, 0 = off")
    entry_level: float = Field(30.0, ge=0, le=100, description="|wt2| beyond which a WaveTrend cross may enter, 0-100")
    max_hold_candles: int = Field(40, ge=0, le=100_000, description="close after this many candles, 0 = never")
    wt_channel_len: int = Field(9, ge=2, le=200, description="WaveTrend channel length (Cipher B default 9)")
    wt_average_len: int = Field(12, ge=2, le=200, description="WaveTrend average length (Cipher B default 12)")
    wt_ma_len: int = Field(3, ge=1, le=50, description="WaveTrend signal MA length (Cipher B default 3)")
    close_on_exit: bool = Field(True, description="true to close open positions at shutdown, false to report them")
    history_limit: int = Field(500, ge=50, le=1000, description="candles kept for indicators, 50 to 1000")

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        value = value.strip().upper()
        if not re.match(r"^[A-Z0-9]{1,20}(?:-[A-Z0-9]{1,20}){0,2}$", value):
            raise ValueError("expected a symbol like ETH-PERP")
        return value

    @field_validator("interval", mode="before")
    @classmethod
    def _interval(cls, value: Any) -> str:
        parse_interval(value)
        return str(value).strip()

    @property
    def interval_seconds(self) -> int:
        return parse_interval(self.interval)


class RiskSettings(BaseModel):
    starting_equity: float = Field(10_000.0, gt=0, description="paper account equity in quote currency, > 0")
    max_position_notional: float = Field(5000.0, gt=0, description="largest position value in quote currency, > 0")
    leverage: float = Field(5.0, ge=1, le=100, description="maximum leverage, 1 to 100")
    max_daily_loss: float = Field(200.0, gt=0, description="realized loss (quote) after which trading stops today")
    stale_after_seconds: float = Field(10.0, gt=0, le=3600, description="data older than this blocks entries")


class PaperSettings(BaseModel):
    fee_rate: float = Field(0.0005, ge=0, le=0.05, description="fee per fill as a fraction of notional, 0 to 0.05")
    slippage_bps: float = Field(1.0, ge=0, le=1000, description="adverse slippage per market fill in basis points")


class BotSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
        case_sensitive=False,
        nested_model_default_partial_update=True,
    )

    exchange: ExchangeSettings = ExchangeSettings()
    trading: TradingSettings = TradingSettings()
    risk: RiskSettings = RiskSettings()
    paper: PaperSettings = PaperSettings()
    journal_path: Path = Field(Path("data/bot_journal.jsonl"), description="a file path for the JSON-lines journal")


_GROUPS: dict[str, type[BaseModel]] = {
    "exchange": ExchangeSettings,
    "trading": TradingSettings,
    "risk": RiskSettings,
    "paper": PaperSettings,
}


def load_settings(env_files: tuple[Path, ...] = (Path(".env"),), **overrides: Any) -> BotSettings:
    """Settings from env/.env with ``overrides`` like ``{"trading": {"symbol": "BTC-PERP"}}`` applied on top."""
    try:
        # pydantic-settings deep-merges init values over the environment, so one flag leaves the group's other env
        # values in place, and every bad value (env or flag) is reported in one go.
        return BotSettings(_env_file=env_files, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None


def describe_errors(exc: ValidationError) -> str:
    lines = ["invalid bot configuration:"]
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        name = "__".join(loc).upper() or "settings"
        accepts = ""
        if len(loc) >= 2 and loc[0] in _GROUPS:
            info = _GROUPS[loc[0]].model_fields.get(loc[1])
            accepts = f" (accepts {info.description})" if info and info.description else ""
        elif loc and loc[0] in BotSettings.model_fields:
            info = BotSettings.model_fields[loc[0]]
            accepts = f" (accepts {info.description})" if info.description else ""
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f"={value!r}"
        lines.append(f"  {name}{shown}: {error['msg']}{accepts}")
    return "\n".join(lines)
