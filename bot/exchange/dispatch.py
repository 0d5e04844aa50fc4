"""Callbacks in stream order, from a bounded queue; a full queue makes the producer wait (backpressure)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], Any]
KINDS = ("price", "trade", "gap", "reconnect", "orderbook", "interruption")


class CallbackDispatcher:
    """One task runs every callback (sync or async) in the order items were put; a raising callback is counted
    in ``stats["callback_errors"]`` and logged, and the stream goes on."""

    def __init__(self, capacity: int, stats: dict[str, Any]) -> None:
        self.capacity = capacity
        self.callbacks: dict[str, list[Callback]] = {kind: [] for kind in KINDS}
        self.waiting = 0  # producers waiting for room: while one is the reader, the socket's silence is ours
        self._stats = stats
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def size(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        self._queue = asyncio.Queue(self.capacity)
        self._task = asyncio.create_task(self._run(self._queue), name="bluefin-dispatch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            if task is not asyncio.current_task():  # a callback may stop the client from inside the dispatcher
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def put(self, kind: str, payload: dict[str, Any]) -> None:
        queue = self._queue
        if queue is None or not self.callbacks[kind]:
            return
        if queue.full():
            self._stats["backpressure_waits"] += 1
            self.waiting += 1
            try:
                await queue.put((kind, payload))
            finally:
                self.waiting -= 1
        else:
            queue.put_nowait((kind, payload))

    async def _run(self, queue: asyncio.Queue[tuple[str, dict[str, Any]]]) -> None:
        callbacks = self.callbacks
        while True:
            kind, payload = await queue.get()
            for callback in callbacks[kind]:
                try:
                    result = callback(payload)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    self._stats["callback_errors"] += 1
                    log.exception("%s callback %r failed; the stream continues", kind, callback)
