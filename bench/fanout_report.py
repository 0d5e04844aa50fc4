"""The tables ``bench/fanout.py`` prints (Markdown, so a run's output can go into docs/benchmarks.md as is)."""

from __future__ import annotations

from typing import Any

LABELS = {
    "raw": "raw: pre-built frame, 1 write/message",
    "raw-batched": "raw: 1 write per connection per feed wake-up",
    "ours": "ours: `python -m bluefin_service`",
    "ours-lean": "ours, RECORD=false RING_PERSIST=false",
    "ours-shmring": "ours, ring files on tmpfs (DATA_DIR=/dev/shm/..., store on disk)",
    "websockets": "`websockets.broadcast`",
    "node": "Node `ws` send loop",
}


def best(runs: list[dict[str, Any]], kind: str, clients: int) -> dict[str, Any] | None:
    mine = [r for r in runs if r["server"] == kind and r["clients"] == clients]
    return max(mine, key=lambda r: r["delivered"]) if mine else None


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    return f"{a['delivered'] / b['delivered']:.2f}x" if a and b and b["delivered"] else "-"


def _cell(run: dict[str, Any] | None) -> str:
    if run is None:
        return "- | - | -"
    kept_up = "+" if run["delivered"] >= 0.9 * run["offered"] else ""
    return f"{run['delivered']:,.0f}{kept_up} | {run['rate']:g} | {run['server_cpu']:.0%}"


def report(results: dict[str, Any], servers: list[str], guide_clients: int, guide_rate: int) -> None:
    runs = results["throughput"]
    other = [r["other_cpu"] for r in runs + results["latency"]]
    print("\n20 symbols, every client on /ws/multi/<all 20>, 127.0.0.1, 2 cores shared with other work.")
    if other:
        mean = sum(other) / len(other)
        print(f"Other processes used {min(other):.0%}-{max(other):.0%} of a core (mean {mean:.0%}) during the phases.")
    print("\nDelivered messages/s, best step of each ramp (+ = still >= 90% of the offered load: not saturated).")
    print("ticks/s = aggregate tick rate at that step; cpu = the server process's share of one core.\n")
    print("| server | 100 clients msg/s | ticks/s | cpu | 1,000 clients msg/s | ticks/s | cpu | x raw (100 / 1,000) |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in servers:
        at100, at1000 = best(runs, kind, 100), best(runs, kind, 1000)
        ratios = f"{_ratio(at100, best(runs, 'raw', 100))} / {_ratio(at1000, best(runs, 'raw', 1000))}"
        print(f"| {LABELS.get(kind, kind)} | {_cell(at100)} | {_cell(at1000)} | {ratios} |")
    print("\nRatios (targets: ours >= 0.9x the raw limit; >= 5x websockets.broadcast at 1,000 clients)")
    for clients in (100, 1000):
        ours = best(runs, "ours", clients)
        line = [f"ours / {other_kind} {_ratio(ours, best(runs, other_kind, clients))}" for other_kind in servers]
        print(f"- {clients:,} clients: " + ", ".join(x for x in line if not x.startswith("ours / ours ")))
    print(f"\nLatency at the guide's limits ({guide_clients} clients x {guide_rate} ticks/s; target p99 <= 5 ms):")
    print("tick `timestamp` (generation) -> the kernel's receive timestamp at a probe client, and (app) -> when")
    print("the load generator read it.")
    print("\n| server | p50 ms | p99 ms | p99.9 ms | max ms | app p50 ms | app p99 ms | samples | delivered msg/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for run in results["latency"]:
        lat, app = run["latency"], run.get("app_latency", {})
        if "p99_ms" in lat and "p99_ms" in app:
            print(
                f"| {LABELS.get(run['server'], run['server'])} | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} | "
                f"{lat['p999_ms']:.2f} | {lat['max_ms']:.2f} | {app['p50_ms']:.2f} | {app['p99_ms']:.2f} | "
                f"{lat['count']:,} | {run['delivered']:,.0f} |"
            )
    idle = results.get("idle")
    if idle:
        print(
            f"\nIdle: {idle['connections']:,} connections to ours ({idle['open_after_hold']:,} open after the hold, "
            f"connected in {idle['connect_seconds']:.1f} s); server RSS {idle['rss_before_kb'] / 1024:.1f} MiB -> "
            f"{idle['rss_after_kb'] / 1024:.1f} MiB = {idle['kb_per_connection']:.1f} KB per connection; "
            f"{idle['rss_after_close_kb'] / 1024:.1f} MiB after they closed."
        )
