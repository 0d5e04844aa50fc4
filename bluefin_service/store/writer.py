"""The recorder's writer process: decodes and stores batches outside the service's interpreter.

Decoding and inserting 100,000 ticks/s is about half a core of Python; in a thread of the service it would
take that from the fan-out under the GIL (measured: fan-out p99 25x worse at 100k ticks/s). In a child
process it costs the service one ``join`` and a pipe write per flush.

Pipe protocol (child's stdin/stdout): parent -> child ``!I`` length + wire payloads joined with ``\\n`` (the
JSON encoder never emits a raw newline); child -> parent one JSON line per batch, ``{"stored": n,
"undecodable": m}`` or ``{"error": "..."}``. The child opens the store on its first batch (and again after a
failure) and exits when its stdin closes, so a killed service never leaves it writing forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from bluefin_service.store import StoreError, TickRow, open_store, payload_rows, redact
from bluefin_service.store.sqlite import SqliteStore

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
REPLY_TIMEOUT = 120.0  # a batch is normally milliseconds; this only catches a hung database


class WriterProcess:
    """The parent's handle on the writer child. ``write`` raises StoreError when the batch was not stored."""

    def __init__(self, url: str, reply_timeout: float = REPLY_TIMEOUT) -> None:
        self.url = url
        self.reply_timeout = reply_timeout
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        await self._ensure()

    async def _ensure(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            proc = self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bluefin_service.store.writer", self.url,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C or group signal must not kill it before the final flush
            )  # fmt: skip
        return proc

    async def write(self, payloads: list[bytes]) -> int:
        """Store one batch (all or nothing); returns how many payloads could not be decoded."""
        proc = await self._ensure()
        assert proc.stdin is not None and proc.stdout is not None
        data = b"\n".join(payloads)
        try:
            proc.stdin.write(_HEADER.pack(len(data)) + data)
            await proc.stdin.drain()
            line = await asyncio.wait_for(proc.stdout.readline(), self.reply_timeout)
        except (OSError, TimeoutError) as exc:
            await self._kill()
            raise StoreError(f"writer process for {redact(self.url)} failed: {type(exc).__name__}: {exc}") from exc
        if not line:
            await self._kill()
            raise StoreError(f"writer process for {redact(self.url)} exited unexpectedly")
        reply = json.loads(line)
        if "error" in reply:
            raise StoreError(reply["error"])
        return int(reply["undecodable"])

    async def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()

    async def close(self, wait: float = 2.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), wait)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# -- the child --------------------------------------------------------------------------------------------------
CHUNK = 20_000


def _decoded_chunks(payloads: list[bytes], counts: list[int]) -> Iterator[list[TickRow]]:
    """Rows chunk by chunk, decoding the next chunk in a thread while SQLite inserts this one (it releases the
    GIL inside its B-tree work), which overlaps the two halves of the cost."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(payload_rows, payloads[:CHUNK])
        for offset in range(CHUNK, len(payloads) + CHUNK, CHUNK):
            rows, bad = pending.result()
            if offset < len(payloads):
                pending = pool.submit(payload_rows, payloads[offset : offset + CHUNK])
            counts[0] += len(rows)
            counts[1] += bad
            yield rows


def _read_exact(stream: object, size: int) -> bytes:
    chunks = []
    while size:
        chunk = stream.read(size)  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


async def _serve(url: str) -> None:
    store = open_store(url)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            header = await asyncio.to_thread(_read_exact, stdin, _HEADER.size)
            data = await asyncio.to_thread(_read_exact, stdin, _HEADER.unpack(header)[0])
        except EOFError:
            break
        try:
            if not store.is_open:
                await store.open()
            payloads = data.split(b"\n")
            if isinstance(store, SqliteStore):
                counts = [0, 0]
                await asyncio.to_thread(store.write_sync, _decoded_chunks(payloads, counts))
                stored, bad = counts
            else:
                rows, bad = payload_rows(payloads)
                if rows:
                    await store.write(rows)
                stored = len(rows)
            reply = {"stored": stored, "undecodable": bad}
        except Exception as exc:  # reported to the recorder, which logs, backs off and retries the batch
            reply = {"error": f"{type(exc).__name__}: {exc}"}
            if not isinstance(exc, StoreError):
                with contextlib.suppress(Exception):
                    await store.close()  # reconnect on the next batch
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()
    await store.close()


def main() -> None:
    with contextlib.suppress(OSError):
        os.nice(10)  # storage is background work: under CPU contention the fan-out process goes first
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s store-writer: %(message)s")
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(_serve(sys.argv[1]))


if __name__ == "__main__":
    main()
