"""Baseline: the same feed fanned out with ``websockets.broadcast`` (websockets' asyncio server, its defaults).

Speaks ``/ws/{symbol}`` and ``/ws/multi/{symbols}``; each payload is broadcast as a text frame to the
connections subscribed to its symbol.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from _feed import Batch, run_feed, server_parser, symbols_from_path
from websockets.asyncio.server import ServerConnection, broadcast, serve


async def main() -> None:
    args = server_parser(__doc__ or "").parse_args()
    symbols = args.symbols.split(",")
    subscribers: dict[str, set[ServerConnection]] = {s: set() for s in symbols}

    async def handler(ws: ServerConnection) -> None:
        wanted = symbols_from_path(ws.request.path if ws.request else "/", set(subscribers))
        for symbol in wanted:
            subscribers[symbol].add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            for symbol in wanted:
                subscribers[symbol].discard(ws)

    def fan_out(batch: Batch) -> None:
        for symbol, payload in batch:
            broadcast(subscribers[symbol], payload, text=True)

    async with serve(handler, "127.0.0.1", args.port, backlog=4096) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"websockets server listening on http://127.0.0.1:{port}", flush=True)
        await run_feed(symbols, args.rate, args.seed, fan_out)


if __name__ == "__main__":
    uvloop.run(main())
