"""The recorder's writer process: stores batches outside the service's interpreter.

Storing runs in a child process so that the database's own work (page writes, checkpoints, fsyncs; for
PostgreSQL, building the COPY rows) never holds the service's GIL: when it decoded and inserted one row per tick
in a thread of the service, fan-out p99 was 25x worse at 100k ticks/s. The service's part is encoding each
chunk's events (MessagePack, in C) and copying it into a non-blocking pipe, on the event loop a chunk at a time,
yielding between chunks (from a worker thread instead, the join over a whole batch held the GIL, and the loop
waited for it: p99 at 50k ticks/s 1.28 ms vs 0.61 ms).

The child leaves the service's process group (a Ctrl-C or group signal must not kill it before the final flush)
but stays in its session, at nice 19. Under the kernel's autogroup scheduling every session is a CPU group of
equal weight whatever its nice value, so a child in a session of its own got as much CPU as the whole service
whenever it decoded a batch: fan-out p99 4.4x worse at 50k ticks/s (0.85 -> 3.75 ms).

Pipe protocol (child's stdin/stdout): parent -> child, per batch, one frame per chunk (one symbol's ticks): a
``!BHII`` header (kind 1, symbol bytes, ticks, trade-id bytes), the symbol, then the block's columns (seqs,
timestamps, prices, sizes: 8 bytes a tick each; flags: 1; the trade ids); then, if any, one frame of order-book
snapshots (kind 2, 0, count, bytes; MessagePack ``[[symbol, ts, version, payload], ...]``); ended by an all-zero
header; child -> parent one JSON line per batch, ``{"stored": n, "undecodable": m}`` or ``{"error": "..."}``. The
child opens the store on its first batch (and again after a failure) and exits when its stdin closes, so a
killed service never leaves it writing forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import struct
import sys

import msgspec

from bluefin_service.store import BookRow, StoreError, TickRow, open_store, redact
from bluefin_service.store.sqlite import SqliteStore
from marketdata.tick_blocks import Block, ChunkColumns, CorruptBlock, block_rows, make_block

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!BHII")  # frame kind, symbol bytes, count, last part's bytes
_END, _TICKS, _BOOKS = 0, 1, 2
_encode_books = msgspec.msgpack.Encoder().encode
_decode_books = msgspec.msgpack.Decoder(list[tuple[str, float, int, bytes]]).decode
REPLY_TIMEOUT = 120.0  # a batch is normally milliseconds; this only catches a hung database


class WriterProcess:
    """The parent's handle on the writer child. ``write`` raises StoreError when the batch was not stored."""

    def __init__(self, url: str, reply_timeout: float = REPLY_TIMEOUT) -> None:
        self.url = url
        self.reply_timeout = reply_timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._stdin: int | None = None  # our end of the child's stdin (non-blocking, written from the loop)
        self._sending: asyncio.Future[None] | None = None
        self._unread_replies = 0  # batches sent whose reply a cancelled write did not read

    async def start(self) -> None:
        await self._ensure()

    async def _ensure(self) -> asyncio.subprocess.Process:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            await self._kill()
            read_end, write_end = os.pipe()
            _widen_pipe(write_end)
            os.set_blocking(write_end, False)
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bluefin_service.store.writer", self.url,
                    stdin=read_end, stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
            except BaseException:
                os.close(write_end)
                raise
            finally:
                os.close(read_end)
            self._proc, self._stdin, self._unread_replies = proc, write_end, 0
        return proc

    async def write(self, chunks: list[ChunkColumns], books: list[BookRow] | None = None) -> int:
        """Store one batch of chunks (all or nothing); returns how many ticks could not be stored as sent."""
        proc = await self._ensure()
        assert proc.stdout is not None and self._stdin is not None
        try:
            if self._sending is not None:  # a cancelled write's bytes must be whole in the pipe before ours
                await asyncio.wait_for(asyncio.shield(self._sending), self.reply_timeout)
            while self._unread_replies:
                await asyncio.wait_for(proc.stdout.readline(), self.reply_timeout)
                self._unread_replies -= 1
            self._unread_replies += 1
            self._sending = asyncio.ensure_future(_send(self._stdin, chunks, books or []))
            await asyncio.wait_for(asyncio.shield(self._sending), self.reply_timeout)
            self._sending = None
            line = await asyncio.wait_for(proc.stdout.readline(), self.reply_timeout)
            self._unread_replies -= 1
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
        await self._release_pipe()

    async def _release_pipe(self) -> None:
        sending, self._sending = self._sending, None
        if sending is not None:
            sending.cancel()  # the pipe is being dropped: a half-sent batch goes with it (it is retried whole)
            await asyncio.wait([sending])  # its writer callback must be removed before the fd is closed
        fd, self._stdin = self._stdin, None
        if fd is not None:
            os.close(fd)

    async def close(self, wait: float = 2.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            await self._release_pipe()
            return
        if self._sending is not None and proc.returncode is None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._sending), wait)
        fd, self._stdin = self._stdin, None
        if fd is not None:
            os.close(fd)  # the child sees end of input, finishes its batch and exits
        try:
            await asyncio.wait_for(proc.wait(), wait)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await self._release_pipe()


async def _send(fd: int, chunks: list[ChunkColumns], books: list[BookRow]) -> None:
    """Write one batch a framed chunk at a time, yielding to the loop after each (and while the pipe is full)."""
    for chunk in chunks:
        symbol = chunk.symbol.encode()
        columns = chunk.parts()
        head = _HEADER.pack(_TICKS, len(symbol), len(chunk), len(columns[-1]))
        await _write_all(fd, b"".join((head, symbol, *columns)))
        await asyncio.sleep(0)
    if books:
        encoded = _encode_books(books)
        await _write_all(fd, _HEADER.pack(_BOOKS, 0, len(books), len(encoded)) + encoded)
    await _write_all(fd, _HEADER.pack(_END, 0, 0, 0))


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _writable(fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_writer(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _widen_pipe(fd: int) -> None:
    """A 1 MiB pipe instead of 64 KiB: fewer, larger writes for a 50k-tick batch (~7 MB)."""
    setsize = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setsize is None:
        return
    for size in (1 << 20, 1 << 18):  # the system's pipe-max-size may be lower than 1 MiB
        try:
            fcntl.fcntl(fd, setsize, size)
            return
        except OSError:
            continue


# -- the child --------------------------------------------------------------------------------------------------
def _read_exact(stream: object, size: int) -> bytes:
    chunks = []
    while size:
        chunk = stream.read(size)  # type: ignore[attr-defined]
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_batch(stream: object) -> tuple[list[Block], list[BookRow], int]:
    """One batch up to the end marker: (tick blocks, book snapshots, ticks that did not make a block)."""
    blocks: list[Block] = []
    books: list[BookRow] = []
    bad = 0
    while True:
        kind, symbol_size, n, ids_size = _HEADER.unpack(_read_exact(stream, _HEADER.size))
        if kind == _END:
            return blocks, books, bad
        if kind == _BOOKS:
            books += map(BookRow._make, _decode_books(_read_exact(stream, ids_size)))
            continue
        symbol = _read_exact(stream, symbol_size).decode("utf-8", "replace")
        columns = [_read_exact(stream, 8 * n) for _ in range(4)]  # seqs, stamps, prices, sizes
        flags = _read_exact(stream, n)
        trade_ids = _read_exact(stream, ids_size)
        try:
            blocks.append(make_block(symbol, *columns, flags, trade_ids))
        except CorruptBlock:
            bad += n


async def _serve(url: str) -> None:
    store = open_store(url)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            blocks, books, bad = await asyncio.to_thread(_read_batch, stdin)
        except EOFError:
            break
        try:
            if not store.is_open:
                await store.open()
            if isinstance(store, SqliteStore):
                store.write_blocks_sync(blocks)  # as they came: the writer decodes nothing
                if books:
                    store.write_books_sync(books)
            else:
                if books:
                    await store.write_books(books)
                rows: list[TickRow] = []
                for block in blocks:
                    try:
                        found, invalid = block_rows(block)
                    except CorruptBlock:
                        bad += block.n
                        continue
                    rows += map(TickRow._make, found)
                    bad += invalid
                if rows:
                    await store.write(rows)
            reply = {"stored": sum(block.n for block in blocks), "undecodable": bad}
        except Exception as exc:  # reported to the recorder, which logs, backs off and retries the batch
            reply = {"error": f"{type(exc).__name__}: {exc}"}
            if not isinstance(exc, StoreError):
                with contextlib.suppress(Exception):
                    await store.close()  # reconnect on the next batch
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()
    await store.close()


def _run_in_the_background() -> None:
    """Storage is background work: the lowest normal priority (nice 19), so the fan-out goes first.

    Fan-out p99 on two cores at 100k ticks/s, medians of four runs in one session: unrecorded 0.24 ms, writer at
    nice 10 2.18 ms, at nice 19 1.03 ms (at 50k: 0.15 / 0.28 / 0.27). SCHED_IDLE measured about the same as nice
    19 but is not used: with two CPU-bound processes of normal priority on the machine an idle-priority writer got
    no CPU at all and recording stopped (the read-only-store recovery test failed); at nice 19 it still gets a
    small share and catches up."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, 19)


def main() -> None:
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # a group of its own, in the service's session (see the module docstring)
    _run_in_the_background()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s store-writer: %(message)s")
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        asyncio.run(_serve(sys.argv[1]))


if __name__ == "__main__":
    main()
