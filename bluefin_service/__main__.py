"""`python -m bluefin_service` / `bluefin-service`: run the streaming service."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from bluefin_service import __version__
from bluefin_service.config import ServiceSettings, load_settings
from marketdata.errors import ConfigError

log = logging.getLogger("bluefin_service")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bluefin-service",
        description="Real-time market data over WebSockets",
        epilog="other command: bluefin-service export --help (recorded ticks/candles to Parquet or CSV)",
    )
    parser.add_argument("--host", help="interface to listen on (default 0.0.0.0, or HOST)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080, or PORT; 0 picks a free one)")
    parser.add_argument("--env-file", action="append", type=Path, default=None, help="extra .env file(s) to read")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def _urls(host: str, port: int) -> list[str]:
    shown = "localhost" if host in ("0.0.0.0", "::", "") else host
    return [
        f"http://{shown}:{port}/health",
        f"http://{shown}:{port}/streaming/status",
        f"ws://{shown}:{port}/ws/ETH-PERP",
        f"ws://{shown}:{port}/ws/multi/ETH-PERP,BTC-PERP,SUI-PERP",
    ]


async def serve(settings: ServiceSettings) -> None:
    from bluefin_service.app import create_app  # here, so a bad setting is reported before the heavy imports

    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, backlog=4096, reuse_address=True)
    await site.start()
    port = settings.port
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    print(
        f"Bluefin service {__version__} listening on http://{settings.host}:{port} "
        f"(source={settings.source_name}, symbols={','.join(settings.symbols)})",
        flush=True,
    )
    for url in _urls(settings.host, port):
        print(f"  {url}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await runner.cleanup()


def main(argv: list[str] | None = None, env_files: tuple[Path, ...] = (Path(".env"),)) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        from bluefin_service.export import main as export_main

        return export_main(argv[1:])
    args = parse_args(argv)
    files = env_files + tuple(args.env_file or ())
    overrides = {key: value for key, value in (("host", args.host), ("port", args.port)) if value is not None}
    try:
        settings = load_settings(files, **overrides)
    except ConfigError as exc:
        print(f"bluefin-service: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if os.name != "nt":
        try:
            import uvloop

            uvloop.install()
        except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
            pass
    try:
        asyncio.run(serve(settings))
    except ConfigError as exc:
        print(f"bluefin-service: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bluefin-service: cannot listen on {settings.host}:{settings.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
