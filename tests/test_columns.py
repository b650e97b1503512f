"""Chain pricing in numpy over columns read without polars queries (``enrich.columns``)
gives what the polars expressions it replaced gave, nulls, NaN and the last bit included."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
from hypothesis import given
from hypothesis import strategies as st
from polars.testing import assert_frame_equal, assert_series_equal

from enrich import columns
from enrich.quant import snapshots
from enrich.schemas import UTC_TS

OPEN = dt.datetime(2025, 6, 18, 13, 30, tzinfo=dt.UTC)


def test_values_tell_nulls_from_nan_and_keep_dates_and_instants_exact():
    x, null = columns.values(pl.Series([1.5, None, float("nan"), -2.0]))
    assert null.tolist() == [False, True, False, False]
    assert np.isnan(x[1]) and np.isnan(x[2]) and x[3] == -2.0
    days, null = columns.values(pl.Series([dt.date(2025, 6, 18), None]))
    assert days[0] == (dt.date(2025, 6, 18) - dt.date(1970, 1, 1)).days and null.tolist() == [
        False, True]
    at = dt.datetime(2025, 6, 18, 19, 59, 59, 999_999, tzinfo=dt.UTC)
    us, null = columns.values(pl.Series([at, None], dtype=UTC_TS))
    assert us[0] == columns.micros(at) and null.tolist() == [False, True]
    assert_series_equal(columns.instants("t", us, null), pl.Series("t", [at, None], dtype=UTC_TS))
    assert columns.flags(pl.Series([True, None, False])).tolist() == [True, False, False]
    assert columns.present(pl.Series(["a", None])).tolist() == [True, False]


def test_put_replaces_in_place_and_appends_new_columns_last_as_with_columns_does():
    frame = pl.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    new = [pl.Series("b", ["p", None]), pl.Series("c", [0.5, None])]
    assert_frame_equal(columns.put(frame, *new), frame.with_columns(*new))
    assert frame["b"].to_list() == ["x", "y"]  # the input is left as it was


def _prices_by_polars(chain: pl.DataFrame, session_open: dt.datetime) -> pl.DataFrame:
    """The polars expressions ``choose_prices`` ran before it moved to numpy (the oracle)."""
    bid, ask = pl.col("bid"), pl.col("ask")
    mid = (bid + ask) / 2.0
    fresh_quote = pl.col("quote_at").is_null() | (pl.col("quote_at") >= session_open)
    fresh_trade = pl.col("trade_at").is_null() | (pl.col("trade_at") >= session_open)
    sane = ((bid > 0) & (ask >= bid)
            & ((ask - bid) <= pl.max_horizontal(snapshots.MAX_SPREAD_REL * mid,
                                                pl.lit(snapshots.MAX_SPREAD_ABS)))
            & fresh_quote).fill_null(False)
    traded = ((pl.col("trade_price") > 0) & fresh_trade).fill_null(False)
    age = (pl.col("snapshot_at") - pl.when(sane).then(pl.col("quote_at"))
           .when(traded).then(pl.col("trade_at"))).dt.total_microseconds() / 1e6
    return chain.with_columns(
        option_price=pl.when(sane).then(mid).when(traded).then(pl.col("trade_price")),
        price_source=pl.when(sane).then(pl.lit(snapshots.MID))
        .when(traded).then(pl.lit(snapshots.LAST_TRADE)),
        price_age_s=age)


def test_prices_match_the_polars_rule_on_random_quotes_with_nulls_and_stale_stamps():
    rng = np.random.default_rng(7)
    n = 2_000

    def nulls(values: np.ndarray, share: float) -> list:
        return [None if rng.random() < share else v for v in values.tolist()]

    def stamps(share: float) -> list:
        seconds = rng.integers(-3_600, 8 * 3_600, n)
        micros = rng.integers(0, 1_000_000, n)
        return nulls(np.array([OPEN + dt.timedelta(seconds=int(s), microseconds=int(u))
                               for s, u in zip(seconds, micros, strict=True)]), share)

    bid = np.round(rng.uniform(-0.1, 5.0, n), 2)
    chain = pl.DataFrame({
        "bid": nulls(bid, 0.1),
        "ask": nulls(bid + np.round(rng.uniform(-0.2, 3.0, n), 2), 0.1),
        "trade_price": nulls(np.round(rng.uniform(-0.5, 5.0, n), 2), 0.2),
        "quote_at": stamps(0.1), "trade_at": stamps(0.2), "snapshot_at": stamps(0.05),
    }, schema={"bid": pl.Float64, "ask": pl.Float64, "trade_price": pl.Float64,
               "quote_at": UTC_TS, "trade_at": UTC_TS, "snapshot_at": UTC_TS})
    got = snapshots.choose_prices(chain, OPEN)
    assert_frame_equal(got, _prices_by_polars(chain, OPEN), check_exact=True)
    assert set(got["price_source"].unique().to_list()) == {None, "mid", "last_trade"}


def test_adjusted_matches_the_polars_rule_including_short_and_odd_tickers():
    contracts = ["O:AAPL250620C00165000", "O:AAPL1250620C00165000", "O:BRKB250620C00400000",
                 "O:X", "AB", "O:250620C00165000", "O:AAPL250620C00165000", None]
    chain = pl.DataFrame({
        "symbol": ["AAPL", "AAPL", "BRK.B", "X", "AB", "", "AAPL", "AAPL"],
        "contract": contracts,
        "shares_per_contract": [100.0, 100.0, 100.0, None, None, None, 10.0, None],
        "deliverables": [None, None, None, None, None, None, None, None],
    }, schema_overrides={"deliverables": pl.String})
    root = pl.col("contract").str.slice(2).str.head(pl.col("contract").str.len_chars() - 17)
    shares = pl.col("shares_per_contract")
    odd = ((root != pl.col("symbol").str.replace_all(".", "", literal=True))
           | (shares.is_not_null() & (shares != snapshots.STANDARD_SHARES))
           | pl.col("deliverables").is_not_null()).fill_null(False)
    expected = chain.with_columns(adjusted=odd)
    assert_frame_equal(snapshots.flag_adjusted(chain), expected)
    assert expected["adjusted"].to_list() == [False, True, False, False, True, False, True,
                                              False]


def test_time_to_expiry_is_polars_constant_division_to_the_last_bit():
    """polars divides by a constant as a product with its reciprocal; numpy's ``/`` differs
    in the last bit for some day counts (e.g. 209 of the first 4,000), so the numpy code
    multiplies too."""
    days = pl.Series(np.arange(0, 4_000, dtype=np.int64))
    by_polars = days.to_frame("d").select(pl.col("d").cast(pl.Float64) / 365.0)["d"].to_numpy()
    assert (np.arange(0, 4_000) * (1 / 365.0) == by_polars).all()
    assert (np.arange(0, 4_000) / 365.0 != by_polars).any()  # why it matters


@given(mask=st.lists(st.booleans(), max_size=12))
def test_rows_where_is_a_filter_and_a_slice_where_it_can_be(mask):
    frame = pl.DataFrame({"i": range(len(mask)),
                          "s": [f"r{i}" if i % 3 else None for i in range(len(mask))]},
                         schema={"i": pl.Int64, "s": pl.String})
    got = columns.rows_where(frame, np.array(mask, dtype=bool))
    assert_frame_equal(got, frame.filter(pl.Series(mask, dtype=pl.Boolean)), check_exact=True)
    assert columns.day(dt.date(1970, 1, 11)) == 10.0


@given(rows=st.lists(st.integers(0, 7), max_size=10))
def test_take_is_a_gather_and_a_slice_where_it_can_be(rows):
    frame = pl.DataFrame({"i": range(8), "s": [f"r{i}" for i in range(8)]})
    at = np.array(rows, dtype=np.int64)
    assert_frame_equal(columns.take(frame, at), frame[at])
