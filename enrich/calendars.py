"""Trading sessions: XNYS from exchange_calendars for US listings and indices, every UTC day for
crypto ("24/7"), and UTC days Sunday to Friday for forex ("FX": the market opens Sunday 17:00
and closes Friday 17:00 New York, and trades on US holidays). Which class uses which calendar
is in ``enrich.conventions``.

Session dates are dates in the calendar's time zone (New York for XNYS, UTC for the others).
Instants are UTC. Freshness is counted in sessions, so a weekend or a holiday is never
"behind".
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import warnings

import exchange_calendars as xcals
import numpy as np
import pandas as pd

EXCHANGE_TZ = "America/New_York"
CAL_START = dt.date(2000, 1, 3)
CALENDARS = ("XNYS", "24/7", "FX")
_UTC_DAYS = ("24/7", "FX")  # calendars whose sessions are UTC days
FX_CLOSE = dt.time(17, 0)  # New York: the forex week ends Friday at this time

_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _xcal(name: str):
    # exchange_calendars trips pandas deprecation warnings that are not ours to fix.
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xcals.get_calendar(name, start=CAL_START.isoformat())


@functools.lru_cache(maxsize=4)
def _session_array(name: str) -> np.ndarray:
    """All sessions of the calendar as numpy datetime64[D], ascending."""
    if name in _UTC_DAYS:
        end = dt.date.today() + dt.timedelta(days=800)
        days = np.arange(np.datetime64(CAL_START), np.datetime64(end), dtype="datetime64[D]")
        if name == "FX":
            days = days[_weekday(days) != 5]  # no Saturday
        return days
    cal = _xcal(name)
    return np.asarray(cal.sessions.to_numpy(), dtype="datetime64[D]")


@functools.lru_cache(maxsize=4)
def _close_array(name: str) -> np.ndarray:
    """Close instants (UTC, datetime64[s]) aligned with ``_session_array``."""
    if name in _UTC_DAYS:
        days = _session_array(name)
        closes = (days + np.timedelta64(1, "D")).astype("datetime64[s]")
        if name == "FX":  # Friday's session ends at 17:00 New York
            friday = _weekday(days) == 4
            at = pd.DatetimeIndex(days[friday]) + pd.Timedelta(hours=FX_CLOSE.hour)
            closes[friday] = (at.tz_localize(EXCHANGE_TZ).tz_convert("UTC").tz_localize(None)
                              .to_numpy().astype("datetime64[s]"))
        return closes
    cal = _xcal(name)
    closes = cal.closes.dt.tz_convert(None).to_numpy()  # UTC instants
    return closes.astype("datetime64[s]")


def _weekday(days: np.ndarray) -> np.ndarray:
    """Monday = 0 … Sunday = 6 of datetime64[D] days (1970-01-01 was a Thursday)."""
    return (days.astype(np.int64) + 3) % 7


@functools.lru_cache(maxsize=4)
def _short_array(name: str) -> np.ndarray:
    """Whether each session of ``_session_array`` is short by design: an XNYS half day (an
    early close), a forex Sunday (it opens at 17:00 New York)."""
    days = _session_array(name)
    if name == "FX":
        return _weekday(days) == 6
    if name == "XNYS":
        cal = _xcal(name)
        early = cal.early_closes
        early = early[(early >= pd.Timestamp(CAL_START))]
        return np.isin(days, np.asarray(early.to_numpy(), dtype="datetime64[D]"))
    return np.zeros(len(days), dtype=bool)


def short_sessions(calendar: str, days: np.ndarray) -> np.ndarray:
    """Whether each of ``days`` (sessions, datetime64[D]) is a session short by design."""
    arr = _session_array(calendar)
    pos = np.minimum(np.searchsorted(arr, days), len(arr) - 1)
    return _short_array(calendar)[pos] & (arr[pos] == days)


@functools.lru_cache(maxsize=4)
def _open_array(name: str) -> np.ndarray:
    """Open instants (UTC, datetime64[s]) aligned with ``_session_array``."""
    if name in _UTC_DAYS:  # a UTC day opens at midnight (forex's Sunday: a short session)
        return _session_array(name).astype("datetime64[s]")
    cal = _xcal(name)
    return cal.opens.dt.tz_convert(None).to_numpy().astype("datetime64[s]")


def sessions(calendar: str, start: dt.date, end: dt.date) -> list[dt.date]:
    """Sessions in [start, end], ascending."""
    arr = _session_array(calendar)
    lo = np.searchsorted(arr, np.datetime64(start), "left")
    hi = np.searchsorted(arr, np.datetime64(end), "right")
    return [d.item() for d in arr[lo:hi]]


def session_array(calendar: str, start: dt.date, end: dt.date) -> np.ndarray:
    """Like ``sessions`` but as datetime64[D], for vectorised callers."""
    arr = _session_array(calendar)
    lo = np.searchsorted(arr, np.datetime64(start), "left")
    hi = np.searchsorted(arr, np.datetime64(end), "right")
    return arr[lo:hi]


def is_session(calendar: str, day: dt.date) -> bool:
    arr = _session_array(calendar)
    i = np.searchsorted(arr, np.datetime64(day), "left")
    return bool(i < len(arr) and arr[i] == np.datetime64(day))


def latest_session(calendar: str, now: dt.datetime) -> dt.date:
    """The latest session whose close has passed at instant ``now`` (UTC-aware).

    Before today's close (or on a holiday) that is the previous session: the day's bar does
    not exist yet, so it cannot be missing.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now64 = np.datetime64(now.astimezone(dt.UTC).replace(tzinfo=None), "s")
    closes = _close_array(calendar)
    i = np.searchsorted(closes, now64, "right") - 1
    if i < 0:
        raise ValueError(f"{now} is before the calendar starts")
    return _session_array(calendar)[i].item()


def next_session(calendar: str, day: dt.date) -> dt.date | None:
    arr = _session_array(calendar)
    i = np.searchsorted(arr, np.datetime64(day), "right")
    return arr[i].item() if i < len(arr) else None


def sessions_behind(calendar: str, held: dt.date | None, expected: dt.date) -> int | None:
    """Number of sessions after ``held`` up to and including ``expected``; None if nothing held."""
    if held is None:
        return None
    if held >= expected:
        return 0
    arr = _session_array(calendar)
    lo = np.searchsorted(arr, np.datetime64(held), "right")
    hi = np.searchsorted(arr, np.datetime64(expected), "right")
    return int(hi - lo)


def session_close_utc(calendar: str, day: dt.date) -> dt.datetime:
    arr = _session_array(calendar)
    i = np.searchsorted(arr, np.datetime64(day), "left")
    ts = pd.Timestamp(_close_array(calendar)[i])
    return ts.to_pydatetime().replace(tzinfo=dt.UTC)


def session_open_utc(calendar: str, day: dt.date) -> dt.datetime:
    arr = _session_array(calendar)
    i = np.searchsorted(arr, np.datetime64(day), "left")
    ts = pd.Timestamp(_open_array(calendar)[i])
    return ts.to_pydatetime().replace(tzinfo=dt.UTC)


def snapshot_session(calendar: str, now: dt.datetime) -> tuple[dt.date, bool]:
    """The session a snapshot taken at ``now`` describes, and whether it is partial.

    The latest session that has opened by ``now``: during it the snapshot is partial (its
    close is still to come); after its close, until the next open, it is that session's
    final state."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now64 = np.datetime64(now.astimezone(dt.UTC).replace(tzinfo=None), "s")
    i = np.searchsorted(_open_array(calendar), now64, "right") - 1
    if i < 0:
        raise ValueError(f"{now} is before the calendar starts")
    return _session_array(calendar)[i].item(), bool(now64 < _close_array(calendar)[i])
