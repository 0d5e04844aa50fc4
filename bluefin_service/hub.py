"""Per-symbol channels and the fan-out engine.

Each message is encoded once and framed once per codec (plain, or deflate); the same frame bytes are queued on
every subscriber. Frames queued during one event-loop turn reach a connection in one ``transport.write``.
Nothing here awaits a client: a connection whose kernel buffer plus transport buffer grows past its limit is
either switched to latest-only (if it asked) or closed with ``CLOSE_SLOW_CONSUMER``, so it never slows the
others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from bluefin_service.frames import build_frame
from bluefin_service.ring import Gap, MessageRing
from marketdata.protocol import (
    CLOSE_SLOW_CONSUMER,
    SYSTEM,
    GapData,
    GapMessage,
    HeartbeatData,
    HeartbeatMessage,
    PriceUpdateMessage,
    TradeMessage,
    decode_server,
    encode,
    market_message,
)
from marketdata.ticks import MarketEvent

log = logging.getLogger(__name__)

REPLAY_ALLOWANCE_FACTOR = 8
NOTICES_KEPT = 64  # per channel: the newest upstream notices a resuming client is sent again

SlowPolicy = Literal["close", "latest"]
TickListener = Callable[[MarketEvent, int], None]  # (event, its seq), called as it is published


class Transport(Protocol):
    def write(self, data: bytes) -> None: ...
    def is_closing(self) -> bool: ...
    def get_write_buffer_size(self) -> int: ...


class Connection:
    """One client's outgoing side: its subscriptions, pending frames and slow-consumer state."""

    __slots__ = (
        "close",
        "closed",
        "codec",
        "conflate_limit",
        "conflating",
        "id",
        "latest",
        "max_buffer",
        "on_slow",
        "pending",
        "pending_bytes",
        "queued_seq",
        "replay_allowance",
        "subscriptions",
        "transport",
    )

    def __init__(
        self,
        conn_id: int,
        transport: Transport,
        close: Callable[[int, str], None],
        *,
        codec: int = 0,
        on_slow: SlowPolicy = "close",
        max_buffer: int = 4 * 1024 * 1024,
    ) -> None:
        self.id = conn_id
        self.transport = transport
        self.close = close
        self.codec = codec
        self.on_slow = on_slow
        self.max_buffer = max_buffer
        self.pending: list[bytes] = []
        self.pending_bytes = 0  # counted on the control path (replies, replays) only
        self.replay_allowance = 0  # bytes of resume replay still on their way out
        self.subscriptions: dict[str, None] = {}
        self.closed = False
        self.conflating = False
        self.conflate_limit = 0
        self.latest: dict[str, tuple[int, bytes]] = {}
        self.queued_seq: dict[str, int] = {}


class Channel:
    __slots__ = ("conflated", "groups", "notices", "ring", "symbol")

    def __init__(self, symbol: str, ring: MessageRing) -> None:
        self.symbol = symbol
        self.ring = ring
        self.groups: dict[int, dict[Connection, None]] = {}  # codec -> subscribers
        self.conflated: dict[Connection, None] = {}
        # (seq they came after, payload): unsequenced messages about the stream (a venue feed interruption) that
        # a client resuming from before them must still get; in memory only, so a restart forgets them.
        self.notices: deque[tuple[int, bytes]] = deque(maxlen=NOTICES_KEPT)

    @property
    def seq(self) -> int:
        return self.ring.head

    def subscriber_count(self) -> int:
        return sum(len(group) for group in self.groups.values()) + len(self.conflated)


@dataclass
class HubStats:
    messages_published: int = 0
    messages_sent: int = 0
    bytes_written: int = 0
    writes: int = 0
    dropped_slow_consumers: int = 0
    conflated_slow_consumers: int = 0
    message_rate: float = 0.0
    _rate_mark: tuple[float, int] = field(default=(0.0, 0), repr=False)


class Hub:
    def __init__(
        self,
        symbols: Iterable[str],
        ring_size: int = 4096,
        ring_factory: Callable[[str], MessageRing] | None = None,
    ) -> None:
        self._new_ring = ring_factory or (lambda _symbol: MessageRing(ring_size))
        self.channels: dict[str, Channel] = {s: Channel(s, self._new_ring(s)) for s in symbols}
        self.connections: dict[Connection, None] = {}
        self.stats = HubStats()
        self.tick_listeners: list[TickListener] = []
        self._dirty: list[Connection] = []
        self._flush_handle: asyncio.Handle | None = None

    # -- publishing ----------------------------------------------------------------------------------------
    def publish(self, event: MarketEvent) -> int:
        """Sequence, record and fan out one market event; returns its seq."""
        channel = self.channels.get(event.symbol)
        if channel is None:
            channel = self.channels[event.symbol] = Channel(event.symbol, self._new_ring(event.symbol))
        seq = channel.ring.head + 1
        self._fan_out(channel, seq, encode(market_message(event, seq)))
        for listener in self.tick_listeners:
            listener(event, seq)
        return seq

    def ensure_channel(self, key: str) -> Channel:
        channel = self.channels.get(key)
        if channel is None:
            channel = self.channels[key] = Channel(key, self._new_ring(key))
        return channel

    def publish_batch(self, events: Iterable[MarketEvent]) -> None:
        for event in events:
            self.publish(event)

    def publish_payload(self, key: str, build: Callable[[int], bytes]) -> int:
        """Sequence and fan out a message whose encoding needs the seq (server-side candles, books)."""
        channel = self.ensure_channel(key)
        seq = channel.ring.head + 1
        self._fan_out(channel, seq, build(seq))
        return seq

    def _fan_out(self, channel: Channel, seq: int, payload: bytes) -> None:
        channel.ring.append(seq, payload)
        stats = self.stats
        stats.messages_published += 1
        if channel.groups:
            dirty = self._dirty
            for codec, group in channel.groups.items():
                frame = build_frame(payload, codec)
                for conn in group:
                    pending = conn.pending
                    if not pending:
                        dirty.append(conn)
                    pending.append(frame)
                stats.messages_sent += len(group)
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        if channel.conflated:
            latest = (seq, payload)
            for conn in channel.conflated:
                conn.latest[channel.symbol] = latest

    def send(self, conn: Connection, payload: bytes) -> None:
        """Queue one message for one connection (acks, errors, pongs, replays)."""
        if conn.closed:
            return
        if not conn.pending:
            self._dirty.append(conn)
        frame = build_frame(payload, conn.codec)
        conn.pending.append(frame)
        self.stats.messages_sent += 1
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)
        # Replays and replies can pile up within one turn (a client asking for the ring again and again), so
        # they count against the limit before they reach the transport.
        conn.pending_bytes += len(frame)
        limit = conn.max_buffer + conn.replay_allowance
        if conn.pending_bytes > limit:
            queued = conn.transport.get_write_buffer_size() + conn.pending_bytes
            if queued > (conn.conflate_limit if conn.conflating else limit):
                self._handle_slow(conn, queued)

    def flush(self) -> None:
        """Write everything queued now: the service calls it after each source batch; other sends flush on the loop."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush()

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, []
        stats = self.stats
        for conn in dirty:
            pending = conn.pending
            if conn.closed or not pending:
                pending.clear()
                continue
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            conn.pending_bytes = 0
            transport = conn.transport
            if transport.is_closing():
                continue
            transport.write(data)
            stats.writes += 1
            stats.bytes_written += len(data)
            queued = transport.get_write_buffer_size()
            if queued > conn.max_buffer + conn.replay_allowance:
                self._handle_slow(conn, queued)

    # -- connections and subscriptions --------------------------------------------------------------------
    def attach(self, conn: Connection) -> None:
        self.connections[conn] = None

    def detach(self, conn: Connection) -> None:
        conn.closed = True
        conn.pending.clear()
        for symbol in list(conn.subscriptions):
            self._remove_from_channel(conn, self.channels[symbol])
        conn.subscriptions.clear()
        self.connections.pop(conn, None)

    def notify(self, symbol: str, payload: bytes) -> int:
        """Send an unsequenced message about ``symbol``'s stream (a venue feed interruption) to its subscribers
        now, and keep it at its place after the current seq, so a client resuming from before it gets it too.
        Returns how many connections it was sent to."""
        channel = self.channels.get(symbol)
        if channel is None:
            return 0
        channel.notices.append((channel.seq, payload))
        subscribers = [*(c for group in channel.groups.values() for c in group), *channel.conflated]
        for conn in subscribers:
            self.send(conn, payload)
        return len(subscribers)

    def subscribe(self, conn: Connection, symbol: str, resume_after: int | None = None) -> int:
        """Add ``conn`` to ``symbol``; with ``resume_after``, first replay what it missed. Returns the head seq."""
        channel = self.channels[symbol]
        if resume_after is not None:
            gap, payloads = channel.ring.after(resume_after)
            # A replay is not slowness: its bytes raise this connection's limit until its buffer drains, up to
            # REPLAY_ALLOWANCE_FACTOR limits, so a client resuming many symbols is not cut off for asking.
            room = conn.max_buffer * REPLAY_ALLOWANCE_FACTOR - conn.replay_allowance
            conn.replay_allowance += min(room, sum(len(p) for p in payloads))
            if gap is not None:
                self.send(conn, self.gap_payload(symbol, gap))
            # Notices from `resume_after` on, each after the message it followed. One made right after the
            # client's last seq may have reached it already: a repeat is harmless, a loss would be silent.
            notices = [notice for notice in channel.notices if notice[0] >= resume_after]
            first_seq = channel.seq - len(payloads) + 1
            for offset, payload in enumerate(payloads):
                while notices and notices[0][0] < first_seq + offset:
                    self.send(conn, notices.pop(0)[1])
                self.send(conn, payload)
            for _, notice in notices:
                self.send(conn, notice)
        if symbol not in conn.subscriptions:
            conn.subscriptions[symbol] = None
            if conn.conflating:
                channel.conflated[conn] = None
                conn.queued_seq[symbol] = channel.seq
            else:
                channel.groups.setdefault(conn.codec, {})[conn] = None
        return channel.seq

    def unsubscribe(self, conn: Connection, symbol: str) -> None:
        if conn.subscriptions.pop(symbol, 0) is None:
            self._remove_from_channel(conn, self.channels[symbol])

    def _remove_from_channel(self, conn: Connection, channel: Channel) -> None:
        group = channel.groups.get(conn.codec)
        if group is not None:
            group.pop(conn, None)
            if not group:
                del channel.groups[conn.codec]
        channel.conflated.pop(conn, None)
        conn.latest.pop(channel.symbol, None)
        conn.queued_seq.pop(channel.symbol, None)

    # -- slow consumers ----------------------------------------------------------------------------------
    def _handle_slow(self, conn: Connection, queued: int) -> None:
        if conn.on_slow == "latest" and not conn.conflating:
            # Switched once. If even its control replies and replays then pile up another full limit beyond what
            # was queued at the switch, it is closed like any other: no connection's memory grows without bound.
            conn.conflating = True
            conn.conflate_limit = queued + conn.max_buffer
            self.stats.conflated_slow_consumers += 1
            for symbol in conn.subscriptions:
                channel = self.channels[symbol]
                self._remove_from_channel(conn, channel)
                channel.conflated[conn] = None
                conn.queued_seq[symbol] = channel.seq
            return
        if conn.conflating and queued <= conn.conflate_limit:
            return
        self.stats.dropped_slow_consumers += 1
        log.warning("closing slow consumer #%d: %d bytes queued (limit %d)", conn.id, queued, conn.max_buffer)
        self.detach(conn)
        conn.close(CLOSE_SLOW_CONSUMER, f"slow consumer: {queued} bytes queued, limit {conn.max_buffer}")

    def drain_conflated(self) -> None:
        """Bring latest-only connections whose buffers have drained back to the live stream."""
        for conn in list(self.connections):
            if conn.replay_allowance and conn.transport.get_write_buffer_size() <= conn.max_buffer:
                conn.replay_allowance = 0  # the replay has reached the kernel: back to the plain limit
            if not conn.conflating or conn.closed:
                continue
            if conn.transport.get_write_buffer_size() > conn.max_buffer // 4:
                continue
            conn.conflating = False
            for symbol in conn.subscriptions:
                channel = self.channels[symbol]
                channel.conflated.pop(conn, None)
                queued = conn.queued_seq.pop(symbol, channel.seq)
                latest = conn.latest.pop(symbol, None)
                if latest is not None:
                    seq, payload = latest
                    if seq > queued + 1:
                        self.send(conn, self.gap_payload(symbol, Gap(queued + 1, seq - 1, "slow_consumer")))
                    self.send(conn, payload)
                channel.groups.setdefault(conn.codec, {})[conn] = None

    # -- system messages --------------------------------------------------------------------------------
    @staticmethod
    def gap_payload(symbol: str, gap: Gap) -> bytes:
        return encode(GapMessage(symbol, time.time(), GapData(gap.from_seq, gap.to_seq, gap.reason)))

    def active_symbols(self) -> int:
        return sum(1 for key, channel in self.channels.items() if "@" not in key and channel.subscriber_count())

    def send_heartbeats(self, running: bool) -> None:
        now = time.time()
        connections = len(self.connections)
        active = self.active_symbols()
        for conn in list(self.connections):
            last_seq = {symbol: self.channels[symbol].seq for symbol in conn.subscriptions}
            data = HeartbeatData(connections, active, running, last_seq)
            self.send(conn, encode(HeartbeatMessage(SYSTEM, now, data)))

    def last_prices(self) -> dict[str, float]:
        """The newest traded or quoted price per symbol still in the rings (after a restart, the last known)."""
        prices: dict[str, float] = {}
        for symbol, channel in self.channels.items():
            for payload in reversed(channel.ring.after(max(0, channel.ring.oldest - 1))[1][-64:]):
                message = decode_server(payload)
                if isinstance(message, PriceUpdateMessage | TradeMessage):
                    prices[symbol] = message.data.price
                    break
        return prices

    def close(self) -> None:
        for channel in self.channels.values():
            channel.ring.close()

    def update_rate(self, now: float) -> None:
        mark_time, mark_count = self.stats._rate_mark
        if mark_time:
            elapsed = now - mark_time
            if elapsed > 0:
                self.stats.message_rate = (self.stats.messages_sent - mark_count) / elapsed
        self.stats._rate_mark = (now, self.stats.messages_sent)
