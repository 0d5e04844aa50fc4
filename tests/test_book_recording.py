"""Order books recorded by a real service fed by a fake exchange, and served back by ``GET /orderbooks``."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp
from fake_exchanges.base import standard_script
from store_helpers import pg_url  # noqa: F401 - a fixture
from svc_helpers import http, wait_for_status
from test_sources import FAKES, _service_env, make_source

DEPTH = 5


async def test_order_books_are_recorded_and_served_back_as_clients_got_them(start_service: Any) -> None:
    await record_and_read_books(start_service, {})


async def test_recorded_books_replay_to_orderbook_subscribers_as_they_were(start_service: Any, tmp_path: Path) -> None:
    recorder, recorded = await record_and_read_books(start_service, {})
    recorder.stop()  # a clean stop flushes what is buffered
    span = recorded[-1]["timestamp"] - recorded[0]["timestamp"]
    replayed = start_service(
        SOURCE="replay", STORE_URL=f"sqlite:///{tmp_path / 'data' / 'ticks.db'}", SYMBOLS="ETH-PERP,BTC-PERP",
        DATA_DIR=str(tmp_path / "replay-data"), REPLAY_START=repr(recorded[0]["timestamp"]),
        REPLAY_SPEED=repr(max(span / 2.0, 0.01)),  # about 2 s of playback, so the client sees it move
    )  # fmt: skip
    received: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{replayed.ws_url}/ws/multi/ETH-PERP") as ws:
        await ws.send_json(
            {"type": "subscribe", "symbols": ["ETH-PERP"], "orderbook": True, "orderbook_depth": DEPTH,
             "orderbook_rate": 20}
        )  # fmt: skip
        final = await wait_for_status(replayed, lambda s: s["replay"]["finished"], timeout=30)
        deadline = asyncio.get_running_loop().time() + 10
        while not received or received[-1]["timestamp"] < recorded[-1]["timestamp"]:
            assert asyncio.get_running_loop().time() < deadline, "the last recorded book never reached the client"
            message = await ws.receive_json(timeout=10)
            if message["type"] == "orderbook":
                received.append(message)
    assert final["replay"]["orderbooks"] >= len(recorded) and final["replay"]["orderbooks_skipped"] == 0
    as_recorded = {(book["timestamp"], json.dumps(book["data"])) for book in recorded}
    assert all((book["timestamp"], json.dumps(book["data"])) in as_recorded for book in received)
    stamps = [book["timestamp"] for book in received]
    assert stamps == sorted(stamps) and received[-1]["data"] == recorded[-1]["data"]


async def test_order_books_recorded_into_postgresql(start_service: Any, pg_url: str) -> None:  # noqa: F811
    await record_and_read_books(start_service, {"STORE_URL": pg_url})


async def record_and_read_books(start_service: Any, store_env: dict[str, str]) -> tuple[Any, list[dict[str, Any]]]:
    """Record a fake OKX session's books; returns the service and its recorded ETH-PERP books, oldest first."""
    script = standard_script(random.Random(7), [], steps_between=40)
    _, symbol_map = make_source("okx", "unused")
    fake = FAKES["okx"](list(symbol_map.values()), script, seed=7)
    env = _service_env("okx", await fake.start())
    env |= {"RECORD": "true", "RECORD_BOOK_SECONDS": "0.05", "RECORD_BOOK_DEPTH": str(DEPTH), **store_env}
    service = start_service(FLUSH_INTERVAL_SECONDS="0.1", **env)
    url = f"{service.http_url}/orderbooks/ETH-PERP"
    try:
        await asyncio.wait_for(fake.play(), 30)
        expected = fake.expected_book(symbol_map["ETH-PERP"], DEPTH)

        async def newest_is_final() -> bool:
            status, body, _ = await http("GET", f"{url}?limit=1")
            if status != 200 or not body["books"]:
                return False
            data = body["books"][-1]["data"]
            return ([tuple(level) for level in data["bids"]], [tuple(level) for level in data["asks"]]) == expected

        deadline = asyncio.get_running_loop().time() + 15
        while not await newest_is_final():
            assert asyncio.get_running_loop().time() < deadline, "the newest recorded book never equalled the venue's"
            await asyncio.sleep(0.1)
        recorder = (await wait_for_status(service, lambda s: s["recorder"]["books_written"] >= 2))["recorder"]
        assert recorder["books_dropped"] == 0
        status, body, _ = await http("GET", f"{url}?limit=10000")
        assert status == 200 and body["count"] == len(body["books"]) >= 2
        books = body["books"]
        assert all(b["type"] == "orderbook" and b["symbol"] == "ETH-PERP" for b in books)
        assert all(len(b["data"]["bids"]) <= DEPTH and len(b["data"]["asks"]) <= DEPTH for b in books)
        stamps = [b["timestamp"] for b in books]
        assert stamps == sorted(stamps)
        ids = [b["data"]["update_id"] for b in books]
        assert len(set(ids)) == len(ids)  # a snapshot only when the book changed
        middle = stamps[len(stamps) // 2]
        status, body, _ = await http("GET", f"{url}?start={middle!r}&limit=10000")
        assert status == 200 and [b["timestamp"] for b in body["books"]] == [t for t in stamps if t >= middle]

        for query, message in (
            ("limit=0", "limit"),
            ("start=soon", "start"),
            ("start=1700000010&end=1700000000", "must be after"),
            ("depth=5", "unknown parameter"),
        ):
            status, body, _ = await http("GET", f"{url}?{query}")
            assert status == 400 and message in body["error"]["message"], query
        status, body, _ = await http("GET", f"{service.http_url}/orderbooks/NOPE-PERP")
        assert status == 404 and body["error"]["code"] == "unknown_symbol"
    finally:
        await fake.stop()
    return service, books


async def test_a_mock_service_records_no_books_and_says_so_per_symbol(start_service: Any) -> None:
    service = start_service()
    status, body, _ = await http("GET", f"{service.http_url}/orderbooks/ETH-PERP")
    assert status == 200 and body == {"symbol": "ETH-PERP", "count": 0, "books": []}
