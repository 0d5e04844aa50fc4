"""``bluefin-service export``: ticks and candles to Parquet/CSV that pandas and DuckDB read back exactly."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from store_helpers import book_row, make_rows, short_level_book

from bluefin_service.export import main as export_main
from bluefin_service.store import BookRow, TickRow, open_store

ROWS = make_rows("ETH-PERP", 2000, start_ts=1_700_000_000.0, step=0.05) + make_rows("BTC-PERP", 50)
START, END = "2023-11-14T22:13:25Z", "1700000090"  # ISO and epoch mixed on purpose


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'ticks.db'}"

    async def fill() -> None:
        store = open_store(url)
        await store.open()
        await store.write(ROWS)
        await store.close()

    asyncio.run(fill())
    return url


def run_export(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bluefin_service", "export", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def expected_ticks() -> list[TickRow]:
    return [r for r in ROWS if r.symbol == "ETH-PERP" and 1_700_000_005.0 <= r.ts < 1_700_000_090.0]


def test_ticks_to_parquet_and_csv_read_back_by_pandas_and_duckdb(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("parquet", "csv"):
        out = tmp_path / f"eth.{fmt}"
        common = ("--symbol", "eth-perp", "--start", START, "--end", END, "--store", store_url)
        if fmt == "parquet":  # once through the real command line, then in-process (the same main)
            result = run_export(*common, "--format", fmt, "--out", str(out), cwd=tmp_path)
            assert result.returncode == 0, result.stderr
            err = result.stderr
        else:
            assert export_main([*common, "--format", fmt, "--out", str(out)]) == 0
            err = capsys.readouterr().err
        expected = expected_ticks()
        assert f"exported {len(expected)} ticks of ETH-PERP" in err
        frame = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)
        assert list(frame["seq"]) == [r.seq for r in expected]
        assert list(frame["timestamp"]) == [r.ts for r in expected]
        assert list(frame["price"]) == [r.price for r in expected]
        assert list(frame["type"]) == [r.kind for r in expected]
        assert frame["trade_id"].dropna().tolist() == [r.trade_id for r in expected if r.trade_id]
        read = "read_parquet" if fmt == "parquet" else "read_csv_auto"
        sql = f"SELECT count(*), sum(size) FILTER (WHERE type = 'trade') FROM {read}('{out}')"
        count, volume = duckdb.sql(sql).fetchall()[0]
        assert count == len(expected)
        assert volume == pytest.approx(sum(r.size for r in expected if r.kind == "trade"))


def test_candles_match_a_pandas_resample_of_the_ticks(store_url: str, tmp_path: Path) -> None:
    out = tmp_path / "candles.parquet"
    args = ["--symbol", "ETH-PERP", "--start", START, "--end", END, "--what", "candles", "--interval", "15s"]
    assert export_main([*args, "--store", store_url, "--out", str(out)]) == 0
    candles = pd.read_parquet(out).set_index("start")
    # whole candles: those containing --start and --end are complete (epoch-aligned: ...995 to ...100)
    ticks = pd.DataFrame([r for r in ROWS if r.symbol == "ETH-PERP" and 1_699_999_995.0 <= r.ts < 1_700_000_100.0])
    ticks["bucket"] = (ticks["ts"] // 15) * 15
    trades = ticks[ticks["kind"] == "trade"]
    oracle = ticks.groupby("bucket")["price"].agg(["first", "max", "min", "last"])
    oracle["volume"] = trades.groupby("bucket")["size"].sum()
    oracle["trade_count"] = trades.groupby("bucket")["size"].count()
    assert list(candles.index) == list(oracle.index)
    assert list(candles["open"]) == list(oracle["first"])
    assert list(candles["high"]) == list(oracle["max"])
    assert list(candles["low"]) == list(oracle["min"])
    assert list(candles["close"]) == list(oracle["last"])
    assert list(candles["trade_count"]) == list(oracle["trade_count"])
    assert candles["volume"].to_numpy() == pytest.approx(oracle["volume"].to_numpy())


def test_long_exports_show_a_progress_bar(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("bluefin_service.export.PROGRESS_MIN_ROWS", 100)
    out = tmp_path / "eth.csv"
    assert (
        export_main(["--symbol", "ETH-PERP", "--start", "0", "--end", "2e9", "--store", store_url, "--out", str(out)])
        == 0
    )
    err = capsys.readouterr().err
    assert "ETH-PERP ticks" in err and "2000/2000" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--start", "soon"], 2, "'soon' is not a time"),
        (["--end", "1"], 2, "--end (1) must be after --start"),
        (["--symbol", "ETH PERP!"], 2, "malformed symbol"),
        (["--interval", "fortnight"], 2, "interval 'fortnight'"),
        (["--store", "sqlite:////nonexistent/dir/ticks.db"], 1, "does not exist"),
        (["--store", "postgresql://postgres@127.0.0.1:1/none"], 1, "cannot connect"),
        (["--out", "/proc/nope/out.parquet"], 1, "failed"),
    ],
)
def test_bad_arguments_exit_with_a_clear_message(
    args: list[str], code: int, message: str, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {
        "--symbol": "ETH-PERP",
        "--start": "100",
        "--end": "2e9",
        "--store": store_url,
        "--out": str(tmp_path / "x"),
    }
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    assert export_main([part for item in base.items() for part in item]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_order_books_to_parquet_and_csv_one_flat_row_per_snapshot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ticks.db'}"
    books = [book_row("ETH-PERP", 1_700_000_000.0 + i, i, 2500.0 + i) for i in range(30)]
    books.append(book_row("BTC-PERP", 1_700_000_001.0, 1, 40_000.0))
    garbage = [
        BookRow("ETH-PERP", 1_700_000_003.5, 99, b"{not a book"),
        short_level_book("ETH-PERP", 1_700_000_004.5, 98),
    ]

    async def fill() -> None:
        store = open_store(url)
        await store.open()
        await store.write_books([*books, *garbage])
        await store.close()

    asyncio.run(fill())
    wanted = [b for b in books if b.symbol == "ETH-PERP" and 1_700_000_002.0 <= b.ts < 1_700_000_025.0]
    for fmt in ("parquet", "csv"):
        out = tmp_path / f"books.{fmt}"
        result = run_export(
            "--symbol", "ETH-PERP", "--start", "1700000002", "--end", "1700000025", "--store", url,
            "--what", "books", "--depth", "3", "--out", str(out), cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert f"exported {len(wanted)} books of ETH-PERP" in result.stderr
        assert "skipped 2 recorded book(s) that do not decode" in result.stderr
        frame = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out)
        assert list(frame["timestamp"]) == [b.ts for b in wanted]
        assert list(frame["version"]) == [b.version for b in wanted]
        assert list(frame["bid_price_0"]) == [b.ts - 1_700_000_000.0 + 2500.0 for b in wanted]
        assert list(frame["bid_price_1"]) == list(frame["bid_price_0"] - 0.5)
        assert list(frame["ask_size_0"]) == [2.0] * len(wanted)
        assert frame["ask_price_1"].isna().all() and frame["bid_size_2"].isna().all()  # fewer levels than --depth
        assert list(frame["mid"]) == list((frame["bid_price_0"] + frame["ask_price_0"]) / 2)
        assert "ask_price_3" not in frame.columns
        counted = duckdb.sql(f"SELECT count(*), max(best_ask) FROM '{out}'").fetchall()[0]
        assert counted == (len(wanted), wanted[-1].ts - 1_700_000_000.0 + 2500.5)


@pytest.mark.parametrize("depth", ["0", "51", "deep"])
def test_a_bad_book_depth_is_refused(depth: str, tmp_path: Path) -> None:
    result = run_export(
        "--symbol", "ETH-PERP", "--start", "1700000002", "--end", "1700000025", "--what", "books",
        "--depth", depth, "--out", str(tmp_path / "x.csv"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2 and "--depth" in result.stderr and "Traceback" not in result.stderr
