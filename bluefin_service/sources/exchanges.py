"""Build an exchange source from ServiceSettings: symbol mapping, URL overrides, feed timing."""

from __future__ import annotations

from typing import Any

from bluefin_service.config import ServiceSettings
from bluefin_service.sources import binance, okx
from bluefin_service.sources.binance import BinanceSource
from bluefin_service.sources.bluefin import BluefinSource
from bluefin_service.sources.feed import FeedSettings
from bluefin_service.sources.okx import OkxSource

EXCHANGES = ("bluefin", "binance", "okx")
_TEMPLATES = {"binance": binance.venue_symbol, "okx": okx.venue_symbol, "bluefin": lambda symbol: symbol}


def symbol_map(settings: ServiceSettings, venue: str) -> dict[str, str]:
    """Our symbols -> the venue's: ETH-PERP -> ETHUSDT / ETH-USDT-SWAP / ETH-PERP, unless SYMBOL_MAP says otherwise."""
    template = _TEMPLATES[venue]
    return {symbol: settings.symbol_map.get(symbol, template(symbol)) for symbol in settings.symbols}


def build_exchange_source(settings: ServiceSettings) -> Any:
    venue = settings.source_name
    feed = FeedSettings(
        stale_after=settings.feed_stale_seconds,
        initial_backoff=settings.feed_initial_backoff_seconds,
        max_backoff=settings.feed_max_backoff_seconds,
        snapshot_wait=settings.book_snapshot_wait_seconds,
    )
    mapping = symbol_map(settings, venue)
    overrides: dict[str, str]
    if venue == "binance":
        overrides = {
            "ws_market_url": settings.binance_ws_market_url or "",
            "ws_public_url": settings.binance_ws_public_url or "",
            "rest_url": settings.binance_rest_url or "",
        }
        return BinanceSource(mapping, feed, **{k: v for k, v in overrides.items() if v})
    if venue == "okx":
        overrides = {"ws_url": settings.okx_ws_url or "", "rest_url": settings.okx_rest_url or ""}
        return OkxSource(mapping, feed, **{k: v for k, v in overrides.items() if v})
    if venue == "bluefin":
        overrides = {"ws_url": settings.bluefin_ws_url or "", "rest_url": settings.bluefin_rest_url or ""}
        return BluefinSource(mapping, feed, **{k: v for k, v in overrides.items() if v})
    raise ValueError(f"not an exchange source: {venue}")
