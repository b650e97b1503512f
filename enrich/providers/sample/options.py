"""The sample provider's options: expirations, strikes, an IV surface with skew, smile and
term structure, chains priced on it, the Treasury curve the pricer discounts with, and
each contract's daily bars.
"""

from __future__ import annotations

import datetime as dt
import functools
import math

import numpy as np
import polars as pl
from scipy.special import ndtri

from enrich import calendars
from enrich.providers.sample.prices import (
    _bars_frame,
    _daily,
    _dates,
    _frame,
    _intraday,
    _utc,
    _vol_regime,
)
from enrich.providers.sample.profiles import (
    _EPOCH64,
    _US_PER_MIN,
    EPOCH,
    LAST_DAY,
    _day_idx,
    _idx_of,
    _prev_session_idx,
    _Profile,
    _session_start_us,
)
from enrich.providers.sample.randomness import (
    _CURVE,
    _OI,
    _OPT,
    _QUOTE,
    _mix,
    _mix_on,
    _normal,
    _stable_key,
    _unit,
)
from enrich.quant import rates
from enrich.quant.american import american_price
from enrich.quant.occ import format_occ_array
from enrich.schemas import BARS, OPTIONS_IV

# ----------------------------------------------------------------------------- options


def _third_friday(year: int, month: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)


@functools.lru_cache(maxsize=1024)
def _expirations(as_of: dt.date) -> tuple[dt.date, ...]:
    """The next 4 weekly Fridays and next 3 monthly third Fridays after ``as_of``; one on a
    holiday moves to the session before (Good Friday -> Thursday).

    Cached: every symbol's chain on a day asks, and ``_listing_day`` asks day after day."""
    first = as_of + dt.timedelta(days=(4 - as_of.weekday()) % 7 or 7)
    fridays = {first + dt.timedelta(weeks=i) for i in range(4)}
    y, m, monthly = as_of.year, as_of.month, 0
    while monthly < 3:
        f = _third_friday(y, m)
        if f > as_of:
            fridays.add(f)
            monthly += 1
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    snapped = _prev_session_idx(np.array(sorted(_day_idx(d) for d in fridays)))
    return tuple(sorted({EPOCH + dt.timedelta(days=int(i))
                         for i in snapped if i > _day_idx(as_of)}))


def _is_monthly(expiration: dt.date) -> bool:
    return 0 <= (_third_friday(expiration.year, expiration.month) - expiration).days <= 1


def _strike_grid(spot: float) -> np.ndarray:
    """Strikes about +-25 % around spot on a 1-2-2.5-5 increment near 2.5 % of spot."""
    raw = spot * 0.025
    mag = 10.0 ** math.floor(math.log10(raw))
    inc = min((m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0)),
              key=lambda x: abs(math.log(x / raw)))
    inc = max(inc, 0.001)
    side = min(12, max(7, math.ceil(0.25 * spot / inc)))
    strikes = np.round(round(spot / inc) * inc + inc * np.arange(-side, side + 1), 3)
    return strikes[strikes > 0]


def _model_iv(p: _Profile, regime, k, fwd, t) -> np.ndarray:
    """ATM level x mild term structure x (1 + smile m^2 - skew m), m = ln(K/F)/sqrt(t)."""
    atm = p.vol * regime * (1.0 + 0.06 * (np.sqrt(t / 0.25) - 1.0))
    m = np.log(k / fwd) / np.sqrt(t)
    return atm * np.clip(1.0 + p.smile * m * m - p.skew * m, 0.6, 2.5)


@functools.lru_cache(maxsize=64)
def _contract_types(n_pairs: int) -> pl.Series:
    """A chain's ``contract_type`` column: call, put, call, put, ... (``n_pairs`` pairs, the
    chain's order)."""
    return pl.Series(["call", "put"] * n_pairs)


@functools.lru_cache(maxsize=1024)
def _expiry_axis(as_of: dt.date) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What every chain of ``as_of`` shares, per expiration: its day index, whether it is a
    monthly, its time to expiry in years and the demo curve's rate to it (``_rates_to``)."""
    a = _day_idx(as_of)
    exps = _expirations(as_of)
    e_idx = np.array([_day_idx(e) for e in exps])
    monthly = np.array([_is_monthly(e) for e in exps])
    t = (e_idx - a) / 365.0
    r = _rates_to(np.full(t.size, a), t)
    for x in (e_idx, monthly, t, r):
        x.flags.writeable = False  # cached and shared
    return e_idx, monthly, t, r


@functools.lru_cache(maxsize=1024)
def _session_hours(calendar: str, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The session's open and close (UTC): every chain of the day asks."""
    return calendars.session_open_utc(calendar, day), calendars.session_close_utc(calendar, day)


_TICK = 0.01


def _quotes(price: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask around the model price on a cent grid: a spread of about 1 cent plus 2 %
    of the price, a little wider or narrower per contract and day (``u``, the contract's
    quote draw); no bid under 1 cent."""
    half = (0.005 + 0.01 * price) * (0.6 + 0.8 * u)
    bid = np.floor((price - half) / _TICK + 1e-9) * _TICK
    ask = np.ceil((price + half) / _TICK - 1e-9) * _TICK
    bid = np.where(bid >= _TICK, np.round(bid, 2), 0.0)
    return bid, np.round(np.maximum(ask, bid + _TICK), 2)


def _chain_frame(p: _Profile, as_of: dt.date, now: dt.datetime | None) -> pl.DataFrame:
    """The chain of ``as_of`` as the snapshot at ``now`` shows it (None: its listing only).

    Prices are American (``enrich.quant.american``) at the model IV, the demo curve's rate to each
    expiry and the profile's continuous dividend yield, off the session's close, or off the
    last 5-minute bar before ``now`` while the session trades."""
    a = _day_idx(as_of)
    open_at, close_at = _session_hours(p.calendar, as_of)
    snapshot_at = close_at
    day_close = float(_daily(p, np.array([a]))["close"][0])
    spot_today = day_close
    if now is not None and now < close_at:
        ts, _, cols = _intraday(p, np.array([a]), 5)
        done = ts + 5 * _US_PER_MIN <= int(now.timestamp() * 1_000_000)
        spot_today = float(cols["close"][done][-1]) if done.any() else float(cols["open"][0])
        snapshot_at = now
    spot = spot_today * p.basis(a)  # as shown that day
    strikes = _strike_grid(day_close * p.basis(a))  # listed around the previous close
    e_idx, e_monthly, e_t, e_r = _expiry_axis(as_of)
    # Rows by expiration, then strike, then call and put.
    per_exp = 2 * len(strikes)
    ee, t, r, monthly = (np.repeat(x, per_exp) for x in (e_idx, e_t, e_r, e_monthly))
    kk = np.tile(np.repeat(strikes, 2), len(e_idx))
    cc = np.tile(np.array([True, False]), len(e_idx) * len(strikes))
    k_milli = np.round(kk * 1000).astype(np.int64)
    q = p.div_yield
    fwd = spot * np.exp((r - q) * t)
    iv = _model_iv(p, float(_vol_regime(p.symbol)[a]), kk, fwd, t)
    dist = np.log(kk / fwd) / (iv * np.sqrt(t))
    oi = (3000.0 * math.sqrt(max(p.adv, 1.0) / 1e7) * np.exp(-0.5 * dist * dist)
          * np.where(monthly, 3.0, 1.0)
          * np.exp(0.5 * _normal(p.key, _OI, a, ee, k_milli, cc)))
    listing = {
        "symbol": p.symbol,
        "as_of": as_of,
        "contract": format_occ_array(p.occ_root, _EPOCH64 + ee, cc, kk),
        "expiration": _dates(ee),
        "strike": kk,
        "contract_type": _contract_types(len(e_idx) * len(strikes)),
        "shares_per_contract": 100.0,
        "exercise_style": "american",
    }
    if now is None:
        return _frame(OPTIONS_IV, len(kk), listing)
    price = american_price(spot, kk, t, r, q, iv, cc)
    h_quote = _mix(p.key, _QUOTE, a, ee, k_milli, cc)
    bid, ask = _quotes(price, _unit(h_quote))
    h = _mix_on(h_quote, 1)  # = _mix(p.key, _QUOTE, a, ee, k_milli, cc, 1)
    # The session's volume so far; the last trade some minutes before the snapshot, inside
    # the spread.
    elapsed = min(1.0, max(0.0, (snapshot_at - open_at).total_seconds()
                           / (close_at - open_at).total_seconds()))
    volume = np.round(oi * 0.08 * elapsed * np.exp(0.6 * ndtri(_unit(h))))
    traded = volume > 0
    trade = np.round(bid + (ask - bid) * _unit(_mix(h, 2)), 2)
    snap_us = int(snapshot_at.timestamp() * 1_000_000)
    ago_us = np.round(60e6 * (1.0 + 120.0 * _unit(_mix(h, 3)) ** 2)).astype(np.int64)
    return _frame(OPTIONS_IV, len(kk), {
        **listing,
        "underlying_price": spot,
        "open_interest": np.round(oi).astype(np.int64),
        "bid": bid, "ask": ask,
        "quote_at": _utc(np.full(len(kk), snap_us - 1_000_000)),
        "trade_price": pl.Series(np.where(traded, trade, np.nan), nan_to_null=True),
        "trade_at": _utc(snap_us - ago_us).zip_with(
            pl.Series(traded), pl.Series([None], dtype=pl.Datetime("us", "UTC"))
            .new_from_index(0, len(kk))),
        "volume": volume,
        "provider_iv": iv,
        "snapshot_at": _utc(np.full(len(kk), snap_us)),
        "source": "sample",
    })


def _curve(idx: np.ndarray) -> np.ndarray:
    """The demo Treasury curve per epoch day (rows) and tenor (``rates.TENORS`` columns), in
    percent: a short and a long level through hand-set anchors (near-zero 2009-2015 and
    2020-2021, 5 % and more in 2000, 2006-2007 and 2023-2024), a smooth tenor shape between
    them, and a few basis points of daily noise; two decimals, as published."""
    days = np.asarray(idx, dtype=np.int64)
    anchor = np.array([_day_idx(d) for d, _, _ in _RATE_ANCHORS])
    short = np.interp(days, anchor, [s for _, s, _ in _RATE_ANCHORS])
    long = np.interp(days, anchor, [x for _, _, x in _RATE_ANCHORS])
    tenor = np.array(list(rates.TENORS.values()))
    shape = (1.0 - np.exp(-tenor / 2.0)) / (1.0 - np.exp(-5.0))
    noise = 0.03 * _normal(_CURVE, days)[:, None] + 0.01 * _normal(_CURVE, days[:, None],
                                                                      np.arange(tenor.size))
    curve = short[:, None] + (long - short)[:, None] * shape[None, :] + noise
    return np.round(np.maximum(curve, 0.01), 2)


# (date, short level %, 10-year level %)
_RATE_ANCHORS = (
    (dt.date(2000, 1, 3), 5.3, 6.6), (dt.date(2000, 12, 29), 5.9, 5.1),
    (dt.date(2001, 12, 31), 1.7, 5.1), (dt.date(2003, 6, 30), 0.9, 3.5),
    (dt.date(2004, 6, 30), 1.3, 4.6), (dt.date(2006, 7, 3), 5.0, 5.1),
    (dt.date(2007, 8, 1), 4.9, 4.8), (dt.date(2008, 12, 31), 0.1, 2.2),
    (dt.date(2013, 5, 1), 0.05, 1.7), (dt.date(2015, 12, 31), 0.2, 2.3),
    (dt.date(2018, 12, 31), 2.4, 2.7), (dt.date(2019, 12, 31), 1.55, 1.9),
    (dt.date(2020, 4, 1), 0.1, 0.6), (dt.date(2021, 12, 31), 0.05, 1.5),
    (dt.date(2022, 12, 30), 4.4, 3.9), (dt.date(2023, 10, 19), 5.5, 5.0),
    (dt.date(2024, 6, 28), 5.5, 4.4), (dt.date(2024, 12, 31), 4.4, 4.6),
    (dt.date(2025, 12, 31), 3.7, 4.2), (LAST_DAY, 3.5, 4.0),
)


def _rates_to(day_idx: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The continuous rate from the demo curve of each day to ``t`` years, as
    ``enrich.quant.rates`` reads a stored curve (every tenor is present)."""
    tenor = np.array(list(rates.TENORS.values()))
    curve = _curve(day_idx)
    r = rates.continuous(curve, tenor[None, :])
    rt = r * tenor[None, :]
    inside = np.clip(t, tenor[0], tenor[-1])
    j = np.clip(np.searchsorted(tenor, inside, "right") - 1, 0, tenor.size - 2)
    rows = np.arange(t.size)
    w = (inside - tenor[j]) / (tenor[j + 1] - tenor[j])
    out = (rt[rows, j] * (1.0 - w) + rt[rows, j + 1] * w) / inside
    out = np.where(t < tenor[0], r[:, 0], out)
    return np.where(t > tenor[-1], r[:, -1], out)


def _listing_day(expiration: dt.date) -> dt.date | None:
    """The first day on which ``expiration`` is among the listed expirations (None: never)."""
    day = expiration - dt.timedelta(days=100 if _is_monthly(expiration) else 35)
    while day < expiration:
        if expiration in _expirations(day):
            return day
        day += dt.timedelta(days=1)
    return None


def _option_bars_frame(p: _Profile, ticker: str, expiration: dt.date, contract_type: str,
                       strike: float, start: dt.date, end: dt.date) -> pl.DataFrame:
    listed = _listing_day(expiration)
    if listed is None:  # not a contract of this model: nothing ever traded
        return BARS.empty()
    sess = calendars.session_array(p.calendar, max(start, listed, EPOCH), end)
    if len(sess) == 0:
        return BARS.empty()
    idx = _idx_of(sess)
    day = _daily(p, idx)
    basis = p.basis(idx)  # options trade on the share basis of their day
    days_left = _day_idx(expiration) - idx
    live = days_left > 0
    t = np.where(live, days_left, 1) / 365.0
    q, is_call = p.div_yield, contract_type == "call"
    spot = day["close"] * basis
    r = _rates_to(idx, t)
    iv = _model_iv(p, _vol_regime(p.symbol)[idx], strike, spot * np.exp((r - q) * t), t)

    def price(s: np.ndarray) -> np.ndarray:
        model = american_price(s, strike, t, r, q, iv, is_call)
        intrinsic = np.maximum(s - strike, 0.0) if is_call else np.maximum(strike - s, 0.0)
        return np.where(live, model, intrinsic)

    c = price(spot)
    moves = [price(day[k] * basis) for k in ("open", "high", "low")]
    hi, lo = np.maximum.reduce([c, *moves]), np.minimum.reduce([c, *moves])
    h = _mix(p.key, _OPT, _stable_key(ticker), idx)
    vwap = lo + (hi - lo) * (0.1 + 0.8 * _unit(_mix(h, 1)))
    dist = np.log(strike / spot) / (iv * np.sqrt(t))
    vol = np.maximum(1.0, np.round(200.0 * math.sqrt(max(p.adv, 1.0) / 1e7)
                                   * np.exp(-0.5 * dist * dist + 0.6 * ndtri(_unit(_mix(h, 2))))))
    traded = c >= 0.01
    cols = {"open": moves[0], "high": hi, "low": lo, "close": c, "vwap": vwap, "volume": vol,
            "trades": np.maximum(1.0, np.round(vol / 4.0)).astype(np.int64)}
    cols = {k: v[traded] for k, v in cols.items()}
    return _bars_frame(ticker, "1d", _session_start_us(p.calendar, idx[traded]), idx[traded],
                       cols, end)
