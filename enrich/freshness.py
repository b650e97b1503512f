"""Freshness in trading sessions, never in hours: a weekend or holiday is never stale.

A session's data is *expected* once the session has closed (the exchange calendar's close:
13:00 ET on a half day) and the provider's publication lag has passed after that close
(``PUBLICATION_LAG``: the sample provider publishes at the close, Massive's end-of-day
aggregates a few hours later). Counting is in sessions of the symbol's calendar
(``enrich.conventions``: XNYS for US listings and indices, every UTC day for crypto, UTC days
Sunday to Friday for forex), with session dates in the calendar's time zone.

States per symbol × dataset, most urgent first:

    failing       the last attempt failed (consecutive_failures > 0)
    stale         3 or more expected sessions missing
    never         nothing held yet
    late          1–2 expected sessions missing (past the publication lag)
    due           holds every expected session, but a session has closed whose data is
                  still within the publication lag (it may not be published yet)
    fresh         holds the latest closed session
    not_expected  nothing is expected: the symbol is deactivated, or delisted
                  (``symbols.delisted_on``: kept, fetched up to its last trading day,
                  never refreshed after; ``enrich.views.status`` reads it as not active)

(``enrich.views.status`` adds ``not_entitled``: a dataset the provider plan does not include.)
A holiday is not a session, so it never makes anything late; a half day closes early, so
its data is expected earlier.

What counts as held: the newest session stored for per-session datasets (bars, option
snapshots) — a fetch that returned nothing for a session does not make it fresh, but for
an option chain with no contract listed (nothing exists to hold: held through the session
asked) — and the end of the fetched window for event datasets (dividends, splits, earnings,
news), which may have no event for weeks.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from enrich import calendars, conventions
from enrich.symbols import calendar_for

STALE_AFTER_SESSIONS = 3
STATES = ("failing", "stale", "never", "late", "due", "fresh", "not_expected")
CALENDARS = calendars.CALENDARS
# Per-session datasets: held = the newest session stored (else the fetched window's end).
SESSION_DATASETS = ("bars", "options_iv", "features")

# How long after a session's close each provider's data for it is published.
PUBLICATION_LAG: dict[str, dt.timedelta] = {
    "sample": dt.timedelta(0),
    "massive": dt.timedelta(hours=4),
}
DEFAULT_LAG = dt.timedelta(0)


def publication_lag(provider: str | None,
                    overrides: dict[str, dt.timedelta] | None = None) -> dt.timedelta:
    """The publication lag of ``provider`` (``overrides`` first, then ``PUBLICATION_LAG``)."""
    if provider is None:
        return DEFAULT_LAG
    if overrides and provider in overrides:
        return overrides[provider]
    return PUBLICATION_LAG.get(provider, DEFAULT_LAG)


def expected_session(calendar: str, now: dt.datetime,
                     lag: dt.timedelta = DEFAULT_LAG) -> dt.date:
    """The latest session whose data is expected at ``now``: closed at least ``lag`` ago."""
    return calendars.latest_session(calendar, now - lag)


def expected_sessions(now: dt.datetime, lag: dt.timedelta = DEFAULT_LAG) -> dict[str, dt.date]:
    """Latest expected session per calendar at instant ``now``."""
    return {cal: expected_session(cal, now, lag) for cal in CALENDARS}


def _count_after(cal: str, held: np.ndarray, upto: dt.date) -> np.ndarray:
    arr = calendars._session_array(cal)
    lo = np.searchsorted(arr, held, "right")
    hi = np.searchsorted(arr, np.datetime64(upto), "right")
    return np.maximum(hi - lo, 0)


def sessions_behind_column(held: pl.Series, calendar: pl.Series, now: dt.datetime,
                           lag: dt.timedelta = DEFAULT_LAG) -> pl.Series:
    """Sessions after each held date up to the expected session of its calendar (null where
    nothing is held). Vectorised ``calendars.sessions_behind``."""
    return _behind(held, calendar, now, lag)[0]


def _behind(held: pl.Series, calendar: pl.Series, now: dt.datetime,
            lag: dt.timedelta) -> tuple[pl.Series, pl.Series]:
    """(sessions behind the expected session, sessions closed but not yet expected)."""
    n = len(held)
    behind = np.full(n, -1, dtype=np.int64)
    pending = np.zeros(n, dtype=np.int64)
    held_np = held.to_numpy().astype("datetime64[D]")
    cal_np = calendar.to_numpy()
    for cal in CALENDARS:
        mask = (cal_np == cal) & ~np.isnat(held_np)
        if not mask.any():
            continue
        exp = expected_session(cal, now, lag)
        closed = calendars.latest_session(cal, now)
        behind[mask] = _count_after(cal, held_np[mask], exp)
        if closed > exp:
            pending[mask] = _count_after(cal, held_np[mask], closed) - behind[mask]
    s = pl.Series("sessions_behind", behind)
    return s.set(s < 0, None), pl.Series("sessions_due", pending)


def classify() -> pl.Expr:
    """The state from ``active``, ``consecutive_failures``, ``sessions_behind`` and
    ``sessions_due`` (see the module docstring)."""
    active = pl.col("active").fill_null(True)
    behind = pl.col("sessions_behind")
    return (
        pl.when(~active).then(pl.lit("not_expected"))
        .when(pl.col("consecutive_failures").fill_null(0) > 0).then(pl.lit("failing"))
        .when(behind.is_null()).then(pl.lit("never"))
        .when((behind == 0) & (pl.col("sessions_due") > 0)).then(pl.lit("due"))
        .when(behind == 0).then(pl.lit("fresh"))
        .when(behind < STALE_AFTER_SESSIONS).then(pl.lit("late"))
        .otherwise(pl.lit("stale"))
        .alias("state")
    )


def add_freshness(status: pl.DataFrame, now: dt.datetime,
                  lag: dt.timedelta = DEFAULT_LAG) -> pl.DataFrame:
    """Add freshness columns recomputed for ``now``:

    calendar          XNYS, 24/7 or FX (``enrich.calendars``)
    sessions_behind   expected sessions not held (null: nothing held)
    sessions_due      sessions closed but still within the publication lag, not held
    expected_session  the latest session whose data is expected (exchange date)
    due_session       the newest closed session whose data is not expected yet, if not held
    due_at            when that session's data is expected: its close + ``lag`` (UTC)
    state             see the module docstring

    ``status`` needs symbol, asset_class, covered_through, latest_session and
    consecutive_failures; ``dataset`` (what counts as held) and ``active`` when present.
    """
    cal = status["asset_class"].replace_strict(
        {c: calendar_for(c) for c in conventions.CONVENTIONS},
        default="XNYS", return_dtype=pl.String)
    if "dataset" in status.columns:
        per_session = pl.col("dataset").is_in(list(SESSION_DATASETS))
        held_expr = (pl.when(per_session).then(pl.coalesce("latest_session", "covered_through"))
                     .otherwise(pl.coalesce("covered_through", "latest_session")))
    else:
        held_expr = pl.coalesce("covered_through", "latest_session")
    held = status.select(held_expr).to_series()
    behind, due = _behind(held, cal, now, lag)
    per_cal = {}
    for c in CALENDARS:
        exp = expected_session(c, now, lag)
        closed = calendars.latest_session(c, now)
        due_at = calendars.session_close_utc(c, closed) + lag if closed > exp else None
        per_cal[c] = (exp, closed if closed > exp else None, due_at)
    exp_col = cal.replace_strict({c: v[0] for c, v in per_cal.items()},
                                 return_dtype=pl.Date).alias("expected_session")
    due_col = cal.replace_strict({c: v[1] for c, v in per_cal.items()},
                                 return_dtype=pl.Date).alias("due_session")
    due_at_col = cal.replace_strict({c: v[2] for c, v in per_cal.items()},
                                    return_dtype=pl.Datetime("us", "UTC")).alias("due_at")
    out = status.with_columns(cal.alias("calendar"), behind, due,
                              exp_col, due_col, due_at_col)
    if "active" not in out.columns:
        out = out.with_columns(pl.lit(True).alias("active"))
    out = out.with_columns(classify()).with_columns(
        pl.when(pl.col("sessions_due") > 0).then(pl.col("due_session"))
        .alias("due_session"),
        pl.when(pl.col("sessions_due") > 0).then(pl.col("due_at")).alias("due_at"))
    if "active" not in status.columns:
        out = out.drop("active")
    return out
