"""Feeds the Node server the same schedule: ``SYMBOL<TAB>payload`` lines on stdout, one per tick."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from _feed import Batch, run_feed, server_parser


async def main() -> None:
    args = server_parser(__doc__ or "").parse_args()
    out = sys.stdout.buffer

    def write(batch: Batch) -> None:
        out.write(b"".join(symbol.encode() + b"\t" + payload + b"\n" for symbol, payload in batch))
        out.flush()

    await run_feed(args.symbols.split(","), args.rate, args.seed, write)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        uvloop.run(main())
