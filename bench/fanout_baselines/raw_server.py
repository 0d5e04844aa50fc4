"""The raw limit: a minimal handshake, then pre-built frames written straight to each socket.

Default: one ``transport.write`` per frame (one message a frame, one write per message), the figure DESIGN.md
calls the raw limit. ``--coalesce``: the frames of one feed wake-up go to a connection in one write, the
shape the hub uses, as the ceiling for that design.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from _feed import Batch, run_feed, server_parser, symbols_from_path

from bluefin_service.frames import text_frame

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_MAX_REQUEST = 8192


class RawConnection(asyncio.Protocol):
    def __init__(self, subscribers: dict[str, dict[asyncio.Transport, None]]) -> None:
        self.subscribers = subscribers
        self.transport: asyncio.Transport | None = None
        self.request = b""
        self.symbols: list[str] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if self.symbols is not None or self.transport is None:
            return  # client frames are ignored: the bench clients send none
        self.request += data
        if b"\r\n\r\n" not in self.request:
            if len(self.request) > _MAX_REQUEST:
                self.transport.close()
            return
        head = self.request.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1] if len(head[0].split(" ")) > 2 else "/"
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:])}
        key = headers.get("sec-websocket-key", "")
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        self.symbols = symbols_from_path(path, set(self.subscribers))
        for symbol in self.symbols:
            self.subscribers[symbol][self.transport] = None

    def connection_lost(self, exc: Exception | None) -> None:
        for symbol in self.symbols or ():
            self.subscribers[symbol].pop(self.transport, None)  # type: ignore[arg-type]


async def main() -> None:
    parser = server_parser(__doc__ or "")
    parser.add_argument("--coalesce", action="store_true", help="one write per connection per feed wake-up")
    args = parser.parse_args()
    symbols = args.symbols.split(",")
    subscribers: dict[str, dict[asyncio.Transport, None]] = {s: {} for s in symbols}

    def one_write_per_frame(batch: Batch) -> None:
        for symbol, payload in batch:
            frame = text_frame(payload)
            for transport in subscribers[symbol]:
                transport.write(frame)

    def one_write_per_wake(batch: Batch) -> None:
        pending: dict[asyncio.Transport, list[bytes]] = {}
        for symbol, payload in batch:
            frame = text_frame(payload)
            for transport in subscribers[symbol]:
                frames = pending.get(transport)
                if frames is None:
                    pending[transport] = [frame]
                else:
                    frames.append(frame)
        for transport, frames in pending.items():
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: RawConnection(subscribers), "127.0.0.1", args.port, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"raw server listening on http://127.0.0.1:{port}", flush=True)
    await run_feed(symbols, args.rate, args.seed, one_write_per_wake if args.coalesce else one_write_per_frame)


if __name__ == "__main__":
    uvloop.run(main())
