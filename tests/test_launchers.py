"""The guide's manual-testing commands: ``cd bluefin-service && python bluefin_service.py`` and
``python test_realtime_websocket.py``."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from conftest import REPO, service_env

LAUNCHER_DIR = REPO / "bluefin-service"
DIAGNOSTIC = REPO / "test_realtime_websocket.py"
GUIDE_ENV = (  # the guide's bluefin-service/.env, as written there
    "# WebSocket streaming configuration\n"
    "STREAM_INTERVAL_SECONDS=1.0    # Price update frequency\n"
    "TRADE_FREQUENCY=5.0            # Trade generation frequency\n"
    "DRY_RUN=true                   # Enable mock data generation\n"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def start_launcher(launcher: Path, cwd: Path, **env: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, launcher.name if launcher.parent == cwd else str(launcher)],
        cwd=cwd,
        env=service_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        match = re.search(r"listening on http://[^:]+:(\d+)", line)
        if match:
            return proc, int(match.group(1))
    proc.wait(10)
    raise AssertionError("launcher did not start:\n" + "".join(lines))


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def test_cd_bluefin_service_and_run_the_launcher(tmp_path: Path) -> None:
    before = sorted(p.name for p in LAUNCHER_DIR.iterdir())
    port = free_port()
    proc, bound = start_launcher(
        LAUNCHER_DIR / "bluefin_service.py", LAUNCHER_DIR, HOST="127.0.0.1", PORT=str(port), DATA_DIR=str(tmp_path)
    )
    try:
        assert bound == port
        health = get_json(f"http://127.0.0.1:{port}/health")
        assert health["status"] == "ok" and health["source"] == "mock"
    finally:
        stop(proc)
    assert proc.returncode == 0
    assert sorted(p.name for p in LAUNCHER_DIR.iterdir()) == before  # nothing left behind in the repo


def test_the_launcher_reads_the_env_file_next_to_it_from_any_directory(tmp_path: Path) -> None:
    home = tmp_path / "bluefin-service"
    home.mkdir()
    launcher = home / "bluefin_service.py"
    shutil.copy(LAUNCHER_DIR / "bluefin_service.py", launcher)
    port = free_port()
    (home / ".env").write_text(
        GUIDE_ENV + f"STREAM_INTERVAL_SECONDS=0.25\nSYMBOLS=ETH-PERP,DOGE-PERP\nHOST=127.0.0.1\nPORT={port}\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("SYMBOLS=SOL-PERP\nTRADE_FREQUENCY=3.0\n")  # the launcher's own .env wins
    proc, bound = start_launcher(launcher, elsewhere, PYTHONPATH=str(REPO), DATA_DIR=str(tmp_path / "data"))
    try:
        assert bound == port
        status = get_json(f"http://127.0.0.1:{port}/streaming/status")
        assert list(status["symbols"]) == ["ETH-PERP", "DOGE-PERP"]
        assert status["stream_interval_seconds"] == 0.25
        assert status["trade_frequency"] == 5.0
    finally:
        stop(proc)


def run_diagnostic(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DIAGNOSTIC), *args], capture_output=True, text=True, timeout=60, cwd=REPO
    )


def test_the_diagnostic_prints_ticks_with_rate_and_latency(start_service: Any) -> None:
    service = start_service(STREAM_INTERVAL_SECONDS="0.05", TRADE_FREQUENCY="0.2")
    result = run_diagnostic("--url", service.ws_url, "--duration", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Received: price_update ETH-PERP" in result.stdout
    assert "latency" in result.stdout and "round trip" in result.stdout
    assert re.search(r"Tick rate: \d+\.\d ticks/sec, WebSocket: ✓ Connected", result.stdout)

    urllib.request.urlopen(urllib.request.Request(f"{service.http_url}/streaming/stop", method="POST"), timeout=10)
    quiet = run_diagnostic("--url", service.ws_url, "--symbols", "ETH-PERP,BTC-PERP", "--duration", "1")
    assert quiet.returncode == 1
    assert "Waiting for data" in quiet.stdout
    assert "No tick data received" in quiet.stderr


def test_the_diagnostic_fails_when_nothing_listens() -> None:
    result = run_diagnostic("--url", f"ws://127.0.0.1:{free_port()}", "--duration", "1")
    assert result.returncode == 2
    assert "Failed to connect to WebSocket" in result.stderr


def test_pytest_does_not_collect_the_diagnostic() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["tool"]["pytest"]["ini_options"]["testpaths"] == ["tests"]
    source = DIAGNOSTIC.read_text()
    assert "\n__test__ = False" in source
    assert not re.search(r"^(async )?def test", source, re.MULTILINE)
    assert not re.search(r"^class Test", source, re.MULTILINE)


def test_the_diagnostic_rejects_bad_options() -> None:
    result = run_diagnostic("--duration", "0")
    assert result.returncode == 2
    assert "usage:" in result.stderr
