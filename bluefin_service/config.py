"""ServiceSettings: every knob of the streaming service, from the environment and a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bluefin_service.store import default_store_url, parse_timestamp
from marketdata.errors import ConfigError
from marketdata.protocol import ProtocolError, parse_symbol_list

DEFAULT_SYMBOLS = ("ETH-PERP", "BTC-PERP", "SUI-PERP", "SOL-PERP")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    host: str = Field("0.0.0.0", description="an interface address such as 0.0.0.0 or 127.0.0.1")
    port: int = Field(8080, ge=0, le=65535, description="a TCP port from 0 (any free port) to 65535")
    dry_run: bool = Field(True, description="true or false")
    source: Literal["mock", "replay", "bluefin", "binance", "okx"] | None = Field(
        None,
        description="mock, replay (recorded ticks from STORE_URL), or an exchange: bluefin, binance, okx "
        "(unset: mock when DRY_RUN=true)",
    )
    stream_interval_seconds: float = Field(
        1.0, ge=0.0001, le=3600, description="seconds between price updates per symbol, 0.0001 to 3600"
    )
    trade_frequency: float = Field(
        5.0, ge=0.0001, le=3600, description="mean seconds between trades per symbol, 0.0001 to 3600"
    )
    symbols: Annotated[list[str], NoDecode] = Field(
        list(DEFAULT_SYMBOLS), description="comma-separated symbols such as ETH-PERP,BTC-PERP"
    )
    heartbeat_interval_seconds: float = Field(
        30.0, ge=0.05, le=3600, description="seconds between heartbeats, 0.05 to 3600"
    )
    mock_backfill_seconds: float = Field(
        1800.0,
        ge=0,
        le=7 * 86400,
        description="seconds of mock history generated on a first start (no earlier data), 0 to 604800",
    )
    mock_seed: int | None = Field(None, description="an integer seed for reproducible mock data")
    ring_size: int = Field(4096, ge=16, le=1_000_000, description="messages kept per symbol for resume, 16 to 1000000")
    candle_intervals: Annotated[list[int], NoDecode] = Field(
        [1, 5, 15, 30, 45, 60], description="comma-separated whole-second candle intervals the service computes"
    )
    candle_grace_seconds: float = Field(
        0.25, ge=0, le=60, description="seconds after a boundary before a candle is final, 0 to 60"
    )
    ring_persist: bool = Field(True, description="true to keep the resume ring in DATA_DIR across restarts")
    ring_dir: Path | None = Field(
        None,
        description="a directory for the resume ring's memory-mapped files (default DATA_DIR/ring); a tmpfs "
        "such as /dev/shm/bluefin-ring keeps disk writeback stalls off the event loop",
    )
    max_message_bytes: int = Field(
        65536, ge=256, le=16 * 1024 * 1024, description="largest client frame in bytes, 256 to 16777216"
    )
    max_symbols_per_connection: int = Field(
        50, ge=1, le=10_000, description="symbols one connection may subscribe to, 1 to 10000"
    )
    max_buffer_bytes: int = Field(
        4 * 1024 * 1024,
        ge=16 * 1024,
        le=1024 * 1024 * 1024,
        description="outgoing bytes queued per connection before the slow-consumer policy applies",
    )
    client_message_rate: float = Field(
        20.0, gt=0, le=100_000, description="client messages per second allowed after the burst"
    )
    client_message_burst: int = Field(100, ge=1, le=1_000_000, description="client messages allowed at once")
    ws_compression: bool = Field(False, description="true to offer permessage-deflate (costs throughput)")
    data_dir: Path = Field(Path("data"), description="a directory for the service's files")
    store_url: str | None = Field(
        None, description="sqlite:///path.db or postgresql://user@host:port/db (default: SQLite in DATA_DIR)"
    )
    record: bool = Field(True, description="true to record every published tick into the store")
    flush_interval_seconds: float = Field(
        0.5, ge=0.01, le=60, description="seconds between recorder flushes (the most a crash loses), 0.01 to 60"
    )
    record_buffer_max: int = Field(
        1_000_000, ge=1000, le=50_000_000, description="ticks buffered while the store fails, 1000 to 50000000"
    )
    record_book_seconds: float = Field(
        1.0, ge=0, le=3600, description="seconds between recorded order-book snapshots of a symbol, 0 to not record"
    )
    record_book_depth: int = Field(20, ge=1, le=50, description="levels a side in a recorded order book, 1 to 50")
    retention_hours: float | None = Field(None, gt=0, description="delete ticks older than this many hours")
    retention_max_mb: float | None = Field(None, gt=0, description="delete the oldest ticks beyond this many MB")
    retention_check_seconds: float = Field(60.0, ge=0.1, le=86400, description="seconds between retention runs")
    replay_start: float | None = Field(None, description="epoch seconds or ISO-8601 time to replay from")
    replay_end: float | None = Field(None, description="epoch seconds or ISO-8601 time to replay until")
    replay_speed: float = Field(
        1.0, ge=0, le=1_000_000, description="replay speed: 1 real time, 10 ten times faster, 0 as fast as possible"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="DEBUG|INFO|WARNING|ERROR")
    loop_stall_warn_ms: float = Field(
        100.0, ge=0, le=60_000, description="ms a loop turn may run before its stack is logged, 0 (off) to 60000"
    )
    # Exchange sources (SOURCE=bluefin|binance|okx). URLs default to the venue's production endpoints.
    symbol_map: Annotated[dict[str, str], NoDecode] = Field(
        {},
        description="comma-separated SYMBOL=VENUE_SYMBOL pairs overriding the default mapping, like ETH-PERP=ETHUSDT",
    )
    binance_ws_market_url: str | None = Field(
        None, description="a ws(s):// URL (default wss://fstream.binance.com/market/ws)"
    )
    binance_ws_public_url: str | None = Field(
        None, description="a ws(s):// URL (default wss://fstream.binance.com/public/ws)"
    )
    binance_rest_url: str | None = Field(None, description="an http(s):// URL (default https://fapi.binance.com)")
    okx_ws_url: str | None = Field(None, description="a ws(s):// URL (default wss://ws.okx.com:8443/ws/v5/public)")
    okx_rest_url: str | None = Field(None, description="an http(s):// URL (default https://www.okx.com)")
    bluefin_ws_url: str | None = Field(None, description="a ws(s):// URL (default the sui-prod market stream)")
    bluefin_rest_url: str | None = Field(
        None, description="an http(s):// URL (default https://api.sui-prod.bluefin.io)"
    )
    feed_stale_seconds: float = Field(
        30.0, ge=0.1, le=3600, description="seconds without exchange data before reconnecting, 0.1 to 3600"
    )
    feed_initial_backoff_seconds: float = Field(0.25, ge=0.001, le=60, description="first reconnect delay, seconds")
    feed_max_backoff_seconds: float = Field(30.0, ge=0.01, le=3600, description="longest reconnect delay, seconds")
    book_snapshot_wait_seconds: float = Field(
        1.0, ge=0, le=60, description="seconds to buffer book diffs before fetching a REST snapshot, 0 to 60"
    )

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_symbol_list(value)
            except ProtocolError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("store_url")
    @classmethod
    def _check_store_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("unsupported STORE_URL: use sqlite:///path.db or postgresql://user@host:port/db")
        return value

    @field_validator("replay_start", "replay_end", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip():
            return parse_timestamp(value)
        return None if value == "" else value

    @field_validator("candle_intervals", mode="before")
    @classmethod
    def _split_intervals(cls, value: Any) -> Any:
        if isinstance(value, str):
            parts = [part.strip().removesuffix("s") for part in value.split(",") if part.strip()]
            if not parts or not all(part.isdigit() and 0 < int(part) <= 86400 for part in parts):
                raise ValueError("expected whole seconds from 1 to 86400, like 1,5,15,60")
            return sorted({int(part) for part in parts})
        return value

    @field_validator("symbol_map", mode="before")
    @classmethod
    def _parse_symbol_map(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            ours, sep, theirs = item.partition("=")
            if not sep or not ours.strip() or not theirs.strip():
                raise ValueError(f"expected SYMBOL=VENUE_SYMBOL, got {item!r}")
            pairs[ours.strip().upper()] = theirs.strip()
        return pairs

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _resolve_source(self) -> ServiceSettings:
        if self.source is None:
            self.source = "mock"
        if self.replay_start is not None and self.replay_end is not None and self.replay_end <= self.replay_start:
            raise ValueError("REPLAY_END must be after REPLAY_START")
        if self.source == "mock" and not self.dry_run:
            raise ValueError(
                "DRY_RUN=false needs a real SOURCE: set SOURCE=bluefin, binance or okx (or DRY_RUN=true for mock data)"
            )
        return self

    @property
    def source_name(self) -> str:
        return self.source or "mock"

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or default_store_url(self.data_dir)


def load_settings(env_files: tuple[Path, ...] = (Path(".env"),), **overrides: Any) -> ServiceSettings:
    """Build settings, turning validation errors into one message naming each bad variable."""
    try:
        return ServiceSettings(_env_file=env_files, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, ServiceSettings)) from None


def describe_validation_error(exc: ValidationError, model: type[BaseSettings], prefix: str = "") -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        info = model.model_fields.get(field)
        accepts = f" (accepts {info.description})" if info and info.description else ""
        name = (prefix + field).upper() if field else "settings"
        value = error.get("input")
        shown = "" if isinstance(value, dict) else f"={value!r}"
        lines.append(f"  {name}{shown}: {error['msg']}{accepts}")
    return "\n".join(lines)
