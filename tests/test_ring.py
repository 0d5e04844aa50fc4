"""MessageRing: what a resuming client gets back, and exactly what it is told is lost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bluefin_service.ring import Gap, MessageRing


def filled(capacity: int, count: int) -> MessageRing:
    ring = MessageRing(capacity)
    for seq in range(1, count + 1):
        ring.append(seq, f"m{seq}".encode())
    return ring


def test_an_empty_ring_has_nothing_to_replay() -> None:
    ring = MessageRing(4)
    assert (ring.head, ring.oldest, len(ring)) == (0, 1, 0)
    assert ring.after(0) == (None, [])


def test_resume_inside_the_ring_replays_exactly_what_was_missed() -> None:
    ring = filled(8, 5)
    assert ring.after(2) == (None, [b"m3", b"m4", b"m5"])
    assert ring.after(0) == (None, [b"m1", b"m2", b"m3", b"m4", b"m5"])
    assert ring.after(5) == (None, [])


def test_a_full_ring_drops_the_oldest_and_reports_the_lost_range() -> None:
    ring = filled(4, 10)
    assert (ring.head, ring.oldest, len(ring)) == (10, 7, 4)
    assert ring.after(6) == (None, [b"m7", b"m8", b"m9", b"m10"])
    assert ring.after(2) == (Gap(3, 6, "ring_overflow"), [b"m7", b"m8", b"m9", b"m10"])
    assert ring.after(0) == (Gap(1, 6, "ring_overflow"), [b"m7", b"m8", b"m9", b"m10"])


def test_a_seq_beyond_the_head_is_a_gap_ahead_of_the_server() -> None:
    ring = filled(4, 3)
    assert ring.after(9) == (Gap(4, 9, "ahead_of_server"), [])


@pytest.mark.parametrize("seq", [0, 2, 4, -1])
def test_append_refuses_a_seq_that_is_not_the_next(seq: int) -> None:
    ring = filled(4, 2)
    with pytest.raises(ValueError, match="expects seq 3"):
        ring.append(seq, b"x")
    assert ring.head == 2 and ring.after(0) == (None, [b"m1", b"m2"])


@given(capacity=st.integers(1, 20), count=st.integers(0, 60), last_seen=st.integers(0, 70))
def test_resume_gives_back_every_seq_once_or_names_it_lost(capacity: int, count: int, last_seen: int) -> None:
    ring = filled(capacity, count)
    assert len(ring) == min(capacity, count)
    gap, payloads = ring.after(last_seen)
    replayed = [int(p[1:]) for p in payloads]
    assert replayed == sorted(replayed) and len(set(replayed)) == len(replayed)
    if last_seen > count:
        assert gap == Gap(count + 1, last_seen, "ahead_of_server") and replayed == []
        return
    lost = [] if gap is None else list(range(gap.from_seq, gap.to_seq + 1))
    assert gap is None or gap.reason == "ring_overflow"
    assert lost + replayed == list(range(last_seen + 1, count + 1))  # nothing missing, nothing twice
