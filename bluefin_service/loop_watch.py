"""A watchdog that says when the event loop stalled, and where it was.

Every tick waits for the one loop, so a turn that runs long delays every client at once. A coroutine stamps the
time every ``threshold / 4``; a daemon thread checks the stamp as often, and when it is older than ``threshold``
it logs the stall with the loop thread's current Python stack (``sys._current_frames``), once per stall, then
the stall's total length when the loop is back. A process that was not running at all (stopped, or starved of
CPU) shows up too: the stack then is wherever the loop happened to be. Cost: one timer and one thread wake per
``threshold / 4``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)
STACK_FRAMES = 8  # innermost frames logged


class LoopStallWatch:
    def __init__(self, threshold_seconds: float) -> None:
        self.threshold = threshold_seconds
        self.interval = threshold_seconds / 4
        self.stalls = 0
        self.longest = 0.0
        self._stamp = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = 0  # set by start(), on the loop's thread
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._stamp = time.monotonic()
        self._task = asyncio.create_task(self._beat(), name="loop-stall-watch")
        self._thread = threading.Thread(target=self._watch, name="loop-stall-watch", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _beat(self) -> None:
        while True:
            stamp = time.monotonic()
            stalled_for = stamp - self._stamp - self.interval  # beyond the sleep it asked for
            if stalled_for > self.threshold:
                self.stalls += 1
                self.longest = max(self.longest, stalled_for)
                log.warning("event loop is back after a %.1f ms stall (#%d)", stalled_for * 1000, self.stalls)
            self._stamp = stamp
            await asyncio.sleep(self.interval)

    def _watch(self) -> None:
        reported = 0.0  # the stamp of the stall already reported
        while not self._stop.wait(self.interval):
            stamp = self._stamp
            lag = time.monotonic() - stamp - self.interval
            if lag <= self.threshold or stamp == reported:
                continue
            reported = stamp
            frame = sys._current_frames().get(self._loop_thread)
            where = "".join(traceback.format_stack(frame)[-STACK_FRAMES:]) if frame is not None else "(unknown)\n"
            log.warning("event loop stalled for %.1f ms so far; it is at:\n%s", lag * 1000, where)

    def status(self) -> dict[str, float | int]:
        longest_ms = round(self.longest * 1000, 1)
        return {"threshold_ms": self.threshold * 1000, "stalls": self.stalls, "longest_ms": longest_ms}
