"""The bounded per-symbol ring of recent messages that resume replays from."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import islice


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

    __slots__ = ("_payloads", "head")

    def __init__(self, capacity: int, head: int = 0) -> None:
        self._payloads: deque[bytes] = deque(maxlen=capacity)
        self.head = head  # seq of the newest message, 0 before the first

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
