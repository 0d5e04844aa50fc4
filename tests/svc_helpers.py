"""Client-side helpers for the service tests: JSON over WebSockets, HTTP, and a raw socket client.

The raw client exists for what a library client hides: a reader that stops reading, frames the library
refuses to build, and the exact close frame the server sends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import websockets

MARKET_TYPES = ("price_update", "trade", "candle")
TIMEOUT = 10.0  # generous: the machine is shared; no test waits this long when things work


# -- HTTP ------------------------------------------------------------------------------------------------
async def http(method: str, url: str) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.request(method, url) as response:
        body = await response.json(content_type=None)
        return response.status, body, dict(response.headers)


async def status(service: Any) -> dict[str, Any]:
    return (await http("GET", f"{service.http_url}/streaming/status"))[1]


async def wait_for_status(service: Any, check: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        current = await status(service)
        if check(current):
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"status never matched: {current}")
        await asyncio.sleep(0.02)


async def wait_for_seq(service: Any, symbol: str, at_least: int) -> int:
    current = await wait_for_status(service, lambda s: s["symbols"][symbol]["last_seq"] >= at_least)
    return current["symbols"][symbol]["last_seq"]


# -- websockets client -----------------------------------------------------------------------------------
def connect(url: str, **kwargs: Any) -> Any:
    kwargs.setdefault("open_timeout", TIMEOUT)
    kwargs.setdefault("compression", None)
    # An unbounded client queue: a bounded one stops reading while the test is busy elsewhere, and then the
    # client cannot see the server's close reply behind the queued ticks.
    kwargs.setdefault("max_queue", None)
    kwargs.setdefault("close_timeout", 3)
    return websockets.connect(url, **kwargs)


async def recv_json(ws: Any, timeout: float = TIMEOUT) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: Any, done: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT) -> list[dict]:
    """Every message up to and including the first for which ``done`` is true."""
    deadline = time.monotonic() + timeout
    received: list[dict[str, Any]] = []
    while True:
        message = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        received.append(message)
        if done(message):
            return received


async def recv_type(ws: Any, kind: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    return (await recv_until(ws, lambda m: m["type"] == kind, timeout))[-1]


async def collect_market(ws: Any, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """The next ``count`` market messages (other types are skipped)."""
    market: list[dict[str, Any]] = []
    await recv_until(ws, lambda m: m["type"] in MARKET_TYPES and not market.append(m) and len(market) >= count, timeout)
    return market


def assert_contiguous(messages: list[dict[str, Any]], start: int | None = None) -> None:
    """Per symbol, seqs go up by exactly one (from ``start`` if given)."""
    last: dict[str, int] = {}
    for message in messages:
        symbol, seq = message["symbol"], message["seq"]
        expected = last[symbol] + 1 if symbol in last else start
        assert expected is None or seq == expected, f"{symbol}: expected seq {expected}, got {seq}"
        last[symbol] = seq


# -- raw socket client -----------------------------------------------------------------------------------
class RawWebSocket:
    """A WebSocket client on a bare non-blocking socket: it reads only when told to."""

    def __init__(self, sock: socket.socket, leftover: bytes) -> None:
        self.sock = sock
        self.buffer = bytearray(leftover)

    @classmethod
    async def connect(cls, port: int, path: str, recv_buffer: int | None = None) -> RawWebSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if recv_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), TIMEOUT)
            assert chunk, "connection closed during handshake"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock, rest)

    async def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        mask = os.urandom(4)
        length = len(payload)
        first = (0x80 if fin else 0) | opcode
        if length < 126:
            header = struct.pack("!BB", first, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", first, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, length)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        await asyncio.get_running_loop().sock_sendall(self.sock, header + mask + masked)

    async def send_text(self, text: str) -> None:
        await self.send_frame(0x1, text.encode())

    async def _fill(self, timeout: float) -> None:
        chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 65536), timeout)
        if not chunk:
            raise ConnectionError("server closed the TCP connection")
        self.buffer += chunk

    async def recv_frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame."""
        deadline = time.monotonic() + timeout
        while True:
            parsed = self._parse()
            if parsed is not None:
                return parsed
            await self._fill(max(0.01, deadline - time.monotonic()))

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        opcode, length, offset = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, offset = struct.unpack_from("!H", buf, 2)[0], 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, offset = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < offset + length:
            return None
        payload = bytes(buf[offset : offset + length])
        del buf[: offset + length]
        return opcode, payload

    async def recv_json(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next text message as JSON; a close frame raises ``Closed`` carrying its code."""
        opcode, payload = await self.recv_frame(timeout)
        if opcode == 0x8:
            code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
            raise Closed(code, payload[2:].decode(errors="replace"))
        assert opcode == 0x1, f"unexpected opcode {opcode}"
        return json.loads(payload)

    def close(self) -> None:
        self.sock.close()


class Closed(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


# -- services shared by a module -------------------------------------------------------------------------
def shared_service(tmp_path_factory: Any, *args: str, **env: str) -> Any:
    """A service for a whole module (the ``start_service`` fixture is per test); stop it when done."""
    from conftest import RunningService, service_env

    return RunningService(service_env(**env), tmp_path_factory.mktemp("service"), list(args))


@contextlib.asynccontextmanager
async def background_reader(url: str) -> AsyncIterator[list[dict[str, Any]]]:
    """A client reading ``url`` all along; yields the list its messages land in. Fails if its stream ended early."""
    received: list[dict[str, Any]] = []
    async with connect(url) as ws:

        async def read() -> None:
            async for frame in ws:
                received.append(json.loads(frame))

        task = asyncio.create_task(read())
        try:
            yield received
            await asyncio.sleep(0.1)
            assert not task.done(), "the reader's connection ended"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
