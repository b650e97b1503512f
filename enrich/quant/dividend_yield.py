"""The dividend yield ``q`` an option model takes, and how it was found.

Two methods, recorded per row in ``dividend_method``:

- ``trailing_12m`` (:func:`trailing_yield`): the regular cash dividends with an ex-date in
  ``(D - 1 year, D]``, each put on session ``D``'s share basis (divided by the ratio
  ``split_to / split_from`` of every split executed after its ex-date and on or before ``D``),
  over ``D``'s close on that same basis, as a continuous rate ``q = ln(1 + cash / close)``.
  Regular means ``distribution_type = 'recurring'`` (or no type given and a frequency that is
  not zero) — of a row that sums distributions of several kinds on one ex-date, its
  ``regular_cash_amount`` —: special, supplemental, irregular and unclassified (``unknown``)
  distributions, and returns of capital, are one-offs the next twelve months will not repeat.
  ``none`` (``q = 0``) when no regular dividend was paid.
- ``parity`` (:func:`parity_yield`): the forward implied by put–call parity where both sides
  quote, per expiration: ``F = K + e^{rt} (C - P)`` at the (up to three) strikes where the
  call and the put are closest in price, the median of those, and
  ``q = r - ln(F / S) / t``. American prices are first reduced to European ones by their
  early-exercise premium (``enrich.quant.american``), which the caller supplies. Expirations closer
  than ``PARITY_MIN_DAYS`` take the parity yield of the session's nearest expiration that has
  one (``enrich.quant.snapshots``): a cent of quote noise moves ``q`` by ``0.01 / (S t)``.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl

TRAILING = "trailing_12m"
PARITY = "parity"
NONE = "none"
PARITY_MIN_DAYS = 7
PARITY_STRIKES = 3
# A parity yield outside this range says more about stale quotes than about dividends (hard-
# to-borrow names show as a high q, which is right, and stays well inside).
PARITY_RANGE = (-0.5, 1.0)


def trailing_yield(dividends: pl.DataFrame, splits: pl.DataFrame, frame: pl.DataFrame, *,
                   date: str = "as_of", close: str = "underlying_price") -> pl.DataFrame:
    """``frame`` with ``dividend_yield`` and ``dividend_method`` (see the module docstring).

    ``dividends``: one symbol's stored rows (as declared: per share of their day). ``splits``:
    its stored splits. ``close``: the price on session ``date``'s own share basis. The yield
    is null where the close is missing or not positive. Row order is kept."""
    price = frame[close].cast(pl.Float64)
    q, method = trailing(dividends, splits, frame[date].to_list(), price.to_numpy(),
                         np.array([p is not None for p in price.to_list()], dtype=bool))
    known = np.array([m is not None for m in method], dtype=bool)
    return frame.with_columns(
        dividend_yield=pl.when(pl.Series(known)).then(pl.Series(q)),
        dividend_method=pl.Series(method.tolist(), dtype=pl.String))


def trailing(dividends: pl.DataFrame, splits: pl.DataFrame, days: list[dt.date | None],
             close: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`trailing_yield`'s ``(dividend_yield, dividend_method)`` per row of sessions
    ``days`` and closes ``close`` (``known``: not null), as arrays: the yield NaN where null,
    the method an object array. A NaN close is taken as polars takes it (greater than zero:
    its yield is NaN, its method stated)."""
    paid = _regular_cash(dividends)
    # Plain Python over the few (day, dividend, split) triples: a chain has one day, a symbol
    # a few dozen dividends, and polars' joins cost more than the arithmetic here.
    moves = _splits(splits)
    on_day: dict[dt.date | None, float] = {}
    for day in {d for d in days if d is not None}:
        start = _year_before(day)
        total = 0.0
        for ex, amount in paid:
            if not start < ex <= day:
                continue
            factor = 1.0
            for e, s_from, s_to in moves:
                factor = factor * (s_from / s_to if ex < e <= day else 1.0)
            total += amount * factor
        on_day[day] = total
    cash = np.array([on_day.get(day, 0.0) for day in days], dtype=np.float64)
    close = np.asarray(close, dtype=np.float64)
    usable = (known & ((close > 0) | np.isnan(close))
              & np.array([day is not None for day in days], dtype=bool))
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(usable, np.log1p(cash / close), np.nan)
    method = np.full(cash.size, None, dtype=object)
    method[usable] = np.where(cash[usable] > 0, TRAILING, NONE)
    return q, method


def _regular_cash(dividends: pl.DataFrame) -> list[tuple[dt.date, float]]:
    """``(ex_date, cash_amount)`` of the regular cash dividends (see the module docstring) with
    an ex-date and a positive amount, in order, read without a polars query."""
    if dividends.is_empty():
        return []
    n = dividends.height
    kinds = (dividends["distribution_type"].to_list() if "distribution_type" in dividends.columns
             else [None] * n)
    freqs = dividends["frequency"].to_list() if "frequency" in dividends.columns else [None] * n
    cash = dividends["cash_amount"].cast(pl.Float64).to_list()
    if "regular_cash_amount" in dividends.columns:  # a summed row: its regular part alone
        parts = dividends["regular_cash_amount"].cast(pl.Float64).to_list()
        kinds = ["recurring" if part is not None else kind for kind, part in zip(
            kinds, parts, strict=True)]
        cash = [amount if part is None else part for amount, part in zip(cash, parts,
                                                                          strict=True)]
    return [(ex, amount) for kind, freq, ex, amount in zip(
                kinds, freqs, dividends["ex_date"].to_list(), cash, strict=True)
            if (kind == "recurring" or (kind is None and (freq is None or freq > 0)))
            and ex is not None and amount is not None and (amount > 0 or math.isnan(amount))]


def _year_before(day: dt.date) -> dt.date:
    """``day`` a calendar year earlier (29 February to 28 February), as polars' ``-1y``."""
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


def _splits(splits: pl.DataFrame) -> list[tuple]:
    if splits.is_empty():
        return []
    rows = splits.select("execution_date", "split_from", "split_to").drop_nulls().rows()
    return [(e, float(f), float(t)) for e, f, t in rows if f > 0 and t > 0]


def parity_yield(spot: float, t: float, r: float, strikes: np.ndarray, call: np.ndarray,
                 put: np.ndarray) -> float | None:
    """The continuous yield implied by put–call parity for one expiration, or None.

    ``call`` and ``put`` are European-equivalent prices (NaN where that side has no usable
    quote) at ``strikes``; ``t`` in years, ``r`` continuous."""
    if not (spot > 0 and t * 365.0 >= PARITY_MIN_DAYS - 1e-9 and math.isfinite(r)):
        return None
    # Python floats: on three strikes numpy's per-call cost is most of the work (the same
    # arithmetic, so the same result to the last bit).
    pairs = [(k, c, p) for k, c, p in zip(np.asarray(strikes, dtype=np.float64).tolist(),
                                          np.asarray(call, dtype=np.float64).tolist(),
                                          np.asarray(put, dtype=np.float64).tolist(), strict=True)
             if math.isfinite(c) and math.isfinite(p) and k > 0]
    if not pairs:
        return None
    nearest = sorted(pairs, key=lambda kcp: abs(kcp[1] - kcp[2]))[:PARITY_STRIKES]  # stable
    growth = math.exp(r * t)
    forwards = sorted(k + growth * (c - p) for k, c, p in nearest)
    mid = len(forwards) // 2
    forward = forwards[mid] if len(forwards) % 2 else (forwards[mid - 1] + forwards[mid]) / 2
    if not forward > 0:
        return None
    q = r - math.log(forward / spot) / t
    lo, hi = PARITY_RANGE
    return q if lo < q < hi else None
