"""Service settings as a user sets them: environment, ``.env`` in the working directory, flags."""

from __future__ import annotations

import itertools
import re
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import service_env
from svc_helpers import assert_contiguous, collect_market, connect, http, recv_type, status

REPO = Path(__file__).resolve().parent.parent
SERVICE = [sys.executable, "-m", "bluefin_service"]
LAUNCHER = [sys.executable, str(REPO / "bluefin-service" / "bluefin_service.py")]

# (command, environment, what stderr must say). Each bad value must name the variable and what it accepts.
BAD_STARTS = [
    *(
        (SERVICE, {name: value}, [f"{name}={value!r}", f"(accepts {accepts}"])
        for name, value, accepts in [
            ("STREAM_INTERVAL_SECONDS", "abc", "seconds between price updates per symbol, 0.0001 to 3600"),
            ("STREAM_INTERVAL_SECONDS", "0", "seconds between price updates per symbol, 0.0001 to 3600"),
            ("TRADE_FREQUENCY", "-1", "mean seconds between trades per symbol, 0.0001 to 3600"),
            ("PORT", "99999", "a TCP port from 0 (any free port) to 65535"),
            ("SYMBOLS", ";;", "comma-separated symbols such as ETH-PERP,BTC-PERP"),
            ("DRY_RUN", "maybe", "true or false"),
            ("HEARTBEAT_INTERVAL_SECONDS", "0", "seconds between heartbeats, 0.05 to 3600"),
            ("LOOP_STALL_WARN_MS", "-5", "ms a loop turn may run before its stack is logged, 0 (off) to 60000"),
            ("LOOP_STALL_WARN_MS", "soon", "ms a loop turn may run before its stack is logged, 0 (off) to 60000"),
            ("RECORD_BOOK_SECONDS", "-1", "seconds between recorded order-book snapshots of a symbol, 0 to not record"),
            ("RECORD_BOOK_DEPTH", "deep", "levels a side in a recorded order book, 1 to 50"),
            ("RECORD_BOOK_DEPTH", "0", "levels a side in a recorded order book, 1 to 50"),
        ]
    ),
    (SERVICE, {"DRY_RUN": "false"}, ["DRY_RUN=false", "SOURCE"]),
    (LAUNCHER, {"STREAM_INTERVAL_SECONDS": "fast"}, ["STREAM_INTERVAL_SECONDS='fast'", "accepts"]),
]


def test_each_bad_setting_stops_the_service_with_a_message_naming_it(tmp_path: Path) -> None:
    # Started all at once: each is an interpreter start-up, and each only has to fail.
    procs = [
        subprocess.Popen(
            command,
            cwd=tmp_path,
            env=service_env(**{"HOST": "127.0.0.1", "PORT": "0", "DATA_DIR": str(tmp_path / "data"), **env}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command, env, _ in BAD_STARTS
    ]
    problems = []
    for (command, env, expected), proc in zip(BAD_STARTS, procs, strict=True):
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
        case = f"{command[1:]} {env}"
        if proc.returncode in (0, None) or "listening" in stdout:
            problems.append(f"{case}: started anyway (exit {proc.returncode})")
        elif "Traceback" in stderr or not all(text in stderr for text in expected):
            problems.append(f"{case}: expected {expected} in stderr, got {stderr!r}")
    assert not problems, "\n".join(problems)


async def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(
    tmp_path: Path, start_service: Any
) -> None:
    (tmp_path / ".env").write_text(
        "# the guide's bluefin-service/.env, extended\n"
        "STREAM_INTERVAL_SECONDS=0.05\n"
        "TRADE_FREQUENCY=9.0\n"
        "SYMBOLS=ETH-PERP,DOGE-PERP\n"
        "DRY_RUN=true\n"
    )
    # HOST/PORT from the environment lose to the --host/--port flags the fixture passes.
    service = start_service(TRADE_FREQUENCY="7.5", HOST="192.0.2.1", PORT="1")
    body = await status(service)
    assert body["stream_interval_seconds"] == 0.05
    assert body["trade_frequency"] == 7.5
    assert list(body["symbols"]) == ["ETH-PERP", "DOGE-PERP"]
    async with connect(f"{service.ws_url}/ws/DOGE-PERP") as ws:
        update = await recv_type(ws, "price_update")
        assert 90 < update["data"]["price"] < 110  # an unknown symbol starts near 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_and_read_port(cwd: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bluefin_service", *args],
        cwd=cwd,
        env=service_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        match = re.search(r"listening on http://([^:]+):(\d+)", line)
        if match:
            return proc, int(match.group(2))
    proc.wait(10)
    raise AssertionError(f"service exited with {proc.returncode} without listening")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


async def test_host_and_port_come_from_the_environment(tmp_path: Path) -> None:
    wanted = free_port()
    proc, port = start_and_read_port(tmp_path, HOST="127.0.0.1", PORT=str(wanted), DATA_DIR=str(tmp_path / "data"))
    try:
        assert port == wanted
        assert (await http("GET", f"http://127.0.0.1:{port}/health"))[0] == 200
    finally:
        stop(proc)


async def test_the_fastest_stream_interval_works(start_service: Any) -> None:
    service = start_service(STREAM_INTERVAL_SECONDS="0.0001", TRADE_FREQUENCY="0.001", SYMBOLS="ETH-PERP")
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        market = await collect_market(ws, 3000, timeout=30)
    assert_contiguous(market)
    stamps = [m["timestamp"] for m in market if m["type"] == "price_update"]
    spacing = statistics.median(b - a for a, b in itertools.pairwise(stamps))
    assert spacing == pytest.approx(0.0001, rel=0.05)  # event times follow the configured schedule
    assert sum(m["type"] == "trade" for m in market) > 100
    code, health, _ = await http("GET", f"{service.http_url}/health")
    assert code == 200 and health["streaming"] is True
    assert (await status(service))["symbols"]["ETH-PERP"]["last_seq"] >= market[-1]["seq"]
