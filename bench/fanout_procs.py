"""Processes for ``bench/fanout.py``: the servers under test and the load-generator processes.

Every server binds 127.0.0.1 on a free port and prints ``listening on http://127.0.0.1:PORT``; each is fed the
same mock tick schedule (see ``fanout_baselines/_feed.py``). Everything started here is stopped by its handle.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BASELINES = BENCH / "fanout_baselines"
SEED = 7
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# Our service as shipped, and variants that switch parts off to attribute their cost (not in the default run).
OURS_VARIANTS: dict[str, dict[str, str]] = {
    "ours": {},
    "ours-lean": {"RECORD": "false", "RING_PERSIST": "false"},
    "ours-norecord": {"RECORD": "false"},
    "ours-noring": {"RING_PERSIST": "false"},
    # the resume ring's mmap'd files on tmpfs, the SQLite store still on disk
    "ours-shmring": {"DATA_DIR": "{shm}", "STORE_URL": "sqlite:///{work}/ticks.db"},
}


def per_symbol_interval(rate: float, symbols: int) -> float:
    """Same split as the baselines' feed: price interval = mean trade interval, half the ticks trades."""
    return 2.0 * symbols / rate


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _ksoftirqd_seconds() -> float:
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(ksoftirqd/" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _CLK_TCK
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine spent in processes and in network interrupt work, from /proc.

    Loopback TCP's receive work runs as softirq, charged to no process, or in the ksoftirqd threads when there
    is a lot of it: both are counted as interrupt work (ours, mostly), the rest as processes.
    """
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    threads = _ksoftirqd_seconds()
    return (user + nice + system + steal) / _CLK_TCK - threads, (irq + softirq) / _CLK_TCK + threads


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def node_available() -> bool:
    """True when node runs and ``ws`` is installed in bench/node_modules (installing it there if needed)."""
    if shutil.which("node") is None:
        return False
    if (BENCH / "node_modules" / "ws").is_dir():
        return True
    if shutil.which("npm") is None:
        return False
    done = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=BENCH, capture_output=True, timeout=180
    )
    return done.returncode == 0 and (BENCH / "node_modules" / "ws").is_dir()


@dataclass
class Server:
    """A server under test; ``pid`` is the fan-out process, ``helper_pid`` the Node feeder if any."""

    kind: str
    procs: list[subprocess.Popen[bytes]]
    port: int = 0
    output: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=200))
    workdirs: list[tempfile.TemporaryDirectory[str]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.procs[-1].pid

    @property
    def helper_pid(self) -> int | None:
        return self.procs[0].pid if len(self.procs) > 1 else None

    def cpu(self) -> tuple[float, float]:
        helper = self.helper_pid
        return cpu_seconds(self.pid), cpu_seconds(helper) if helper else 0.0

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait for the listening line and (baselines) the feed's ``feed ready``; pause our service's feed."""
        listening, feed_ready = threading.Event(), threading.Event()
        for proc in self.procs:
            stream = proc.stdout if proc is self.procs[-1] else proc.stderr
            threading.Thread(target=self._drain, args=(stream, listening, feed_ready), daemon=True).start()
        deadline = time.monotonic() + timeout
        needs_feed = not self.kind.startswith("ours")
        ok = listening.wait(timeout) and (not needs_feed or feed_ready.wait(max(0.0, deadline - time.monotonic())))
        if not ok:
            self.stop()
            raise RuntimeError(f"{self.kind} did not start:\n" + "\n".join(self.output))
        if self.kind.startswith("ours"):
            self._post("/streaming/stop")

    def _drain(self, stream: IO[bytes] | None, listening: threading.Event, feed_ready: threading.Event) -> None:
        for raw in stream or ():
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            match = _LISTENING.search(line)
            if match and not listening.is_set():
                self.port = int(match.group(1))
                listening.set()
            if line == "feed ready":
                feed_ready.set()

    def _post(self, path: str) -> None:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def start_feed(self) -> None:
        """Start the tick schedule (called once every client is connected)."""
        if self.kind.startswith("ours"):
            self._post("/streaming/start")
        else:
            os.kill(self.procs[0].pid, signal.SIGUSR1)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for workdir in self.workdirs:
            workdir.cleanup()
        self.workdirs.clear()


def start_server(kind: str, symbols: list[str], rate: float) -> Server:
    """``kind``: ours, ours-lean, websockets, node, raw, raw-batched. ``rate``: aggregate ticks/s over all symbols."""
    python = sys.executable
    common = ["--port", "0", "--symbols", ",".join(symbols), "--rate", str(rate), "--seed", str(SEED)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
    out = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    if kind in OURS_VARIANTS:
        interval = f"{per_symbol_interval(rate, len(symbols)):.6g}"
        env.update(
            DRY_RUN="true",
            SYMBOLS=",".join(symbols),
            STREAM_INTERVAL_SECONDS=interval,
            TRADE_FREQUENCY=interval,
            MOCK_SEED=str(SEED),
            MOCK_BACKFILL_SECONDS="0",  # no burst of generated history before the measured feed
            LOG_LEVEL="WARNING",
            HEARTBEAT_INTERVAL_SECONDS="30",
        )
        workdir = tempfile.TemporaryDirectory(prefix="fanout-ours-")  # no stray .env; data/ lands here
        shm = tempfile.TemporaryDirectory(prefix="fanout-ours-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
        for name, value in OURS_VARIANTS[kind].items():
            env[name] = value.format(work=workdir.name, shm=shm.name)
        cmd = [python, "-m", "bluefin_service", "--host", "127.0.0.1", "--port", "0"]
        server = Server(kind, [subprocess.Popen(cmd, cwd=workdir.name, env=env, **out)], workdirs=[workdir, shm])
    elif kind in ("websockets", "raw", "raw-batched"):
        script = "websockets_server.py" if kind == "websockets" else "raw_server.py"
        extra = ["--coalesce"] if kind == "raw-batched" else []
        cmd = [python, str(BASELINES / script), *common, *extra]
        server = Server(kind, [subprocess.Popen(cmd, cwd=REPO, env=env, **out)])
    elif kind == "node":
        feeder = subprocess.Popen(
            [python, str(BASELINES / "feeder.py"), *common],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        node = subprocess.Popen(
            ["node", str(BASELINES / "ws_server.js"), *common], cwd=BENCH, stdin=feeder.stdout, **out
        )
        assert feeder.stdout is not None
        feeder.stdout.close()  # node owns the read end now
        server = Server(kind, [feeder, node])
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    server.wait_ready()
    return server


class Loaders:
    """``count`` load-generator processes (``fanout_loader.py``) sharing the clients of a phase."""

    def __init__(self, count: int) -> None:
        cmd = [sys.executable, str(BENCH / "fanout_loader.py")]
        self.procs = [
            subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO, text=True)
            for _ in range(count)
        ]

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def ask_all(self, commands: list[dict[str, object]]) -> list[dict[str, object]]:
        """Send one command to each loader (all at once), then collect every reply."""
        for proc, command in zip(self.procs, commands, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(command) + "\n")
            proc.stdin.flush()
        replies = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("a load generator exited")
            replies.append(json.loads(line))
        return replies

    def ask(self, command: dict[str, object]) -> list[dict[str, object]]:
        return self.ask_all([dict(command) for _ in self.procs])

    def _shares(self, total: int) -> list[int]:
        return [total // len(self.procs) + (1 if i < total % len(self.procs) else 0) for i in range(len(self.procs))]

    def connect(self, port: int, path: str, total: int, probes: int = 0) -> tuple[int, float, str | None]:
        """``total`` clients, ``probes`` of them latency probes; returns (connected, seconds, first failure)."""
        started = time.monotonic()
        replies = self.ask_all(
            [{"cmd": "connect", "port": port, "path": path, "count": n} for n in self._shares(total - probes)]
        )
        if probes:
            replies += self.ask_all(
                [{"cmd": "probes", "port": port, "path": path, "count": n} for n in self._shares(probes)]
            )
        failure = next((r["first_failure"] for r in replies if r["first_failure"]), None)
        return sum(int(r["connected"]) for r in replies), time.monotonic() - started, failure  # type: ignore[call-overload]

    def close(self) -> None:
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
