"""The recorder's tick slices: encoded on the loop, packed into store blocks by the writer process."""

from __future__ import annotations

import random
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from store_helpers import stored_rows

from bluefin_service.store import event_row, open_store
from bluefin_service.store.sqlite_blocks import BLOCK_TICKS
from bluefin_service.store.tick_slices import encode_slice, pack_blocks, slice_rows
from bluefin_service.store.writer import WriterProcess
from marketdata.tick_blocks import BLOCK_SPAN_SECONDS, block_rows
from marketdata.ticks import MarketEvent, PriceUpdate, Trade


def events(count: int, symbols: list[str], step: float, rng: random.Random) -> list[tuple[MarketEvent, int]]:
    seqs = dict.fromkeys(symbols, 0)
    out: list[tuple[MarketEvent, int]] = []
    for i in range(count):
        symbol = rng.choice(symbols)
        seqs[symbol] += 1
        ts = 1_700_000_000.0 + i * step
        price = round(2500 + rng.uniform(-5, 5), 2)
        if rng.random() < 0.4:
            event: MarketEvent = Trade(symbol, ts, price, rng.choice([0.5, 1.25]), rng.choice(["buy", "sell"]), f"t{i}")
        else:
            event = PriceUpdate(symbol, ts, price, 1000.0 + i)
        out.append((event, seqs[symbol]))
    return out


def sliced(pairs: list[tuple[MarketEvent, int]], size: int) -> list[tuple[bytes, int]]:
    flat = [item for pair in pairs for item in pair]
    return [
        (encode_slice(flat[i : i + 2 * size]), len(flat[i : i + 2 * size]) // 2) for i in range(0, len(flat), 2 * size)
    ]


@settings(max_examples=40, deadline=None)
@given(
    count=st.integers(1, 2500), size=st.integers(1, 300), step=st.sampled_from([0.001, 0.5, 7.0]), seed=st.integers()
)
def test_blocks_hold_every_tick_once_in_seq_order_within_size_and_span(
    count: int, size: int, step: float, seed: int
) -> None:
    pairs = events(count, ["ETH-PERP", "BTC-PERP", "SOL-PERP"], step, random.Random(seed))
    blocks, bad, last_seq = pack_blocks(sliced(pairs, size))
    assert bad == 0
    rows = [row for block in blocks for row in block_rows(block)[0]]
    expected = [tuple(event_row(event, seq)) for event, seq in pairs]
    assert sorted(rows, key=lambda r: (r[0], r[2])) == sorted(expected, key=lambda r: (r[0], r[2]))
    assert all(block.n <= BLOCK_TICKS and block.ts_max - block.ts_min <= BLOCK_SPAN_SECONDS for block in blocks)
    assert last_seq == {event.symbol: seq for event, seq in pairs}
    flat = [data for data, _ in sliced(pairs, size)]
    assert [tuple(row) for row in slice_rows(flat, "BTC-PERP")] == [r for r in expected if r[0] == "BTC-PERP"]


def test_slices_that_do_not_decode_are_counted_and_the_rest_is_packed() -> None:
    pairs = events(300, ["ETH-PERP"], 0.01, random.Random(3))
    good = sliced(pairs, 100)
    garbage = [
        (b"\xc1 not msgpack", 40),
        (msgspec.msgpack.encode([1, 2, 3]), 7),  # not [tick, seq] pairs
        (msgspec.msgpack.encode([{"symbol": "ETH-PERP", "price": 1.0}, 5]), 1),  # a tick without its time
        (msgspec.msgpack.encode([{"symbol": "ETH-PERP", "timestamp": 1.0, "price": 1.0, "size": 1.0}, "x"]), 1),
    ]
    blocks, bad, last_seq = pack_blocks([good[0], *garbage, good[1], good[2]])
    assert bad == 40 + 7 + 1 + 1
    assert sum(block.n for block in blocks) == 300 and last_seq == {"ETH-PERP": 300}
    assert len(slice_rows([data for data, _ in [good[0], *garbage]])) == 100


async def test_the_writer_process_stores_good_slices_and_reports_the_bad(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ticks.db'}"
    pairs = events(1500, ["ETH-PERP", "BTC-PERP"], 0.01, random.Random(5))
    writer = WriterProcess(url)
    try:
        bad, last_seq = await writer.write([*sliced(pairs[:700], 150), (b"\x00\x01garbage", 25)])
        newest = {event.symbol: seq for event, seq in pairs[:700]}
        assert bad == 25 and last_seq == newest and len(newest) == 2
        bad, _ = await writer.write(sliced(pairs[700:], 150))
        assert bad == 0
    finally:
        await writer.close()
    stored = stored_rows(tmp_path / "ticks.db")
    assert stored == {
        symbol: {seq: tuple(event_row(event, seq)) for event, seq in pairs if event.symbol == symbol}
        for symbol in ("ETH-PERP", "BTC-PERP")
    }
    store = open_store(url)
    await store.open()
    assert await store.last_seq("ETH-PERP") == max(q for e, q in pairs if e.symbol == "ETH-PERP")
    await store.close()
