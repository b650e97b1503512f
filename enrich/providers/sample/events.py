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
    _profile,
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


@functools.lru_cache(maxsize=256)
def _dividend_table(symbol: str) -> tuple[pl.DataFrame, np.ndarray, np.ndarray] | None:
    """Every dividend of the generated history, declared per then-current share, with its
    ex and declaration day indexes (None: pays none).

    Both dates rise with the quarter, so a request's rows are one slice of the frame."""
    p = _profile(symbol)
    if p.div_yield <= 0.0:
        return None
    u = _uniform(p.key, _DIV, np.arange(5)).tolist()
    first_month, dom = 1 + int(3 * u[0]), 3 + int(22 * u[1])  # quarter cycle, day of month
    years = np.repeat(np.arange(EPOCH.year, LAST_DAY.year + 1), 4)
    months = np.tile(first_month + 3 * np.arange(4), len(years) // 4)
    nominal = _month_start_idx(12 * (years - EPOCH.year) + months - 1) + (dom - 1)
    ex = _next_session_idx(nominal)
    q = np.arange(len(ex))
    decl = _prev_session_idx(ex - 21 - (8 * _uniform(p.key, _DIV, 10, q)).astype(np.int64))
    record = np.where(ex >= _day_idx(T1_SETTLEMENT), ex, _next_session_idx(ex + 1))
    pay = _next_session_idx(ex + 14 + (15 * _uniform(p.key, _DIV, 11, q)).astype(np.int64))
    # Raised once a year; on today's share basis, then as declared (per then-current share).
    growth = 0.03 + 0.05 * u[2]
    today_basis = p.div_yield / 4.0 * p.anchor * (1.0 + growth) ** (years - REF_DAY.year)
    declared = today_basis * p.basis(ex)
    declared = np.where(declared >= 0.1, np.round(declared, 2), np.round(declared, 4))
    keep = (ex >= _day_idx(p.div_start)) & (ex <= _day_idx(LAST_DAY)) & (declared > 0)
    ex, decl = ex[keep], decl[keep]
    ex.flags.writeable = decl.flags.writeable = False  # cached and shared
    frame = _frame(DIVIDENDS, len(ex), {
        "symbol": symbol, "ex_date": _dates(ex), "declaration_date": _dates(decl),
        "record_date": _dates(record[keep]), "pay_date": _dates(pay[keep]),
        "cash_amount": declared[keep], "currency": "USD", "frequency": 4,
        "distribution_type": "recurring",
    })
    return frame, ex, decl


@functools.lru_cache(maxsize=256)
def _earnings_table(symbol: str) -> tuple[pl.DataFrame, np.ndarray] | None:
    """Every fiscal quarter of the generated history, ordered by period end, with its filing
    day index (None: no earnings).

    Filings rise with the quarter (lags of 25-45 days, quarters ~90 days apart), so a
    request's rows are one slice of the frame."""
    p = _profile(symbol)
    if not p.has_earnings:
        return None
    month = np.arange(12 * (LAST_DAY.year - EPOCH.year + 1))  # 0 = 2000-01
    k = month % 12 + 1
    month = month[(k - p.fy_end_month) % 3 == 0]  # fiscal quarter ends
    k, year = month % 12 + 1, EPOCH.year + month // 12
    period_end = _month_start_idx(month + 1) - 1
    fq_arr = ((k - p.fy_end_month - 1) % 12) // 3 + 1
    fy_arr = np.where(k <= p.fy_end_month, year, year + 1)
    lag = 25 + (21 * _uniform(p.key, _EARN, 1, period_end)).astype(np.int64)  # 25-45 days
    filing = _next_session_idx(period_end + lag)
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
    keep = filing <= _day_idx(LAST_DAY)
    filing = filing[keep]
    filing.flags.writeable = False  # cached and shared
    frame = _frame(EARNINGS, len(filing), {
        "symbol": symbol, "fiscal_year": fy_arr[keep], "fiscal_quarter": fq_arr[keep],
        "period_end": _dates(period_end[keep]), "filing_date": _dates(filing),
        "revenue": np.round(revenue[keep], -3), "eps_basic": eps[keep],
        "eps_diluted": eps_diluted[keep],
    })
    return frame, filing


_PUBLISHERS = pl.Series(["Demo Newswire", "Sample Markets Daily", "Example Street Journal",
                         "Placeholder Finance", "Synthetic Business Review",
                         "Mock Capital Times"])
_SENTIMENTS = pl.Series(["negative", "neutral", "positive"])
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
def _news_text(symbol: str) -> tuple[pl.Series, pl.Series]:
    symbol = symbol.partition("~")[0]  # a former holder of a ticker is named by the ticker
    name = _DEMO_NAME.get(symbol, symbol)
    return (pl.Series([t.format(s=symbol, n=name) for t in _TITLES]),
            pl.Series([r.format(s=symbol) for r in _REASONS]))


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
        # Indexing gathers directly; Series.gather builds a polars query each time.
        "title": titles[sent * 5 + pick % 5],
        "publisher": _PUBLISHERS[(u_pub * len(_PUBLISHERS)).astype(np.int64)],
        "url": _hex_ids(h, "https://example.com/demo-news/"),
        "sentiment": _SENTIMENTS[sent],
        "sentiment_reasoning": reasons[sent * 3 + pick % 3],
    })
