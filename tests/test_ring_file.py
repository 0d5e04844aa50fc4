"""The memory-mapped resume ring: what a restart (or a crash) keeps, and what a damaged file costs."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from bluefin_service.ring import MessageRing
from bluefin_service.ring_file import DEFAULT_SLOT_SIZE, HEADER_SIZE, SLOT_HEADER, DirectoryLock, RingFile
from marketdata.errors import ConfigError


def _fill(ring: MessageRing, first: int, last: int) -> None:
    for seq in range(first, last + 1):
        ring.append(seq, f'{{"seq":{seq}}}'.encode())


def test_reopened_ring_continues_seq_and_replays(tmp_path: Path) -> None:
    path = tmp_path / "ETH-PERP.ring"
    ring = MessageRing(8, RingFile(path, 8))
    _fill(ring, 1, 20)
    ring.close()

    reopened = MessageRing(8, RingFile(path, 8))
    assert reopened.head == 20
    gap, payloads = reopened.after(15)
    assert gap is None
    assert payloads == [f'{{"seq":{s}}}'.encode() for s in range(16, 21)]
    gap, _ = reopened.after(5)
    assert (gap.from_seq, gap.to_seq, gap.reason) == (6, 12, "ring_overflow")
    reopened.append(21, b"next")  # the sequence goes on where it stopped
    assert reopened.head == 21


def test_ring_survives_sigkill_of_writer(tmp_path: Path) -> None:
    """A child process writes into the mapping and is killed; nothing written before the kill is lost."""
    path = tmp_path / "SOL-PERP.ring"
    code = (
        "import sys, os, signal\n"
        "from pathlib import Path\n"
        "from bluefin_service.ring import MessageRing\n"
        "from bluefin_service.ring_file import RingFile\n"
        f"ring = MessageRing(64, RingFile(Path({str(path)!r}), 64))\n"
        "for seq in range(1, 101):\n"
        "    ring.append(seq, b'payload-%d' % seq)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent, timeout=30)
    assert result.returncode == -signal.SIGKILL
    ring = MessageRing(64, RingFile(path, 64))
    assert ring.head == 100
    assert ring.after(99) == (None, [b"payload-100"])
    assert len(ring) == 64


def test_torn_slot_ends_the_recovered_run(tmp_path: Path) -> None:
    path = tmp_path / "BTC-PERP.ring"
    ring = MessageRing(16, RingFile(path, 16))
    _fill(ring, 1, 10)
    ring.close()
    slot_size = DEFAULT_SLOT_SIZE
    data = bytearray(path.read_bytes())
    offset = HEADER_SIZE + (7 % 16) * slot_size + SLOT_HEADER.size
    data[offset] ^= 0xFF  # seq 7's payload no longer matches its CRC
    path.write_bytes(bytes(data))

    reopened = MessageRing(16, RingFile(path, 16))
    assert reopened.head == 10
    gap, payloads = reopened.after(3)
    assert gap is not None and (gap.from_seq, gap.to_seq) == (4, 7)
    assert payloads == [f'{{"seq":{s}}}'.encode() for s in range(8, 11)]


def test_garbage_file_is_moved_aside_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "SUI-PERP.ring"
    path.write_bytes(os.urandom(5000))
    ring = MessageRing(8, RingFile(path, 8))
    assert ring.head == 0 and len(ring) == 0
    assert any(p.name.startswith("SUI-PERP.ring.corrupt-") for p in tmp_path.iterdir())
    assert "unreadable ring file" in caplog.text
    ring.append(1, b"fresh")
    assert MessageRing(8, RingFile(path, 8)).after(0) == (None, [b"fresh"])


def test_capacity_change_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "ETH-PERP.ring"
    ring = MessageRing(32, RingFile(path, 32))
    _fill(ring, 1, 30)
    ring.close()
    smaller = MessageRing(8, RingFile(path, 8))
    assert smaller.head == 30
    assert smaller.oldest == 23


def test_oversized_message_is_served_live_but_not_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "ETH-PERP.ring"
    ring = MessageRing(16, RingFile(path, 16))
    _fill(ring, 1, 3)
    ring.append(4, b"x" * 5000)
    _fill(ring, 5, 6)
    assert ring.after(3)[1][0] == b"x" * 5000  # in memory it is there
    ring.close()
    reopened = MessageRing(16, RingFile(path, 16))
    gap, payloads = reopened.after(2)
    assert gap is not None and (gap.from_seq, gap.to_seq) == (3, 4)
    assert len(payloads) == 2


def test_second_service_on_same_data_dir_is_refused(tmp_path: Path) -> None:
    lock = DirectoryLock(tmp_path)
    with pytest.raises(ConfigError, match="DATA_DIR"):
        DirectoryLock(tmp_path)
    lock.release()
    DirectoryLock(tmp_path).release()


async def test_service_killed_and_restarted_replays_what_client_missed(start_service) -> None:
    service = start_service(STREAM_INTERVAL_SECONDS="0.005", TRADE_FREQUENCY="0.01", SYMBOLS="ETH-PERP")
    seqs: list[int] = []
    prices: list[float] = []
    async with websockets.connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        while len(seqs) < 50:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if "seq" in message:
                seqs.append(message["seq"])
                prices.append(message["data"]["price"])
    service.kill()  # messages published after our last read are now only in the ring file
    service.start()
    async with websockets.connect(f"{service.ws_url}/ws/ETH-PERP?last_seq={seqs[-1]}") as ws:
        while len(seqs) < 200:
            message = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["type"] != "gap", message
            if "seq" in message:
                seqs.append(message["seq"])
                prices.append(message["data"]["price"])
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    # the mock market carries on from its last price instead of jumping back to its start price
    assert max(abs(b - a) / a for a, b in itertools.pairwise(prices)) < 0.005
