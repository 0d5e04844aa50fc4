"""Slow consumers against a running service: closed with 4001, or switched to latest-only, never slowing others."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from svc_helpers import (
    MARKET_TYPES,
    Closed,
    RawWebSocket,
    assert_contiguous,
    background_reader,
    connect,
    shared_service,
    status,
    wait_for_status,
)

SYMBOLS = "ETH-PERP,BTC-PERP,SUI-PERP,SOL-PERP"
TINY_RECV_BUFFER = 4096  # so a reader that stops reading backs up into the service quickly


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(
        tmp_path_factory,
        STREAM_INTERVAL_SECONDS="0.00025",
        TRADE_FREQUENCY="0.002",
        MAX_BUFFER_BYTES="16384",
        HEARTBEAT_INTERVAL_SECONDS="0.5",
    )
    yield running
    running.stop()


def healthy_reader(service: Any) -> contextlib.AbstractAsyncContextManager[list[dict[str, Any]]]:
    """A client that keeps reading one symbol; yields the list its messages land in."""
    return background_reader(f"{service.ws_url}/ws/ETH-PERP")


def check_healthy(received: list[dict[str, Any]]) -> None:
    market = [m for m in received if m["type"] in MARKET_TYPES]
    assert len(market) > 100
    assert not [m for m in received if m["type"] in ("gap", "error")]
    assert_contiguous(market)


async def test_a_reader_that_stops_reading_is_closed_with_4001_and_others_do_not_notice(service: Any) -> None:
    before = (await status(service))["dropped_slow_consumers"]
    async with healthy_reader(service) as received:
        stalled = await RawWebSocket.connect(service.port, f"/ws/multi/{SYMBOLS}", recv_buffer=TINY_RECV_BUFFER)
        try:
            await wait_for_status(service, lambda s: s["dropped_slow_consumers"] > before)
            # Now read: what was queued, then the close frame.
            with pytest.raises(Closed) as closed:
                while True:
                    await stalled.recv_json()
            assert closed.value.code == 4001
            assert "slow consumer" in closed.value.reason
        finally:
            stalled.close()
        count = len(received)
        # The healthy stream goes on after the drop.
        await wait_for_status(service, lambda s: s["connections"] == 1 and len(received) > count + 200)
    check_healthy(received)


async def test_on_slow_latest_switches_to_latest_only_then_reports_the_gap(service: Any) -> None:
    before = await status(service)
    async with healthy_reader(service) as received:
        stalled = await RawWebSocket.connect(
            service.port, f"/ws/multi/{SYMBOLS}?on_slow=latest", recv_buffer=TINY_RECV_BUFFER
        )
        try:
            await wait_for_status(service, lambda s: s["conflated_slow_consumers"] > before["conflated_slow_consumers"])
            messages: list[dict[str, Any]] = []
            slow_gaps: list[dict[str, Any]] = []
            after_gap = 0
            while after_gap < 50:
                message = await stalled.recv_json()  # a close frame would raise here
                messages.append(message)
                if message["type"] == "gap":
                    slow_gaps.append(message)
                after_gap += bool(slow_gaps) and message["type"] in MARKET_TYPES
        finally:
            stalled.close()
    check_healthy(received)
    assert (await status(service))["dropped_slow_consumers"] == before["dropped_slow_consumers"]
    assert {g["data"]["reason"] for g in slow_gaps} == {"slow_consumer"}
    # Per symbol: each message follows the previous one, or a gap names exactly the seqs in between.
    last: dict[str, int] = {}
    pending_gap: dict[str, dict[str, int]] = {}
    for message in messages:
        if message["type"] == "gap":
            pending_gap[message["symbol"]] = message["data"]
            continue
        if message["type"] not in MARKET_TYPES:
            continue
        symbol, seq = message["symbol"], message["seq"]
        gap = pending_gap.pop(symbol, None)
        if symbol in last:
            expected_from = last[symbol] + 1
            if gap is None:
                assert seq == expected_from, f"{symbol}: {last[symbol]} then {seq} without a gap"
            else:
                assert (gap["from_seq"], gap["to_seq"]) == (expected_from, seq - 1)
        last[symbol] = seq


async def test_latest_only_client_whose_replies_pile_up_is_closed_too(service: Any) -> None:
    """Latest-only bounds market data; replays and replies still count, so a client that never reads is cut off."""
    before = (await status(service))["dropped_slow_consumers"]
    stalled = await RawWebSocket.connect(service.port, "/ws/ETH-PERP?on_slow=latest", recv_buffer=TINY_RECV_BUFFER)
    try:
        for _ in range(30):  # each asks for the whole ring again: far more than twice the 16 KiB limit
            await stalled.send_text(json.dumps({"type": "unsubscribe", "symbol": "BTC-PERP"}))
            await stalled.send_text(json.dumps({"type": "subscribe", "symbol": "BTC-PERP", "resume": {"BTC-PERP": 0}}))
        await wait_for_status(service, lambda s: s["dropped_slow_consumers"] > before)
        with pytest.raises(Closed) as closed:
            while True:
                await stalled.recv_json()
        assert closed.value.code == 4001
    finally:
        stalled.close()


async def test_a_resume_bigger_than_the_buffer_limit_is_not_slowness(start_service) -> None:
    """A client resuming full rings gets all of it; the replay's bytes do not count as falling behind."""
    service = start_service(
        STREAM_INTERVAL_SECONDS="0.0005", TRADE_FREQUENCY="0.001", SYMBOLS="ETH-PERP,BTC-PERP",
        RING_SIZE="1500", MAX_BUFFER_BYTES="65536",
    )  # fmt: skip
    await wait_for_status(service, lambda s: min(v["last_seq"] for v in s["symbols"].values()) > 1600)
    async with connect(f"{service.ws_url}/ws/multi/ETH-PERP,BTC-PERP?resume=ETH-PERP:0,BTC-PERP:0") as ws:
        messages: list[dict[str, Any]] = []
        market = 0
        while market < 3300:  # both full rings, then live
            messages.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
            market += messages[-1]["type"] in MARKET_TYPES
    assert (await status(service))["dropped_slow_consumers"] == 0
    for symbol in ("ETH-PERP", "BTC-PERP"):
        seqs = [m["seq"] for m in messages if m["type"] in MARKET_TYPES and m["symbol"] == symbol]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # ring, then live, without a hole
    assert {m["data"]["reason"] for m in messages if m["type"] == "gap"} == {"ring_overflow"}
