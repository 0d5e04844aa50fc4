"""A latency probe for the service's WebSocket fan-out, for the benchmarks.

``stamped_client`` times each tick from its own timestamp to the kernel's receive timestamp of the TCP segment
that carried it (``SO_TIMESTAMPNS``), so a co-located measuring client's own CPU contention does not count as
fan-out latency; it also reports when this process read the tick, and the CPU the service, its children and
this process used meanwhile. Linux only (``/proc``, ``SO_TIMESTAMPNS``).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from pathlib import Path

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the module lacks the name on 3.11


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pids(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(child) for child in (task / "children").read_text().split()]
    return pids


def stamped_client(
    port: int, path: str, service_pid: int, warm: float, seconds: float
) -> tuple[list[float], list[float], dict[int, float]]:
    """A plain-socket WebSocket client; for every price update, ms from the tick's timestamp to (a) the kernel's
    receive timestamp of the TCP segment that carried it (SO_TIMESTAMPNS: the fan-out's latency, whatever this
    client's own scheduling) and (b) this process reading it (what a co-located Python client sees). Small reads,
    so a timestamp belongs to the segment being read. Also returns CPU % of a core per process over the window."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())  # fmt: skip
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(4096)
    buffer = buffer.split(b"\r\n\r\n", 1)[1]
    arrival: list[float] = []
    app: list[float] = []
    warm_until = time.time() + warm
    end = warm_until + seconds
    cpu_start: dict[int, float] = {}
    window_start = 0.0
    stamp = 0.0
    while time.time() < end:
        data, ancillary, _flags, _addr = sock.recvmsg(512, socket.CMSG_SPACE(16))
        if not data:
            break
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                stamp = sec + nsec * 1e-9
        buffer += data
        while len(buffer) >= 2:  # server frames are unmasked; 2-byte or 16-bit lengths at these sizes
            length, offset = buffer[1] & 0x7F, 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, offset = struct.unpack("!H", buffer[2:4])[0], 4
            if len(buffer) < offset + length:
                break
            payload, buffer = buffer[offset : offset + length], buffer[offset + length :]
            if not payload.startswith(b'{"type":"price_update"'):
                continue
            now = time.time()
            if now < warm_until:
                continue
            if not cpu_start:
                cpu_start = {pid: cpu_seconds(pid) for pid in [service_pid, *child_pids(service_pid), os.getpid()]}
                window_start = now
            timestamp = json.loads(payload)["timestamp"]
            arrival.append((stamp - timestamp) * 1000)
            app.append((now - timestamp) * 1000)
    window = time.time() - window_start
    cpu = {pid: 100 * (cpu_seconds(pid) - used) / window for pid, used in cpu_start.items()}
    sock.close()
    return arrival, app, cpu
