"""A memory-mapped file behind each symbol's resume ring, so a restart (even ``kill -9``) loses nothing it held.

Writes to a shared file mapping land in the kernel's page cache at once, so they outlive the process without
an fsync; what they do not survive is a power cut, which is the store's job. Layout::

    header  64 bytes   magic "BFRING01", slot size (u32), capacity (u32)
    slots   capacity x slot size, slot i holds the message with seq % capacity == i:
            seq (u64) | length (u32) | crc32 of seq+payload (u32) | payload

A torn slot (killed mid-copy) fails its CRC and ends the recovered run there. A message too large for a slot
is kept in memory only; after a restart the replayable run starts after it.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
import zlib
from pathlib import Path

from marketdata.errors import ConfigError

log = logging.getLogger(__name__)

MAGIC = b"BFRING01"
HEADER = struct.Struct("<8sII")
HEADER_SIZE = 64
SLOT_HEADER = struct.Struct("<QII")
DEFAULT_SLOT_SIZE = 512  # a trade is ~170 bytes, a candle ~380


class RingFile:
    def __init__(self, path: Path, capacity: int, slot_size: int = DEFAULT_SLOT_SIZE) -> None:
        self.path = path
        self.capacity = capacity
        self.slot_size = slot_size
        self.max_payload = slot_size - SLOT_HEADER.size
        self.recovered = self._read_existing()[-capacity:]
        self._map = self._create(self.recovered)

    def _read_existing(self) -> list[tuple[int, bytes]]:
        """The longest run of valid, contiguous messages ending at the newest one; empty if none."""
        if not self.path.exists():
            return []
        try:
            data = self.path.read_bytes()
            magic, slot_size, capacity = HEADER.unpack_from(data, 0)
            if magic != MAGIC or slot_size < SLOT_HEADER.size or len(data) != HEADER_SIZE + slot_size * capacity:
                raise ValueError("bad header or size")
        except (OSError, ValueError, struct.error) as exc:
            self._quarantine(f"unreadable ring file ({exc})")
            return []
        by_seq: dict[int, bytes] = {}
        for index in range(capacity):
            offset = HEADER_SIZE + index * slot_size
            seq, length, crc = SLOT_HEADER.unpack_from(data, offset)
            if seq == 0 or length > slot_size - SLOT_HEADER.size:
                continue
            payload = data[offset + SLOT_HEADER.size : offset + SLOT_HEADER.size + length]
            if zlib.crc32(payload, seq & 0xFFFFFFFF) == crc and seq % capacity == index:
                by_seq[seq] = payload
        if not by_seq:
            return []
        head = max(by_seq)
        run: list[tuple[int, bytes]] = []
        seq = head
        while seq in by_seq:
            run.append((seq, by_seq[seq]))
            seq -= 1
        run.reverse()
        return run

    def _quarantine(self, why: str) -> None:
        target = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        log.error("%s: %s; moved aside to %s and starting an empty ring", self.path, why, target.name)
        os.replace(self.path, target)

    def _create(self, entries: list[tuple[int, bytes]]) -> mmap.mmap:
        """Build the new file beside the old one with ``entries`` in it, then swap it in atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        size = HEADER_SIZE + self.slot_size * self.capacity
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w+b") as handle:
            # Allocate every block now: a write through the mapping into a hole would have to allocate on the
            # event loop, and on a full disk it would kill the process with SIGBUS instead of failing here.
            os.posix_fallocate(handle.fileno(), 0, size)
            handle.write(HEADER.pack(MAGIC, self.slot_size, self.capacity))
            handle.flush()
            self._map = mmap.mmap(handle.fileno(), size)
        for seq, payload in entries:
            self.write(seq, payload)
        self._map.flush()
        os.replace(tmp, self.path)
        return self._map

    def write(self, seq: int, payload: bytes) -> None:
        offset = HEADER_SIZE + (seq % self.capacity) * self.slot_size
        if len(payload) > self.max_payload:
            SLOT_HEADER.pack_into(self._map, offset, 0, 0, 0)  # this seq cannot be replayed after a restart
            return
        start = offset + SLOT_HEADER.size
        self._map[start : start + len(payload)] = payload
        SLOT_HEADER.pack_into(self._map, offset, seq, len(payload), zlib.crc32(payload, seq & 0xFFFFFFFF))

    def close(self) -> None:
        if not self._map.closed:
            self._map.flush()
            self._map.close()


class DirectoryLock:
    """An exclusive lock on a data directory, so two services never write the same ring files."""

    def __init__(self, directory: Path) -> None:
        import fcntl

        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "service.lock"
        self._handle = open(self.path, "a+")  # noqa: SIM115 - held for the service's lifetime
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._handle.close()
            raise ConfigError(f"another bluefin service is using {directory}; give this one its own DATA_DIR") from None

    def release(self) -> None:
        self._handle.close()
