"""The project's one exception root.

MarketDataError
 ├── ProtocolError        a frame that is not a valid message (carries the `error` message's code)
 ├── ConfigError          a setting that is out of range or malformed
 └── InvalidTick          a tick (or batch of ticks) with a non-finite time, a non-positive price or a negative size
"""

from __future__ import annotations


class MarketDataError(Exception):
    """Root of every error this project raises on purpose."""


class ProtocolError(MarketDataError):
    """A client or server frame that does not follow the wire protocol."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ConfigError(MarketDataError):
    """A configuration value that cannot be used."""


class InvalidTick(MarketDataError, ValueError):
    """A tick the candle engine cannot use; nothing of it was applied."""
