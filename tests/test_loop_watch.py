"""The event-loop stall watchdog: it must name where a blocked loop is, and count stalls a user can see."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

import pytest
from svc_helpers import status, wait_for_status

from bluefin_service.loop_watch import LoopStallWatch


def block_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)  # what a synchronous call on the event loop does to every client


async def test_a_blocked_loop_is_logged_with_its_stack_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    watch = LoopStallWatch(0.05)
    watch.start()
    try:
        await asyncio.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="bluefin_service.loop_watch"):
            block_the_loop_for(0.3)
            await asyncio.sleep(0.1)  # the loop is back: the beat measures the stall
    finally:
        await watch.stop()
    stalled = [r.getMessage() for r in caplog.records if "stalled for" in r.getMessage()]
    assert stalled and "block_the_loop_for" in stalled[0]  # the stack points at the blocking call
    assert watch.stalls == 1 and 250 <= watch.status()["longest_ms"] < 1000


async def test_a_service_that_was_stopped_reports_the_stall(start_service: Any) -> None:
    service = start_service(LOOP_STALL_WARN_MS="50", STREAM_INTERVAL_SECONDS="0.05")
    assert (await status(service))["loop_stalls"]["threshold_ms"] == 50
    os.kill(service.proc.pid, signal.SIGSTOP)  # not scheduled at all, as a starved process would be
    await asyncio.sleep(0.4)
    os.kill(service.proc.pid, signal.SIGCONT)
    current = await wait_for_status(service, lambda s: s["loop_stalls"]["stalls"] >= 1)
    assert current["loop_stalls"]["longest_ms"] >= 300
    assert any("event loop is back after" in line for line in service.output)


async def test_the_watchdog_can_be_turned_off(start_service: Any) -> None:
    service = start_service(LOOP_STALL_WARN_MS="0")
    assert (await status(service))["loop_stalls"] == {"enabled": False}
