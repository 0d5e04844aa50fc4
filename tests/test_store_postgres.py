"""The service recording into a real PostgreSQL, and the database going down and coming back.

A small TCP proxy in front of the local PostgreSQL plays the network: closed at start (database down), opened
(database up), then every connection cut and the port closed (database lost mid-run), then opened again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import asyncpg
from store_helpers import PG_URL, pg_url  # noqa: F401 - pg_url is a fixture
from svc_helpers import assert_contiguous, collect_market, connect, http, status, wait_for_status

SYMBOLS = "ETH-PERP,BTC-PERP,SUI-PERP,SOL-PERP"
FAST = {"STREAM_INTERVAL_SECONDS": "0.005", "TRADE_FREQUENCY": "0.01", "FLUSH_INTERVAL_SECONDS": "0.2"}


class Proxy:
    """Forwards a local port to PostgreSQL; ``down()`` cuts every connection and stops listening."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def stored_seqs(url: str) -> dict[str, list[int]]:
    schema = url.rsplit("schema=", 1)[1]
    conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
    try:
        rows = await conn.fetch("SELECT symbol, seq FROM ticks ORDER BY symbol, seq")
    finally:
        await conn.close()
    result: dict[str, list[int]] = {}
    for symbol, seq in rows:
        result.setdefault(symbol, []).append(seq)
    return result


async def test_database_down_at_start_and_mid_run_loses_nothing(start_service: Any, pg_url: str) -> None:  # noqa: F811
    proxy = Proxy(free_port())
    via_proxy = pg_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    service = start_service(STORE_URL=via_proxy, **FAST)
    try:
        failing = await wait_for_status(service, lambda s: s["recorder"]["failures"] >= 2)
        assert "cannot connect" in failing["recorder"]["last_error"]
        assert "/streaming/status" not in failing["recorder"]["store"]
        async with connect(f"{service.ws_url}/ws/multi/{SYMBOLS}") as ws:
            assert_contiguous(await collect_market(ws, 500))  # the stream does not wait for the database

            await proxy.up()
            await wait_for_status(service, lambda s: s["recorder"]["state"] == "ok" and s["recorder"]["written"] > 0)
            await proxy.down()  # lost mid-run
            await wait_for_status(service, lambda s: s["recorder"]["state"] == "failing")
            assert_contiguous(await collect_market(ws, 500))
            assert (await status(service))["dropped_slow_consumers"] == 0
            await proxy.up()
            await wait_for_status(service, lambda s: s["recorder"]["state"] == "ok")
        await http("POST", f"{service.http_url}/streaming/stop")
        final = await wait_for_status(service, lambda s: s["recorder"]["buffered"] == 0)
        seqs = await stored_seqs(pg_url)
        for symbol, info in final["symbols"].items():  # every tick from the first, once, no holes
            assert seqs[symbol] == list(range(1, info["last_seq"] + 1))
        assert final["recorder"]["dropped"] == 0
        assert any("recovered after" in line for line in service.output)
    finally:
        service.stop()
        await proxy.down()


async def test_recording_into_postgres_serves_history(start_service: Any, pg_url: str) -> None:  # noqa: F811
    service = start_service(STORE_URL=pg_url, **FAST)
    await wait_for_status(service, lambda s: s["recorder"]["written"] > 300)
    code, body, _ = await http("GET", f"{service.http_url}/trades/ETH-PERP?start=0&limit=50")
    assert code == 200 and body["count"] == 50
    assert [tick["seq"] for tick in body["ticks"]] == list(range(1, 51))
    code, body, _ = await http("GET", f"{service.http_url}/market_data/ETH-PERP?interval=1s&limit=5")
    candles = body["candles"]
    assert code == 200 and 1 <= len(candles) <= 5  # none before the first recorded tick
    assert [c["start"] for c in candles] == [candles[0]["start"] + i for i in range(len(candles))]
    assert candles[-1]["final"] is False  # the one forming now
