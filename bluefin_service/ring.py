"""The bounded per-symbol ring of recent messages that resume replays from."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bluefin_service.ring_file import RingFile


@dataclass(frozen=True, slots=True)
class Gap:
    """Messages ``from_seq``..``to_seq`` (inclusive) cannot be replayed."""

    from_seq: int
    to_seq: int
    reason: str


class MessageRing:
    """The last ``capacity`` encoded messages of one symbol, with contiguous sequence numbers.

    When full, the oldest message is dropped; a resume from before the oldest kept message gets a ``Gap``.
    """

    __slots__ = ("_backing", "_payloads", "head")

    def __init__(self, capacity: int, backing: RingFile | None = None) -> None:
        self._payloads: deque[bytes] = deque(maxlen=capacity)
        self._backing = backing
        self.head = 0  # seq of the newest message, 0 before the first
        if backing is not None and backing.recovered:
            self._payloads.extend(payload for _seq, payload in backing.recovered)
            self.head = backing.recovered[-1][0]

    def __len__(self) -> int:
        return len(self._payloads)

    @property
    def oldest(self) -> int:
        """Seq of the oldest message kept (head + 1 when empty)."""
        return self.head - len(self._payloads) + 1

    def append(self, seq: int, payload: bytes) -> None:
        if seq != self.head + 1:
            raise ValueError(f"ring expects seq {self.head + 1}, got {seq}")
        self._payloads.append(payload)
        self.head = seq
        if self._backing is not None:
            self._backing.write(seq, payload)

    def continue_after(self, seq: int) -> None:
        """Number the next message ``seq + 1`` when ``seq`` is ahead of the ring (the store holds messages a lost
        ring no longer does). What the ring kept is dropped: it would not be contiguous with what follows."""
        if seq > self.head:
            self._payloads.clear()
            self.head = seq

    def close(self) -> None:
        if self._backing is not None:
            self._backing.close()

    def after(self, last_seen: int) -> tuple[Gap | None, list[bytes]]:
        """What a client that saw everything up to ``last_seen`` has missed."""
        if last_seen >= self.head:
            if last_seen > self.head:
                return Gap(self.head + 1, last_seen, "ahead_of_server"), []
            return None, []
        oldest = self.oldest
        if last_seen + 1 < oldest:
            return Gap(last_seen + 1, oldest - 1, "ring_overflow"), list(self._payloads)
        return None, list(islice(self._payloads, last_seen + 1 - oldest, None))
