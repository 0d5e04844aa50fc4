"""SOURCE=replay: recorded ticks go back through the same hub and WebSockets with their original timestamps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from store_helpers import book_row, make_rows, short_level_book
from svc_helpers import collect_market, connect, wait_for_status

from bluefin_service.__main__ import main as service_main
from bluefin_service.books import book_data
from bluefin_service.sources.replay import ReplaySource
from bluefin_service.store import BookRow, open_store, row_event
from marketdata.book import BookView
from marketdata.protocol import decode_server, encode, market_message
from marketdata.ticks import MarketEvent

FAST = {"STREAM_INTERVAL_SECONDS": "0.01", "TRADE_FREQUENCY": "0.02", "FLUSH_INTERVAL_SECONDS": "0.2"}


def comparable(message: dict[str, Any]) -> tuple[Any, ...]:
    return (message["type"], message["symbol"], message["timestamp"], message["data"])


async def test_replay_merges_symbols_in_time_order_within_the_range(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ticks.db'}")
    await store.open()
    eth, btc = (
        make_rows("ETH-PERP", 3000, step=0.001),
        make_rows("BTC-PERP", 2000, start_ts=1_700_000_000.0005, step=0.001),
    )
    await store.write(eth + btc)
    start, end = eth[100].ts, eth[2500].ts
    published: list[MarketEvent] = []
    for speed in (0.0, 20.0):  # as fast as possible, then 20x (2.4 s of ticks in ~0.12 s)
        published.clear()
        replay = ReplaySource(store, ["ETH-PERP", "BTC-PERP", "SOL-PERP"], start, end, speed, page=333)
        await replay.run(published.extend)
        expected = sorted((row for row in eth + btc if start <= row.ts < end), key=lambda row: (row.ts, row.seq))
        assert published == [row_event(row) for row in expected]
        assert replay.finished and replay.published == len(expected)
    await store.close()


async def test_recorded_books_replay_in_time_order_with_the_ticks_and_garbage_is_skipped(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ticks.db'}")
    await store.open()
    ticks = make_rows("ETH-PERP", 40, step=0.1)
    books = [book_row("ETH-PERP", ticks[i].ts, i, 100.0 + i) for i in range(0, 40, 3)]  # same instant as a tick
    books.append(book_row("BTC-PERP", ticks[5].ts + 0.05, 1, 50_000.0))
    garbage = [
        BookRow("ETH-PERP", ticks[7].ts + 0.01, 900, b"\x00not json"),
        BookRow("ETH-PERP", ticks[8].ts + 0.01, 901, encode(market_message(row_event(ticks[8]), 9))),  # not a book
        short_level_book("ETH-PERP", ticks[9].ts + 0.01, 902),
    ]
    await store.write(ticks)
    await store.write_books(books + garbage)
    published: list[Any] = []
    replay = ReplaySource(store, ["ETH-PERP", "BTC-PERP"], ticks[2].ts, ticks[30].ts, speed=0.0, page=7)
    await replay.run(published.extend)

    in_range = [b for b in books if ticks[2].ts <= b.ts < ticks[30].ts]
    expected = sorted(
        [(t.ts, 0, t.seq, row_event(t)) for t in ticks[2:30]]
        + [(b.ts, 1, b.version, decode_server(b.payload)) for b in in_range],
        key=lambda item: item[:3],
    )
    assert len(published) == len(expected)
    for event, (_ts, is_book, _order, want) in zip(published, expected, strict=True):
        if not is_book:
            assert event == want
            continue
        assert isinstance(event, BookView)
        assert (event.symbol, event.timestamp, event.venue, event.update_id) == (
            want.symbol, want.timestamp, want.data.venue, want.data.update_id,
        )  # fmt: skip
        assert book_data(event, 20) == want.data  # the book a subscriber gets is the one recorded
    assert replay.status() == {
        "ticks": 28, "orderbooks": len(in_range), "orderbooks_skipped": 3, "finished": True,
    }  # fmt: skip
    await store.close()


async def test_recorded_live_stream_replays_identically_through_the_service(start_service: Any, tmp_path: Path) -> None:
    live_service = start_service(**FAST)
    async with connect(f"{live_service.ws_url}/ws/multi/ETH-PERP,BTC-PERP") as ws:
        live = await collect_market(ws, 400)
    live_service.stop()  # a clean stop flushes the recorder
    store_url = f"sqlite:///{tmp_path / 'data' / 'ticks.db'}"
    replayed = start_service(
        SOURCE="replay", STORE_URL=store_url, REPLAY_SPEED="0", DATA_DIR=str(tmp_path / "replay-data"),
        REPLAY_START=str(live[0]["timestamp"]), SYMBOLS="ETH-PERP,BTC-PERP",
    )  # fmt: skip
    final = await wait_for_status(replayed, lambda s: not s["running"])
    assert final["source"] == "replay" and final["recorder"] == {"enabled": False}
    # the replay ran before we connected: resume from seq 0 gets it out of the ring, as any client would
    async with connect(f"{replayed.ws_url}/ws/multi/ETH-PERP,BTC-PERP?resume=ETH-PERP:0,BTC-PERP:0") as ws:
        again = await collect_market(ws, 400)
    for symbol in ("ETH-PERP", "BTC-PERP"):
        original = [comparable(m) for m in live if m["symbol"] == symbol]
        replay = [comparable(m) for m in again if m["symbol"] == symbol]
        count = min(len(original), len(replay))
        assert count > 50 and replay[:count] == original[:count]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REPLAY_START": "last tuesday"}, "REPLAY_START"),
        ({"REPLAY_START": "2026-01-02T00:00:00Z", "REPLAY_END": "2026-01-01"}, "REPLAY_END must be after"),
        ({"REPLAY_SPEED": "-1"}, "REPLAY_SPEED"),
        ({"STORE_URL": "mysql://nope"}, "unsupported STORE_URL"),
    ],
)
def test_bad_replay_settings_are_refused_with_the_variable_named(
    env: dict[str, str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in {"SOURCE": "replay", **env}.items():
        monkeypatch.setenv(name, value)
    assert service_main(["--port", "0"], env_files=()) == 2  # refused before anything starts
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
