"""``--with-service``: run the streaming service as a child process for the bot (what ``make run`` uses)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from marketdata.errors import MarketDataError

_LISTENING = re.compile(r"listening on (http://\S+)")


class ServiceLaunchError(MarketDataError):
    """The child service did not start."""


def service_answers(service_url: str, wait: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"{service_url}/health", timeout=wait) as response:
            return response.status == 200
    except OSError:
        return False


class ServiceProcess:
    """``python -m bluefin_service`` on the URL's host and port, its output copied to ``log_path``."""

    def __init__(self, service_url: str, log_path: Path, startup_timeout: float = 30.0) -> None:
        parts = urlsplit(service_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 8080
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = service_url

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DRY_RUN": os.environ.get("DRY_RUN", "true"), "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", "bluefin_service", "--host", self.host, "--port", str(self.port)]
        self.proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        log = self.log_path.open("a", encoding="utf-8")
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.startup_timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            log.write(line)
            seen.append(line)
            match = _LISTENING.search(line)
            if match:
                threading.Thread(target=self._copy, args=(self.proc, log), daemon=True).start()
                return self.url
        log.close()
        self.stop()
        raise ServiceLaunchError("the streaming service did not start:\n" + "".join(seen[-20:]))

    @staticmethod
    def _copy(proc: subprocess.Popen[str], log: object) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)  # type: ignore[attr-defined]
            log.flush()  # type: ignore[attr-defined]
        log.close()  # type: ignore[attr-defined]

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
