"""Warm start: closed candles from the service's history endpoint, merged with what the provider built live.

``GET {service}/market_data/{symbol}?interval=15s&limit=500`` belongs to the storage work; until the service has
it (404) or when it has too little, the bot warms up from live candles and shows progress.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import pandas as pd

log = logging.getLogger(__name__)

_TIME_KEYS = ("start", "timestamp", "time", "open_time", "t")
_COLUMNS = ("open", "high", "low", "close", "volume")


async def fetch_history(service_url: str, symbol: str, interval: str, limit: int, wait: float = 5.0) -> pd.DataFrame:
    """Candles from the history endpoint, or an empty frame (with a logged reason) if it cannot give any."""
    url = f"{service_url}/market_data/{symbol}"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=wait)) as session,
            session.get(url, params={"interval": interval, "limit": str(limit)}) as response,
        ):
            if response.status != 200:
                log.info("no history from %s (HTTP %d); warming up from live candles", url, response.status)
                return empty_frame()
            payload = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.info("no history from %s (%s); warming up from live candles", url, exc)
        return empty_frame()
    return parse_history(payload)


def empty_frame() -> pd.DataFrame:
    return pd.DataFrame(columns=list(_COLUMNS), index=pd.DatetimeIndex([], tz="UTC"), dtype=float)


def parse_history(payload: Any) -> pd.DataFrame:
    """Accept a list of candle objects or ``{"candles": [...]}`` / ``{"data": [...]}``; skip rows that do not parse."""
    rows = payload
    if isinstance(payload, dict):
        rows = payload.get("candles", payload.get("data", []))
    if not isinstance(rows, list):
        return empty_frame()
    index: list[float] = []
    values: list[list[float]] = []
    for row in rows:
        if not isinstance(row, dict) or row.get("final") is False:
            continue  # the forming candle is not history yet
        stamp = next((row[key] for key in _TIME_KEYS if key in row), None)
        try:
            when = pd.Timestamp(stamp, unit="s", tz="UTC") if isinstance(stamp, int | float) else pd.Timestamp(stamp)
            if when.tzinfo is None:
                when = when.tz_localize("UTC")
            candle = [float(row[column]) for column in _COLUMNS]
        except (KeyError, TypeError, ValueError):
            continue
        index.append(when)
        values.append(candle)
    if not values:
        return empty_frame()
    frame = pd.DataFrame(values, columns=list(_COLUMNS), index=pd.DatetimeIndex(index, tz="UTC"))
    return frame[~frame.index.duplicated(keep="last")].sort_index()


def recent_contiguous(history: pd.DataFrame, interval_seconds: int, now: float, max_missing: int = 2) -> pd.DataFrame:
    """The unbroken run of candles that reaches up to ``now``.

    History that stops long before now, or that spans a stop of the service, would splice two unrelated price paths
    together (the mock walk even restarts at its start price); indicators must not read across that seam.
    """
    if not len(history):
        return history
    step = pd.Timedelta(seconds=interval_seconds)
    if history.index[-1] < pd.Timestamp(now, unit="s", tz="UTC") - step * (max_missing + 1):
        return history.iloc[:0]
    breaks = (history.index[1:] - history.index[:-1]) > step * max_missing
    positions = [i + 1 for i, broken in enumerate(breaks) if broken]
    return history.iloc[positions[-1] :] if positions else history


def merge_history(history: pd.DataFrame, live: pd.DataFrame, limit: int) -> pd.DataFrame:
    """History before the first live candle, then the live candles (live wins on overlap); at most ``limit`` rows."""
    live = live[list(_COLUMNS)] if len(live) else empty_frame()
    if len(history) and len(live):
        history = history[history.index < live.index[0]]
    if not len(history):
        return live.tail(limit)
    if not len(live):
        return history.tail(limit)
    return pd.concat([history, live]).tail(limit)
