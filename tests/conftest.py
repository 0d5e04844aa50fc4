"""Shared fixtures: real service processes on ephemeral ports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"listening on http://[^:]+:(\d+)")


class RunningService:
    """A ``python -m bluefin_service`` child process; ``port`` is the one it actually bound."""

    def __init__(
        self, env: dict[str, str], cwd: Path, args: list[str], port: int = 0, process_group: int | None = None
    ) -> None:
        self.env = env
        self.process_group = process_group  # 0: a group of its own, as a shell job is (for group signals)
        self.cwd = cwd
        self.args = args
        self.port = port
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.start()

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        cmd = [sys.executable, "-m", "bluefin_service", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(
            cmd, cwd=self.cwd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            process_group=self.process_group,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.output.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
                return
        self.stop()
        raise RuntimeError("service did not start:\n" + "".join(self.output))

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode if self.proc else None

    def restart(self) -> None:
        self.stop()
        self.start()


def service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAM_", "TRADE_", "SYMBOLS", "HEARTBEAT_"))}
    env.update({"DRY_RUN": "true", "MOCK_SEED": "7", "MOCK_BACKFILL_SECONDS": "0", "LOG_LEVEL": "WARNING"})
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator:
    """Factory: ``start_service(STREAM_INTERVAL_SECONDS="0.01", ...)`` -> RunningService (stopped at teardown)."""
    started: list[RunningService] = []

    def start(*args: str, **env: str) -> RunningService:
        service = RunningService(service_env(**env), tmp_path, list(args))
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
