"""The risk-free curve: US Treasury yields by tenor, and the continuous rate to an expiry.

The ``rates`` dataset holds one row per observation date (``symbol`` is the curve, ``UST``):
the constant-maturity Treasury yields of ``/fed/v1/treasury-yields`` in **percent**, as
published (1 month to 30 years; older dates lack some tenors). They are quoted on an
investment basis: simple interest over 365 days up to six months (the bills' coupon-equivalent
yield), semiannual compounding beyond (par bonds). :func:`continuous` turns a yield into the
continuously compounded rate the pricer takes:

    r = ln(1 + y t) / t      for t <= 0.5 year
    r = 2 ln(1 + y / 2)      beyond

Par yields stand in for zero rates: below two years (where nearly every option expires) they
coincide with zero rates to a basis point or two.

:func:`rate_to` gives the rate for an option of session ``as_of`` expiring ``t`` years later:
the curve of ``as_of`` (or the latest one before it, at most ``MAX_CURVE_AGE_DAYS`` older:
curves are published a day late and bond-market holidays differ from the exchange's; a row
without any yield is no curve),
interpolated linearly in ``r t`` (the log discount factor) between the tenors present, flat in
``r`` before the first tenor and after the last. Without a curve it is
``ENRICH_RISK_FREE_RATE`` and ``rate_source`` says ``fallback``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from enrich.schemas import RATES

CURVE = "UST"  # the rates dataset's one "symbol"
MAX_CURVE_AGE_DAYS = 7
FIRST_DATE = dt.date(2000, 1, 1)  # a first fetch reaches back to here (one request)
LOOKBACK_DAYS = 7  # a refresh asks again for this many days before what it holds

# Column -> tenor in years.
TENORS: dict[str, float] = {
    "yield_1_month": 1 / 12, "yield_3_month": 0.25, "yield_6_month": 0.5,
    "yield_1_year": 1.0, "yield_2_year": 2.0, "yield_3_year": 3.0, "yield_5_year": 5.0,
    "yield_7_year": 7.0, "yield_10_year": 10.0, "yield_20_year": 20.0, "yield_30_year": 30.0,
}
TREASURY = "treasury"
FALLBACK = "fallback"
_NO_DAY = -(2 ** 62)  # a null date, in days since the epoch


def continuous(yield_pct: np.ndarray | float, tenor: np.ndarray | float) -> np.ndarray:
    """Continuously compounded rate of a yield in percent quoted on the investment basis."""
    y = np.asarray(yield_pct, dtype=np.float64) / 100.0
    t = np.asarray(tenor, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        simple = np.log1p(y * t) / t
        semi = 2.0 * np.log1p(y / 2.0)
    return np.where(t <= 0.5, simple, semi)


def curve_points(row: dict[str, float | None]) -> tuple[np.ndarray, np.ndarray]:
    """(tenors, continuous rates) of one curve row, tenors present only, ascending."""
    values = [row.get(col) for col in TENORS]
    return _points(np.array(list(TENORS.values())),
                   np.array([np.nan if v is None else v for v in values], dtype=np.float64))


def _points(tenors: np.ndarray, yields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``curve_points`` of a curve's yields (percent, NaN where absent) at ``tenors``."""
    present = np.isfinite(yields)
    return tenors[present], continuous(yields[present], tenors[present])


def interpolate(tenors: np.ndarray, rates: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Rates at times ``t`` (years): linear in ``r t`` between tenors, flat in ``r`` outside."""
    t = np.asarray(t, dtype=np.float64)
    if tenors.size == 0:
        return np.full(t.shape, np.nan)
    if tenors.size == 1:
        return np.full(t.shape, rates[0])
    lo, hi = tenors[0], tenors[-1]
    inside = np.clip(t, lo, hi)
    rt = np.interp(inside, tenors, rates * tenors)
    out = rt / inside
    out = np.where(t < lo, rates[0], out)
    return np.where(t > hi, rates[-1], out)


def rate_to(curves: pl.DataFrame, as_of: pl.Series | list[dt.date], t: np.ndarray,
            fallback: float) -> tuple[np.ndarray, np.ndarray]:
    """The continuous rate for each (``as_of``, ``t`` years) and where it came from
    (``treasury`` or ``fallback``), from stored ``curves`` (RATES rows, any order)."""
    days = as_of if isinstance(as_of, pl.Series) and as_of.dtype == pl.Date \
        else pl.Series("as_of", as_of, dtype=pl.Date)
    t = np.asarray(t, dtype=np.float64)
    rate = np.full(len(days), float(fallback))
    source = np.full(len(days), FALLBACK, dtype=object)
    if curves.is_empty() or len(days) == 0:
        return rate, source
    held = _index(curves)
    codes = _day_codes(days)
    if (codes == codes[0]).all():  # a chain's one session
        unique, rows = codes[:1], [np.arange(codes.size)]
    else:
        unique, inverse = np.unique(codes, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(unique.size + 1))
        rows = [order[bounds[u]:bounds[u + 1]] for u in range(unique.size)]
    # The latest curve on or before each day, at most MAX_CURVE_AGE_DAYS older (a backward
    # as-of match).
    picked = np.searchsorted(held.dates, unique, side="right") - 1
    for u, i in enumerate(picked):
        if (unique[u] == _NO_DAY or i < 0 or held.dates[i] == _NO_DAY
                or unique[u] - held.dates[i] > MAX_CURVE_AGE_DAYS):
            continue
        tenors, curve = _points(held.tenors, held.values[i])
        if tenors.size == 0:
            continue
        at = rows[u]
        rate[at] = interpolate(tenors, curve, t[at])
        source[at] = TREASURY
    return rate, source


@dataclass(frozen=True)
class _Curves:
    """The usable rows of a ``rates`` frame for as-of matching: the ``CURVE``'s rows with at
    least one yield, by date (stable), as numpy."""

    dates: np.ndarray  # day codes, ascending
    tenors: np.ndarray  # years, of each column of ``values`` (TENORS order: ascending)
    values: np.ndarray  # (rows, tenors) yields in percent, NaN where absent


# The last frame indexed and its index: every chain of a run prices against the same stored
# curve (the lake hands out one frame while its file is unchanged), whose thousands of rows
# cost more to index than a chain to match. Held by reference, so the frame is never
# mistaken for another.
_last: tuple[pl.DataFrame, _Curves] | None = None


def _index(curves: pl.DataFrame) -> _Curves:
    global _last
    hit = _last
    if hit is not None and hit[0] is curves:
        return hit[1]
    # numpy, no polars query per chain. A row without any yield (every tenor is optional in
    # the spec) is no curve: the one before it stands.
    cols = [c for c in TENORS if c in curves.columns]
    values = (curves.select(cols).to_numpy().astype(np.float64) if cols
              else np.empty((curves.height, 0)))
    ust = np.flatnonzero((curves["symbol"] == CURVE).fill_null(False).to_numpy()
                         & np.isfinite(values).any(axis=1))
    dates = _day_codes(curves["date"])[ust]
    by_date = np.argsort(dates, kind="stable")
    index = _Curves(dates[by_date], np.array([TENORS[c] for c in cols], dtype=np.float64),
                    values[ust[by_date]])
    _last = (curves, index)
    return index


def _day_codes(days: pl.Series) -> np.ndarray:
    """Days since the epoch of a Date column, ``_NO_DAY`` where null."""
    codes = days.cast(pl.Int32).cast(pl.Float64).to_numpy()
    return np.where(np.isnan(codes), _NO_DAY, codes).astype(np.int64)


def frame(rows: list[dict]) -> pl.DataFrame:
    """RATES rows from dicts with ``date`` and any of the tenor columns (percent)."""
    out = pl.DataFrame(rows, schema={"date": pl.Date, **{c: pl.Float64 for c in TENORS}})
    return out.with_columns(symbol=pl.lit(CURVE)).select(RATES.columns).sort("date")
