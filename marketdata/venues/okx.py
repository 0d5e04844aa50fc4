"""OKX v5 public frames -> normalized events.

Sources (read 2026-11-25):
- WebSocket overview (text ``ping``/``pong`` keepalive, 30 s idle close, notice 64008):
  https://www.okx.com/docs-v5/en/#overview-websocket-overview
- Trades channel (``side`` is the taker side; ``sz`` in contracts for SWAP):
  https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-trades-channel
- Tickers channel: https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-tickers-channel
- Order book channel ``books`` (snapshot then updates; ``prevSeqId`` == previous ``seqId``; heartbeat updates
  with seqId == prevSeqId; maintenance resets with seqId < prevSeqId; CRC32 checksum over the top 25 levels):
  https://www.okx.com/docs-v5/en/#order-book-trading-market-data-ws-order-book-channel
  (field layout cross-checked with the search tool: rust-okx ``OrderBookUpdate`` and nautilus ``OKXBookMsg``
  on docs.rs / nautilustrader.io).
- Checksum deprecation (always 0 from 23 Jun 2026): OKX help "Order Book Channels Checksum Field Deprecation";
  so a checksum of 0 is treated as absent, never as a mismatch.
- Contract value ``ctVal``: https://www.okx.com/docs-v5/en/#public-data-rest-api-get-instruments
See /work/shared/exchanges/wire-formats.md §2.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

import msgspec

from marketdata.book import BookDelta, ChecksumMismatch, OrderBook, SequenceGap, SyncRules
from marketdata.ticks import PriceUpdate, Trade
from marketdata.venues.common import VenueControl, VenueEvent, bad_frame, ratio, scaled

VENUE = "okx"


class Arg(msgspec.Struct):
    channel: str
    instId: str = ""


class Push(msgspec.Struct):
    arg: Arg | None = None
    data: msgspec.Raw = msgspec.Raw()  # empty when absent (msgspec cannot make Raw optional)
    action: str | None = None
    event: str | None = None
    code: str = ""
    msg: str = ""


class TradeItem(msgspec.Struct):
    instId: str
    tradeId: str
    px: str
    sz: str
    side: str
    ts: str


class TickerItem(msgspec.Struct):
    instId: str
    last: str
    ts: str
    volCcy24h: str = "0"


class BookItem(msgspec.Struct):
    asks: list[list[str]]
    bids: list[list[str]]
    ts: str
    checksum: int = 0
    prevSeqId: int = -1
    seqId: int = -1


class Instrument(msgspec.Struct):
    instId: str
    ctVal: str = ""


class RestReply(msgspec.Struct):
    code: str
    data: msgspec.Raw
    msg: str = ""


class TradesPush(msgspec.Struct):
    arg: Arg
    data: list[TradeItem]


class BooksPush(msgspec.Struct):
    arg: Arg
    data: list[BookItem]
    action: str | None = None


_push_decoder = msgspec.json.Decoder(Push)
# One-pass decoders for the two hot channels, chosen by the compact prefix OKX sends; anything else (or a
# frame that does not fit) takes the general two-pass path, which also produces the error messages.
_FAST = {
    '{"arg":{"channel":"trades"': msgspec.json.Decoder(TradesPush),
    '{"arg":{"channel":"books"': msgspec.json.Decoder(BooksPush),
}
_FAST_PREFIX_LEN = 26
_trades_decoder = msgspec.json.Decoder(list[TradeItem])
_tickers_decoder = msgspec.json.Decoder(list[TickerItem])
_books_decoder = msgspec.json.Decoder(list[BookItem])
_rest_decoder = msgspec.json.Decoder(RestReply)
_instruments_decoder = msgspec.json.Decoder(list[Instrument])


def parse_trades(items: list[TradeItem], symbol: str, contract_value: tuple[int, int] | None) -> list[Trade]:
    """``{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474",
    "px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3","seqId":1234}]}``"""
    return [
        Trade(symbol, int(t.ts) / 1000, float(t.px), scaled(t.sz, contract_value), t.side, t.tradeId)  # type: ignore[arg-type]
        for t in items
    ]


def parse_tickers(items: list[TickerItem], symbol: str) -> list[PriceUpdate]:
    """``{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT","instId":"BTC-USDT",
    "last":"9999.99","lastSz":"0.1","askPx":"9999.99","askSz":"11","bidPx":"8888.88","bidSz":"5",
    "volCcy24h":"2222","vol24h":"2222","ts":"1597026383085"}]}`` -> last price, 24 h volume in base currency."""
    return [PriceUpdate(symbol, int(t.ts) / 1000, float(t.last), float(t.volCcy24h or 0)) for t in items]


def parse_books(items: list[BookItem], symbol: str, action: str | None) -> list[BookDelta]:
    """``{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"asks":[["8476.98","415",
    "0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","checksum":-855196043,"prevSeqId":-1,
    "seqId":123456}]}`` (updates have ``"action":"update"``)."""
    snapshot = action == "snapshot"
    return [
        BookDelta(symbol, int(b.ts) / 1000, b.seqId, b.seqId, b.prevSeqId, b.bids, b.asks, b.checksum or None, snapshot)
        for b in items
    ]


def apply_book_delta(book: OrderBook, delta: BookDelta) -> None:
    """Apply one ``books`` message, raising ``SequenceGap``/``ChecksumMismatch`` when the book must be rebuilt.

    Continuity is by identity: an update's ``prevSeqId`` names the last ``seqId`` applied. That also covers the
    documented heartbeat (seqId == prevSeqId) and the post-maintenance reset (seqId < prevSeqId).
    """
    if delta.snapshot:
        book.apply_snapshot(delta.bids, delta.asks, delta.last_id, delta.timestamp)
    elif delta.prev_id != book.update_id or book.update_id < 0:
        raise SequenceGap(delta.symbol, book.update_id, delta.prev_id)
    else:
        book.apply(delta.bids, delta.asks, delta.last_id, delta.timestamp)
    if delta.checksum is not None:
        computed = book.okx_checksum()
        if computed != delta.checksum:
            raise ChecksumMismatch(delta.symbol, delta.checksum, computed)


# The changelog's procedure for when the WS snapshot is gone ("Delist initial snapshot and checksum field in order
# book channels", docs-v5/log_en): keep updates with seqId > the REST snapshot's; the first must satisfy
# prevSeqId <= snapshot seqId < seqId; then each prevSeqId names the previous seqId.
REST_SYNC_RULES = SyncRules(
    keeps=lambda d, last: d.last_id > last,
    bridges=lambda d, last: d.prev_id <= last < d.last_id,
    continues=lambda d, last: d.prev_id == last,
)


class RestBook(msgspec.Struct):
    asks: list[list[str]]
    bids: list[list[str]]
    ts: str
    seqId: int | None = None


_rest_books_decoder = msgspec.json.Decoder(list[RestBook])


def parse_rest_book(body: bytes | str, symbol: str) -> BookDelta | None:
    """REST ``GET /api/v5/market/books?instId=…&sz=400``: ``{"code":"0","msg":"","data":[{"asks":[["41006.8",
    "0.60038921","0","1"]],"bids":[["41006.3","0.30178218","0","2"]],"ts":"1629966436396","seqId":3}]}``.
    None if the reply has no ``seqId`` (older API versions; the sync needs it)."""
    try:
        reply = _rest_decoder.decode(body)
        books = _rest_books_decoder.decode(reply.data)
    except msgspec.DecodeError as exc:
        raise bad_frame(VENUE, body, exc) from None
    if reply.code != "0" or not books:
        raise bad_frame(VENUE, body, ValueError(f"code {reply.code}: {reply.msg}"))
    book = books[0]
    if book.seqId is None:
        return None
    return BookDelta(symbol, int(book.ts) / 1000, book.seqId, book.seqId, -1, book.bids, book.asks, snapshot=True)


def parse_contract_values(body: bytes | str) -> dict[str, Decimal]:
    """REST ``GET /api/v5/public/instruments?instType=SWAP`` -> ``{instId: ctVal}``."""
    try:
        reply = _rest_decoder.decode(body)
        items = _instruments_decoder.decode(reply.data)
    except msgspec.DecodeError as exc:
        raise bad_frame(VENUE, body, exc) from None
    return {i.instId: Decimal(i.ctVal) for i in items if i.ctVal}


class OkxParser:
    """Frames from ``/ws/v5/public``: pushes, event replies and the text ``pong``."""

    def __init__(self, symbols: Mapping[str, str], contract_values: Mapping[str, Decimal] | None = None) -> None:
        self.symbols = dict(symbols)  # ETH-USDT-SWAP -> ETH-PERP
        self._ratios: dict[str, tuple[int, int] | None] = {}
        self.set_contract_values(contract_values or {})

    def set_contract_values(self, values: Mapping[str, Decimal]) -> None:
        """``ctVal`` per instId: trade sizes arrive in contracts and leave in base currency."""
        self.contract_values = dict(values)
        self._ratios = {inst_id: ratio(value) for inst_id, value in values.items()}

    def parse(self, frame: bytes | str, ts_init: float) -> list[VenueEvent]:
        if frame == "pong" or frame == b"pong":
            return [VenueControl("pong")]
        head = frame[:_FAST_PREFIX_LEN] if isinstance(frame, str) else frame[:_FAST_PREFIX_LEN].decode("latin-1")
        fast = _FAST.get(head) or _FAST.get(head[:25])
        if fast is not None:
            try:
                push_fast = fast.decode(frame)
            except msgspec.DecodeError:
                pass  # the general path below reports it
            else:
                symbol = self.symbols.get(push_fast.arg.instId)
                if symbol is None:
                    return [VenueControl("unknown", message=f"instId {push_fast.arg.instId} is not subscribed")]
                if type(push_fast) is TradesPush:
                    try:
                        return parse_trades(push_fast.data, symbol, self._ratios.get(push_fast.arg.instId))  # type: ignore[return-value]
                    except ValueError as exc:
                        raise bad_frame(VENUE, frame, exc) from None
                return parse_books(push_fast.data, symbol, push_fast.action)  # type: ignore[union-attr,arg-type,return-value]
        try:
            push = _push_decoder.decode(frame)
        except msgspec.DecodeError as exc:
            raise bad_frame(VENUE, frame, exc) from None
        if push.event is not None:
            return [self._event(push)]
        if push.arg is None or not push.data:
            return [VenueControl("unknown", message=str(frame[:80]))]
        symbol = self.symbols.get(push.arg.instId)
        if symbol is None:
            return [VenueControl("unknown", message=f"instId {push.arg.instId} is not subscribed")]
        channel = push.arg.channel
        try:
            if channel == "trades":
                ct = self._ratios.get(push.arg.instId)
                return parse_trades(_trades_decoder.decode(push.data), symbol, ct)  # type: ignore[return-value]
            if channel == "books":
                return parse_books(_books_decoder.decode(push.data), symbol, push.action)  # type: ignore[return-value]
            if channel == "tickers":
                return parse_tickers(_tickers_decoder.decode(push.data), symbol)  # type: ignore[return-value]
        except (msgspec.DecodeError, ValueError) as exc:
            raise bad_frame(VENUE, frame, exc) from None
        return [VenueControl("unknown", message=f"channel {channel}")]

    @staticmethod
    def _event(push: Push) -> VenueControl:
        if push.event in ("subscribe", "unsubscribe"):
            return VenueControl("ack", message=push.event)
        if push.event == "error":
            return VenueControl("error", ok=False, message=f"code {push.code}: {push.msg}")
        if push.event == "notice":
            return VenueControl("notice", message=f"code {push.code}: {push.msg}")
        return VenueControl("unknown", message=f"event {push.event}")
