"""Adversarial checks of "is the data right": cases where the lake or the numbers derived from
it could be wrong for some instrument or some day. Each test names the Massive fact it rests on.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from enrich.quant import rates

D = dt.date
ALL_TENORS = list(rates.TENORS)


def test_a_curve_row_without_yields_does_not_hide_the_previous_curve():
    # Massive's spec (github:massive-com/client-go rest/scripts/openapi.json,
    # /fed/v1/treasury-yields) lists every yield_* field of a result as optional (the results'
    # items have no `required`), and its example row carries only 3 of the 11 tenors. A row of
    # a date alone is therefore a valid answer, stored as it came (the parser takes every tenor
    # as optional). The IVs of that session must still use the curve of the day before (within
    # MAX_CURVE_AGE_DAYS), not the configured fallback rate as if no curve were stored.
    curves = rates.frame([{"date": D(2024, 6, 10), **{c: 5.0 for c in ALL_TENORS}},
                          {"date": D(2024, 6, 11)}])
    r, source = rates.rate_to(curves, pl.Series([D(2024, 6, 11), D(2024, 6, 12)]),
                              np.full(2, 1.0), 0.033)
    assert source.tolist() == ["treasury", "treasury"]
    assert r.tolist() == pytest.approx([2 * math.log(1.025)] * 2)


def test_a_special_dividend_on_a_regular_ex_date_keeps_the_regular_part_in_the_yield():
    # Massive's v1 dividends (reference/massive-rest-api.md §2b; spec
    # paths./stocks/v1/dividends, results.distribution_type: recurring, special, ...) can list
    # a regular and a special distribution on one ex-date. The lake's key (symbol, ex_date)
    # holds their sum, typed "recurring+special"; the trailing dividend yield counts regular
    # dividends only, and dropped the whole summed row: a quarter of a quarterly payer's q
    # was missing for a year. The row now keeps its regular part, and q counts exactly it.
    from enrich.quant import dividend_yield
    from tests.test_massive import DIV_V1, Api, make, ok

    special = {**DIV_V1, "id": "Eother", "cash_amount": 1.0, "distribution_type": "special"}
    earlier = {**DIV_V1, "id": "Eearly", "ex_dividend_date": "2024-10-15"}
    api = Api({"/stocks/v1/dividends": ok([earlier, DIV_V1, special])})
    stored = make(api).dividends("XYZ", D(2024, 7, 1), D(2025, 3, 31))
    assert stored.sort("ex_date")["cash_amount"].to_list() == [0.5, 1.5]  # as declared
    assert stored.sort("ex_date")["regular_cash_amount"].to_list() == [None, 0.5]

    chain = pl.DataFrame({"as_of": [D(2025, 3, 3)], "underlying_price": [100.0]})
    q = dividend_yield.trailing_yield(stored, pl.DataFrame(schema={
        "execution_date": pl.Date, "split_from": pl.Float64, "split_to": pl.Float64}), chain)
    assert q["dividend_yield"][0] == pytest.approx(math.log1p(1.0 / 100.0), rel=1e-12)
    assert q["dividend_method"][0] == dividend_yield.TRAILING
