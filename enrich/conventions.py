"""Conventions per asset class, in one table: the calendar an instrument trades on, how a daily
bar's ``t`` maps to its session, how many bars make a year, how long "52 weeks" is, and which
fields its bars may lack.

Freshness (``enrich.freshness``, through ``calendar_for``), the features (annualisation and the
52-week window), the quality checks (which calendar, whether volume is expected, which sessions
are short by design), the coverage heatmap and the providers' bar parsers all read this table,
and the README shows it (``markdown_table``; a test keeps the two equal).

Where the sources disagree, both readings give the same session (reference
``massive-refresh-and-correctness.md`` §7): crypto's daily ``t`` is 00:00 UTC in a recorded
response and 04:00 UTC (midnight New York) in the spec's example, both the UTC date of the
session; index bars' ``t`` is 01:00 New York in recorded responses, the New York date of the
session. A daily bar's ``ts`` is stored as the session's midnight in the convention's zone,
whichever instant the provider stamped, so every path to the same session lands on one lake key.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from zoneinfo import ZoneInfo

NEW_YORK = "America/New_York"
UTC = "UTC"
WEEKS_52 = dt.timedelta(weeks=52)  # the "52-week" window of the features: 364 calendar days
_TIMEFRAME_RE = re.compile(r"^([1-9][0-9]*)([mhd])$")


@dataclass(frozen=True)
class Convention:
    asset_class: str
    prefix: str  # the ticker prefix that marks the class ("" for US listings)
    calendar: str  # a calendar of ``enrich.calendars``
    trading: str  # when it trades, in words
    session_zone: str  # a daily bar's session is the date of its ``t`` in this zone
    session_rule: str  # how a daily ``t`` maps to a session, in words
    daily_bars_per_year: float  # sessions a year: annualises daily bars
    trading_hours_per_year: float  # hours of trading a year: annualises intraday bars
    volume: str | None  # what ``volume`` counts; None: bars carry none (null)
    short_sessions: str  # sessions that are short by design (less volume is normal)

    @property
    def volume_expected(self) -> bool:
        return self.volume is not None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.session_zone)

    def bars_per_year(self, timeframe: str) -> float:
        """Bars a year of ``timeframe`` ("1d", "1h", "5m", …): sessions a year for daily bars,
        trading time a year over the bar's length for intraday ones (a bar of the regular
        session's trading time; an hourly stock bar is 1/6.5 of a session)."""
        m = _TIMEFRAME_RE.match(timeframe)
        if m is None:
            raise ValueError(f"unknown timeframe {timeframe!r}: use e.g. 1d, 1h, 5m")
        n, unit = int(m.group(1)), m.group(2)
        if unit == "d":
            if n != 1:
                raise ValueError(f"unsupported timeframe {timeframe!r}: daily bars are 1d")
            return self.daily_bars_per_year
        hours = n if unit == "h" else n / 60
        return self.trading_hours_per_year / hours

    def session_start(self, session: dt.date) -> dt.datetime:
        """A daily bar's ``ts``: midnight of ``session`` in the convention's zone, as UTC."""
        return dt.datetime.combine(session, dt.time(), self.zone).astimezone(dt.UTC)


_XNYS_TRADING = "XNYS sessions: 09:30–16:00 New York, holidays closed, 13:00 on half days"
_XNYS_YEAR = 252.0
_XNYS_HOURS = 252 * 6.5

CONVENTIONS: dict[str, Convention] = {c.asset_class: c for c in (
    Convention(
        "stocks", "", "XNYS", _XNYS_TRADING, NEW_YORK,
        "New York date of `t` (00:00 New York)", _XNYS_YEAR, _XNYS_HOURS,
        "shares traded, extended hours included", "half days (13:00 close)"),
    Convention(
        "etfs", "", "XNYS", _XNYS_TRADING, NEW_YORK,
        "New York date of `t` (00:00 New York)", _XNYS_YEAR, _XNYS_HOURS,
        "shares traded, extended hours included", "half days (13:00 close)"),
    Convention(
        "crypto", "X:", "24/7", "every day, around the clock; a session is a UTC day", UTC,
        "UTC date of `t` (00:00 UTC; the spec's example shows 04:00 UTC, the same date)",
        365.0, 365 * 24.0, "units of the base currency traded", "none"),
    Convention(
        "fx", "C:", "FX",
        "Sunday 17:00 – Friday 17:00 New York; a session is a UTC day, Sunday to Friday", UTC,
        "UTC date of `t` (00:00 UTC); Saturday rows (stray quotes after the Friday close) "
        "are no session and are not stored",
        # Six UTC-day bars a week, Sunday's a few hours long: the mean variance of a stored
        # bar times 312 is the variance of a year's 52 × 5 trading days.
        52 * 6.0, 52 * 120.0, "quotes (Massive's `v` equals `n`, a count of quotes)",
        "Sunday (opens 17:00 New York)"),
    Convention(
        "indices", "I:", "XNYS", _XNYS_TRADING, NEW_YORK,
        "New York date of `t` (01:00 New York / 00:00 Central in recorded responses)",
        _XNYS_YEAR, _XNYS_HOURS, None, "half days (13:00 close)"),
)}


def convention(asset_class: str) -> Convention:
    """The conventions of ``asset_class`` (an unknown class reads as a US listing)."""
    return CONVENTIONS.get(asset_class, CONVENTIONS["stocks"])


def asset_class_of(symbol: str) -> str:
    """The class a symbol's form says (``X:`` crypto, ``C:`` fx, ``I:`` indices, else
    stocks); the universe's own class wins where it is known."""
    for c in CONVENTIONS.values():
        if c.prefix and symbol.startswith(c.prefix):
            return c.asset_class
    return "stocks"


def of_symbol(symbol: str) -> Convention:
    """The conventions of a ticker as its form says (options ``O:`` trade on XNYS)."""
    return convention(asset_class_of(symbol))


def markdown_table() -> str:
    """The table as the README shows it."""
    rows = ["| class | prefix | calendar | daily `t` → session | bars a year (1d / 1h / 5m) "
            "| 52 weeks | volume | short by design |", "|" + "---|" * 8]
    for c in CONVENTIONS.values():
        per_year = " / ".join(f"{c.bars_per_year(tf):,.0f}" for tf in ("1d", "1h", "5m"))
        rows.append(f"| {c.asset_class} | {f'`{c.prefix}`' if c.prefix else '—'} "
                    f"| {c.trading} | {c.session_rule} | {per_year} "
                    f"| {WEEKS_52.days} calendar days "
                    f"| {c.volume or 'absent: stored as null'} | {c.short_sessions} |")
    return "\n".join(rows)
