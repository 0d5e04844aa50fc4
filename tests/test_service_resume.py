"""Resume by seq against a running service: replay from the ring, then live, with no duplicate and no gap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from svc_helpers import (
    MARKET_TYPES,
    assert_contiguous,
    collect_market,
    connect,
    recv_json,
    recv_type,
    recv_until,
    shared_service,
    wait_for_seq,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(tmp_path_factory, STREAM_INTERVAL_SECONDS="0.01", TRADE_FREQUENCY="0.03")
    yield running
    running.stop()


async def last_seen(service: Any, path: str, count: int = 10) -> dict[str, int]:
    """Watch a stream for a while, disconnect, and return the last seq seen per symbol."""
    async with connect(f"{service.ws_url}{path}") as ws:
        market = await collect_market(ws, count)
    seen: dict[str, int] = {}
    for message in market:
        seen[message["symbol"]] = message["seq"]
    return seen


async def expect_replay_then_live(ws: Any, resume: dict[str, int], live: int = 20) -> list[dict[str, Any]]:
    """After the ack: per symbol, exactly seq resume+1 .. ack's last_seq, then ``live`` more, contiguous."""
    ack = await recv_type(ws, "subscribed")
    heads = ack["data"]["last_seq"]
    assert set(resume) <= set(heads)
    for symbol, seq in resume.items():
        assert heads[symbol] >= seq + 5, "the service should have moved on while we were away"
    market = await collect_market(ws, sum(heads[s] - resume[s] for s in resume) + live)
    ours = [m for m in market if m["symbol"] in resume]
    for symbol, seq in resume.items():
        assert_contiguous([m for m in ours if m["symbol"] == symbol], start=seq + 1)
        assert [m for m in ours if m["symbol"] == symbol][-1]["seq"] > heads[symbol]  # reached live data
    return market


async def test_resume_with_last_seq_query_on_a_single_stream(service: Any) -> None:
    seen = await last_seen(service, "/ws/ETH-PERP")
    await wait_for_seq(service, "ETH-PERP", seen["ETH-PERP"] + 10)
    async with connect(f"{service.ws_url}/ws/ETH-PERP?last_seq={seen['ETH-PERP']}") as ws:
        await expect_replay_then_live(ws, seen)


async def test_resume_with_resume_query_on_a_multi_stream(service: Any) -> None:
    seen = await last_seen(service, "/ws/multi/ETH-PERP,BTC-PERP", count=30)
    assert set(seen) == {"ETH-PERP", "BTC-PERP"}
    for symbol, seq in seen.items():
        await wait_for_seq(service, symbol, seq + 10)
    query = ",".join(f"{symbol}:{seq}" for symbol, seq in seen.items())
    async with connect(f"{service.ws_url}/ws/multi/ETH-PERP,BTC-PERP?resume={query}") as ws:
        await expect_replay_then_live(ws, seen)


@pytest.mark.parametrize("kind", ["resume", "subscribe"])
async def test_resume_with_a_message_for_a_symbol_not_yet_streaming(service: Any, kind: str) -> None:
    seen = await last_seen(service, "/ws/SOL-PERP")
    await wait_for_seq(service, "SOL-PERP", seen["SOL-PERP"] + 10)
    async with connect(f"{service.ws_url}/ws/SUI-PERP") as ws:
        await recv_type(ws, "subscribed")
        if kind == "resume":
            request = {"type": "resume", "last_seq": seen}
        else:
            request = {"type": "subscribe", "symbols": list(seen), "resume": seen}
        await ws.send(json.dumps(request))
        await expect_replay_then_live(ws, seen)


async def test_resume_for_a_symbol_already_streaming_replays_nothing_and_says_why(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        ack = await recv_type(ws, "subscribed")
        start = ack["data"]["last_seq"]["ETH-PERP"] + 1
        market = await collect_market(ws, 5)
        await ws.send(json.dumps({"type": "resume", "last_seq": {"ETH-PERP": max(0, start - 20)}}))
        replies = await recv_until(ws, lambda m: m["type"] == "error")
        assert replies[-1]["code"] == "invalid_message"
        assert "already streaming" in replies[-1]["message"]
        market += [m for m in replies if m["type"] in MARKET_TYPES] + await collect_market(ws, 20)
        assert_contiguous(market, start=start)


async def test_resume_from_the_future_reports_a_gap_then_streams_live(service: Any) -> None:
    head = await wait_for_seq(service, "ETH-PERP", 1)
    claimed = head + 100_000  # as after a service restart reset the seqs
    async with connect(f"{service.ws_url}/ws/ETH-PERP?last_seq={claimed}") as ws:
        ack = await recv_type(ws, "subscribed")
        server_head = ack["data"]["last_seq"]["ETH-PERP"]
        gap = await recv_json(ws)
        assert gap["type"] == "gap" and gap["symbol"] == "ETH-PERP"
        assert gap["data"] == {"from_seq": server_head + 1, "to_seq": claimed, "reason": "ahead_of_server"}
        assert_contiguous(await collect_market(ws, 10), start=server_head + 1)


@pytest.fixture(scope="module")
def small_ring_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(tmp_path_factory, STREAM_INTERVAL_SECONDS="0.005", TRADE_FREQUENCY="1000", RING_SIZE="16")
    yield running
    running.stop()


@pytest.mark.parametrize("how", ["query", "message"])
async def test_resume_past_the_ring_reports_exactly_the_lost_range(small_ring_service: Any, how: str) -> None:
    service = small_ring_service
    seen = (await last_seen(service, "/ws/ETH-PERP", count=3))["ETH-PERP"]
    await wait_for_seq(service, "ETH-PERP", seen + 40)
    if how == "query":
        ws_cm = connect(f"{service.ws_url}/ws/ETH-PERP?last_seq={seen}")
    else:
        ws_cm = connect(f"{service.ws_url}/ws/BTC-PERP")
    async with ws_cm as ws:
        if how == "message":
            await recv_type(ws, "subscribed")
            await ws.send(json.dumps({"type": "resume", "last_seq": {"ETH-PERP": seen}}))
        replies = await recv_until(ws, lambda m: m["type"] == "subscribed" and "ETH-PERP" in m["data"]["symbols"])
        head = replies[-1]["data"]["last_seq"]["ETH-PERP"]
        after = await recv_until(ws, lambda m: m["type"] == "gap")
        assert all(m["symbol"] != "ETH-PERP" for m in after if m["type"] in MARKET_TYPES)
        gap = after[-1]
        assert gap["symbol"] == "ETH-PERP"
        assert gap["data"] == {"from_seq": seen + 1, "to_seq": head - 16, "reason": "ring_overflow"}
        eth = [m for m in await collect_market(ws, 60) if m["symbol"] == "ETH-PERP"]
        assert_contiguous(eth, start=head - 15)  # the whole ring, then live
        assert eth[-1]["seq"] > head
