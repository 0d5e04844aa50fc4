"""Binance USDⓈ-M futures frames -> normalized events.

Sources (read 2026-11-25):
- Aggregate trades, <symbol>@aggTrade on /market:
  https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams/Aggregate-Trade-Streams
- Book ticker, <symbol>@bookTicker on /public: .../websocket-market-streams/Individual-Symbol-Book-Ticker-Streams
- Diff depth, <symbol>@depth@100ms on /public: .../websocket-market-streams/Diff-Book-Depth-Streams
- REST snapshot GET /fapi/v1/depth: .../usds-margined-futures/market-data/rest-api/Order-Book
- Local book procedure (U <= lastUpdateId <= u for the first diff, then pu == previous u):
  .../websocket-market-streams/How-to-manage-a-local-order-book-correctly (confirmed with the search tool)
- /public and /market routed paths: .../websocket-market-streams/Important-WebSocket-Change-Notice
See /work/shared/exchanges/wire-formats.md §1 for the frames these parsers are tested with.

``m`` is "is the buyer the market maker?": true means the taker sold, so ``side="sell"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from marketdata.book import BookDelta, SyncRules
from marketdata.ticks import PriceUpdate, Trade
from marketdata.venues.common import VenueControl, VenueEvent, VenueMessageError, bad_frame

VENUE = "binance"


class AggTrade(msgspec.Struct, tag_field="e", tag="aggTrade"):
    E: int
    s: str
    a: int
    p: str
    q: str
    T: int
    m: bool


class BookTicker(msgspec.Struct, tag_field="e", tag="bookTicker"):
    E: int
    s: str
    u: int
    b: str
    B: str
    a: str
    A: str
    T: int = 0


class DepthUpdate(msgspec.Struct, tag_field="e", tag="depthUpdate"):
    E: int
    s: str
    U: int
    u: int
    pu: int
    b: list[list[str]]
    a: list[list[str]]
    T: int = 0


class RestAggTrade(msgspec.Struct):
    a: int
    p: str
    q: str
    T: int
    m: bool


class DepthSnapshot(msgspec.Struct):
    lastUpdateId: int
    bids: list[list[str]]
    asks: list[list[str]]
    E: int = 0
    T: int = 0


Payload = AggTrade | BookTicker | DepthUpdate


class Combined(msgspec.Struct):
    """The ``/stream?streams=`` wrapper: ``{"stream":"<streamName>","data":<rawPayload>}``."""

    stream: str
    data: Payload


_payload_decoder = msgspec.json.Decoder(Payload)
_combined_decoder = msgspec.json.Decoder(Combined)
_COMBINED_PREFIXES = ('{"stream"', b'{"stream"')
_snapshot_decoder = msgspec.json.Decoder(DepthSnapshot)
_agg_trades_decoder = msgspec.json.Decoder(list[RestAggTrade])

# The documented procedure: drop diffs with u < lastUpdateId; the first applied has U <= lastUpdateId <= u;
# after that each diff's pu equals the previous diff's u.
SYNC_RULES = SyncRules(
    keeps=lambda d, last: d.last_id >= last,
    bridges=lambda d, last: d.first_id <= last <= d.last_id,
    continues=lambda d, last: d.prev_id == last,
)


def parse_agg_trade(payload: AggTrade, symbol: str) -> Trade:
    """``{"e":"aggTrade","E":123456789,"s":"BTCUSDT","a":5933014,"p":"0.001","q":"100","nq":"100","f":100,
    "l":105,"T":123456785,"m":true}``"""
    side = "sell" if payload.m else "buy"
    return Trade(symbol, payload.T / 1000, float(payload.p), float(payload.q), side, str(payload.a))


def parse_book_ticker(payload: BookTicker, symbol: str) -> PriceUpdate:
    """``{"e":"bookTicker","u":400900217,"E":1568014460893,"T":1568014460891,"s":"BNBUSDT","b":"25.35190000",
    "B":"31.21000000","a":"25.36520000","A":"40.66000000"}`` -> the mid price (no rolling volume here: 0)."""
    mid = (float(payload.b) + float(payload.a)) / 2
    return PriceUpdate(symbol, payload.E / 1000, mid, 0.0)


def parse_depth_update(payload: DepthUpdate, symbol: str) -> BookDelta:
    """``{"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,
    "b":[["0.0024","10"]],"a":[["0.0026","100"]]}``"""
    return BookDelta(symbol, payload.E / 1000, payload.U, payload.u, payload.pu, payload.b, payload.a)


def parse_depth_snapshot(body: bytes | str, symbol: str) -> BookDelta:
    """REST ``{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,"bids":[["4.00000000","431.00000000"]],
    "asks":[["4.00000200","12.00000000"]]}``"""
    try:
        snap = _snapshot_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise bad_frame(VENUE, body, exc) from None
    last = snap.lastUpdateId
    return BookDelta(symbol, snap.E / 1000, last, last, -1, snap.bids, snap.asks, snapshot=True)


def parse_agg_trades_rest(body: bytes | str, symbol: str) -> list[Trade]:
    """REST ``GET /fapi/v1/aggTrades?symbol=…&fromId=…&limit=1000`` (…/market-data/rest-api/Compressed-Aggregate-
    Trades-List; ``fromId`` inclusive): ``[{"a":26129,"p":"0.01633102","q":"4.70443515","f":27781,"l":27781,
    "T":1498793709153,"m":true}]``"""
    try:
        items = _agg_trades_decoder.decode(body)
        return [Trade(symbol, t.T / 1000, float(t.p), float(t.q), "sell" if t.m else "buy", str(t.a)) for t in items]
    except (msgspec.DecodeError, ValueError) as exc:
        raise bad_frame(VENUE, body, exc) from None


class BinanceParser:
    """Frames from /market/ws and /public/ws (raw payloads) or /stream (``{"stream":…,"data":…}``)."""

    def __init__(self, symbols: Mapping[str, str]) -> None:
        self.symbols = {venue.upper(): ours for venue, ours in symbols.items()}  # ETHUSDT -> ETH-PERP

    def parse(self, frame: bytes | str, ts_init: float) -> list[VenueEvent]:
        try:
            if frame.startswith(_COMBINED_PREFIXES[isinstance(frame, bytes)]):  # type: ignore[arg-type]
                payload = _combined_decoder.decode(frame).data
            else:
                payload = _payload_decoder.decode(frame)
        except msgspec.DecodeError:
            return self._parse_other(frame)
        symbol = self.symbols.get(payload.s)
        if symbol is None:
            return [VenueControl("unknown", message=f"symbol {payload.s} is not subscribed")]
        if type(payload) is DepthUpdate:
            return [parse_depth_update(payload, symbol)]  # levels are checked when the book applies them
        try:
            if type(payload) is AggTrade:
                return [parse_agg_trade(payload, symbol)]
            return [parse_book_ticker(payload, symbol)]  # type: ignore[arg-type]
        except ValueError as exc:
            raise bad_frame(VENUE, frame, exc) from None

    def _parse_other(self, frame: bytes | str) -> list[VenueEvent]:
        try:
            raw: Any = msgspec.json.decode(frame)
        except msgspec.DecodeError as exc:
            raise bad_frame(VENUE, frame, exc) from None
        if not isinstance(raw, dict):
            raise bad_frame(VENUE, frame, ValueError("not a JSON object"))
        if "stream" in raw and isinstance(raw.get("data"), dict):
            try:
                return self.parse(msgspec.json.encode(raw["data"]), 0.0)
            except VenueMessageError:
                raise bad_frame(VENUE, frame, ValueError("bad combined-stream payload")) from None
        if "code" in raw and "msg" in raw:
            return [VenueControl("error", ok=False, message=f"code {raw['code']}: {raw['msg']}")]
        if "id" in raw and "result" in raw:
            return [VenueControl("ack", message=f"id {raw['id']}")]
        if isinstance(raw.get("e"), str):
            known = raw["e"] in ("aggTrade", "bookTicker", "depthUpdate")
            if known:
                raise bad_frame(VENUE, frame, ValueError(f"{raw['e']} frame is missing fields"))
            return [VenueControl("unknown", message=f"event {raw['e']}")]
        return [VenueControl("unknown", message=str(frame[:80]))]
