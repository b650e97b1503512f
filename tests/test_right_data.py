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
