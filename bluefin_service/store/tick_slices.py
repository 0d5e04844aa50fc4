"""Recorded ticks on their way to the store: MessagePack slices from the service, blocks in the writer.

The recorder's only per-tick work on the event loop is appending the event and its seq to a list; every
``PACK_SLICE`` ticks it encodes that run of ``[event, seq, event, seq, ...]`` in one call (MessagePack, in C:
~0.1 us a tick, where packing each tick into its symbol's columns in Python cost ~0.45 us). The writer process
decodes the slices and packs them into per-symbol blocks (``marketdata/tick_blocks.py``), off the loop.
History reads of ticks not yet stored decode the recorder's pending slices with ``slice_rows``.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from bluefin_service.store import PRICE_UPDATE, TRADE, TickRow
from bluefin_service.store.sqlite_blocks import BLOCK_TICKS
from marketdata.tick_blocks import (
    BLOCK_SPAN_SECONDS,
    BUY_FLAG,
    PRICE_UPDATE_FLAG,
    SELL_FLAG,
    Block,
    ChunkColumns,
    CorruptBlock,
)


class SlicedTick(msgspec.Struct):
    """A ``Trade`` or a ``PriceUpdate`` as encoded (a map of its fields): a trade has ``size``, an update
    ``volume``."""

    symbol: str
    timestamp: float
    price: float
    size: float | None = None
    volume: float | None = None
    side: str | None = None
    trade_id: str | None = None


encode_slice = msgspec.msgpack.Encoder().encode  # of [event, seq, event, seq, ...]
_decode_slice = msgspec.msgpack.Decoder(list[SlicedTick | int]).decode


def decode_slice(data: bytes) -> list[SlicedTick | int]:
    """``[tick, seq, tick, seq, ...]``; raises CorruptBlock when the slice does not decode."""
    try:
        items = _decode_slice(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptBlock(f"a tick slice that does not decode: {exc}") from None
    if len(items) % 2 or not all(type(seq) is int for seq in items[1::2]):
        raise CorruptBlock("a tick slice that is not [tick, seq, ...] pairs")
    return items


def pack_blocks(slices: Iterable[tuple[bytes, int]]) -> tuple[list[Block], int, dict[str, int]]:
    """Slices ``(data, ticks)`` -> per-symbol blocks of up to ``BLOCK_TICKS`` ticks and ``BLOCK_SPAN_SECONDS``,
    the ticks that could not be stored (a slice or block that does not decode), and the newest seq per symbol."""
    blocks: list[Block] = []
    bad = 0
    filling: dict[str, ChunkColumns] = {}

    def finish(chunk: ChunkColumns) -> None:
        nonlocal bad
        try:
            blocks.append(chunk.block())
        except CorruptBlock:
            bad += len(chunk)

    for data, count in slices:
        try:
            items = decode_slice(data)
        except CorruptBlock:
            bad += count
            continue
        for i in range(0, len(items), 2):
            tick: SlicedTick = items[i]  # type: ignore[assignment]
            chunk = filling.get(tick.symbol)
            if chunk is not None and abs(tick.timestamp - chunk.stamps[0]) > BLOCK_SPAN_SECONDS:
                finish(filling.pop(tick.symbol))
                chunk = None
            if chunk is None:
                chunk = filling[tick.symbol] = ChunkColumns(tick.symbol)
            chunk.seqs.append(items[i + 1])  # type: ignore[arg-type]
            chunk.stamps.append(tick.timestamp)
            chunk.prices.append(tick.price)
            if tick.size is not None:  # a trade
                chunk.sizes.append(tick.size)
                chunk.flags.append(BUY_FLAG if tick.side == "buy" else SELL_FLAG)
                chunk.trade_ids.append(tick.trade_id or "")
            else:
                chunk.sizes.append(tick.volume if tick.volume is not None else float("nan"))
                chunk.flags.append(PRICE_UPDATE_FLAG)
            if len(chunk.seqs) >= BLOCK_TICKS:
                finish(filling.pop(tick.symbol))
    for chunk in filling.values():
        finish(chunk)
    last_seq: dict[str, int] = {}
    for block in blocks:
        last_seq[block.symbol] = max(last_seq.get(block.symbol, 0), block.last_seq)
    return blocks, bad, last_seq


def slice_rows(slices: Iterable[bytes], symbol: str | None = None) -> list[TickRow]:
    """The ticks of some slices as store rows (of one symbol, if given); slices that do not decode are skipped.
    Python per tick: run it in a worker thread."""
    rows: list[TickRow] = []
    for data in slices:
        try:
            items = decode_slice(data)
        except CorruptBlock:
            continue
        for i in range(0, len(items), 2):
            tick: SlicedTick = items[i]  # type: ignore[assignment]
            if symbol is not None and tick.symbol != symbol:
                continue
            seq: int = items[i + 1]  # type: ignore[assignment]
            if tick.size is not None:
                rows.append(TickRow(tick.symbol, tick.timestamp, seq, TRADE, tick.price, tick.size, tick.side,
                                    tick.trade_id))  # fmt: skip
            else:
                rows.append(TickRow(tick.symbol, tick.timestamp, seq, PRICE_UPDATE, tick.price, tick.volume or 0.0,
                                    None, None))  # fmt: skip
    return rows
