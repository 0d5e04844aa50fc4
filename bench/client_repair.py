"""How fast does BluefinServiceClient catch up after an outage: replay from the ring vs gap repair over HTTP?

For each mode a service streams one symbol fast; a client connects through a TCP relay, the relay is cut for
``--outage`` seconds (the service streams on), then restored. Measured: from the reconnect until the client has
delivered every message up to the service's head at the reconnect (no gap, no duplicate checked), in the same run:

  * ring:   ``RING_SIZE`` large enough that the service replays everything it missed (the baseline),
  * repair: ``RING_SIZE=16``, so the service sends ``gap ring_overflow`` and the client fetches the missed
            messages from ``GET /trades`` (1,000 a page) before the live ones.

Run: .venv/bin/python bench/client_repair.py [--outage 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.exchange.bluefin_client import BluefinServiceClient  # noqa: E402

_LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
ENV = {
    "DRY_RUN": "true", "STREAM_INTERVAL_SECONDS": "0.001", "TRADE_FREQUENCY": "0.002", "LOG_LEVEL": "WARNING",
    "SYMBOLS": "ETH-PERP", "RING_PERSIST": "false", "FLUSH_INTERVAL_SECONDS": "0.2", "MOCK_BACKFILL_SECONDS": "0",
}  # fmt: skip


def start_service(cwd: str, ring_size: int) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "bluefin_service", "--host", "127.0.0.1", "--port", "0"]
    env = {**os.environ, **ENV, "RING_SIZE": str(ring_size), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = _LISTENING.search(line)
        if match:
            return proc, int(match.group(1))
    raise RuntimeError("service did not start")


class Relay:
    """TCP relay that can be cut (every link dropped, new ones refused) and restored."""

    def __init__(self, port: int) -> None:
        self.port, self.open, self.links = port, True, []  # type: ignore[var-annotated]

    async def start(self) -> int:
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        self.open = False
        for writer in self.links:
            writer.transport.abort()
        self.links.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        far_reader, far_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.links += [writer, far_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))


async def wait_for(check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.0005)


async def one_round(port: int, outage: float) -> tuple[int, float, dict]:
    relay = Relay(port)
    relay_port = await relay.start()
    client = BluefinServiceClient(f"http://127.0.0.1:{relay_port}", heartbeat_interval=0.5)
    seqs: list[int] = []
    client.subscribe_to_price_updates(lambda m: seqs.append(m["seq"]))
    client.subscribe_to_trades(lambda m: seqs.append(m["seq"]))
    reconnected: list[float] = []
    client.subscribe_to_reconnects(lambda _: reconnected.append(time.monotonic()))
    await client.connect_websocket(["ETH-PERP"])
    await wait_for(lambda: len(seqs) >= 200)
    relay.cut()
    await wait_for(lambda: not client.is_websocket_connected())
    away_from, acked = seqs[-1], client.get_websocket_status()["server_last_seq"]["ETH-PERP"]
    await asyncio.sleep(outage)
    relay.open = True
    # the head at the reconnect, from the new `subscribed` ack: everything up to it was missed
    await wait_for(lambda: client.get_websocket_status()["server_last_seq"]["ETH-PERP"] != acked)
    target = client.get_websocket_status()["server_last_seq"]["ETH-PERP"]
    await wait_for(lambda: seqs[-1] >= target and not client.is_repairing("ETH-PERP"), timeout=60)
    elapsed = time.monotonic() - reconnected[0]
    status = client.get_websocket_status()
    await client.disconnect_websocket()
    relay.cut()
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "a gap or a duplicate"
    return target - away_from, elapsed, status


async def main(outage: float, rounds: int) -> None:
    results: dict[str, list[tuple[int, float]]] = {}
    for mode, ring in (("ring", 1_000_000), ("repair", 16)):
        with tempfile.TemporaryDirectory() as cwd:
            proc, port = start_service(cwd, ring)
            try:
                for _ in range(rounds):
                    missed, elapsed, status = await one_round(port, outage)
                    assert status["gaps"] == [] and bool(status["gaps_repaired"]) == (mode == "repair"), status
                    results.setdefault(mode, []).append((missed, elapsed))
            finally:
                proc.terminate()
                proc.wait(10)
    base = statistics.median(m / e for m, e in results["ring"])
    print(f"outage {outage:g}s, {rounds} rounds each; catch-up = reconnect -> every missed message delivered")
    print("| mode | missed messages (median) | catch-up median | messages/s (median) | vs ring |")
    print("|---|---|---|---|---|")
    for mode, rows in results.items():
        rate = statistics.median(m / e for m, e in rows)
        missed = statistics.median(m for m, _ in rows)
        elapsed = statistics.median(e for _, e in rows)
        print(f"| {mode} | {missed:,.0f} | {elapsed * 1000:,.0f} ms | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--outage", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.outage, args.rounds))
