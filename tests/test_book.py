"""The L2 book against a dict-of-levels oracle, the diff-sync procedure, OKX sequencing and checksum."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketdata.book import ASKS, BIDS, BookDelta, BookError, ChecksumMismatch, DiffSync, OrderBook, SequenceGap, e9
from marketdata.venues import binance, bluefin, okx

prices = st.integers(min_value=1, max_value=400).map(lambda t: f"{t / 4:.2f}")  # "0.25".."100.00"
sizes = st.one_of(st.just("0"), st.integers(min_value=1, max_value=10_000).map(lambda n: f"{n / 1000:.3f}"))
levels = st.lists(st.tuples(prices, sizes).map(list), max_size=12)
updates = st.lists(st.tuples(levels, levels), max_size=40)


def oracle_apply(side: dict[float, float], changes: list[list[str]]) -> None:
    for price, size in changes:
        if float(size) == 0:
            side.pop(float(price), None)
        else:
            side[float(price)] = float(size)


@settings(max_examples=150, deadline=None)
@given(snapshot=st.tuples(levels, levels), stream=updates, depth=st.integers(1, 30))
def test_random_delta_streams_match_a_dict_of_levels(snapshot, stream, depth) -> None:
    book = OrderBook("ETH-PERP")
    bids: dict[float, float] = {}
    asks: dict[float, float] = {}
    oracle_apply(bids, snapshot[0])
    oracle_apply(asks, snapshot[1])
    book.apply_snapshot(snapshot[0], snapshot[1], 1, 0.0)
    for i, (bid_changes, ask_changes) in enumerate(stream, start=2):
        book.apply(bid_changes, ask_changes, i, float(i))
        oracle_apply(bids, bid_changes)
        oracle_apply(asks, ask_changes)
        assert book.levels(BIDS) == bids and book.levels(ASKS) == asks
    want_bids = sorted(bids.items(), reverse=True)
    want_asks = sorted(asks.items())
    assert book.depth(BIDS, depth) == want_bids[:depth]
    assert book.depth(ASKS, depth) == want_asks[:depth]
    assert book.best_bid == (want_bids[0] if want_bids else None)
    assert book.best_ask == (want_asks[0] if want_asks else None)
    if want_bids and want_asks:
        assert book.spread == round(want_asks[0][0] - want_bids[0][0], 9)
    else:
        assert book.spread is None


def test_spread_has_no_float_noise_and_e9_is_exact() -> None:
    book = OrderBook("ETH-PERP")
    book.apply_snapshot([["3366.1", "7"]], [["3366.8", "9"]], 1, 0.0)
    assert book.spread == 0.7
    assert e9("7819010000000") == 7819.01
    assert e9("1") == 1e-9


def test_removing_an_absent_level_is_harmless() -> None:
    book = OrderBook("ETH-PERP")
    book.apply_snapshot([["10", "1"]], [["11", "1"]], 1, 0.0)
    book.apply([["9", "0"]], [["12", "0.0"]], 2, 0.0)
    assert book.depth(BIDS) == [(10.0, 1.0)] and book.depth(ASKS) == [(11.0, 1.0)]


def test_a_level_that_is_not_numbers_is_a_book_error() -> None:
    book = OrderBook("ETH-PERP")
    for bad in (["abc", "1"], ["1"], [None, "1"]):
        with pytest.raises(BookError, match="unusable book level"):
            book.apply([bad], [], 2, 0.0)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("bids", "asks", "expected"),
    [  # the OKX documentation's two worked examples
        ([["3366.1", "7"], ["3366", "6"]], [["3366.8", "9"], ["3368", "8"]], -1881014294),
        ([["3366.1", "7"]], [["3366.8", "9"], ["3368", "8"], ["3372", "8"]], 831078360),
    ],
)
def test_okx_checksum_matches_documented_examples(bids, asks, expected) -> None:
    book = OrderBook("ETH-PERP", keep_raw=True)
    book.apply_snapshot(bids, asks, 1, 0.0)
    assert book.okx_checksum() == expected


def _okx(action: str, prev: int, seq: int, bids=(), asks=(), checksum: int = 0) -> BookDelta:
    return BookDelta("ETH-PERP", 0.0, seq, seq, prev, list(bids), list(asks), checksum or None, action == "snapshot")


def test_okx_sequence_follows_heartbeat_and_reset_and_catches_gaps() -> None:
    book = OrderBook("ETH-PERP", keep_raw=True)
    okx.apply_book_delta(book, _okx("snapshot", -1, 10, [["100", "1", "0", "1"]], [["101", "2", "0", "1"]]))
    okx.apply_book_delta(book, _okx("update", 10, 15, [["100", "3", "0", "1"]]))
    okx.apply_book_delta(book, _okx("update", 15, 15))  # heartbeat: no change
    okx.apply_book_delta(book, _okx("update", 15, 3))  # reset after maintenance
    okx.apply_book_delta(book, _okx("update", 3, 5, asks=[["101", "0", "0", "0"]]))
    assert book.depth(BIDS) == [(100.0, 3.0)] and book.depth(ASKS) == []
    with pytest.raises(SequenceGap):
        okx.apply_book_delta(book, _okx("update", 6, 9))
    with pytest.raises(ChecksumMismatch):
        okx.apply_book_delta(book, _okx("update", 5, 6, [["99", "1", "0", "1"]], checksum=12345))


def _diff(first: int, last: int, prev: int = -1, bids=(), asks=()) -> BookDelta:
    return BookDelta("ETH-PERP", 0.0, first, last, prev, list(bids), list(asks))


def test_binance_sync_drops_old_diffs_bridges_and_detects_gaps() -> None:
    sync = DiffSync(OrderBook("ETH-PERP"), binance.SYNC_RULES)
    sync.on_delta(_diff(90, 95, 89, [["1", "5"]]))  # older than the snapshot: dropped
    sync.on_delta(_diff(96, 101, 95, [["2", "5"]]))  # spans lastUpdateId=100: the bridge
    sync.on_delta(_diff(102, 104, 101, asks=[["3", "1"]]))
    sync.on_snapshot([["2", "1"]], [], 100, 0.0)
    assert sync.live and sync.book.update_id == 104
    assert sync.book.depth(BIDS) == [(2.0, 5.0)] and sync.book.depth(ASKS) == [(3.0, 1.0)]
    with pytest.raises(SequenceGap):
        sync.on_delta(_diff(110, 112, 109))  # pu 109 != last u 104


def test_snapshot_older_than_every_buffered_diff_does_not_bridge() -> None:
    sync = DiffSync(OrderBook("ETH-PERP"), binance.SYNC_RULES)
    sync.on_delta(_diff(200, 201, 199))
    with pytest.raises(SequenceGap):
        sync.on_snapshot([], [], 100, 0.0)


def test_bluefin_sync_needs_contiguous_update_ids() -> None:
    sync = DiffSync(OrderBook("ETH-PERP", e9), bluefin.SYNC_RULES)
    sync.on_snapshot([["2000000000", "1000000000"]], [], 50, 0.0)
    assert not sync.on_delta(_diff(45, 50))  # already in the snapshot
    assert sync.on_delta(_diff(51, 53, bids=[["2000000000", "0"]]))
    assert sync.on_delta(_diff(54, 54, asks=[["3000000000", "500000000"]]))
    assert sync.book.depth(BIDS) == [] and sync.book.depth(ASKS) == [(3.0, 0.5)]
    with pytest.raises(SequenceGap):
        sync.on_delta(_diff(56, 57))


def test_buffer_is_bounded() -> None:
    sync = DiffSync(OrderBook("ETH-PERP"), binance.SYNC_RULES, max_buffer=3)
    for i in range(10):
        sync.on_delta(_diff(i, i, i - 1))
    assert [d.first_id for d in sync.buffer] == [7, 8, 9]
