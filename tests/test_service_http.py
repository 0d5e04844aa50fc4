"""The HTTP side of a running service: the guide's curl commands, start/stop, JSON errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from svc_helpers import (
    MARKET_TYPES,
    RawWebSocket,
    collect_market,
    connect,
    http,
    recv_json,
    recv_type,
    shared_service,
    status,
    wait_for_status,
)

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    running = shared_service(
        tmp_path_factory, STREAM_INTERVAL_SECONDS="0.02", TRADE_FREQUENCY="0.05", HEARTBEAT_INTERVAL_SECONDS="0.2"
    )
    yield running
    running.stop()


async def test_health_reports_status_uptime_source_version(service: Any) -> None:
    code, body, headers = await http("GET", f"{service.http_url}/health")
    assert code == 200
    assert headers["Content-Type"].startswith("application/json")
    assert body["status"] == "ok"
    assert body["source"] == "mock"
    assert body["version"] == "0.1.0"
    assert isinstance(body["uptime_seconds"], float) and body["uptime_seconds"] >= 0
    assert body["streaming"] is True


async def test_streaming_status_counts_subscribers_messages_and_connections(service: Any) -> None:
    async with (
        connect(f"{service.ws_url}/ws/ETH-PERP") as single,
        connect(f"{service.ws_url}/ws/multi/ETH-PERP,BTC-PERP") as multi,
    ):
        await collect_market(single, 3)
        await collect_market(multi, 3)
        body = await wait_for_status(service, lambda s: s["message_rate"] > 0)
        assert body["running"] is True
        assert body["connections"] == 2
        assert body["active_symbols"] == 2
        assert {symbol: info["subscribers"] for symbol, info in body["symbols"].items()} == {
            "ETH-PERP": 2,
            "BTC-PERP": 1,
            "SUI-PERP": 0,
            "SOL-PERP": 0,
        }
        assert all(info["last_seq"] > 0 for info in body["symbols"].values())
        assert body["messages_sent"] >= 6
        assert body["dropped_slow_consumers"] == 0
        assert isinstance(body["message_rate"], float)
    after = await wait_for_status(service, lambda s: s["connections"] == 0)
    assert all(info["subscribers"] == 0 for info in after["symbols"].values())


async def test_stop_and_start_are_idempotent_and_clients_keep_heartbeats(service: Any) -> None:
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        await collect_market(ws, 2)
        stops = [await http("POST", f"{service.http_url}/streaming/stop") for _ in range(2)]
        assert [(code, body) for code, body, _ in stops] == [
            (200, {"running": False, "changed": True}),
            (200, {"running": False, "changed": False}),
        ]
        stopped = await status(service)
        assert stopped["running"] is False
        last_seq = stopped["symbols"]["ETH-PERP"]["last_seq"]
        # Messages published before the stop may still be in flight; nothing newer may arrive.
        beats = []
        while len(beats) < 3:
            message = await recv_json(ws)
            if message["type"] in MARKET_TYPES:
                assert message["seq"] <= last_seq
            elif message["type"] == "heartbeat":
                beats.append(message)
        assert beats[-1]["data"]["running"] is False
        assert beats[-1]["data"]["last_seq"] == {"ETH-PERP": last_seq}
        assert (await status(service))["symbols"]["ETH-PERP"]["last_seq"] == last_seq

        starts = [await http("POST", f"{service.http_url}/streaming/start") for _ in range(2)]
        assert [(code, body) for code, body, _ in starts] == [
            (200, {"running": True, "changed": True}),
            (200, {"running": True, "changed": False}),
        ]
        resumed = await collect_market(ws, 1)
        assert resumed[0]["seq"] == last_seq + 1  # the sequence continues across stop/start
        assert (await status(service))["running"] is True
        assert (await recv_type(ws, "heartbeat"))["data"]["running"] is True


@pytest.mark.parametrize(
    ("method", "path", "code", "error"),
    [
        ("GET", "/no/such/path", 404, "not_found"),
        ("GET", "/streaming", 404, "not_found"),
        ("DELETE", "/health", 405, "method_not_allowed"),
        ("GET", "/streaming/stop", 405, "method_not_allowed"),
        ("POST", "/streaming/status", 405, "method_not_allowed"),
        ("GET", "/ws/ETH-PERP", 426, "upgrade_required"),
        ("GET", "/ws/multi/ETH-PERP,BTC-PERP", 426, "upgrade_required"),
    ],
)
async def test_http_errors_are_json(service: Any, method: str, path: str, code: int, error: str) -> None:
    status_code, body, headers = await http(method, f"{service.http_url}{path}")
    assert status_code == code
    assert headers["Content-Type"].startswith("application/json")
    assert body["error"]["code"] == error
    assert body["error"]["message"]
    if code == 405:
        assert headers["Allow"]
    if code == 426:
        assert headers["Upgrade"] == "websocket"
    assert (await http("GET", f"{service.http_url}/health"))[0] == 200


@pytest.mark.skipif(shutil.which("curl") is None, reason="the guide's command needs curl")
async def test_guides_curl_websocket_handshake_switches_protocols(service: Any) -> None:
    key = "SGVsbG8sIHdvcmxkIQ=="  # the guide's key: 13 bytes, not the 16 RFC 6455 asks for
    command = [
        "curl", "--include", "--no-buffer", "--max-time", "1.5",
        "--header", "Connection: Upgrade",
        "--header", "Upgrade: websocket",
        "--header", f"Sec-WebSocket-Key: {key}",
        "--header", "Sec-WebSocket-Version: 13",
        f"{service.http_url}/ws/ETH-PERP",
    ]  # fmt: skip
    result = await asyncio.to_thread(subprocess.run, command, capture_output=True, timeout=30)
    head = result.stdout.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 101 Switching Protocols"), head
    accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    assert f"Sec-WebSocket-Accept: {accept}" in head
    assert b'"type":"subscribed"' in result.stdout


async def test_raw_rfc_handshake_streams_frames(service: Any) -> None:
    raw = await RawWebSocket.connect(service.port, "/ws/ETH-PERP")
    try:
        assert (await raw.recv_json())["type"] == "subscribed"
        assert (await raw.recv_json())["type"] in (*MARKET_TYPES, "heartbeat")
    finally:
        raw.close()


async def test_shutdown_closes_clients_with_1001_and_exits_cleanly(start_service: Any) -> None:
    service = start_service(STREAM_INTERVAL_SECONDS="0.05")
    async with connect(f"{service.ws_url}/ws/ETH-PERP") as ws:
        await collect_market(ws, 1)
        stopping = asyncio.create_task(asyncio.to_thread(service.stop))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await recv_json(ws)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert await stopping == 0
