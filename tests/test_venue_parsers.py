"""Each venue's documented frames parse into exact normalized events; garbage raises a clear error."""

from __future__ import annotations

from decimal import Decimal

import pytest

from marketdata.book import BookDelta
from marketdata.ticks import PriceUpdate, Trade
from marketdata.venues.binance import BinanceParser, parse_depth_snapshot
from marketdata.venues.bluefin import BluefinParser
from marketdata.venues.bluefin import parse_depth_snapshot as bluefin_snapshot
from marketdata.venues.common import VenueControl, VenueMessageError
from marketdata.venues.okx import OkxParser, parse_contract_values

BINANCE = BinanceParser({"BTCUSDT": "BTC-PERP", "BNBUSDT": "BNB-PERP"})
OKX = OkxParser({"BTC-USDT": "BTC-USDT", "ETH-USDT-SWAP": "ETH-PERP"}, {"ETH-USDT-SWAP": Decimal("0.1")})
BLUEFIN = BluefinParser({"ETH-PERP": "ETH-PERP"})
GARBAGE = [
    "", "{", "[1,2]", "null", '{"e":"aggTrade"}', "\x00\xff", '{"arg":{"channel":"trades"},"data":{}}',
    '{"e":"aggTrade","E":1,"s":"BTCUSDT","a":1,"p":"abc","q":"1","T":1,"m":true}',
    '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"1","px":"x","sz":"1","side":"buy","ts":"1"}]}',
    '{"event":"RecentTradesUpdates","payload":{"trades":[{"id":"1","side":"LONG","priceE9":"1.5","quantityE9":"1","quoteQuantityE9":"1","executedAtMillis":1}]}}',
]  # fmt: skip


def test_binance_documented_frames() -> None:
    trade = '{"e":"aggTrade","E":123456789,"s":"BTCUSDT","a":5933014,"p":"0.001","q":"100","nq":"100","f":100,"l":105,"T":123456785,"m":true}'  # noqa: E501
    assert BINANCE.parse(trade, 0.0) == [Trade("BTC-PERP", 123456.785, 0.001, 100.0, "sell", "5933014")]
    ticker = '{"e":"bookTicker","u":400900217,"E": 1568014460893,"T": 1568014460891,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}'  # noqa: E501
    assert BINANCE.parse(ticker, 0.0) == [PriceUpdate("BNB-PERP", 1568014460.893, (25.3519 + 25.3652) / 2, 0.0)]
    depth = '{"e":"depthUpdate","E":123456789,"T":123456788,"s":"BTCUSDT","U":157,"u":160,"pu":149,"b":[["0.0024","10"]],"a":[["0.0026","100"]]}'  # noqa: E501
    assert BINANCE.parse(depth, 0.0) == [
        BookDelta("BTC-PERP", 123456.789, 157, 160, 149, [["0.0024", "10"]], [["0.0026", "100"]])
    ]
    combined = '{"stream":"btcusdt@depth","data":' + depth + "}"
    assert BINANCE.parse(combined, 0.0) == BINANCE.parse(depth, 0.0)
    assert BINANCE.parse('{"result":null,"id":1}', 0.0) == [VenueControl("ack", message="id 1")]
    assert BINANCE.parse('{"code":2,"msg":"Invalid request"}', 0.0)[0].ok is False
    assert BINANCE.parse('{"e":"forceOrder","E":1}', 0.0)[0].kind == "unknown"
    snap = parse_depth_snapshot(
        b'{"lastUpdateId":1027024,"E":1589436922972,"T":1589436922959,"bids":[["4.00000000","431.00000000"]],'
        b'"asks":[["4.00000200","12.00000000"]]}',
        "BTC-PERP",
    )
    assert (snap.last_id, snap.snapshot, snap.bids) == (1027024, True, [["4.00000000", "431.00000000"]])


def test_okx_documented_frames() -> None:
    trade = '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474","px":"42219.9","sz":"0.12060306","side":"buy","ts":"1630048897897","count":"3","seqId":1234}]}'  # noqa: E501
    assert OKX.parse(trade, 0.0) == [Trade("BTC-USDT", 1630048897.897, 42219.9, 0.12060306, "buy", "130639474")]
    swap = '{"arg":{"channel":"trades","instId":"ETH-USDT-SWAP"},"data":[{"instId":"ETH-USDT-SWAP","tradeId":"9","px":"2500.1","sz":"3","side":"sell","ts":"1630048897897"}]}'  # noqa: E501
    assert OKX.parse(swap, 0.0)[0].size == 0.3  # 3 contracts x ctVal 0.1, exactly
    ticker = '{"arg":{"channel":"tickers","instId":"BTC-USDT"},"data":[{"instType":"SPOT","instId":"BTC-USDT","last":"9999.99","lastSz":"0.1","askPx":"9999.99","askSz":"11","bidPx":"8888.88","bidSz":"5","open24h":"9000","high24h":"10000","low24h":"8888.88","volCcy24h":"2222","vol24h":"2222","sodUtc0":"2222","sodUtc8":"2222","ts":"1597026383085"}]}'  # noqa: E501
    assert OKX.parse(ticker, 0.0) == [PriceUpdate("BTC-USDT", 1597026383.085, 9999.99, 2222.0)]
    book = '{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"snapshot","data":[{"asks":[["8476.98","415","0","13"]],"bids":[["8476.97","256","0","12"]],"ts":"1597026383085","checksum":-855196043,"prevSeqId":-1,"seqId":123456}]}'  # noqa: E501
    (delta,) = OKX.parse(book, 0.0)
    assert (delta.snapshot, delta.last_id, delta.prev_id, delta.checksum) == (True, 123456, -1, -855196043)
    assert OKX.parse("pong", 0.0) == [VenueControl("pong")]
    ack = '{"id":"1512","event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3ae55"}'
    assert OKX.parse(ack, 0.0)[0].kind == "ack"
    error = '{"id":"1512","event":"error","code":"60012","msg":"Invalid request","connId":"a4d3ae55"}'
    assert OKX.parse(error, 0.0) == [VenueControl("error", ok=False, message="code 60012: Invalid request")]
    notice = '{"event":"notice","code":"64008","msg":"The connection will soon be closed for a service upgrade. Please reconnect.","connId":"a4d3ae55"}'  # noqa: E501
    assert OKX.parse(notice, 0.0)[0].kind == "notice"
    values = parse_contract_values(b'{"code":"0","msg":"","data":[{"instId":"ETH-USDT-SWAP","ctVal":"0.1"}]}')
    assert values == {"ETH-USDT-SWAP": Decimal("0.1")}


def test_bluefin_schema_frames() -> None:
    trade = '{"event":"RecentTradesUpdates","payload":{"trades":[{"id":"1","symbol":"ETH-PERP","side":"LONG","tradeType":"ORDER","priceE9":"2500120000000","quantityE9":"1500000000","quoteQuantityE9":"3750180000000","executedAtMillis":1724121094751}]}}'  # noqa: E501
    assert BLUEFIN.parse(trade, 0.0) == [Trade("ETH-PERP", 1724121094.751, 2500.12, 1.5, "buy", "1")]
    diff = '{"event":"OrderbookDiffDepthUpdate","payload":{"updatedAtMillis":1724121094751,"symbol":"ETH-PERP","bidsE9":[["2500100000000","4000000000"]],"asksE9":[["2500200000000","0"]],"firstUpdateId":56790,"lastUpdateId":56795}}'  # noqa: E501
    (delta,) = BLUEFIN.parse(diff, 0.0)
    assert (delta.first_id, delta.last_id, delta.bids) == (56790, 56795, [["2500100000000", "4000000000"]])
    ticker = '{"event":"TickerUpdate","payload":{"symbol":"ETH-PERP","lastPriceE9":"2500120000000","volume24hrE9":"1234500000000","updatedAtMillis":1724121094751,"markPriceE9":"1"}}'  # noqa: E501
    assert BLUEFIN.parse(ticker, 0.0) == [PriceUpdate("ETH-PERP", 1724121094.751, 2500.12, 1234.5)]
    assert BLUEFIN.parse('{"success":true,"message":"ok"}', 0.0) == [VenueControl("ack", True, "ok")]
    assert BLUEFIN.parse('{"success":false,"message":"bad symbol"}', 0.0)[0].ok is False
    assert BLUEFIN.parse('{"event":"MarkPriceUpdate","payload":{"x":1}}', 0.0)[0].kind == "unknown"
    snap = bluefin_snapshot(
        b'{"symbol":"ETH-PERP","updatedAtMillis":1628078846123,"lastUpdateId":56789,"bidsE9":[["4000000000",'
        b'"431000000000"]],"asksE9":[["4000002000","12000000000"]]}',
        "ETH-PERP",
    )
    assert (snap.last_id, snap.asks) == (56789, [["4000002000", "12000000000"]])


@pytest.mark.parametrize("parser", [BINANCE, OKX, BLUEFIN], ids=["binance", "okx", "bluefin"])
@pytest.mark.parametrize("frame", GARBAGE)
def test_garbage_raises_a_clear_error_or_is_reported_unknown(parser, frame: str) -> None:
    try:
        events = parser.parse(frame, 0.0)
    except VenueMessageError as exc:
        assert "malformed frame" in str(exc)
    else:
        assert all(isinstance(e, VenueControl) and e.kind == "unknown" for e in events)
