"""The fan-out bench's client load generator: lean asyncio WebSocket clients in one process.

Driven by ``bench/fanout.py`` over stdin/stdout, one JSON object a line:
``{"cmd": "connect", "port": P, "path": "/ws/multi/...", "count": N}`` -> how many connected;
``{"cmd": "mark"}`` -> messages received so far and this process's clock and CPU time;
``{"cmd": "probes", "port": P, "path": "/ws/multi/...", "count": N}`` -> N more clients that record latency;
``{"cmd": "latency", "on": true|false}`` -> start/stop recording tick->client latency, off returns the samples;
``{"cmd": "state"}`` -> connections open and closed by the server (with their close codes);
``{"cmd": "close"}`` -> closes every connection. EOF on stdin ends the process.

Each client does the handshake itself and walks the frame headers of what arrives without copying payloads.
Probe clients also read each market message's ``timestamp`` (its generation time in the server) and compare it
with two clocks: the kernel's receive timestamp of the bytes (``SO_TIMESTAMPNS``: the server's share of the
delay) and ``time.time()`` when this process got to them (adds the load generator's own queueing, which on a
shared 2-core machine is milliseconds). Loopback only: it connects to 127.0.0.1.
"""

from __future__ import annotations

import array
import asyncio
import base64
import json
import os
import socket
import struct
import sys
import time

import uvloop

HOST = "127.0.0.1"
MAX_LATENCY_SAMPLES = 2_000_000  # when full, further samples are counted but not kept
HANDSHAKE_TIMEOUT = 20.0
_MARKET_PREFIXES = (b'{"type":"price_update"', b'{"type":"trade"')
_TIMESTAMP = b'"timestamp":'
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not export it
_TIMESPEC = struct.Struct("@qq")


class Stats:
    def __init__(self) -> None:
        self.messages = 0
        self.latency_on = False
        self.latencies = array.array("d")  # kernel receive time - tick timestamp
        self.app_latencies = array.array("d")  # time this process read it - tick timestamp
        self.latency_overflow = 0
        self.close_codes: dict[int, int] = {}
        self.lost = 0


class WsClient(asyncio.Protocol):
    __slots__ = ("buf", "handshake", "opened", "request", "stats", "transport")
    probe = False

    def __init__(self, stats: Stats, request: bytes, opened: asyncio.Future[bool]) -> None:
        self.stats = stats
        self.request = request
        self.opened = opened
        self.transport: asyncio.Transport | None = None
        self.handshake = True
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass asyncio's
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)
        elif not self.handshake:
            self.stats.lost += 1
        self.handshake = True  # counted once

    def data_received(self, data: bytes) -> None:
        if self.handshake:
            self._handshake(data)
        else:
            self._frames(self.buf + data if self.buf else data, time.time())

    def _handshake(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        ok = self.buf.startswith(b"HTTP/1.1 101")
        rest, self.buf = self.buf[end + 4 :], b""
        if not self.opened.done():
            self.opened.set_result(ok)
        if not ok:
            assert self.transport is not None
            self.transport.close()
            return
        self.handshake = False
        if rest:
            self._frames(rest, time.time())

    def _frames(self, buf: bytes, now: float) -> None:
        stats = self.stats
        record = stats.latency_on and self.probe
        size = len(buf)
        pos = 0
        count = 0
        while size - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                head = 10
            if buf[pos + 1] & 0x80:
                head += 4  # a masked server frame is a protocol error, but skip it correctly anyway
            end = pos + head + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode < 3:
                count += 1
                if record and buf.startswith(_MARKET_PREFIXES, pos + head):
                    self._latency(buf, pos + head, end, now)
            elif opcode == 8:
                code = (buf[pos + head] << 8) | buf[pos + head + 1] if length >= 2 else 1005
                stats.close_codes[code] = stats.close_codes.get(code, 0) + 1
                assert self.transport is not None
                self.transport.close()
                self.handshake = True
                return
            elif opcode == 9:
                self._pong(buf[pos + head : end])
            pos = end
        stats.messages += count
        self.buf = buf[pos:] if pos < size else b""

    def _latency(self, buf: bytes, start: int, end: int, now: float) -> None:
        pass

    def _pong(self, payload: bytes) -> None:
        assert self.transport is not None
        # A client frame must be masked; a zero mask key leaves the payload as it is.
        self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\x00\x00\x00\x00" + payload)


class ProbeClient(WsClient):
    """A client on a plain non-blocking socket read with ``recvmsg``, for the kernel's receive timestamps."""

    __slots__ = ("app_now", "sock")
    probe = True

    def __init__(self, stats: Stats, sock: socket.socket, leftover: bytes) -> None:
        loop = asyncio.get_running_loop()
        super().__init__(stats, b"", loop.create_future())
        self.sock = sock
        self.handshake = False
        self.buf = leftover
        self.app_now = 0.0
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self.on_readable)

    def on_readable(self) -> None:
        try:
            data, ancillary, _flags, _addr = self.sock.recvmsg(1 << 18, 256)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        if not data:
            self.stop()
            if not self.handshake:
                self.stats.lost += 1
            self.handshake = True
            return
        self.app_now = time.time()
        kernel = self.app_now
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                seconds, nanos = _TIMESPEC.unpack_from(payload)
                kernel = seconds + nanos * 1e-9
        self._frames(self.buf + data if self.buf else data, kernel)

    def _latency(self, buf: bytes, start: int, end: int, now: float) -> None:
        stats = self.stats
        at = buf.find(_TIMESTAMP, start, end)
        if at < 0:
            return
        at += len(_TIMESTAMP)
        stamp = float(buf[at : buf.find(b",", at, end)])
        if len(stats.latencies) < MAX_LATENCY_SAMPLES:
            stats.latencies.append(now - stamp)
            stats.app_latencies.append(self.app_now - stamp)
        else:
            stats.latency_overflow += 1

    def stop(self) -> None:
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


def open_probe(stats: Stats, port: int, request: bytes) -> ProbeClient | None:
    """Connect and shake hands on a blocking socket (before the feed starts), then hand it to the loop."""
    sock = socket.create_connection((HOST, port), timeout=HANDSHAKE_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(request)
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(65536)
        if not chunk:
            sock.close()
            return None
        reply += chunk
    if not reply.startswith(b"HTTP/1.1 101"):
        sock.close()
        return None
    return ProbeClient(stats, sock, reply.split(b"\r\n\r\n", 1)[1])


class Loader:
    def __init__(self) -> None:
        self.stats = Stats()
        self.clients: list[WsClient] = []

    @staticmethod
    def request(port: int, path: str) -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def probes(self, port: int, path: str, count: int) -> dict[str, object]:
        opened = 0
        for _ in range(count):
            probe = open_probe(self.stats, port, self.request(port, path))
            if probe is not None:
                self.clients.append(probe)
                opened += 1
        return {"connected": opened, "failed": count - opened, "first_failure": None if opened == count else "probe"}

    async def connect(self, port: int, path: str, count: int, concurrency: int = 200) -> dict[str, object]:
        loop = asyncio.get_running_loop()
        request = self.request(port, path)
        gate = asyncio.Semaphore(concurrency)
        failures: list[str] = []

        async def one() -> None:
            async with gate:
                opened: asyncio.Future[bool] = loop.create_future()
                try:
                    _, client = await loop.create_connection(lambda: WsClient(self.stats, request, opened), HOST, port)
                    ok = await asyncio.wait_for(opened, HANDSHAKE_TIMEOUT)
                except (OSError, TimeoutError) as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    return
                if ok:
                    self.clients.append(client)
                else:
                    failures.append("handshake refused")

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        return {
            "connected": count - len(failures),
            "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "seconds": round(time.monotonic() - started, 3),
        }

    def mark(self) -> dict[str, object]:
        cpu = os.times()
        return {"messages": self.stats.messages, "time": time.monotonic(), "cpu": cpu.user + cpu.system}

    def latency(self, on: bool) -> dict[str, object]:
        stats = self.stats
        stats.latency_on = on
        if on:
            stats.latencies, stats.app_latencies = array.array("d"), array.array("d")
            stats.latency_overflow = 0
            return {"on": True}
        return {
            "on": False,
            "samples": base64.b64encode(stats.latencies.tobytes()).decode(),
            "app_samples": base64.b64encode(stats.app_latencies.tobytes()).decode(),
            "overflow": stats.latency_overflow,
        }

    def state(self) -> dict[str, object]:
        open_clients = sum(1 for c in self.clients if not c.handshake)
        return {"open": open_clients, "lost": self.stats.lost, "close_codes": self.stats.close_codes}

    async def close(self) -> dict[str, object]:
        for client in self.clients:
            if isinstance(client, ProbeClient):
                client.stop()
            elif client.transport is not None:
                client.transport.abort()
        self.clients.clear()
        self.stats = Stats()
        await asyncio.sleep(0)
        return {"closed": True}


async def serve_commands() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    loader = Loader()
    while line := await reader.readline():
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "connect":
            reply = await loader.connect(**command)
        elif name == "probes":
            reply = loader.probes(**command)
        elif name == "mark":
            reply = loader.mark()
        elif name == "latency":
            reply = loader.latency(bool(command["on"]))
        elif name == "state":
            reply = loader.state()
        elif name == "close":
            reply = await loader.close()
        else:
            reply = {"error": f"unknown command {name!r}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    uvloop.run(serve_commands())
