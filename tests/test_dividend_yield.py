"""The dividend yield the option model takes: trailing regular dividends on the session's share
basis, or the forward implied by put–call parity."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from enrich.quant import dividend_yield
from enrich.quant.american import american_price
from enrich.schemas import DIVIDENDS, SPLITS

D = dt.date
AS_OF = D(2025, 3, 3)


def divs(rows: list[tuple]) -> pl.DataFrame:
    """(ex_date, cash as declared, distribution_type, frequency) rows."""
    return pl.DataFrame(
        [{"symbol": "XYZ", "ex_date": e, "cash_amount": c, "distribution_type": k,
          "frequency": f} for e, c, k, f in rows]).cast(
        {"frequency": pl.Int32}).pipe(lambda f: pl.concat([DIVIDENDS.empty(), f],
                                                          how="diagonal_relaxed"))


def session(close: float) -> pl.DataFrame:
    return pl.DataFrame({"as_of": [AS_OF], "underlying_price": [close]})


QUARTERLY = [(D(2024, 4, 10), 0.50, "recurring", 4), (D(2024, 7, 10), 0.50, "recurring", 4),
             (D(2024, 10, 10), 0.50, "recurring", 4), (D(2025, 1, 10), 0.50, "recurring", 4)]


def test_acceptance_a_split_in_the_trailing_year_gives_the_same_q_as_no_split():
    # No split: $2.00 a year on a $51.28 share.
    plain = dividend_yield.trailing_yield(divs(QUARTERLY), SPLITS.empty(), session(51.28))
    # The same company splitting 2:1 on 2024-11-15: the two dividends declared after it are
    # per new share (half), the close is per new share (half), and the two before it are put
    # on the new basis too.
    split = pl.DataFrame({"symbol": ["XYZ"], "execution_date": [D(2024, 11, 15)],
                          "split_from": [1.0], "split_to": [2.0],
                          "adjustment_type": ["forward_split"]})
    declared = [(e, c / 2 if e > D(2024, 11, 15) else c, k, f) for e, c, k, f in QUARTERLY]
    after = dividend_yield.trailing_yield(divs(declared), split, session(51.28 / 2))
    q = plain["dividend_yield"][0]
    assert q == pytest.approx(math.log1p(2.00 / 51.28))
    assert after["dividend_yield"][0] == pytest.approx(q, rel=1e-12)
    assert after["dividend_method"][0] == plain["dividend_method"][0] == "trailing_12m"
    # What the issue measured: cash as declared over the post-split price, 5.8 % not 3.9 %.
    naive = (0.5 + 0.5 + 0.25 + 0.25) / (51.28 / 2)
    assert naive == pytest.approx(0.0585, abs=5e-4) and q == pytest.approx(0.0383, abs=5e-4)


def test_acceptance_a_special_dividend_does_not_change_q():
    plain = dividend_yield.trailing_yield(divs(QUARTERLY), SPLITS.empty(), session(51.28))
    with_specials = divs([*QUARTERLY, (D(2024, 12, 2), 3.00, "special", 0),
                          (D(2024, 8, 1), 0.10, "supplemental", 0),
                          (D(2024, 9, 1), 0.20, "irregular", 0),
                          (D(2024, 5, 1), 0.30, "unknown", None)])
    out = dividend_yield.trailing_yield(with_specials, SPLITS.empty(), session(51.28))
    assert out["dividend_yield"][0] == plain["dividend_yield"][0]


def test_trailing_yield_window_rows_and_nulls():
    frame = pl.DataFrame({"as_of": [AS_OF, D(2024, 1, 2), AS_OF, None],
                          "underlying_price": [50.0, 40.0, None, 10.0]})
    untyped = divs(QUARTERLY).with_columns(pl.lit(None, pl.String).alias("distribution_type"),
                                           pl.lit(None, pl.Int32).alias("frequency"))
    out = dividend_yield.trailing_yield(untyped, SPLITS.empty(), frame)
    # Unclassified dividends count as regular; the window is (as_of - 1 year, as_of].
    assert out["dividend_yield"].to_list() == pytest.approx(
        [math.log1p(2.0 / 50.0), 0.0, None, None], nan_ok=True)
    assert out["dividend_method"].to_list() == ["trailing_12m", "none", None, None]
    assert out.columns == [*frame.columns, "dividend_yield", "dividend_method"]


def test_parity_recovers_the_yield_of_a_european_chain():
    s, t, r, q = 100.0, 0.25, 0.045, 0.021
    strikes = np.arange(80.0, 121.0, 5.0)
    from enrich.quant.bsm import price_and_greeks

    call = price_and_greeks(s, strikes, t, r, q, 0.3, True)["price"]
    put = price_and_greeks(s, strikes, t, r, q, 0.3, False)["price"]
    put[0] = np.nan  # one side missing: that strike is not used
    assert dividend_yield.parity_yield(s, t, r, strikes, call, put) == pytest.approx(q, abs=1e-12)
    # Too close to expiry, no pair, or a nonsense forward: None.
    assert dividend_yield.parity_yield(s, 3 / 365, r, strikes, call, put) is None
    assert dividend_yield.parity_yield(s, t, r, strikes, call, np.full(9, np.nan)) is None
    assert dividend_yield.parity_yield(s, t, r, strikes, call + 40.0, put) is None


def test_parity_of_american_quotes_after_removing_the_premium():
    """American prices break parity; with their premium removed the forward is exact again
    (what enrich.quant.snapshots iterates on a chain)."""
    from enrich.quant.american import early_exercise_premium

    s, t, r, q, sigma = 100.0, 0.5, 0.05, 0.03, 0.25
    strikes = np.arange(85.0, 116.0, 5.0)
    c = american_price(s, strikes, t, r, q, sigma, True)
    p = american_price(s, strikes, t, r, q, sigma, False)
    raw = dividend_yield.parity_yield(s, t, r, strikes, c, p)
    assert abs(raw - q) > 1e-4  # the premiums bias the raw forward
    c_e = c - early_exercise_premium(s, strikes, t, r, q, sigma, True)
    p_e = p - early_exercise_premium(s, strikes, t, r, q, sigma, False)
    assert dividend_yield.parity_yield(s, t, r, strikes, c_e, p_e) == pytest.approx(q, abs=1e-9)


def test_the_trailing_year_of_a_leap_day_starts_after_28_february():
    # (2023-02-28, 2024-02-29]: a year before 29 February is 28 February (polars' "-1y").
    paid = divs([(D(2023, 2, 28), 1.0, "recurring", 4), (D(2023, 3, 1), 0.5, "recurring", 4),
                 (D(2024, 2, 29), 0.25, "recurring", 4), (D(2024, 3, 1), 8.0, "recurring", 4)])
    frame = pl.DataFrame({"as_of": [D(2024, 2, 29), D(2024, 2, 28)],
                          "underlying_price": [100.0, 100.0]})
    out = dividend_yield.trailing_yield(paid, SPLITS.empty(), frame)
    assert out["dividend_yield"].to_list() == pytest.approx(
        [math.log1p(0.75 / 100.0), math.log1p(0.5 / 100.0)])
