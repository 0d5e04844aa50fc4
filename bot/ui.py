"""The live status line: price, tick rate, WebSocket state, last candle, position, PnL, warm-up progress.

On a terminal it is a rich ``Live`` line under the scrolling event log; elsewhere (a pipe, a test) it prints the
same line as plain text every ``plain_every`` seconds.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from rich.console import Console
from rich.live import Live
from rich.text import Text


class TickRate:
    """Ticks per second over a sliding window; memory bounded by ``max_ticks``."""

    def __init__(self, window: float = 10.0, max_ticks: int = 100_000) -> None:
        self.window = window
        self._times: deque[float] = deque(maxlen=max_ticks)

    def add(self, now: float) -> None:
        self._times.append(now)

    def rate(self, now: float) -> float:
        times = self._times
        while times and times[0] < now - self.window:
            times.popleft()
        if not times:
            return 0.0
        span = min(self.window, max(now - times[0], 1.0))
        return len(times) / span


@dataclass
class StatusSnapshot:
    symbol: str
    interval: str
    price: float | None
    tick_rate: float
    websocket: str
    last_candle: str
    position: str
    pnl: str
    warmup: str
    note: str


def websocket_state(connected: bool, seconds_since_tick: float | None, stale_after: float) -> str:
    if not connected:
        return "✗ Disconnected (reconnecting)"
    if seconds_since_tick is None or seconds_since_tick > stale_after:
        return "⚠ Waiting for data"
    return "✓ Connected"


def render(s: StatusSnapshot) -> Text:
    price = f"{s.price:,.4f}" if s.price is not None else "—"
    ws_style = "green" if s.websocket.startswith("✓") else ("yellow" if s.websocket.startswith("⚠") else "red")
    line = Text()
    line.append(f"{s.symbol} {s.interval} ", style="bold")
    line.append(f"Price {price}  ")
    line.append(f"Tick rate: {s.tick_rate:.1f} ticks/sec, WebSocket: ")
    line.append(s.websocket, style=ws_style)
    line.append(f"\n  {s.last_candle} | {s.position} | {s.pnl}")
    if s.warmup:
        line.append(f"\n  {s.warmup}", style="cyan")
    if s.note:
        line.append(f"\n  {s.note}", style="dim")
    return line


class StatusDisplay:
    def __init__(self, console: Console | None = None, plain_every: float = 5.0) -> None:
        self.console = console or Console(highlight=False)
        self.plain_every = plain_every
        self._live: Live | None = None
        self._last_plain = 0.0

    def __enter__(self) -> StatusDisplay:
        if self.console.is_terminal:
            self._live = Live(console=self.console, auto_refresh=False, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop redrawing (before the final summary, so it is not followed by a stale status line)."""
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def update(self, snapshot: StatusSnapshot) -> None:
        text = render(snapshot)
        if self._live is not None:
            self._live.update(text, refresh=True)
            return
        now = time.monotonic()
        if now - self._last_plain >= self.plain_every:
            self._last_plain = now
            self.console.print(text.plain.replace("\n", " "), soft_wrap=True)

    def event(self, message: str) -> None:
        """One line in the scrolling log above the status line."""
        stamp = time.strftime("%H:%M:%S")
        self.console.print(f"[{stamp}] {message}", soft_wrap=True, markup=False, highlight=False)
