"""Recorded ticks as per-symbol column blocks: the layout the SQLite store keeps and every reader of it decodes.

A block is one symbol's run of up to ~1000 ticks in seq order, stored as one row of columns: seqs (int64),
event timestamps, prices and sizes (float64; a price update's size is the venue's rolling volume), one flag
byte a tick (``PRICE_UPDATE_FLAG``, ``SELL_FLAG``, ``BUY_FLAG``), all little-endian, and the trades' ids as one
MessagePack array of strings. About 36 bytes a tick, against ~90 for a row per tick with its indexes.

One row per chunk is what lets the recorder keep up with 100k ticks/s on a few percent of a core: the writer
process binds a handful of values per block and decodes nothing, where one row per tick cost it ~4-6 us a tick
(decode + per-row ``executemany`` binding + two B-tree inserts), about half a core at 100k/s. Readers pick
blocks by their seq or time bounds, filter with the arrays, and build rows only for the ticks they return.

A block whose columns do not agree raises CorruptBlock, which readers count and skip; a tick with an unknown flag
is left out and counted. One bad block never hides the rest of the history.
"""

from __future__ import annotations

import math
import sys
from array import array
from typing import NamedTuple

import msgspec
import numpy as np

from marketdata.ticks import MarketEvent, Trade

TRADE = "trade"
PRICE_UPDATE = "price_update"
PRICE_UPDATE_FLAG, SELL_FLAG, BUY_FLAG = 0, 1, 3  # bit 0: a trade; bit 1: the buyer was the taker
BLOCK_SPAN_SECONDS = 60.0  # a block is cut once its ticks span this much event time
BLOCK_COLUMNS = "symbol, first_seq, last_seq, ts_min, ts_max, n, seqs, stamps, prices, sizes, flags, trade_ids"

# (symbol, ts, seq, kind, price, size, side, trade_id): the store's row tuple (``bluefin_service.store.TickRow``)
RowTuple = tuple[str, float, int, str, float, float, "str | None", "str | None"]

_encode_ids = msgspec.msgpack.Encoder().encode
_decode_ids = msgspec.msgpack.Decoder(list[str]).decode


class CorruptBlock(ValueError):
    """A stored block whose columns do not decode or do not agree."""


class Block(NamedTuple):
    """One block row, in the column order of the ``tick_blocks`` table (``BLOCK_COLUMNS``)."""

    symbol: str
    first_seq: int
    last_seq: int
    ts_min: float
    ts_max: float
    n: int
    seqs: bytes
    stamps: bytes
    prices: bytes
    sizes: bytes
    flags: bytes
    trade_ids: bytes


class ChunkColumns:
    """A block being built a tick at a time (the recorder's chunks). ``add`` is the reference; the recorder
    inlines the same appends in its packing loop."""

    __slots__ = ("first_ts", "flags", "prices", "seqs", "sizes", "stamps", "symbol", "trade_ids")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.first_ts = math.nan  # the first tick's time (the recorder cuts a block at BLOCK_SPAN_SECONDS from it)
        self.seqs = array("q")
        self.stamps = array("d")
        self.prices = array("d")
        self.sizes = array("d")
        self.flags = bytearray()
        self.trade_ids: list[str] = []

    def __len__(self) -> int:
        return len(self.seqs)

    def add(self, event: MarketEvent, seq: int) -> None:
        if not self.seqs:
            self.first_ts = event.timestamp
        self.seqs.append(seq)
        self.stamps.append(event.timestamp)
        self.prices.append(event.price)
        if isinstance(event, Trade):
            self.sizes.append(event.size)
            self.flags.append(BUY_FLAG if event.side == "buy" else SELL_FLAG)
            self.trade_ids.append(event.trade_id)
        else:
            self.sizes.append(event.volume)
            self.flags.append(PRICE_UPDATE_FLAG)

    def parts(self) -> tuple[bytes, bytes, bytes, bytes, bytes, bytes]:
        """seqs, stamps, prices, sizes, flags, trade_ids as stored."""
        return (
            little_endian(self.seqs), little_endian(self.stamps), little_endian(self.prices),
            little_endian(self.sizes), bytes(self.flags), _encode_ids(self.trade_ids),
        )  # fmt: skip

    def block(self) -> Block:
        return make_block(self.symbol, *self.parts())


def little_endian(values: array) -> bytes:  # type: ignore[type-arg]
    """An ``array('q')`` or ``array('d')`` as little-endian bytes, whatever this machine's byte order."""
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def make_block(
    symbol: str, seqs: bytes, stamps: bytes, prices: bytes, sizes: bytes, flags: bytes, trade_ids: bytes
) -> Block:
    """A block from its columns; the bounds come from the arrays (raises CorruptBlock if they disagree)."""
    seq_values, ts_values = _arrays(seqs, stamps)
    n = len(seq_values)
    if n == 0:
        raise CorruptBlock("an empty block")
    return Block(
        symbol, int(seq_values[0]), int(seq_values[-1]), float(ts_values.min()), float(ts_values.max()), n,
        seqs, stamps, prices, sizes, flags, trade_ids,
    )  # fmt: skip


def block_from_rows(symbol: str, rows: list[RowTuple]) -> Block:
    """A block of ``rows`` (one symbol, in seq order)."""
    flags = bytes((BUY_FLAG if r[6] == "buy" else SELL_FLAG) if r[3] == TRADE else PRICE_UPDATE_FLAG for r in rows)
    return make_block(
        symbol,
        np.array([r[2] for r in rows], dtype="<i8").tobytes(),
        np.array([r[1] for r in rows], dtype="<f8").tobytes(),
        np.array([r[4] for r in rows], dtype="<f8").tobytes(),
        np.array([r[5] for r in rows], dtype="<f8").tobytes(),
        flags,
        _encode_ids([r[7] or "" for r in rows if r[3] == TRADE]),
    )


def _arrays(seqs: bytes, stamps: bytes) -> tuple[np.ndarray, np.ndarray]:
    if len(seqs) % 8 or len(seqs) != len(stamps):
        raise CorruptBlock(f"seq and timestamp columns of {len(seqs)} and {len(stamps)} bytes")
    seq_values = np.frombuffer(seqs, "<i8")
    ts_values = np.frombuffer(stamps, "<f8")
    if len(seq_values) > 1 and not bool((seq_values[1:] > seq_values[:-1]).all()):
        raise CorruptBlock("seqs not strictly increasing")
    if not bool(np.isfinite(ts_values).all()):
        raise CorruptBlock("a timestamp that is not a finite number")
    return seq_values, ts_values


def block_arrays(block: Block) -> tuple[np.ndarray, np.ndarray]:
    """The block's seqs and timestamps, checked against its tick count."""
    seq_values, ts_values = _arrays(block.seqs, block.stamps)
    if len(seq_values) != block.n:
        raise CorruptBlock(f"{len(seq_values)} seqs for {block.n} ticks")
    return seq_values, ts_values


def block_rows(block: Block, keep: np.ndarray | None = None) -> tuple[list[RowTuple], int]:
    """The block's ticks as row tuples in seq order, and how many were left out as invalid; ``keep`` (a boolean
    mask) selects some of them. Raises CorruptBlock when the block as a whole does not decode."""
    seq_values, ts_values = block_arrays(block)
    n = block.n
    if len(block.prices) != 8 * n or len(block.sizes) != 8 * n or len(block.flags) != n:
        raise CorruptBlock(f"price, size or flag columns of the wrong length for {n} ticks")
    flags = np.frombuffer(block.flags, np.uint8)
    try:
        trade_ids = _decode_ids(block.trade_ids)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptBlock(f"trade ids do not decode: {exc}") from None
    trade_flags = (flags & 1).astype(bool)
    if len(trade_ids) != int(trade_flags.sum()):
        raise CorruptBlock(f"{len(trade_ids)} trade ids for {int(trade_flags.sum())} trades")
    id_of = np.cumsum(trade_flags) - 1  # each trade's index in trade_ids
    if keep is None:
        keep = np.ones(n, dtype=bool)
    valid = keep & ((flags == PRICE_UPDATE_FLAG) | (flags == SELL_FLAG) | (flags == BUY_FLAG))
    chosen = np.flatnonzero(valid)
    symbol = block.symbol
    rows = [
        (symbol, ts, seq, TRADE, price, size, "buy" if flag == BUY_FLAG else "sell", trade_ids[ref])
        if flag
        else (symbol, ts, seq, PRICE_UPDATE, price, size, None, None)
        for ts, seq, price, size, flag, ref in zip(
            ts_values[chosen].tolist(),
            seq_values[chosen].tolist(),
            np.frombuffer(block.prices, "<f8")[chosen].tolist(),
            np.frombuffer(block.sizes, "<f8")[chosen].tolist(),
            flags[chosen].tolist(),
            id_of[chosen].tolist(),
            strict=True,
        )
    ]
    return rows, int(keep.sum()) - len(rows)  # type: ignore[return-value]
