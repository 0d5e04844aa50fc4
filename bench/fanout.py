"""Fan-out benchmark: the service against websockets.broadcast, Node ``ws`` and the raw limit, in one run.

    .venv/bin/python bench/fanout.py            # the full run, about 5 minutes
    .venv/bin/python bench/fanout.py --quick    # fewer steps, shorter phases (a smoke run)
    .venv/bin/python bench/fanout.py --phases latency --servers raw-batched,ours   # a part of it

Every server streams the guide's shape: 20 symbols from the same mock schedule (the service's own
``MockSource``, same settings and seed), and every client subscribes to all 20 on ``/ws/multi/...``. The same
load generator (``fanout_loader.py``, in separate processes) drives each server in turn, back to back.

Phases:
- throughput at 100 and 1,000 clients: all clients connect, then the feed starts; the aggregate tick rate
  doubles step by step; delivered messages/s is counted at the clients; the best step is the saturation point;
- latency at the guide's limits (100 clients x 500 ticks/s): tick ``timestamp`` (generation time) to the
  kernel's receive timestamp at 10 probe clients, and to when the load generator read it;
- 10,000 idle connections on the service: its RSS before and after, KB per connection.

Each step also reports the CPU of the server, the load generators, network interrupt work and every other
process on the machine, so a step starved by unrelated work shows as such.

Servers: ``raw`` (pre-built frame, one ``transport.write`` per message: the raw limit), ``raw-batched`` (the
frames of one feed wake-up in one write per connection), ``ours`` (``python -m bluefin_service``),
``websockets`` (``websockets.broadcast``), ``node`` (``ws``, fed the same ticks over a pipe). Loopback only.
"""

from __future__ import annotations

import argparse
import array
import base64
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from fanout_procs import Loaders, machine_busy_seconds, node_available, rss_kb, start_server
from fanout_report import report

SYMBOLS = [
    "ETH-PERP", "BTC-PERP", "SUI-PERP", "SOL-PERP", "DOGE-PERP", "XRP-PERP", "AVAX-PERP", "APT-PERP", "ARB-PERP",
    "OP-PERP", "LINK-PERP", "DOT-PERP", "LTC-PERP", "BNB-PERP", "ADA-PERP", "NEAR-PERP", "ATOM-PERP", "INJ-PERP",
    "SEI-PERP", "TIA-PERP",
]  # fmt: skip
PATH = "/ws/multi/" + ",".join(SYMBOLS)
ALL_SERVERS = ["raw", "raw-batched", "ours", "websockets", "node"]
# Offered load = ticks/s x clients, in messages/s. The ramp starts below DESIGN.md's raw limit (101k-135k) and
# doubles; a server that coalesces writes keeps up far beyond it, so the ramp stops at MAX_OFFERED.
START_OFFERED = 40_000
MAX_OFFERED = 1_280_000
GUIDE_CLIENTS, GUIDE_RATE = 100, 500
LATENCY_PROBES = 10  # of the clients in a latency phase, these read kernel receive timestamps
# Ours with parts moved or switched off, to attribute latency: the resume ring's mmap'd files on tmpfs instead
# of the data directory's disk; no recorder and no persisted ring.
LATENCY_EXTRA = ["ours-shmring", "ours-lean"]
IDLE_RATE = 2 * len(SYMBOLS) / 3600  # one price update and one trade an hour per symbol: idle


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_phase(
    loaders: Loaders, kind: str, clients: int, rate: float, seconds: float, warmup: float, latency: bool = False
) -> dict[str, Any]:
    """Start ``kind`` at ``rate`` ticks/s, connect ``clients``, count what they receive for ``seconds``."""
    server = start_server(kind, SYMBOLS, rate)
    try:
        probes = min(LATENCY_PROBES, clients) if latency else 0
        connected, connect_s, failure = loaders.connect(server.port, PATH, clients, probes)
        if connected < clients:
            raise RuntimeError(f"{kind}: only {connected}/{clients} clients connected ({failure})")
        server.start_feed()
        time.sleep(warmup)
        if latency:
            loaders.ask({"cmd": "latency", "on": True})
        before, cpu0, busy0, at0 = loaders.ask({"cmd": "mark"}), server.cpu(), machine_busy_seconds(), time.monotonic()
        time.sleep(seconds)
        after, cpu1, busy1, at1 = loaders.ask({"cmd": "mark"}), server.cpu(), machine_busy_seconds(), time.monotonic()
        samples, app_samples = array.array("d"), array.array("d")
        if latency:
            for reply in loaders.ask({"cmd": "latency", "on": False}):
                samples.frombytes(base64.b64decode(reply["samples"]))
                app_samples.frombytes(base64.b64decode(reply["app_samples"]))
        states = loaders.ask({"cmd": "state"})
        loaders.ask({"cmd": "close"})
        alive = server.alive()
        if sum(s["open"] for s in states) < clients or not alive:
            log(f"  {kind}: clients lost; server output (last lines):\n    " + "\n    ".join(list(server.output)[-15:]))
    finally:
        server.stop()
    pairs = list(zip(after, before, strict=True))
    delivered = sum((a["messages"] - b["messages"]) / (a["time"] - b["time"]) for a, b in pairs)
    wall = at1 - at0
    result: dict[str, Any] = {
        "server": kind,
        "clients": clients,
        "rate": rate,
        "offered": rate * clients,
        "delivered": delivered,
        "server_cpu": (cpu1[0] - cpu0[0]) / wall,
        "feeder_cpu": (cpu1[1] - cpu0[1]) / wall,
        "loader_cpu": sum(a["cpu"] - b["cpu"] for a, b in pairs) / wall,
        "machine_cpu": (busy1[0] - busy0[0]) / wall,  # all processes on all cores: ours and everyone else's
        "softirq_cpu": (busy1[1] - busy0[1]) / wall,
        "connect_seconds": connect_s,
        "open_at_end": sum(s["open"] for s in states),
        "close_codes": _merge_codes(states),
        "server_alive": alive,
    }
    ours = result["server_cpu"] + result["feeder_cpu"] + result["loader_cpu"]
    result["other_cpu"] = max(0.0, result["machine_cpu"] - ours)
    if latency:
        result["latency"] = _percentiles(samples)
        result["app_latency"] = _percentiles(app_samples)
    return result


def _merge_codes(states: list[dict[str, Any]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for state in states:
        for code, count in state["close_codes"].items():
            merged[str(code)] = merged.get(str(code), 0) + count
    return merged


def _percentiles(samples: array.array[float]) -> dict[str, float]:
    if len(samples) < 100:
        return {"count": len(samples)}
    cuts = statistics.quantiles(samples, n=1000, method="inclusive")
    return {
        "count": len(samples),
        "p50_ms": cuts[499] * 1000,
        "p99_ms": cuts[989] * 1000,
        "p999_ms": cuts[998] * 1000,
        "max_ms": max(samples) * 1000,
    }


class Ramp:
    """One server's tick-rate ramp: the offered load doubles until two steps in a row fall short, or MAX_OFFERED.

    A step "keeps up" when >= 90% of the offered load is delivered. One short step alone does not end the ramp:
    on a machine shared with other work a single step can be starved, and the figure kept is the best step.
    """

    def __init__(self, clients: int, quick: bool) -> None:
        self.clients = clients
        self.next: float | None = START_OFFERED / clients
        self.short_steps = 0
        self.max_rate = (START_OFFERED * 4 if quick else MAX_OFFERED) / clients

    def record(self, rate: float, delivered: float) -> None:
        self.short_steps = self.short_steps + 1 if delivered < 0.9 * rate * self.clients else 0
        done = self.short_steps >= 2 or rate * 2 > self.max_rate * 1.001
        self.next = None if done else rate * 2


def throughput(loaders: Loaders, servers: list[str], clients: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The ramps for one client count, run in rounds (every server's next step) so a disturbance hits all alike."""
    runs: list[dict[str, Any]] = []
    ramps = {kind: Ramp(clients, args.quick) for kind in servers}
    while any(ramp.next for ramp in ramps.values()):
        for kind, ramp in ramps.items():
            if ramp.next is None:
                continue
            rate = round(ramp.next, 1)
            run = _logged(run_phase(loaders, kind, clients, rate, args.seconds, args.warmup))
            runs.append(run)
            ramp.record(rate, run["delivered"])
    return runs


def _logged(run: dict[str, Any]) -> dict[str, Any]:
    lat = run.get("latency", {})
    extra = f"  p50 {lat['p50_ms']:.2f} ms p99 {lat['p99_ms']:.2f} ms" if "p99_ms" in lat else ""
    log(
        f"  {run['server']:<11} {run['clients']:>5} clients {run['rate']:>6g} ticks/s: "
        f"{run['delivered']:>9,.0f} msg/s of {run['offered']:>9,.0f} offered; server cpu {run['server_cpu']:.0%}, "
        f"loaders {run['loader_cpu']:.0%}, softirq {run['softirq_cpu']:.0%}, others {run['other_cpu']:.0%}; "
        f"open {run['open_at_end']}{extra}" + (f"; closed {run['close_codes']}" if run["close_codes"] else "")
    )
    return run


def idle(loaders: Loaders, count: int) -> dict[str, Any]:
    server = start_server("ours", SYMBOLS, IDLE_RATE)
    try:
        time.sleep(1.0)
        before = rss_kb(server.pid)
        connected, seconds, failure = loaders.connect(server.port, PATH, count)
        time.sleep(2.0)
        after = rss_kb(server.pid)
        states = loaders.ask({"cmd": "state"})
        acks = sum(m["messages"] for m in loaders.ask({"cmd": "mark"}))
        loaders.ask({"cmd": "close"})
        time.sleep(1.0)
        after_close = rss_kb(server.pid)
    finally:
        server.stop()
    result = {
        "connections": connected,
        "failed_first": failure,
        "connect_seconds": seconds,
        "open_after_hold": sum(s["open"] for s in states),
        "acks_received": acks,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_after_close_kb": after_close,
        "kb_per_connection": (after - before) / max(connected, 1),
    }
    log(f"  idle: {json.dumps(result)}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short ramp (to 160k msg/s) and phases")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS), help="a comma-separated subset of the default")
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds between connecting and measuring")
    parser.add_argument("--loaders", type=int, default=2, help="load-generator processes")
    parser.add_argument("--idle", type=int, default=10_000, help="idle connections to hold (0 skips)")
    parser.add_argument("--phases", default="throughput,latency,idle", help="a comma-separated subset of the default")
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup = min(args.seconds, 1.5), min(args.warmup, 0.5)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it: 10k sockets need it
    if args.idle and hard < args.idle + 1024:
        log(f"RLIMIT_NOFILE hard limit {hard} is too low for {args.idle} idle connections; skipping that phase")
        args.idle = 0
    servers = [s for s in args.servers.split(",") if s]
    if "node" in servers and not node_available():
        log("node or its `ws` package is not available: skipping the Node baseline")
        servers.remove("node")
    started = time.monotonic()
    loaders = Loaders(args.loaders)
    results: dict[str, Any] = {"throughput": [], "latency": [], "idle": None, "servers": servers}
    try:
        phases = args.phases.split(",")
        for clients in (100, 1000) if "throughput" in phases else ():
            log(f"throughput, {clients} clients")
            results["throughput"] += throughput(loaders, servers, clients, args)
        extra = [k for k in LATENCY_EXTRA if "ours" in servers and k not in servers and not args.quick]
        for kind in servers + extra if "latency" in phases else ():
            if kind == servers[0]:
                log(f"latency, {GUIDE_CLIENTS} clients x {GUIDE_RATE} ticks/s")
            phase = run_phase(loaders, kind, GUIDE_CLIENTS, GUIDE_RATE, args.seconds + 1, args.warmup, latency=True)
            results["latency"].append(_logged(phase))
        if args.idle and "idle" in phases:
            log(f"{args.idle:,} idle connections on ours")
            results["idle"] = idle(loaders, args.idle)
    finally:
        loaders.close()
    results["seconds"] = time.monotonic() - started
    report(results, servers, GUIDE_CLIENTS, GUIDE_RATE)
    print(f"\n(bench took {results['seconds']:.0f} s; command: {' '.join(['python', *sys.argv])})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
