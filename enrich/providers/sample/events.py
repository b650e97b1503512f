"""The sample provider's events: dividends, earnings and news, each returned only once it
is known at the clock's instant.
"""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np
import polars as pl
from scipy.special import ndtri

from enrich.providers.sample.prices import _dates, _frame, _path, _utc
from enrich.providers.sample.profiles import (
    _DEMO_NAME,
    _UNIX_DAYS,
    _US_PER_DAY,
    EPOCH,
    LAST_DAY,
    REF_DAY,
    T1_SETTLEMENT,
    _day_idx,
    _idx_of,
    _next_session_idx,
    _prev_session_idx,
    _Profile,
)
from enrich.providers.sample.randomness import (
    _DIV,
    _EARN,
    _N_COUNT,
    _N_DAY,
    _N_ID,
    _N_TIME,
    _NEWS_PURPOSES,
    _hex_ids,
    _mix,
    _normal,
    _uniform,
    _unit,
)
from enrich.schemas import DIVIDENDS, EARNINGS, NEWS

# ----------------------------------------------------------------------------- events


def _month_start_idx(months: np.ndarray) -> np.ndarray:
    """Epoch-day index of the first day of each month, months counted from 0 = 2000-01."""
    return _idx_of((np.datetime64(EPOCH, "M") + months).astype("datetime64[D]"))


@functools.lru_cache(maxsize=128)
def _dividend_quarters(first_month: int, dom: int) -> tuple[np.ndarray, np.ndarray]:
    """Year and ex day index of each quarter from ``EPOCH`` to ``LAST_DAY`` of a payer whose
    quarterly cycle starts in ``first_month`` on day ``dom`` (shared by every such payer).

    The ex days rise with the quarter."""
    years = np.repeat(np.arange(EPOCH.year, LAST_DAY.year + 1), 4)
    months = np.tile(first_month + 3 * np.arange(4), len(years) // 4)
    nominal = _month_start_idx(12 * (years - EPOCH.year) + months - 1) + (dom - 1)
    ex = _next_session_idx(nominal)
    years.flags.writeable = ex.flags.writeable = False  # cached and shared
    return years, ex


def _dividend_frame(p: _Profile, start: int, end: int, known: int) -> pl.DataFrame:
    """The dividends with ex day index in [start, end] declared by day ``known``, as declared
    (per then-current share).

    Each quarter's figures depend on the quarter alone, so only the quarters of the window
    are worked out; both dates rise with the quarter, as a slice of the whole history
    would give them."""
    if p.div_yield <= 0.0:
        return DIVIDENDS.empty()
    u = _uniform(p.key, _DIV, np.arange(5)).tolist()
    first_month, dom = 1 + int(3 * u[0]), 3 + int(22 * u[1])  # quarter cycle, day of month
    all_years, all_ex = _dividend_quarters(first_month, dom)
    lo = int(np.searchsorted(all_ex, start, "left"))
    hi = int(np.searchsorted(all_ex, end, "right"))
    if lo >= hi:
        return DIVIDENDS.empty()
    q = np.arange(lo, hi)  # quarters since EPOCH: the draws' slot
    years, ex = all_years[lo:hi], all_ex[lo:hi]
    decl = _prev_session_idx(ex - 21 - (8 * _uniform(p.key, _DIV, 10, q)).astype(np.int64))
    record = np.where(ex >= _day_idx(T1_SETTLEMENT), ex, _next_session_idx(ex + 1))
    pay = _next_session_idx(ex + 14 + (15 * _uniform(p.key, _DIV, 11, q)).astype(np.int64))
    # Raised once a year; on today's share basis, then as declared (per then-current share).
    growth = 0.03 + 0.05 * u[2]
    today_basis = p.div_yield / 4.0 * p.anchor * (1.0 + growth) ** (years - REF_DAY.year)
    declared = today_basis * p.basis(ex)
    declared = np.where(declared >= 0.1, np.round(declared, 2), np.round(declared, 4))
    keep = ((ex >= _day_idx(p.div_start)) & (ex <= _day_idx(LAST_DAY)) & (declared > 0)
            & (decl <= known))
    if not keep.any():
        return DIVIDENDS.empty()
    return _frame(DIVIDENDS, int(keep.sum()), {
        "symbol": p.symbol, "ex_date": _dates(ex[keep]), "declaration_date": _dates(decl[keep]),
        "record_date": _dates(record[keep]), "pay_date": _dates(pay[keep]),
        "cash_amount": declared[keep], "currency": "USD", "frequency": 4,
        "distribution_type": "recurring",
    })


@functools.lru_cache(maxsize=16)
def _fiscal_quarters(fy_end_month: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Period end day index, fiscal year and fiscal quarter of every fiscal quarter from
    ``EPOCH`` to ``LAST_DAY`` for a fiscal year ending in ``fy_end_month`` (shared by every
    such company)."""
    month = np.arange(12 * (LAST_DAY.year - EPOCH.year + 1))  # 0 = 2000-01
    k = month % 12 + 1
    month = month[(k - fy_end_month) % 3 == 0]  # fiscal quarter ends
    k, year = month % 12 + 1, EPOCH.year + month // 12
    period_end = _month_start_idx(month + 1) - 1
    fq = ((k - fy_end_month - 1) % 12) // 3 + 1
    fy = np.where(k <= fy_end_month, year, year + 1)
    for x in (period_end, fy, fq):
        x.flags.writeable = False  # cached and shared
    return period_end, fy, fq


# A filing comes 25-45 days after the period's end, moved to a session: never 60 days later.
_MAX_FILING_LAG = 60


def _earnings_frame(p: _Profile, start: int, end: int) -> pl.DataFrame:
    """The fiscal quarters filed on day indexes [start, end], ordered by period end.

    Each quarter's figures depend on the quarter alone, so only the quarters that can be filed
    in the window are worked out; filings rise with the quarter (lags of 25-45 days, quarters
    ~90 days apart), as a slice of the whole history would give them."""
    if not p.has_earnings:
        return EARNINGS.empty()
    all_end, all_fy, all_fq = _fiscal_quarters(p.fy_end_month)
    lo = int(np.searchsorted(all_end, start - _MAX_FILING_LAG, "left"))
    hi = int(np.searchsorted(all_end, end, "right"))
    if lo >= hi:
        return EARNINGS.empty()
    period_end = all_end[lo:hi]
    lag = 25 + (21 * _uniform(p.key, _EARN, 1, period_end)).astype(np.int64)  # 25-45 days
    filing = _next_session_idx(period_end + lag)
    keep = (filing >= start) & (filing <= end) & (filing <= _day_idx(LAST_DAY))
    if not keep.any():
        return EARNINGS.empty()
    years = (period_end - _day_idx(REF_DAY)) / 365.25
    season = 1.0 + p.seasonality * np.cos(2 * np.pi * (period_end % 365.25) / 365.25)
    revenue = (p.revenue * (1.0 + p.rev_growth) ** years * season
               * np.exp(0.03 * _normal(p.key, _EARN, 2, period_end)))
    margin = p.margin + 0.01 + 0.2 * abs(p.margin) * _normal(p.key, _EARN, 3, period_end)
    shares = p.shares / p.basis(period_end)  # shares outstanding at the time
    eps = np.round(revenue * margin / shares, 2)
    dilution = 0.005 + 0.015 * _uniform(p.key, _EARN, 4, period_end)
    # Dilution lowers a profit per share; a loss is not diluted (antidilutive).
    eps_diluted = np.where(eps > 0, np.minimum(np.round(eps * (1.0 - dilution), 2), eps), eps)
    return _frame(EARNINGS, int(keep.sum()), {
        "symbol": p.symbol, "fiscal_year": all_fy[lo:hi][keep],
        "fiscal_quarter": all_fq[lo:hi][keep], "period_end": _dates(period_end[keep]),
        "filing_date": _dates(filing[keep]), "revenue": np.round(revenue[keep], -3),
        "eps_basic": eps[keep], "eps_diluted": eps_diluted[keep],
    })


_PUBLISHERS = ("Demo Newswire", "Sample Markets Daily", "Example Street Journal",
               "Placeholder Finance", "Synthetic Business Review", "Mock Capital Times")
_SENTIMENTS = ("negative", "neutral", "positive")
_TITLES = (  # 5 per sentiment, in _SENTIMENTS order
    "{s} slides as investors take profits",
    "{n} ({s}) falls after cautious guidance",
    "Analysts trim {s} estimates on margin worries",
    "{s} drops amid sector weakness",
    "Why {n} stock is falling today",
    "{n} ({s}) holds steady ahead of key data",
    "What to watch for {s} this week",
    "{s} trades mixed as markets weigh rates",
    "{n} announces investor day schedule",
    "Three things to know about {s} today",
    "{s} shares climb as investors cheer results",
    "{n} ({s}) beats expectations",
    "Analysts lift targets on {s} after strong session",
    "{s} rallies on upbeat demand outlook",
    "Why {n} stock is rising today",
)
_REASONS = (  # 3 per sentiment
    "The article reports a decline in {s} and investor caution.",
    "Coverage of {s} focuses on risks and weaker guidance.",
    "{s} is described as underperforming the market.",
    "The article on {s} is informational, without a clear direction.",
    "Mentions of {s} balance risks and opportunities.",
    "{s} is referenced in passing in a market overview.",
    "The article highlights gains in {s} and an optimistic outlook.",
    "Coverage of {s} is upbeat, citing strong demand.",
    "{s} is described as outperforming its peers.",
)


@functools.lru_cache(maxsize=256)
def _news_text(symbol: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    symbol = symbol.partition("~")[0]  # a former holder of a ticker is named by the ticker
    name = _DEMO_NAME.get(symbol, symbol)
    return (tuple(t.format(s=symbol, n=name) for t in _TITLES),
            tuple(r.format(s=symbol) for r in _REASONS))


def _pick(texts: tuple[str, ...], idx: np.ndarray) -> pl.Series:
    """``texts[i]`` for each i of ``idx``, as a String column. A few rows (a refresh's window)
    are cheaper picked in Python; many (a history) by a polars gather (Series indexing:
    ``Series.gather`` would build a query each time)."""
    if len(idx) > 64:
        return pl.Series(texts)[idx]
    return pl.Series([texts[i] for i in idx.tolist()], dtype=pl.String)


_MONDAY0 = _day_idx(dt.date(2000, 1, 3))
_WEEKDAY_CDF = np.cumsum([0.19, 0.19, 0.19, 0.19, 0.19, 0.025, 0.025])


def _news_frame(p: _Profile, start: dt.date, end: dt.date, now_us: int) -> pl.DataFrame:
    """2-5 items per Monday-based week, mostly on weekdays, published 10:00-17:00 UTC.

    Everything of a day is out before the US close (even on a half-day), so a fetch after the
    close never misses an item that the next fetch, starting the next day, would not ask for."""
    lo_i, hi_i = max(_day_idx(start), _MONDAY0), _day_idx(end)
    if lo_i > hi_i:
        return NEWS.empty()
    weeks = np.arange((lo_i - _MONDAY0) // 7, (hi_i - _MONDAY0) // 7 + 1)[:, None]
    item = np.arange(5)[None, :]
    count = 2 + (4 * _uniform(p.key, _N_COUNT, weeks)).astype(np.int64)
    weekday = np.searchsorted(_WEEKDAY_CDF, _uniform(p.key, _N_DAY, weeks, item), "right")
    day = _MONDAY0 + 7 * weeks + np.minimum(weekday, 6)
    secs = (36_000 + 25_200 * _uniform(p.key, _N_TIME, weeks, item)).astype(np.int64)
    published = (day + _UNIX_DAYS) * _US_PER_DAY + secs * 1_000_000
    keep = (item < count) & (day >= lo_i) & (day <= hi_i) & (published <= now_us)
    order = np.argsort(published[keep], kind="stable")
    day, published = day[keep][order], published[keep][order]
    if len(day) == 0:
        return NEWS.empty()
    n_in_day = np.arange(len(day)) - np.searchsorted(day, day, "left")
    h = _mix(p.key, _N_ID, day, n_in_day)
    path = _path(p.symbol)
    move = (path.log_close[day] - path.log_close[np.maximum(day - 1, 0)]) / path.sigma_d
    u_sent, u_title, u_pub = _unit(_mix(h, _NEWS_PURPOSES))
    score = 0.8 * move + 0.6 * ndtri(u_sent)
    sent = np.where(score > 0.6, 2, np.where(score < -0.6, 0, 1))
    pick = (u_title * 15).astype(np.int64)
    titles, reasons = _news_text(p.symbol)
    return _frame(NEWS, len(day), {
        "symbol": p.symbol,
        "id": _hex_ids(h),
        "published_utc": _utc(published),
        "title": _pick(titles, sent * 5 + pick % 5),
        "publisher": _pick(_PUBLISHERS, (u_pub * len(_PUBLISHERS)).astype(np.int64)),
        "url": _hex_ids(h, "https://example.com/demo-news/"),
        "sentiment": _pick(_SENTIMENTS, sent),
        "sentiment_reasoning": _pick(reasons, sent * 3 + pick % 3),
    })
