"""Freshness in trading sessions, never in hours: a weekend or holiday is never stale.

States per symbol × dataset:
    fresh     holds the latest expected session
    behind    1–2 sessions behind
    stale     3 or more sessions behind
    failing   the last attempt failed (consecutive_failures > 0)
    never     never fetched successfully
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from enrich import calendars
from enrich.symbols import calendar_for

STALE_AFTER_SESSIONS = 3
STATES = ("fresh", "behind", "stale", "failing", "never")


def expected_sessions(now: dt.datetime) -> dict[str, dt.date]:
    """Latest expected session per calendar at instant ``now``."""
    return {cal: calendars.latest_session(cal, now) for cal in ("XNYS", "24/7")}


def sessions_behind_column(held: pl.Series, calendar: pl.Series,
                           now: dt.datetime) -> pl.Series:
    """Vectorised ``calendars.sessions_behind`` over columns of held dates and calendar names."""
    out = np.full(len(held), -1, dtype=np.int64)
    held_np = held.to_numpy().astype("datetime64[D]")
    cal_np = calendar.to_numpy()
    for cal, exp in expected_sessions(now).items():
        mask = (cal_np == cal) & ~np.isnat(held_np)
        if not mask.any():
            continue
        arr = calendars._session_array(cal)
        lo = np.searchsorted(arr, held_np[mask], "right")
        hi = np.searchsorted(arr, np.datetime64(exp), "right")
        out[mask] = np.maximum(hi - lo, 0)
    s = pl.Series("sessions_behind", out)
    return s.set(s < 0, None)


def classify() -> pl.Expr:
    """Expression giving the state from sessions_behind, consecutive_failures, last_success_at."""
    return (
        pl.when(pl.col("consecutive_failures").fill_null(0) > 0).then(pl.lit("failing"))
        .when(pl.col("sessions_behind").is_null()).then(pl.lit("never"))
        .when(pl.col("sessions_behind") == 0).then(pl.lit("fresh"))
        .when(pl.col("sessions_behind") < STALE_AFTER_SESSIONS).then(pl.lit("behind"))
        .otherwise(pl.lit("stale"))
        .alias("state")
    )


def add_freshness(status: pl.DataFrame, now: dt.datetime) -> pl.DataFrame:
    """Add ``calendar``, ``sessions_behind`` (recomputed for ``now``) and ``state`` columns.

    ``status`` needs symbol, asset_class, covered_through, latest_session, consecutive_failures.
    """
    cal = status["asset_class"].replace_strict(
        {c: calendar_for(c) for c in ("stocks", "etfs", "crypto", "fx", "indices")},
        default="XNYS", return_dtype=pl.String)
    held = status.select(pl.coalesce("covered_through", "latest_session")).to_series()
    behind = sessions_behind_column(held, cal, now)
    return status.with_columns(cal.alias("calendar"), behind).with_columns(classify())
