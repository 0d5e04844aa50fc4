"""The tick schedule every benchmark server is fed: the service's own mock source, same settings, same seed.

``python -m bluefin_service`` runs ``MockSource`` in-process with ``STREAM_INTERVAL_SECONDS`` and
``TRADE_FREQUENCY``; the baselines run the very same class with the same values and seed, and encode each event
with the service's own ``encode(market_message(...))``, so every server fans out the same bytes on the same
schedule and pays the same cost to produce them.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from bluefin_service.sources.mock import MockSource
from marketdata.protocol import encode, market_message
from marketdata.ticks import MarketEvent

Batch = list[tuple[str, bytes]]


def per_symbol_interval(rate: float, symbols: int) -> float:
    """Price interval (= mean trade interval) per symbol that gives ``rate`` ticks/s in total, half of them trades."""
    return 2.0 * symbols / rate


def server_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--symbols", required=True, help="comma-separated symbols")
    parser.add_argument("--rate", type=float, required=True, help="aggregate ticks/s over all symbols")
    parser.add_argument("--seed", type=int, default=7)
    return parser


async def run_feed(symbols: list[str], rate: float, seed: int, on_batch: Callable[[Batch], None]) -> None:
    """On SIGUSR1, run the mock source; each wake-up's events reach ``on_batch`` as (symbol, payload, with seq).

    The bench connects every client first and then starts the feed, so no server is timed on handshakes made
    under full load; it waits for the ``feed ready`` line on stderr before it may signal.
    """
    go = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, go.set)
    print("feed ready", file=sys.stderr, flush=True)
    await go.wait()
    interval = per_symbol_interval(rate, len(symbols))
    source = MockSource(symbols, interval, interval, seed=seed)
    seqs = dict.fromkeys(symbols, 0)

    def publish(events: list[MarketEvent]) -> None:
        batch: Batch = []
        for event in events:
            seq = seqs[event.symbol] = seqs[event.symbol] + 1
            batch.append((event.symbol, encode(market_message(event, seq))))
        on_batch(batch)

    await source.run(publish)


def symbols_from_path(path: str, known: set[str]) -> list[str]:
    """The symbols of ``/ws/multi/A,B`` or ``/ws/A`` that this server streams."""
    path = path.split("?", 1)[0]
    if path.startswith("/ws/multi/"):
        raw = path[len("/ws/multi/") :].split(",")
    elif path.startswith("/ws/"):
        raw = [path[len("/ws/") :]]
    else:
        return []
    return [s for s in (r.strip().upper() for r in raw) if s in known]
