"""What the exchange sources (Binance, OKX, Bluefin) share: symbols, settings, counters, the frame-to-events glue.

Each source parses its venue's frames into market events and control messages; a few event types need the
source's own handling first (book deltas go through a book, Binance trades through the backfill). The
``on_frame`` that ``frame_handler`` builds routes those by type and publishes the rest as they are, one batch
per frame.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import aiohttp

from bluefin_service.sources.feed import FeedSettings, FeedStats, Publish, status_events
from marketdata.venues.common import StatusKind, VenueControl

log = logging.getLogger(__name__)

Route = Callable[[Any, list[Any]], None]  # (event, batch being built) -> None: appends what it publishes


class VenueSource:
    name: ClassVar[str]

    def __init__(
        self,
        symbol_map: dict[str, str],
        settings: FeedSettings | None,
        parser: Callable[[dict[str, str]], Any],
        rest_url: str,
    ) -> None:
        self.symbol_map = symbol_map  # our symbol -> the venue's, e.g. ETH-PERP -> ETHUSDT
        self.symbols = list(symbol_map)
        self.settings = settings or FeedSettings()
        self.rest_url = rest_url.rstrip("/")
        self.stats = FeedStats()
        self.parser = parser({venue: ours for ours, venue in symbol_map.items()})
        self._http: aiohttp.ClientSession | None = None

    def frame_handler(self, publish: Publish, routes: dict[type, Route]) -> Callable[[str | bytes, float], None]:
        """A socket's ``on_frame``: parse, send each event through its route (default: publish as is)."""
        routes = {VenueControl: lambda event, _out: self.on_control(event), **routes}
        parse = self.parser.parse

        def on_frame(frame: str | bytes, ts_init: float) -> None:
            out: list[Any] = []
            for event in parse(frame, ts_init):
                route = routes.get(type(event))
                if route is None:
                    out.append(event)
                else:
                    route(event, out)
            if out:
                publish(out)

        return on_frame

    def down_reporter(self, publish: Publish, kind: StatusKind = "reconnect") -> Callable[[str, bool], None]:
        """A socket's ``on_down``: tell every symbol's clients the stream broke (``stale`` if it went quiet)."""

        def on_down(reason: str, stale: bool) -> None:
            publish(status_events(self.name, self.symbols, "stale" if stale else kind, reason, self.stats))  # type: ignore[arg-type]

        return on_down

    def on_control(self, event: VenueControl) -> None:
        if event.kind == "unknown":
            self.stats.unknown += 1
        elif event.kind == "error":
            self.stats.venue_errors += 1
            self.stats.last_error = event.message
            log.warning("%s: %s", self.name, event.message)
        elif event.kind == "notice":
            log.warning("%s: %s", self.name, event.message)  # e.g. OKX 64008: the server closes soon

    async def rest_get(self, path: str, params: dict[str, str]) -> bytes:
        """GET ``rest_url + path``; raises on an HTTP error status."""
        assert self._http is not None, "REST is only used while the source runs"
        async with self._http.get(f"{self.rest_url}{path}", params=params) as response:
            response.raise_for_status()
            return await response.read()
