import datetime as dt
import os

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from enrich.schemas import DATASETS
from enrich.store.lake import Lake, in_key_order, write_parquet_atomic

SYMS = st.sampled_from(["AAPL", "BRK.B", "X:BTCUSD", "Z"])
DATES = st.dates(min_value=dt.date(2020, 1, 1), max_value=dt.date(2020, 3, 31))
AMOUNTS = st.floats(min_value=0.01, max_value=10, allow_nan=False)

div_rows = st.lists(st.tuples(SYMS, DATES, AMOUNTS), min_size=0, max_size=40)


def _div_frame(rows):
    return pl.DataFrame(
        {"symbol": [r[0] for r in rows], "ex_date": [r[1] for r in rows],
         "cash_amount": [r[2] for r in rows]},
        schema={"symbol": pl.String, "ex_date": pl.Date, "cash_amount": pl.Float64},
    )


def _expected(frames, key):
    """Independent model: last write per key wins."""
    model = {}
    for f in frames:
        for row in f.iter_rows(named=True):
            model[tuple(row[k] for k in key)] = row
    return model


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batches=st.lists(div_rows, min_size=1, max_size=4))
def test_upsert_then_read_returns_input_deduplicated_on_key(tmp_path_factory, batches):
    lake = Lake(tmp_path_factory.mktemp("lake"))
    frames = [_div_frame(b) for b in batches]
    for f in frames:
        lake.upsert("dividends", f)
    out = lake.read("dividends")
    model = _expected(frames, ("symbol", "ex_date"))
    assert out.height == len(model)
    for row in out.iter_rows(named=True):
        assert model[(row["symbol"], row["ex_date"])]["cash_amount"] == row["cash_amount"]
    # Writing the same data again changes nothing, and no file is rewritten.
    mtimes = {p: p.stat().st_mtime_ns for p in lake.files("dividends")}
    again = [lake.upsert("dividends", f) for f in frames[-1:]]
    assert all(r.changed == 0 and r.files_written == 0 for r in again)
    assert {p: p.stat().st_mtime_ns for p in lake.files("dividends")} == mtimes


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rows=st.lists(st.tuples(SYMS, DATES, st.sampled_from(["C1", "C2", "C3"]),
                               AMOUNTS), max_size=60))
def test_month_partitioned_upsert_roundtrip(tmp_path_factory, rows):
    lake = Lake(tmp_path_factory.mktemp("lake"))
    f = pl.DataFrame({"symbol": [r[0] for r in rows], "as_of": [r[1] for r in rows],
                      "contract": [r[2] for r in rows], "iv": [r[3] for r in rows]},
                     schema={"symbol": pl.String, "as_of": pl.Date, "contract": pl.String,
                             "iv": pl.Float64})
    lake.upsert("options_iv", f)
    out = lake.read("options_iv")
    model = _expected([f], ("symbol", "as_of", "contract"))
    assert out.height == len(model)
    assert set(out.columns) == set(DATASETS["options_iv"].columns)
    for p in lake.files("options_iv"):
        months = pl.read_parquet(p)["as_of"].dt.strftime("%Y-%m").unique().to_list()
        assert p.name == f"month={months[0]}.parquet" and len(months) == 1


@pytest.mark.parametrize("dataset", ["dividends", "options_iv"])
def test_rows_in_key_order_land_where_shuffled_rows_do(tmp_path, dataset):
    # Rows of one file in key order skip the pass that finds the files; shuffled, they take it.
    day = dt.date(2020, 1, 31)
    if dataset == "options_iv":
        f = pl.DataFrame({"symbol": "BRK.B", "as_of": day, "contract": ["C1", "C2", "C3"],
                          "iv": [0.2, 0.3, 0.4]})
    else:
        f = pl.DataFrame({"symbol": "BRK.B", "ex_date": [day, day + dt.timedelta(1)],
                          "cash_amount": [0.5, 0.6]})
    assert in_key_order(f, list(DATASETS[dataset].key))
    lakes = Lake(tmp_path / "sorted"), Lake(tmp_path / "shuffled")
    for lake, rows in zip(lakes, (f, f.reverse()), strict=True):
        assert lake.upsert(dataset, rows).inserted == f.height
    paths = [[p.relative_to(lake.root) for p in lake.files(dataset)] for lake in lakes]
    assert paths[0] == paths[1] and len(paths[0]) == 1
    assert_frame_equal(*(pl.read_parquet(lake.root / paths[0][0]) for lake in lakes))


def test_upsert_counts_inserted_and_updated(tmp_path):
    lake = Lake(tmp_path / "lake")
    f = _div_frame([("A", dt.date(2020, 1, 1), 1.0), ("A", dt.date(2020, 2, 1), 2.0)])
    assert lake.upsert("dividends", f).inserted == 2
    g = _div_frame([("A", dt.date(2020, 2, 1), 3.0), ("A", dt.date(2020, 3, 1), 4.0)])
    r = lake.upsert("dividends", g)
    assert (r.inserted, r.updated) == (1, 1)


def test_null_key_refused_and_nothing_written(tmp_path):
    lake = Lake(tmp_path / "lake")
    f = pl.DataFrame({"symbol": ["A", None], "ex_date": [dt.date(2020, 1, 1)] * 2,
                      "cash_amount": [1.0, 2.0]})
    with pytest.raises(ValueError, match="null key"):
        lake.upsert("dividends", f)
    assert lake.files("dividends") == []


def test_atomic_write_leaves_old_file_when_writer_fails(tmp_path, monkeypatch):
    path = tmp_path / "x" / "data.parquet"
    old = pl.DataFrame({"a": [1, 2]})
    write_parquet_atomic(old, path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "write", boom)  # the temp file is created, its bytes fail
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomic(pl.DataFrame({"a": [3]}), path)
    monkeypatch.undo()
    assert_frame_equal(pl.read_parquet(path), old)
    assert os.listdir(path.parent) == ["data.parquet"]  # no temp file left behind


def test_symbol_paths_cannot_escape(tmp_path):
    lake = Lake(tmp_path / "lake")
    d = lake.symbol_dir(DATASETS["dividends"], "X:BTCUSD")
    assert d.name == "symbol=X%3ABTCUSD" and d.parent == tmp_path / "lake" / "dividends"


def test_coverage_roundtrip(tmp_path):
    lake = Lake(tmp_path / "lake")
    assert lake.read_coverage("AAPL") == {}
    cov = {"bars:1d": dt.date(2026, 11, 25), "news": dt.date(2026, 11, 24)}
    lake.write_coverage("AAPL", cov)
    assert lake.read_coverage("AAPL") == cov


@pytest.mark.parametrize(("symbols", "days", "expected"), [
    (["A", "A", "A"], [1, 2, 3], True),
    (["A", "A", "A"], [1, 3, 2], False),       # out of order
    (["A", "A", "A"], [1, 2, 2], False),       # a key twice
    (["A", "B", "B"], [1, 2, 3], False),       # several symbols: not known, the caller sorts
    (["A", "A", "A"], [1, None, 3], False),    # a null key
    (["A"], [1], True),
])
def test_in_key_order_only_vouches_for_what_it_checked(symbols, days, expected):
    frame = pl.DataFrame({"symbol": symbols, "day": days})
    assert in_key_order(frame, ["symbol", "day"]) is expected


def test_the_cache_never_serves_a_replaced_file(tmp_path):
    lake = Lake(tmp_path / "lake")
    rows = pl.DataFrame({"symbol": ["AAPL"], "execution_date": [dt.date(2024, 1, 2)],
                         "split_from": [1.0], "split_to": [2.0]})
    lake.upsert("splits", rows)
    path = lake.files("splits")[0]
    assert lake.read("splits").height == 1
    # Another process (here: another Lake) replaces the file; this one must see the change.
    other = Lake(tmp_path / "lake")
    more = rows.with_columns(pl.lit(dt.date(2025, 1, 2)).alias("execution_date"))
    other.upsert("splits", more)
    assert lake.read("splits").height == 2
    # Any rewrite of the file in place, too.
    write_parquet_atomic(rows, path)
    assert lake.read("splits").height == 1


earnings_rows = st.lists(st.tuples(st.integers(2019, 2021), st.sampled_from([1, 2, 3, 4]),
                                   st.one_of(st.none(), DATES)), max_size=25)


def _earnings(rows):
    return pl.DataFrame({"symbol": "AAPL", "fiscal_year": [r[0] for r in rows],
                         "fiscal_quarter": [r[1] for r in rows],
                         "filing_date": [r[2] for r in rows]},
                        schema={"symbol": pl.String, "fiscal_year": pl.Int64,
                                "fiscal_quarter": pl.Int64, "filing_date": pl.Date}
                        ).unique(["fiscal_year", "fiscal_quarter"], keep="last")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(stored=earnings_rows, answer=earnings_rows, start=DATES, days=st.integers(0, 60))
def test_a_window_replacement_removes_what_a_filter_and_an_anti_join_would(
        tmp_path_factory, stored, answer, start, days):
    # The window's stored rows the answer no longer lists (found without a polars query, as a
    # refresh's few rows are) are exactly the filter-and-anti-join's (a null filing date is
    # never in the window); the file then holds the rows kept and the answer.
    lake = Lake(tmp_path_factory.mktemp("lake"))
    old, new = _earnings(stored), _earnings(answer)
    end = start + dt.timedelta(days=days)
    if not old.is_empty():
        lake.upsert("earnings", old)
    held = lake.read("earnings", ["AAPL"])
    key = list(DATASETS["earnings"].key)
    expected = (held.filter(pl.col("filing_date").is_between(start, end))
                .join(new.select(key), on=key, how="anti", nulls_equal=True))
    result, removed = lake.replace_window("earnings", "AAPL", new, "filing_date", start, end)
    assert_frame_equal(removed, expected)
    assert result.deleted == expected.height
    kept = held.join(expected.select(key), on=key, how="anti", nulls_equal=True)
    model = _expected([kept.select(new.columns), new], key)
    out = lake.read("earnings", ["AAPL"]).select(new.columns)
    assert {tuple(row[k] for k in key): row for row in out.iter_rows(named=True)} == model


def test_a_window_replacement_wants_a_date_column(tmp_path):
    lake = Lake(tmp_path / "lake")
    f = _earnings([(2020, 1, dt.date(2020, 2, 1))])
    with pytest.raises(ValueError, match="fiscal_year is not a date column"):
        lake.replace_window("earnings", "AAPL", f, "fiscal_year", dt.date(2020, 1, 1),
                            dt.date(2020, 3, 1))
