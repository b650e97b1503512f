"""Polars columns read into numpy and written back without a polars query.

On a chain of a few hundred rows each polars query (``DataFrame.with_columns``, ``select``,
``filter``, and Series methods such as ``is_null`` or ``fill_null``, which run as queries)
costs 0.1-0.4 ms, more than the arithmetic it does; the pricing of a chain used to run about
twenty. These read a column with direct Series calls (``cast``, ``to_numpy``, ``to_list``,
``null_count``: microseconds each) and write it back with ``replace_column``. Nulls are kept
apart from NaN values, so the numpy code can mirror polars' null rules exactly.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from enrich.schemas import UTC_TS

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def values(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with NaN where null, null mask) of a numeric, Date (days since the
    epoch) or Datetime (its own unit since the epoch) column. Integers up to 2**53 (dates,
    microsecond instants until the year 2255) are exact."""
    if s.dtype == pl.Date:
        s = s.cast(pl.Int32)
    elif isinstance(s.dtype, pl.Datetime):
        s = s.cast(pl.Int64)
    out = s.cast(pl.Float64).to_numpy()
    nulls = s.null_count()
    if not nulls:
        return out, np.zeros(out.size, dtype=bool)
    nan = np.isnan(out)
    if int(nan.sum()) == nulls:  # every NaN is a null: no NaN values to tell apart
        return out, nan
    return out, s.is_null().to_numpy()


def day(d: dt.date) -> float:
    """A date as :func:`values` reads a Date column: days since the epoch."""
    return float((d - _EPOCH.date()).days)


def rows_where(frame: pl.DataFrame, mask: np.ndarray) -> pl.DataFrame:
    """The rows of ``frame`` where ``mask`` is True, in order (``frame.filter``), by
    :func:`take`."""
    return take(frame, np.flatnonzero(mask))


def take(frame: pl.DataFrame, rows: np.ndarray) -> pl.DataFrame:
    """``frame[rows]`` (row numbers); one ascending run of them (rows picked by a key column
    a file is sorted on), or none, is a slice, without a query or a copy."""
    if not rows.size:
        return frame.clear()
    if (np.diff(rows) == 1).all():
        return frame.slice(int(rows[0]), rows.size)
    return frame[rows]


def flags(s: pl.Series) -> np.ndarray:
    """A Boolean column as a mask, null as False."""
    if not s.null_count():
        return s.to_numpy().astype(bool, copy=False)
    return np.array([v is True for v in s.to_list()], dtype=bool)


def present(s: pl.Series) -> np.ndarray:
    """True where the column (of any type) is not null."""
    nulls = s.null_count()
    if nulls in (0, s.len()):
        return np.full(s.len(), nulls == 0)
    return np.array([v is not None for v in s.to_list()], dtype=bool)


def micros(at: dt.datetime) -> float:
    """An instant as a UTC microsecond column holds it (a naive instant is taken as UTC)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    return float((at - _EPOCH) // _MICROSECOND)


def instants(name: str, us: np.ndarray, nulls: np.ndarray) -> pl.Series:
    """A UTC microsecond column from :func:`values`' reading of one (and its null mask)."""
    out = pl.Series(name, np.where(nulls, np.nan, us), nan_to_null=True)
    return out.cast(pl.Int64).cast(UTC_TS)


def floats(name: str, x: np.ndarray) -> pl.Series:
    """A Float64 column, NaN as null."""
    # No dtype= here: with one, polars takes a path ~5x slower than the array's own.
    return pl.Series(name, np.asarray(x, dtype=np.float64), nan_to_null=True)


def strings(name: str, x: list | np.ndarray) -> pl.Series:
    """A String column from Python strings and None."""
    return pl.Series(name, x.tolist() if isinstance(x, np.ndarray) else x, dtype=pl.String)


def constant(name: str, value: object, dtype: pl.DataType | type[pl.DataType], n: int) -> pl.Series:
    """``n`` copies of ``value``."""
    return pl.Series(name, [value], dtype=dtype).new_from_index(0, n)


def put(frame: pl.DataFrame, *columns: pl.Series) -> pl.DataFrame:
    """``frame.with_columns(*columns)`` (same column order: a new name goes last) without
    a query; ``frame`` itself is left as it was."""
    out = frame.clone()
    names = {name: i for i, name in enumerate(out.columns)}
    for s in columns:
        if s.name in names:
            out.replace_column(names[s.name], s)
        else:
            out.hstack([s], in_place=True)
            names[s.name] = out.width - 1
    return out
