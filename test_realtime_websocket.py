"""The guide's WebSocket check: ``python test_realtime_websocket.py``.

Connects to the streaming service (default ``ws://localhost:8080/ws/ETH-PERP``), prints what arrives, and
every second the tick rate and the tick->client latency. Exits 0 if market data arrived, 1 if none did within
``--duration`` seconds, 2 if it could not connect. A diagnostic script, not a pytest module.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import websockets

__test__ = False  # keep pytest from collecting this file even when it is named on the command line

MARKET_TYPES = ("price_update", "trade", "candle")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Watch the Bluefin service's WebSocket stream")
    parser.add_argument("--url", default="ws://localhost:8080", help="service base URL, or a full /ws/... URL")
    parser.add_argument("--symbols", default="ETH-PERP", help="comma-separated symbols (default ETH-PERP)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to watch (default 10)")
    parser.add_argument("--quiet", action="store_true", help="print only the once-a-second summaries")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error("--duration must be > 0")
    return args


def stream_url(base: str, symbols: str) -> str:
    if "/ws/" in base:
        return base
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    path = f"/ws/{names[0]}" if len(names) == 1 else f"/ws/multi/{','.join(names)}"
    return base.rstrip("/") + path


class Stats:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.window_start = self.started
        self.window_ticks = 0
        self.ticks = 0
        self.latencies_ms: list[float] = []
        self.last_seq: dict[str, int] = {}
        self.seq_gaps = 0
        self.by_type: dict[str, int] = {}

    def add(self, message: dict[str, Any], received: float) -> str:
        kind = message.get("type", "?")
        self.by_type[kind] = self.by_type.get(kind, 0) + 1
        note = ""
        if kind in MARKET_TYPES:
            self.ticks += 1
            self.window_ticks += 1
            latency = (received - float(message.get("timestamp", received))) * 1000
            self.latencies_ms.append(latency)
            del self.latencies_ms[:-10_000]  # bounded: the latest 10,000 samples
            symbol, seq = message.get("symbol", "?"), message.get("seq")
            if isinstance(seq, int):
                previous = self.last_seq.get(symbol)
                if previous is not None and seq != previous + 1:
                    self.seq_gaps += 1
                    note = f"  (seq jumped {previous} -> {seq})"
                self.last_seq[symbol] = seq
            note = f"  latency {latency:.1f} ms" + note
        return note

    def summary(self, now: float, connected: bool) -> str:
        rate = self.window_ticks / max(now - self.window_start, 1e-9)
        self.window_start, self.window_ticks = now, 0
        state = "✓ Connected, receiving" if self.ticks else "⚠ Waiting for data"
        if not connected:
            state = "✗ Disconnected"
        line = f"Tick rate: {rate:.1f} ticks/sec, WebSocket: {state}"
        if self.latencies_ms:
            recent = self.latencies_ms[-1000:]
            line += f", latency p50 {statistics.median(recent):.1f} ms, max {max(recent):.1f} ms"
        return line


def describe(message: dict[str, Any]) -> str:
    kind, symbol, data = message.get("type"), message.get("symbol"), message.get("data") or {}
    if kind == "price_update":
        return f"price_update {symbol} price={data.get('price')} volume={data.get('volume')} seq={message.get('seq')}"
    if kind == "trade":
        return (
            f"trade        {symbol} {data.get('side')} {data.get('size')} @ {data.get('price')} "
            f"id={data.get('trade_id')} seq={message.get('seq')}"
        )
    if kind == "error":
        return f"error        {message.get('code')}: {message.get('message')}"
    return f"{kind:<12} {json.dumps(data)}"


async def watch(url: str, duration: float, quiet: bool) -> int:
    print(f"Connecting to {url} for {duration:g}s ...", flush=True)
    try:
        ws = await asyncio.wait_for(websockets.connect(url, compression=None, max_queue=None), 10)
    except (OSError, TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
        print(f"Failed to connect to WebSocket: {exc}", file=sys.stderr)
        print("Solution: ensure the Bluefin service is running (cd bluefin-service && python bluefin_service.py)")
        return 2
    stats = Stats()
    deadline = time.monotonic() + duration
    next_summary = time.monotonic() + 1.0
    connected = True
    async with ws:
        await ws.send(json.dumps({"type": "ping", "timestamp": time.time()}))
        while (now := time.monotonic()) < deadline:
            try:
                frame = await asyncio.wait_for(ws.recv(), min(deadline, next_summary) - now)
            except TimeoutError:
                frame = None
            except websockets.ConnectionClosed as exc:
                print(f"Connection closed by the service: {exc}", flush=True)
                connected = False
                break
            if frame is not None:
                received = time.time()
                message = json.loads(frame)
                note = stats.add(message, received)
                if message.get("type") == "pong":
                    sent = (message.get("data") or {}).get("client_timestamp")
                    if isinstance(sent, float):
                        note += f"  round trip {(received - sent) * 1000:.1f} ms"
                if not quiet:
                    print(f"Received: {describe(message)}{note}", flush=True)
            if time.monotonic() >= next_summary:
                print(stats.summary(time.monotonic(), connected), flush=True)
                next_summary += 1.0
    elapsed = time.monotonic() - stats.started
    print(
        f"\n{stats.ticks} market messages in {elapsed:.1f}s ({stats.ticks / elapsed:.1f} ticks/sec); "
        f"by type: {stats.by_type}; seq jumps: {stats.seq_gaps}",
        flush=True,
    )
    if not stats.ticks:
        print(
            "No tick data received. Solution: check mock data generation is enabled (DRY_RUN=true) "
            "and streaming is started (curl -X POST http://localhost:8080/streaming/start)",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(watch(stream_url(args.url, args.symbols), args.duration, args.quiet))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
