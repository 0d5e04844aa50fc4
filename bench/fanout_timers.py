"""Why the fan-out writes before the source sleeps: uvloop timers and work done in a later loop turn.

    .venv/bin/python bench/fanout_timers.py

The mock source publishes a batch, then arms ``asyncio.sleep`` until its next tick. If the batch's socket writes
(about 1 ms for 100 clients) run in a later loop turn, libuv computes that turn's poll timeout from the loop time
it cached before the writes, so the timer fires late by about the writes' duration. This measures a 3 ms sleep
with 1 ms of work done before arming it, in the next loop turn (``call_soon``), or not at all.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import uvloop

SLEEP = 0.003
WORK = 0.001


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def lateness(mode: str, rounds: int) -> list[float]:
    loop = asyncio.get_running_loop()
    late = []
    for _ in range(rounds):
        if mode == "before":
            busy(WORK)
        elif mode == "next-turn":
            loop.call_soon(busy, WORK)
        started = time.perf_counter()
        await asyncio.sleep(SLEEP)
        late.append((time.perf_counter() - started - SLEEP) * 1e3)
    return sorted(late)


async def main(rounds: int) -> None:
    for mode, label in (
        ("before", "1 ms of work, then arm the sleep"),
        ("next-turn", "arm the sleep, 1 ms of work next turn"),
        ("none", "no work"),
    ):
        late = await lateness(mode, rounds)
        p50, p90 = late[len(late) // 2], late[len(late) * 9 // 10]
        print(f"{label:40s} sleep(3 ms) late by p50 {p50:.2f} ms, p90 {p90:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--asyncio", action="store_true", help="the standard asyncio loop instead of uvloop")
    args = parser.parse_args()
    (asyncio.run if args.asyncio else uvloop.run)(main(args.rounds))
