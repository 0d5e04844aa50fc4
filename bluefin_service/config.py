"""ServiceSettings: every knob of the streaming service, from the environment and a ``.env`` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from marketdata.errors import ConfigError
from marketdata.protocol import ProtocolError, parse_symbol_list

DEFAULT_SYMBOLS = ("ETH-PERP", "BTC-PERP", "SUI-PERP", "SOL-PERP")


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    host: str = Field("0.0.0.0", description="an interface address such as 0.0.0.0 or 127.0.0.1")
    port: int = Field(8080, ge=0, le=65535, description="a TCP port from 0 (any free port) to 65535")
    dry_run: bool = Field(True, description="true or false")
    source: Literal["mock"] | None = Field(None, description="mock (real venues arrive with their connectors)")
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
    mock_seed: int | None = Field(None, description="an integer seed for reproducible mock data")
    ring_size: int = Field(4096, ge=16, le=1_000_000, description="messages kept per symbol for resume, 16 to 1000000")
    ring_persist: bool = Field(True, description="true to keep the resume ring in DATA_DIR across restarts")
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="DEBUG|INFO|WARNING|ERROR")

    @field_validator("symbols", mode="before")
    @classmethod
    def _split_symbols(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return parse_symbol_list(value)
            except ProtocolError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _resolve_source(self) -> ServiceSettings:
        if self.source is None:
            self.source = "mock"
        if self.source == "mock" and not self.dry_run:
            raise ValueError(
                "DRY_RUN=false needs a real SOURCE, and no exchange connector is configured; set DRY_RUN=true"
            )
        return self

    @property
    def source_name(self) -> str:
        return self.source or "mock"


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
