"""The sample provider's prices: the per-symbol daily price path (a geometric Brownian
motion anchored at ``REF_DAY``), daily bars from it, and intraday bars that reproduce the
daily bar exactly.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import ndtri

from enrich.providers.sample.profiles import (
    _TRADE_DOLLARS,
    _UNIX_DAYS,
    _US_PER_DAY,
    _US_PER_MIN,
    _UTC_DAY_CALENDARS,
    N_DAYS,
    REF_DAY,
    _day_idx,
    _et_midnight_us,
    _fx_weight,
    _Profile,
    _profile,
    _session_start_us,
    _xnys_slots,
)
from enrich.providers.sample.randomness import (
    _DAY,
    _DAY_PURPOSES,
    _I_STEP,
    _I_VOL,
    _I_VWAP,
    _I_WICK,
    _RET,
    _mix,
    _normal,
    _uniform,
    _unit,
)
from enrich.schemas import BARS, ColumnType, Dataset

# ----------------------------------------------------------------------------- price path


@dataclass(frozen=True)
class _Path:
    log_close: np.ndarray  # per epoch day, today's share basis
    sigma_d: float  # volatility per trading day
    drift_d: float  # drift per trading day


def _trading_weekdays(p: _Profile, idx: np.ndarray) -> np.ndarray:
    return np.ones(len(idx), bool) if p.calendar == "24/7" else (idx + 5) % 7 < 5


_ALL_DAYS = np.arange(N_DAYS)
_ALL_WEEKDAYS = (_ALL_DAYS + 5) % 7 < 5  # _trading_weekdays of every day, off 24/7


@functools.lru_cache(maxsize=256)
def _path(symbol: str) -> _Path:
    p = _profile(symbol)
    per_year = {"24/7": 365.0, "FX": 260.0}.get(p.calendar, 252.0)
    sigma_d, drift_d = p.vol / math.sqrt(per_year), p.drift / per_year
    if p.calendar == "FX":  # a day moves as much as it trades (Saturday: a trace)
        w = np.maximum(_fx_weight(_ALL_DAYS), 0.0004)
        s = sigma_d * np.sqrt(w)
        mean_r = drift_d * w - 0.5 * s * s
    else:
        trading = _ALL_WEEKDAYS if p.calendar != "24/7" else _trading_weekdays(p, _ALL_DAYS)
        calm = 0.25 * sigma_d  # weekends move a little: Monday gaps
        s = np.where(trading, sigma_d, calm)
        # Mean log return mu - s^2/2, worked out once per kind of day (the same float
        # operations as per day, so the same values).
        mean_r = np.where(trading, drift_d - 0.5 * sigma_d * sigma_d, 0.0 - 0.5 * calm * calm)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([p.key, _RET])))
    r = mean_r + s * rng.standard_normal(N_DAYS)
    # log(anchor) + cum - cum[REF_DAY], in place (a path is built on a symbol's first touch).
    log_close = np.cumsum(r, out=r)
    at_ref = log_close[_day_idx(REF_DAY)]
    log_close += math.log(p.anchor)
    log_close -= at_ref
    log_close.flags.writeable = False
    return _Path(log_close, sigma_d, drift_d)


def _round_rows(x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return np.round(x * scale) / scale


def _daily(p: _Profile, idx: np.ndarray) -> dict[str, np.ndarray]:
    """The daily bar of each epoch day in ``idx`` on today's share basis (no split after it).

    ``scale`` is each row's rounding grid (100 for cents)."""
    path = _path(p.symbol)
    lc = path.log_close[idx]
    lp = path.log_close[np.maximum(idx - 1, 0)]
    ret = lc - lp
    sd = path.sigma_d
    if p.calendar == "FX":  # a Sunday trades a few hours: its range is as short
        sd = sd * np.sqrt(_fx_weight(idx))
    u_gap, u_high, u_low, u_vwap, u_vol = _unit(_mix(_mix(p.key, _DAY, idx), _DAY_PURPOSES))
    if p.calendar in _UTC_DAY_CALENDARS:
        log_o = lp  # continuous trading: a day opens at the previous close
    else:
        log_o = lp + 0.3 * ret + 0.15 * sd * ndtri(u_gap)
    o, c = np.exp(log_o), np.exp(lc)
    hi = np.maximum(o, c) * np.exp(-0.36 * sd * np.log(u_high))
    lo = np.maximum(np.minimum(o, c) * np.exp(0.36 * sd * np.log(u_low)), 1e-6)
    # Cents, more decimals for pennies; one grid per row keeps low <= open, close <= high.
    scale = np.where(lo >= 1.0, 100.0, np.where(lo >= 0.01, 1e4, 1e6))
    if p.calendar == "FX":
        scale = np.full(len(idx), 1e5)  # currency pairs quote five decimals
    o, hi, lo, c = (_round_rows(x, scale) for x in (o, hi, lo, c))
    vwap = np.clip(_round_rows(lo + (hi - lo) * (0.1 + 0.8 * u_vwap), scale), lo, hi)
    mu = np.where(_trading_weekdays(p, idx), path.drift_d, 0.0)
    surprise = np.clip(np.abs(ret - mu) / sd - 0.8, -1.0, 4.0)
    vol = p.adv * np.exp(0.3 * ndtri(u_vol) - 0.045 + 0.25 * surprise)
    if p.calendar == "XNYS":
        vol *= np.where(_xnys_slots()[idx] < 78, 0.55, 1.0)  # half-days trade less
    elif p.calendar == "FX":
        vol *= np.where(_fx_weight(idx) < 0.5, 0.03, 1.0)  # Sunday evening: few quotes
    vol = np.round(vol)
    size = _TRADE_DOLLARS.get(p.asset_class, 10_000.0)
    trades = np.where(vol > 0, np.maximum(1.0, np.round(vol * c / size)), 0.0)
    if p.calendar == "FX":
        trades = vol  # forex volume is a count of quotes: Massive's v equals n
    return {"open": o, "high": hi, "low": lo, "close": c, "vwap": vwap, "volume": vol,
            "trades": trades.astype(np.int64), "scale": scale}


@functools.lru_cache(maxsize=64)
def _vol_regime(symbol: str) -> np.ndarray:
    """Slowly varying volatility level (about 1 on average) from the path's recent moves."""
    from scipy.signal import lfilter

    path = _path(symbol)
    lc = path.log_close
    # np.diff(lc, prepend=lc[0]), then (ret / sigma_d)^2 capped at 25, in place (a symbol's
    # first chain builds it).
    z2 = np.empty_like(lc)
    z2[0] = 0.0
    np.subtract(lc[1:], lc[:-1], out=z2[1:])
    z2 /= path.sigma_d
    np.square(z2, out=z2)
    np.minimum(z2, 25.0, out=z2)
    alpha = 1.0 - 0.5 ** (1.0 / 20.0)  # 20-day half-life
    ema = lfilter([alpha], [1.0, -(1.0 - alpha)], z2, zi=[1.0 - alpha])[0]
    out = np.sqrt(ema, out=ema)
    out *= 0.25
    out += 0.75
    out.flags.writeable = False
    return out


# ----------------------------------------------------------------------------- bar frames

_PRICE_COLS = ("open", "high", "low", "close", "vwap")


def _rebase(cols: dict[str, np.ndarray], g: float) -> dict[str, np.ndarray]:
    """Today's share basis -> the basis of the request's end (``g`` from ``_Profile.basis``)."""
    if g == 1.0:
        return cols
    out = {k: v * g if k in _PRICE_COLS else v for k, v in cols.items()}
    out["volume"] = cols["volume"] / g
    return out


def _frame(dataset: Dataset, n: int, cols: dict) -> pl.DataFrame:
    """``n`` rows in exactly the dataset's schema, so no ``conform`` query runs per frame.

    Arrays and Series are cast (strictly) where their dtype differs, any other value is
    repeated ``n`` times, and a column not given is null, as ``conform`` would make it."""
    unknown = cols.keys() - dataset.schema.keys()
    if unknown:
        raise KeyError(f"{dataset.name}: unknown columns {sorted(unknown)}")
    series = []
    for name, dtype in dataset.schema.items():
        value = cols.get(name)
        if isinstance(value, pl.Series):
            s = value.alias(name)
        elif isinstance(value, np.ndarray):
            s = pl.Series(name, value)
        else:
            s = _constant(name, dtype, value).new_from_index(0, n)
        series.append(s if s.dtype == dtype else s.cast(dtype))
    return pl.DataFrame(series)


def _constant(name: str, dtype: ColumnType, value: object) -> pl.Series:
    """A one-row column of ``value``: the nulls and fixed values of frames are built once (a
    Series from a Python value costs several times repeating a row). One row each, so the
    cache stays small whatever the frames' lengths."""
    if isinstance(value, float) and value == 0.0:  # 0.0 and -0.0 would share a cache entry
        return pl.Series(name, [value], dtype=dtype)
    return _cached_constant(name, dtype, value)


@functools.lru_cache(maxsize=1024, typed=True)
def _cached_constant(name: str, dtype: ColumnType, value: object) -> pl.Series:
    return pl.Series(name, [value], dtype=dtype)


def _utc(us: np.ndarray) -> pl.Series:
    """µs since the Unix epoch -> a UTC datetime column."""
    return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def _dates(idx: np.ndarray) -> pl.Series:
    """Epoch-day indexes -> a Date column (from Unix day numbers, the Date's own storage)."""
    return pl.Series((np.asarray(idx) + _UNIX_DAYS).astype(np.int32)).cast(pl.Date)


def _bars_frame(symbol: str, timeframe: str, ts_us: np.ndarray, session_idx: np.ndarray,
                cols: dict[str, np.ndarray], asof: dt.date) -> pl.DataFrame:
    return _frame(BARS, len(ts_us), {"symbol": symbol, "timeframe": timeframe,
                                     "ts": _utc(ts_us), "session": _dates(session_idx),
                                     **cols, "adjusted_asof": asof})


def _split_integer(total: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Split each row's integer total along the row's weights into integers summing to it."""
    w = weights / weights.sum(axis=1, keepdims=True)
    parts = np.floor(total[:, None] * w)
    parts[np.arange(len(total)), np.argmax(w, axis=1)] += total - parts.sum(axis=1)
    return parts


def _intraday(p: _Profile, idx: np.ndarray, minutes: int):
    """5-minute bars per session, a Brownian bridge from the day's open to its close kept
    inside its [low, high] and touching both, optionally summed into hours.

    Returns (ts µs, session index, columns on today's share basis) for the valid slots."""
    day = _daily(p, idx)
    offset_us: int | np.ndarray
    if p.calendar == "24/7":
        n_slots, width, offset_us = np.full(len(idx), 288), 288, 0
    elif p.calendar == "FX":  # Sunday from 17:00 New York, Friday until then, in 5 minutes
        n_slots, width = np.full(len(idx), 288), 288
        ny17 = (_et_midnight_us()[idx] + 17 * 60 * _US_PER_MIN
                - (idx + _UNIX_DAYS) * _US_PER_DAY) // (5 * _US_PER_MIN)  # slot of 17:00 NY
        weekday = (idx + 5) % 7
        n_slots = np.where(weekday == 4, ny17, np.where(weekday == 6, 288 - ny17, n_slots))
        offset_us = np.where(weekday == 6, ny17 * 5 * _US_PER_MIN, 0)[:, None]
    else:
        n_slots, width, offset_us = _xnys_slots()[idx], 84, 570 * _US_PER_MIN  # from 09:30
    rows = np.arange(len(idx))
    slot = np.arange(width)[None, :]
    valid = slot < n_slots[:, None]
    d_idx = idx[:, None]
    o, hi, lo, c, scale = day["open"], day["high"], day["low"], day["close"], day["scale"]
    lo_log, hi_log = np.log(lo)[:, None], np.log(hi)[:, None]
    walk = np.cumsum(np.where(valid, _normal(p.key, _I_STEP, d_idx, slot), 0.0), axis=1)
    n = n_slots[:, None].astype(np.float64)
    frac = (slot + 1) / n  # share of the session elapsed at each slot's end
    bridge = walk - frac * walk[rows, n_slots - 1][:, None]
    step = _path(p.symbol).sigma_d / np.sqrt(n)
    log_o = np.log(o)[:, None]
    ends = np.clip(log_o + frac * (np.log(c)[:, None] - log_o) + step * bridge, lo_log, hi_log)
    starts = np.concatenate((log_o, ends[:, :-1]), axis=1)
    wick = np.abs(_normal(p.key, _I_WICK, d_idx, slot)) * 0.3 * step
    b_hi = np.minimum(np.maximum(starts, ends) + wick, hi_log)
    b_lo = np.maximum(np.minimum(starts, ends) - wick, lo_log)
    j_hi = np.argmax(np.where(valid, b_hi, -np.inf), axis=1)
    j_lo = np.argmin(np.where(valid, b_lo, np.inf), axis=1)
    grid = scale[:, None]
    bc, bh, bl = (_round_rows(np.exp(x), grid) for x in (ends, b_hi, b_lo))
    # The day's own figures, exactly: last close and the extremes (the first open follows).
    bc[rows, n_slots - 1] = c
    bh[rows, j_hi] = hi
    bl[rows, j_lo] = lo
    bo = np.concatenate((o[:, None], bc[:, :-1]), axis=1)
    bh = np.maximum(bh, np.maximum(bo, bc))
    bl = np.minimum(bl, np.minimum(bo, bc))
    shape: np.ndarray
    if p.calendar in _UTC_DAY_CALENDARS:
        shape = np.ones((1, width))
    else:
        shape = 1.0 + 4.0 * ((slot + 0.5) / 78.0 - 0.5) ** 2  # busy open and close
    weight = np.where(valid, shape * np.exp(0.25 * _normal(p.key, _I_VOL, d_idx, slot)), 0.0)
    vol = _split_integer(day["volume"], weight)
    trades = _split_integer(day["trades"].astype(np.float64), weight)
    pos = 0.1 + 0.8 * _uniform(p.key, _I_VWAP, d_idx, slot)
    vw = np.clip(_round_rows(bl + (bh - bl) * pos, grid), bl, bh)
    step_us = 5 * _US_PER_MIN
    if minutes == 60:
        groups = width // 12
        shp = (len(idx), groups, 12)
        gvalid = valid.reshape(shp)
        last = np.minimum(n_slots[:, None], 12 * np.arange(1, groups + 1)[None, :]) - 1
        bo = bo.reshape(shp)[:, :, 0]
        bc = np.take_along_axis(bc, np.maximum(last, 0), axis=1)
        valid = gvalid[:, :, 0]
        bh = np.where(valid, np.where(gvalid, bh.reshape(shp), 0.0).max(axis=2), 0.0)
        bl = np.where(valid, np.where(gvalid, bl.reshape(shp), np.inf).min(axis=2), 0.0)
        money = (vw * vol).reshape(shp).sum(axis=2)
        vol = vol.reshape(shp).sum(axis=2)
        trades = trades.reshape(shp).sum(axis=2)
        vw = np.clip(np.where(vol > 0, money / np.where(vol > 0, vol, 1.0), bl), bl, bh)
        width, step_us = groups, 60 * _US_PER_MIN
    base = _session_start_us(p.calendar, idx)[:, None] + offset_us
    ts = (base + np.arange(width)[None, :] * step_us)[valid]
    session = np.broadcast_to(idx[:, None], valid.shape)[valid]
    cols = {"open": bo[valid], "high": bh[valid], "low": bl[valid], "close": bc[valid],
            "vwap": vw[valid], "volume": vol[valid], "trades": trades[valid].astype(np.int64)}
    return ts, session, cols
