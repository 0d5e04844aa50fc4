"""How fast does BluefinServiceClient reconnect once a SIGKILLed service is back?

Each round SIGKILLs the service, restarts it in the same directory on the same port (its resume ring persists in
DATA_DIR), and measures from the moment the restarted service prints "listening" until

  * ours:      BluefinServiceClient is connected again and has resumed (``is_websocket_connected()``),
  * floor:     a brand-new ``websockets.connect`` started at that moment has its ``subscribed`` ack,
  * websockets: the library's own reconnect loop (``async for ws in connect(...)``, default backoff) is back.

Run: .venv/bin/python bench/client_reconnect.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.data.realtime_market import RealtimeMarketDataProvider  # noqa: E402
from bot.exchange.bluefin_client import BluefinServiceClient  # noqa: E402

_LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")
ENV = {"DRY_RUN": "true", "STREAM_INTERVAL_SECONDS": "0.01", "TRADE_FREQUENCY": "0.02", "LOG_LEVEL": "WARNING"}


def start_service(cwd: str, port: int) -> tuple[subprocess.Popen[str], int]:
    cmd = [sys.executable, "-m", "bluefin_service", "--host", "127.0.0.1", "--port", str(port)]
    env = {**os.environ, **ENV, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        match = _LISTENING.search(line)
        if match:
            return proc, int(match.group(1))
    raise RuntimeError("service did not start")


async def wait_for(check, timeout: float = 15.0) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.0005)
    return time.monotonic()


async def library_loop(url: str, state: dict[str, float]) -> None:
    async for ws in websockets.connect(url, compression=None, open_timeout=5):
        state["connected"] = time.monotonic()
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
        state["connected"] = 0.0


async def fresh_connect(url: str) -> float:
    started = time.monotonic()
    while True:
        try:
            async with websockets.connect(url, compression=None, open_timeout=5) as ws:
                while json.loads(await ws.recv())["type"] != "subscribed":
                    pass
                return time.monotonic() - started
        except OSError:
            await asyncio.sleep(0.001)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    median = statistics.median(ordered)
    return f"median {median * 1000:7.1f} ms  p90 {p90 * 1000:7.1f} ms  max {ordered[-1] * 1000:7.1f} ms"


async def main(rounds: int) -> None:
    workdir = tempfile.mkdtemp(prefix="bench-reconnect-")
    proc, port = start_service(workdir, 0)
    base = f"http://127.0.0.1:{port}"
    client = BluefinServiceClient(base, heartbeat_interval=1.0)
    assert await client.connect_websocket(["ETH-PERP", "BTC-PERP"])
    library_state = {"connected": 0.0}
    library = asyncio.create_task(library_loop(f"ws://127.0.0.1:{port}/ws/ETH-PERP", library_state))
    ours: list[float] = []
    floor: list[float] = []
    lib: list[float] = []
    try:
        await wait_for(lambda: library_state["connected"] > 0)
        for _ in range(rounds):
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            await wait_for(lambda: not client.is_websocket_connected() and library_state["connected"] == 0)
            await asyncio.sleep(0.2)  # the service is down for a while, as after a crash
            proc, _ = await asyncio.to_thread(start_service, workdir, port)
            back = time.monotonic()
            fresh = asyncio.create_task(fresh_connect(f"ws://127.0.0.1:{port}/ws/ETH-PERP"))
            ours.append(await wait_for(client.is_websocket_connected) - back)
            floor.append(await fresh)
            lib.append(await wait_for(lambda: library_state["connected"] > 0) - back)
    finally:
        library.cancel()
        await client.disconnect_websocket()
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    status = client.get_websocket_status()
    print(f"{rounds} SIGKILL/restart rounds, time from 'service listening' to reconnected:")
    base = statistics.median(floor)
    print(f"  fresh connect (floor)       {summary(floor)}")
    print(f"  BluefinServiceClient        {summary(ours)}  ratio to floor {statistics.median(ours) / base:.1f}x")
    print(f"  websockets reconnect loop   {summary(lib)}  ratio to floor {statistics.median(lib) / base:.1f}x")
    print(f"  client: reconnects={status['reconnects']} resumes={status['resumes']} gaps={status['gap_count']}")


async def provider_latency(seconds: float) -> None:
    """Tick -> candle latency inside the provider, on a live stream of ~150 ticks/s."""
    workdir = tempfile.mkdtemp(prefix="bench-provider-")
    proc, port = start_service(workdir, 0)
    provider = RealtimeMarketDataProvider("ETH-PERP", [1, 5, 15, 60], service_url=f"http://127.0.0.1:{port}")
    try:
        assert await provider.connect()
        await asyncio.sleep(seconds)
        stats = provider.get_performance_stats()
    finally:
        await provider.disconnect()
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    local, feed = stats["tick_to_candle_latency_ms"], stats["exchange_to_candle_latency_ms"]
    print(f"provider, {seconds:g}s, 4 intervals: {stats['tick_rate']:.0f} ticks/s")
    print(f"  frame received -> candle updated   p50 {local['p50']:.3f} ms  p99 {local['p99']:.3f} ms")
    print(f"  exchange time  -> candle updated   p50 {feed['p50']:.3f} ms  p99 {feed['p99']:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--provider-seconds", type=float, default=10.0)
    args = parser.parse_args()
    asyncio.run(main(args.rounds))
    asyncio.run(provider_latency(args.provider_seconds))
