"""Durability of the recorder, for real: kill -9, a read-only store, a full disk, a database that is down.

Each test runs the real service (``python -m bluefin_service``) with a WebSocket client attached and checks
what a user would: the store is intact and holds what the service said it committed; while the store is
broken the client keeps receiving every tick, the service says so in /streaming/status and in its log,
memory stays bounded (oldest dropped, counted), and once the store is back the buffered ticks land in it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningService, service_env
from store_helpers import stored_rows
from svc_helpers import assert_contiguous, collect_market, connect, status, wait_for_status

SYMBOLS = "ETH-PERP,BTC-PERP,SUI-PERP,SOL-PERP"
FAST = {"STREAM_INTERVAL_SECONDS": "0.005", "TRADE_FREQUENCY": "0.01", "FLUSH_INTERVAL_SECONDS": "0.2"}


def stored(db: Path) -> dict[str, dict[int, tuple[Any, ...]]]:
    """symbol -> seq -> (ts, kind, price, size) read straight from the SQLite file."""
    return {
        symbol: {seq: (row[1], row[3], row[4], row[5]) for seq, row in by_seq.items()}
        for symbol, by_seq in stored_rows(db).items()
    }


def wire_row(message: dict[str, Any]) -> tuple[Any, ...]:
    data = message["data"]
    size = data["size"] if message["type"] == "trade" else data["volume"]
    return (message["timestamp"], message["type"], data["price"], size)


def assert_no_holes(rows: dict[str, dict[int, tuple[Any, ...]]]) -> None:
    for symbol, by_seq in rows.items():
        seqs = sorted(by_seq)
        assert seqs == list(range(seqs[0], seqs[-1] + 1)), f"{symbol}: stored seqs have holes"


# -- Ctrl-C -----------------------------------------------------------------------------------------------------
def writer_children(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(child) for child in (task / "children").read_text().split()]
    return children


async def test_ctrl_c_to_the_service_job_still_stores_every_buffered_tick(tmp_path: Path) -> None:
    """A Ctrl-C reaches the whole foreground job; the writer child must outlive it to store the final flush.
    It must also stay in the service's session (a session is a CPU group of its own under autogroup scheduling,
    which would let the writer's batches take CPU from the fan-out whatever its priority) and run at the lowest
    normal priority."""
    env = service_env(SYMBOLS=SYMBOLS, **{**FAST, "FLUSH_INTERVAL_SECONDS": "60"})  # only the final flush writes
    service = RunningService(env, tmp_path, [], process_group=0)
    try:
        current = await wait_for_status(service, lambda s: s["recorder"]["buffered"] >= 300)
        assert current["recorder"]["written"] == 0
        assert service.proc is not None
        pid = service.proc.pid
        writers = writer_children(pid)
        assert len(writers) == 1, f"expected one writer child, found {writers}"
        assert os.getsid(writers[0]) == os.getsid(pid)
        assert os.getpgid(writers[0]) != os.getpgid(pid)
        assert os.getpriority(os.PRIO_PROCESS, writers[0]) == 19  # storage is background work
        os.killpg(pid, signal.SIGINT)
        assert service.proc.wait(15) == 0
    finally:
        service.stop()
    rows = stored(tmp_path / "data" / "ticks.db")
    assert_no_holes(rows)
    assert sum(len(by_seq) for by_seq in rows.values()) >= current["recorder"]["buffered"]


# -- a lost ring -------------------------------------------------------------------------------------------------
async def test_a_service_without_its_ring_numbers_on_from_the_store(start_service: Any, tmp_path: Path) -> None:
    """With RING_PERSIST=false (or a lost ring) a restart must not number ticks from 1 again: the store would
    hold two ticks under one seq, and resume and ``/trades?after_seq=`` gap repair would mix them up."""
    service = start_service(RING_PERSIST="false", **FAST)
    await wait_for_status(service, lambda s: min(s["recorder"]["written_seq"].values() or [0]) >= 30)
    service.stop()  # graceful: the final flush stores everything published
    db = tmp_path / "data" / "ticks.db"
    before = {symbol: max(by_seq) for symbol, by_seq in stored(db).items()}
    service.start()
    await wait_for_status(
        service, lambda s: all(s["recorder"]["written_seq"].get(symbol, 0) > seq + 20 for symbol, seq in before.items())
    )
    service.stop()
    assert_no_holes(stored(db))  # one contiguous run per symbol across the restart, no seq twice (stored_rows checks)
    assert any("numbering on from" in line for line in service.output)


async def test_a_store_down_at_start_does_not_stop_the_stream(start_service: Any) -> None:
    service = start_service(STORE_URL="postgresql://postgres@127.0.0.1:1/test", **FAST)  # nothing listens on 1
    await wait_for_status(service, lambda s: min(info["last_seq"] for info in s["symbols"].values()) >= 20)
    assert any("could not read the last stored sequence numbers" in line for line in service.output)


# -- kill -9 ----------------------------------------------------------------------------------------------------
async def test_kill_9_loses_at_most_the_last_flush_and_never_corrupts(start_service: Any, tmp_path: Path) -> None:
    service = start_service(**FAST)
    async with connect(f"{service.ws_url}/ws/multi/{SYMBOLS}") as ws:
        received = await collect_market(ws, 1500)
        committed = (await status(service))["recorder"]["written_seq"]
        service.kill()
    db = tmp_path / "data" / "ticks.db"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    rows = stored(db)
    assert_no_holes(rows)
    for symbol, seq in committed.items():  # what the service reported as committed survived the crash
        assert max(rows[symbol]) >= seq
    for message in received:  # and every tick the client saw up to that point is stored exactly as sent
        if message["seq"] <= committed.get(message["symbol"], 0):
            assert rows[message["symbol"]][message["seq"]] == wire_row(message)
    newest_stored = max(ts for by_seq in rows.values() for ts, *_ in by_seq.values())
    flush = float(FAST["FLUSH_INTERVAL_SECONDS"])
    assert newest_stored >= received[-1]["timestamp"] - flush - 2.0  # 2 s of slack for a busy shared machine

    service.start()  # the same data directory: the store opens and recording carries on
    before = sum(len(by_seq) for by_seq in rows.values())
    await wait_for_status(service, lambda s: s["recorder"]["written"] > 100 and s["recorder"]["state"] == "ok")
    service.stop()
    after = stored(db)
    assert sum(len(by_seq) for by_seq in after.values()) > before + 100
    for symbol, by_seq in rows.items():
        assert all(after[symbol][seq] == row for seq, row in by_seq.items())


# -- a broken store never slows the stream ------------------------------------------------------------------
def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot mount here ({result.stderr.strip()}); run as root with CAP_SYS_ADMIN to test this")


@pytest.fixture
def mounts() -> Iterator[list[Path]]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a read-only or tiny filesystem (a real read-only/full disk)")
    mounted: list[Path] = []
    yield mounted
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


async def _stream_while_broken(service: Any, count: int) -> list[dict[str, Any]]:
    """Read ``count`` ticks while the store is failing; every one arrives, in order, without a gap."""
    async with connect(f"{service.ws_url}/ws/multi/{SYMBOLS}") as ws:
        received = await collect_market(ws, count)
    assert_contiguous(received)
    current = await status(service)
    assert current["recorder"]["state"] == "failing"
    assert current["dropped_slow_consumers"] == 0
    return received


async def test_read_only_store_is_retried_and_recovers(start_service: Any, tmp_path: Path, mounts: list[Path]) -> None:
    real, readonly = tmp_path / "store", tmp_path / "store-ro"
    real.mkdir()
    readonly.mkdir()
    _mount("--bind", str(real), str(readonly))
    mounts.append(readonly)
    _mount("-o", "remount,bind,ro", str(readonly))
    service = start_service(STORE_URL=f"sqlite:///{readonly / 'ticks.db'}", **FAST)
    failing = await wait_for_status(service, lambda s: s["recorder"]["failures"] >= 2)
    assert "unable to open" in failing["recorder"]["last_error"] or "readonly" in failing["recorder"]["last_error"]
    received = await _stream_while_broken(service, 600)
    assert any("store sqlite" in line and "failed" in line for line in service.output)

    _mount("-o", "remount,bind,rw", str(readonly))
    await wait_for_status(service, lambda s: s["recorder"]["state"] == "ok" and s["recorder"]["buffered"] < 2000)
    await service_stop_streaming(service)
    rows = stored(real / "ticks.db")
    assert_no_holes(rows)
    for message in received:  # everything buffered while read-only was stored once it became writable
        assert rows[message["symbol"]][message["seq"]] == wire_row(message)
    assert rows["ETH-PERP"][1] is not None  # from the very first tick
    assert any("recovered after" in line for line in service.output)


async def test_full_disk_drops_oldest_counted_and_recovers(
    start_service: Any, tmp_path: Path, mounts: list[Path]
) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    _mount("-t", "tmpfs", "-o", "size=160k", "tmpfs", str(tiny))
    mounts.append(tiny)
    service = start_service(STORE_URL=f"sqlite:///{tiny / 'ticks.db'}", RECORD_BUFFER_MAX="1000", **FAST)
    full = await wait_for_status(service, lambda s: s["recorder"]["failures"] > 0 and s["recorder"]["dropped"] > 0)
    assert "full" in full["recorder"]["last_error"]
    assert full["recorder"]["buffered"] <= 1000 + 100_000  # the buffer plus the one batch being retried
    await _stream_while_broken(service, 600)
    assert any("dropped" in line and "oldest" in line for line in service.output)

    _mount("-o", "remount,size=64m", str(tiny))
    await wait_for_status(service, lambda s: s["recorder"]["state"] == "ok")
    final = await service_stop_streaming(service)
    rows = stored(tiny / "ticks.db")
    published = sum(info["last_seq"] for info in final["symbols"].values())
    recorder = final["recorder"]
    assert sum(len(by_seq) for by_seq in rows.values()) == published - recorder["dropped"]  # lost = counted


async def service_stop_streaming(service: Any) -> dict[str, Any]:
    """Stop the feed, then wait until the recorder has stored everything it holds."""
    from svc_helpers import http

    await http("POST", f"{service.http_url}/streaming/stop")
    return await wait_for_status(service, lambda s: s["recorder"]["buffered"] == 0 and s["recorder"]["state"] == "ok")
