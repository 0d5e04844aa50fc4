"""Bluefin Pro public market stream frames -> normalized events.

Sources (read 2026-11-25; there are no prose docs of the frames, the schema is the reference):
- fireflyprotocol/pro-sdk ``resources/websocket-api.yaml`` (MarketSubscriptionMessage, MarketDataStreamName,
  SubscriptionResponseMessage, MarketStreamMessage envelope ``{"event", "payload"}``,
  OrderbookDiffDepthUpdate with firstUpdateId/lastUpdateId) — opened with the ``read_file`` tool;
  ``resources/common.yaml`` (Trade), ``resources/exchange-common-api.yaml`` (GET /v1/exchange/depth).
- Heartbeat: https://bluefin-exchange.readme.io/reference/handling-websockets-1 (server PING every 10 s).
- ``…E9`` fields are integer strings scaled by 10^9 (SDK ``rust/src/arithmetic.rs`` HasE9).
UNCONFIRMED by any source, and assumed here: trade ``side`` is the taker side (LONG = aggressive buy); diff
quantities are absolute level sizes with "0" removing the level; the diff sync is Binance-like with
``firstUpdateId == previous lastUpdateId + 1`` (see wire-formats.md §3.7-3.8).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from marketdata.book import BookDelta, SyncRules, e9
from marketdata.ticks import PriceUpdate, Trade
from marketdata.venues.common import VenueControl, VenueEvent, bad_frame

VENUE = "bluefin"
_SIDES = {"LONG": "buy", "SHORT": "sell"}


class Envelope(msgspec.Struct):
    event: str | None = None
    payload: msgspec.Raw = msgspec.Raw()  # empty when absent (msgspec cannot make Raw optional)
    success: bool | None = None
    message: str = ""


class TradeItem(msgspec.Struct):
    id: str
    side: str
    priceE9: str
    quantityE9: str
    executedAtMillis: int
    symbol: str = ""


class RecentTrades(msgspec.Struct):
    trades: list[TradeItem]


class Ticker(msgspec.Struct):
    symbol: str
    lastPriceE9: str
    volume24hrE9: str
    updatedAtMillis: int


class DiffDepth(msgspec.Struct):
    symbol: str
    updatedAtMillis: int
    bidsE9: list[list[str]]
    asksE9: list[list[str]]
    firstUpdateId: int
    lastUpdateId: int


class DepthSnapshot(msgspec.Struct):
    lastUpdateId: int
    bidsE9: list[list[str]]
    asksE9: list[list[str]]
    updatedAtMillis: int = 0
    symbol: str = ""


class TradesEnvelope(msgspec.Struct):
    event: str
    payload: RecentTrades


class DepthEnvelope(msgspec.Struct):
    event: str
    payload: DiffDepth


_envelope_decoder = msgspec.json.Decoder(Envelope)
# One-pass decoders for the hot events, chosen by prefix; anything else takes the general two-pass path.
_FAST = {
    '{"event":"RecentTradesUpdates"': msgspec.json.Decoder(TradesEnvelope),
    '{"event":"OrderbookDiffDepthUpdate"': msgspec.json.Decoder(DepthEnvelope),
}
_FAST_LENGTHS = sorted({len(prefix) for prefix in _FAST})
_trades_decoder = msgspec.json.Decoder(RecentTrades)
_ticker_decoder = msgspec.json.Decoder(Ticker)
_depth_decoder = msgspec.json.Decoder(DiffDepth)
_snapshot_decoder = msgspec.json.Decoder(DepthSnapshot)

SYNC_RULES = SyncRules(
    keeps=lambda d, last: d.last_id > last,
    bridges=lambda d, last: d.first_id <= last + 1 <= d.last_id,
    continues=lambda d, last: d.first_id == last + 1,
)


def parse_recent_trades(payload: RecentTrades, default_symbol: str | None, symbols: Mapping[str, str]) -> list[Trade]:
    """``{"event":"RecentTradesUpdates","payload":{"trades":[{"id":"1","symbol":"ETH-PERP","side":"LONG",
    "tradeType":"ORDER","priceE9":"2500120000000","quantityE9":"1500000000","quoteQuantityE9":"3750180000000",
    "executedAtMillis":1724121094751}]}}``"""
    trades = []
    for t in payload.trades:
        symbol = symbols.get(t.symbol) if t.symbol else default_symbol
        side = _SIDES.get(t.side)
        if symbol is None or side is None:
            continue  # another market, or UNSPECIFIED side: not a public taker trade we can classify
        trades.append(Trade(symbol, t.executedAtMillis / 1000, e9(t.priceE9), e9(t.quantityE9), side, t.id))  # type: ignore[arg-type]
    return trades


def parse_ticker(payload: Ticker, symbol: str) -> PriceUpdate:
    """``{"event":"TickerUpdate","payload":{"symbol":"ETH-PERP","lastPriceE9":"2500120000000",
    "volume24hrE9":"1234500000000","updatedAtMillis":1724121094751, …29 more fields}}``"""
    return PriceUpdate(symbol, payload.updatedAtMillis / 1000, e9(payload.lastPriceE9), e9(payload.volume24hrE9))


def parse_diff_depth(payload: DiffDepth, symbol: str) -> BookDelta:
    """``{"event":"OrderbookDiffDepthUpdate","payload":{"updatedAtMillis":1724121094751,"symbol":"ETH-PERP",
    "bidsE9":[["2500100000000","4000000000"]],"asksE9":[["2500200000000","0"]],"firstUpdateId":56790,
    "lastUpdateId":56795}}``"""
    return BookDelta(
        symbol,
        payload.updatedAtMillis / 1000,
        payload.firstUpdateId,
        payload.lastUpdateId,
        -1,
        payload.bidsE9,
        payload.asksE9,
    )


def parse_depth_snapshot(body: bytes | str, symbol: str) -> BookDelta:
    """REST ``GET /v1/exchange/depth?symbol=ETH-PERP&limit=500``: ``{"symbol":"ETH-PERP","updatedAtMillis":
    1628078846123,"lastUpdateId":56789,"bidsE9":[["4000000000","431000000000"]],"asksE9":[["4000002000",
    "12000000000"]], …}``"""
    try:
        snap = _snapshot_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise bad_frame(VENUE, body, exc) from None
    last = snap.lastUpdateId
    return BookDelta(symbol, snap.updatedAtMillis / 1000, last, last, -1, snap.bidsE9, snap.asksE9, snapshot=True)


class BluefinParser:
    def __init__(self, symbols: Mapping[str, str]) -> None:
        self.symbols = dict(symbols)  # venue symbol -> ours (identical by default: ETH-PERP)
        self._only = next(iter(self.symbols.values())) if len(self.symbols) == 1 else None

    def parse(self, frame: bytes | str, ts_init: float) -> list[VenueEvent]:
        head = frame[:40] if isinstance(frame, str) else frame[:40].decode("latin-1")
        for length in _FAST_LENGTHS:
            fast = _FAST.get(head[:length])
            if fast is None:
                continue
            try:
                message = fast.decode(frame)
            except msgspec.DecodeError:
                break  # the general path below reports it
            if type(message) is TradesEnvelope:
                try:
                    return parse_recent_trades(message.payload, self._only, self.symbols)  # type: ignore[return-value]
                except ValueError as exc:
                    raise bad_frame(VENUE, frame, exc) from None
            symbol = self.symbols.get(message.payload.symbol)
            return [] if symbol is None else [parse_diff_depth(message.payload, symbol)]  # type: ignore[arg-type]
        try:
            envelope = _envelope_decoder.decode(frame)
        except msgspec.DecodeError as exc:
            raise bad_frame(VENUE, frame, exc) from None
        event, payload = envelope.event, envelope.payload
        if event is None or not payload:
            if envelope.success is not None:
                return [VenueControl("ack" if envelope.success else "error", envelope.success, envelope.message)]
            return [VenueControl("unknown", message=str(frame[:80]))]
        try:
            if event == "RecentTradesUpdates":
                return parse_recent_trades(_trades_decoder.decode(payload), self._only, self.symbols)  # type: ignore[return-value]
            if event == "OrderbookDiffDepthUpdate":
                depth = _depth_decoder.decode(payload)
                symbol = self.symbols.get(depth.symbol)
                return [] if symbol is None else [parse_diff_depth(depth, symbol)]
            if event == "TickerUpdate":
                ticker = _ticker_decoder.decode(payload)
                symbol = self.symbols.get(ticker.symbol)
                return [] if symbol is None else [parse_ticker(ticker, symbol)]
        except (msgspec.DecodeError, ValueError) as exc:
            raise bad_frame(VENUE, frame, exc) from None
        return [VenueControl("unknown", message=f"event {event}")]
