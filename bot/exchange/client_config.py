"""Where the client connects and how it retries: service URLs and the reconnect policy (pure, no I/O)."""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from marketdata.errors import ConfigError

DEFAULT_SERVICE_URL = "http://localhost:8080"
SERVICE_URL_ENV = "EXCHANGE__BLUEFIN_SERVICE_URL"
_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_HTTP_SCHEMES = {"ws": "http", "wss": "https"}


@dataclass(frozen=True)
class ReconnectPolicy:
    """Exponential backoff with full jitter: before retry n (n >= 1) wait U(0, min(max_delay, base * factor**(n-1))).

    The first retry after a connection that lived ``stable_after`` seconds is immediate. The default cap keeps a
    reconnect under a second once the service is back; raise it for a remote service shared by many clients.
    """

    base_delay: float = 0.05
    max_delay: float = 0.75
    factor: float = 2.0
    stable_after: float = 1.0

    def __post_init__(self) -> None:
        if not (0 < self.base_delay <= self.max_delay) or self.factor < 1 or self.stable_after < 0:
            raise ConfigError(f"reconnect policy needs 0 < base_delay <= max_delay and factor >= 1, got {self}")

    def delay(self, failures: int, rng: random.Random) -> float:
        if failures <= 0:
            return 0.0
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * self.factor ** min(failures - 1, 64)))


def ws_base_url(service_url: str) -> str:
    """``http://host:8080`` -> ``ws://host:8080`` (https -> wss; ws/wss pass through)."""
    parts = urlsplit(service_url.strip())
    scheme = _SCHEMES.get(parts.scheme.lower())
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if scheme is None or not parts.hostname or not port_ok:
        raise ConfigError(f"service URL {service_url!r} must look like http://host:port (or https://, ws://, wss://)")
    path = parts.path.rstrip("/")
    return urlunsplit((scheme, parts.netloc, path.removesuffix("/ws"), "", ""))


def http_base_url(ws_base: str) -> str:
    """The HTTP side of a ``ws_base_url`` result: ``ws://host:8080`` -> ``http://host:8080``."""
    scheme, _, rest = ws_base.partition("://")
    return f"{_HTTP_SCHEMES.get(scheme, scheme)}://{rest}"


def stream_url(base: str, symbols: Sequence[str], resume: dict[str, int]) -> str:
    path = f"/ws/{symbols[0]}" if len(symbols) == 1 else "/ws/multi/" + ",".join(symbols)
    query = "?resume=" + ",".join(f"{symbol}:{seq}" for symbol, seq in resume.items()) if resume else ""
    return base + path + query


def service_urls_from(service_url: str | Sequence[str] | None) -> list[str]:
    """The URL(s) given, else ``EXCHANGE__BLUEFIN_SERVICE_URL`` (comma-separated allowed), else the default."""
    raw = service_url if service_url is not None else os.environ.get(SERVICE_URL_ENV) or DEFAULT_SERVICE_URL
    urls = [u.strip() for u in raw.split(",")] if isinstance(raw, str) else [str(u).strip() for u in raw]
    urls = [u for u in urls if u]
    if not urls:
        raise ConfigError("no Bluefin service URL given")
    return urls
