"""The recorder in-process, on a real Hub and a real SQLite store: retention, and the bound while failing."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from bluefin_service.hub import Hub
from bluefin_service.store import TickQuery, open_store
from bluefin_service.store.recorder import Recorder, pending_rows
from marketdata.tick_blocks import BLOCK_SPAN_SECONDS
from marketdata.ticks import PriceUpdate, Trade


async def wait_until(check: object, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_retention_by_age_runs_while_recording(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ticks.db'}")
    recorder = Recorder(store, flush_interval=0.05, retention_age_seconds=3600, retention_check_seconds=0.05)
    hub = Hub(["ETH-PERP"])
    hub.tick_listeners.append(recorder.record)
    recorder.start()
    now = time.time()
    hub.publish_batch([PriceUpdate("ETH-PERP", now - 7200 + i, 2500.0, 1.0) for i in range(100)])  # two hours old
    hub.publish_batch([Trade("ETH-PERP", now + i * 0.001, 2501.0, 0.5, "buy", f"t{i}") for i in range(50)])
    await wait_until(lambda: recorder.stats.retention_deleted == 100)
    await recorder.stop()
    await store.open()
    kept = await store.ticks(TickQuery("ETH-PERP", start=0, limit=1000))
    assert [row.seq for row in kept] == list(range(101, 151))
    await store.close()


async def test_a_failing_store_keeps_the_newest_within_the_bound(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = open_store(f"sqlite:///{blocker / 'ticks.db'}")
    recorder = Recorder(store, flush_interval=0.05, max_buffered=1000)
    hub = Hub(["ETH-PERP"])
    hub.tick_listeners.append(recorder.record)
    recorder.start()
    hub.publish_batch([PriceUpdate("ETH-PERP", 1e9 + i, 2500.0, 1.0) for i in range(300)])
    await wait_until(lambda: recorder.stats.failures >= 1)  # the first batch (300) is now held for retry
    hub.publish_batch([PriceUpdate("ETH-PERP", 2e9 + i, 2500.0, 1.0) for i in range(5000)])
    status = recorder.status()
    assert status["state"] == "failing" and "Error" in str(status["last_error"])
    assert status["dropped"] == 4000 and status["buffered"] == 1300  # bound + the batch being retried
    pending = pending_rows(recorder.pending_blocks("ETH-PERP"))
    assert [row.seq for row in pending][300:] == list(range(4301, 5301))  # the newest are kept
    await recorder.stop(drain_seconds=0.5)


async def test_a_burst_of_old_history_is_stored_in_blocks_of_bounded_time_span(tmp_path: Path) -> None:
    """Backfilled history arrives in a burst: a block still spans at most BLOCK_SPAN_SECONDS of event time, so
    time reads never have to start many minutes early."""
    path = tmp_path / "ticks.db"
    store = open_store(f"sqlite:///{path}")
    recorder = Recorder(store, flush_interval=0.05)
    hub = Hub(["ETH-PERP"])
    hub.tick_listeners.append(recorder.record)
    recorder.start()
    start = time.time() - 600
    hub.publish_batch([PriceUpdate("ETH-PERP", start + i * 0.5, 2500.0 + i % 7, 1.0) for i in range(1200)])
    await wait_until(lambda: recorder.stats.written == 1200)
    await recorder.stop()
    with sqlite3.connect(path) as conn:
        shapes = conn.execute("SELECT n, ts_max - ts_min FROM tick_blocks").fetchall()
    assert sum(n for n, _ in shapes) == 1200 and len(shapes) >= 10
    assert all(span <= BLOCK_SPAN_SECONDS for _, span in shapes)
