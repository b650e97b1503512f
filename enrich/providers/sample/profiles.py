"""The sample provider's time axis (calendar days from ``EPOCH`` to ``LAST_DAY``), each
symbol's profile (price level, drift, volatility, splits, dividends, listing, ticker changes)
and the session indexes of its calendars.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from enrich import calendars
from enrich.identity import TickerChange, TickerReference
from enrich.providers.sample.randomness import _PROFILE, _stable_key, _uniform
from enrich.symbols import DEMO_UNIVERSE, asset_class_of, calendar_for

EPOCH = dt.date(2000, 1, 1)
LAST_DAY = dt.date(2031, 12, 31)  # end of the generated history
REF_DAY = dt.date(2024, 1, 2)  # prices are anchored to realistic levels on this session
N_DAYS = (LAST_DAY - EPOCH).days + 1
TIMEFRAMES = {"1d": 0, "1h": 60, "5m": 5}  # minutes per bar (0: daily)
T1_SETTLEMENT = dt.date(2024, 5, 28)  # record date = ex date from here on

_EPOCH64 = np.datetime64(EPOCH, "D")
_UNIX_DAYS = (EPOCH - dt.date(1970, 1, 1)).days  # epoch-day index + this = Unix day number
_US_PER_DAY = 86_400_000_000
_US_PER_MIN = 60_000_000


# ----------------------------------------------------------------------------- profiles

# symbol: anchor close on REF_DAY (today's split basis), annual vol, annual drift,
# average daily volume (shares, today's basis), dividend yield, quarterly revenue (USD bn),
# revenue growth per year, net margin, shares outstanding (bn), fiscal-year-end month.
_KNOWN: dict[str, tuple] = {
    "AAPL": (185.6, 0.27, 0.18, 55e6, 0.005, 95.0, 0.06, 0.25, 15.5, 9),
    "MSFT": (370.9, 0.25, 0.17, 25e6, 0.008, 60.0, 0.12, 0.35, 7.43, 6),
    "GOOGL": (138.2, 0.30, 0.15, 30e6, 0.005, 80.0, 0.11, 0.25, 12.4, 12),
    "AMZN": (149.9, 0.33, 0.20, 45e6, 0.0, 150.0, 0.11, 0.06, 10.4, 12),
    "NVDA": (48.2, 0.50, 0.30, 400e6, 0.0008, 25.0, 0.30, 0.45, 24.5, 1),
    "META": (346.3, 0.38, 0.15, 15e6, 0.006, 37.0, 0.15, 0.32, 2.56, 12),
    "TSLA": (248.4, 0.55, 0.25, 110e6, 0.0, 24.0, 0.20, 0.10, 3.18, 12),
    "JPM": (170.3, 0.24, 0.10, 9e6, 0.025, 40.0, 0.05, 0.30, 2.88, 12),
    "V": (259.4, 0.22, 0.13, 6e6, 0.008, 8.9, 0.10, 0.52, 2.05, 9),
    "JNJ": (156.9, 0.17, 0.06, 7e6, 0.030, 21.5, 0.04, 0.18, 2.41, 12),
    "WMT": (52.7, 0.18, 0.08, 20e6, 0.014, 165.0, 0.04, 0.03, 8.06, 1),
    "PG": (147.5, 0.17, 0.07, 7e6, 0.025, 21.4, 0.03, 0.17, 2.36, 6),
    "XOM": (100.9, 0.27, 0.05, 18e6, 0.035, 85.0, 0.03, 0.10, 3.96, 12),
    "KO": (59.4, 0.16, 0.06, 13e6, 0.031, 11.5, 0.04, 0.22, 4.32, 12),
    "DIS": (91.5, 0.28, 0.05, 10e6, 0.008, 22.0, 0.05, 0.08, 1.83, 9),
    "NFLX": (487.2, 0.40, 0.22, 5e6, 0.0, 8.8, 0.14, 0.16, 0.43, 12),
    "INTC": (50.0, 0.35, 0.03, 35e6, 0.015, 14.0, 0.00, 0.10, 4.22, 12),
    "BRK.B": (357.0, 0.16, 0.10, 4e6, 0.0, 90.0, 0.06, 0.10, 2.17, 12),
    "SPY": (472.7, 0.17, 0.09, 80e6, 0.013),
    "QQQ": (402.6, 0.22, 0.13, 45e6, 0.006),
    "IWM": (200.1, 0.23, 0.06, 30e6, 0.012),
    "DIA": (375.5, 0.16, 0.08, 3e6, 0.017),
    "GLD": (190.3, 0.14, 0.06, 8e6, 0.0),
    "TLT": (98.4, 0.16, 0.01, 40e6, 0.036),
    "XLE": (84.6, 0.28, 0.05, 18e6, 0.033),
    "X:BTCUSD": (44180.0, 0.65, 0.45, 30e3, 0.0),
    "X:ETHUSD": (2352.0, 0.75, 0.40, 400e3, 0.0),
    "C:EURUSD": (1.0940, 0.075, 0.0, 2e5, 0.0),  # volume: quotes a day
    "I:SPX": (4742.83, 0.17, 0.09, 0.0, 0.0),  # an index carries no volume
    # The security that traded as META until 2022-04-29 (a recycled ticker: see _AS_TRADED).
    "META~2022": (12.4, 0.45, 0.0, 2e5, 0.0),
}

# Real splits: (execution date, split_from, split_to).
_KNOWN_SPLITS: dict[str, tuple[tuple[dt.date, float, float], ...]] = {
    "AAPL": ((dt.date(2020, 8, 31), 1.0, 4.0),),
    "TSLA": ((dt.date(2020, 8, 31), 1.0, 5.0), (dt.date(2022, 8, 25), 1.0, 3.0)),
    "NVDA": ((dt.date(2021, 7, 20), 1.0, 4.0), (dt.date(2024, 6, 10), 1.0, 10.0)),
    "GOOGL": ((dt.date(2022, 7, 18), 1.0, 20.0),),
    "AMZN": ((dt.date(2022, 6, 6), 1.0, 20.0),),
    "WMT": ((dt.date(2024, 2, 26), 1.0, 3.0),),
}

# Dividend payers that started paying recently.
_DIVIDEND_START = {"GOOGL": dt.date(2024, 6, 1), "META": dt.date(2024, 2, 1)}

# Tickers that named different securities over time: (first day, last day, the security whose
# data the ticker shows then). Facebook traded as FB until 2022-06-08 and as META since
# 2022-06-09; before that, META was another, ~$12 security that stopped trading on 2022-04-29
# (reference massive-refresh-and-correctness.md §8). Other tickers are their own security.
_AS_TRADED: dict[str, tuple[tuple[dt.date, dt.date, str], ...]] = {
    "FB": ((dt.date(2012, 5, 18), dt.date(2022, 6, 8), "META"),),
    "META": ((EPOCH, dt.date(2022, 4, 29), "META~2022"), (dt.date(2022, 6, 9), LAST_DAY, "META")),
}


def _as_traded(ticker: str, start: dt.date, end: dt.date) -> list[tuple[str, dt.date, dt.date]]:
    """(security, first, last) pieces of [start, end] for ``ticker`` as traded."""
    spans = _AS_TRADED.get(ticker)
    if spans is None:
        return [(ticker, start, end)]
    return [(sec, max(start, a), min(end, z)) for a, z, sec in spans
            if max(start, a) <= min(end, z)]


# The sample provider's ticker reference ("its own universe"): the demo universe, a few more
# listings that show what a reference is for, and 10,000 synthetic stocks S0000-S9999 (scale
# tests and benchmarks). Anything else is an unknown ticker. Listing dates are the real ones
# where the model knows them (it generates prices from 2000 on for every ticker).
_SYNTHETIC = re.compile(r"^S[0-9]{4}$")
_TYPES = {"stocks": "CS", "etfs": "ETF", "indices": "INDEX"}
_MARKETS = {"stocks": "stocks", "etfs": "stocks", "crypto": "crypto", "fx": "fx",
            "indices": "indices"}
_LISTED = {"META": dt.date(2012, 5, 18), "TSLA": dt.date(2010, 6, 29),
           "V": dt.date(2008, 3, 19), "GOOGL": dt.date(2004, 8, 19),
           "X:ETHUSD": dt.date(2016, 5, 1), "QQQ": dt.date(1999, 3, 10),
           "IWM": dt.date(2000, 5, 22), "GLD": dt.date(2004, 11, 18),
           "TLT": dt.date(2002, 7, 22)}
_FIGI = {"AAPL": ("BBG000B9XRY4", "BBG001S5N8V8"), "META": ("BBG000MM2P62", "BBG001SNF2J7")}
# (name, class, type, listed, last traded or None, ticker changes)
_MORE_LISTINGS: dict[str, tuple] = {
    "TWTR": ("Twitter, Inc.", "stocks", "CS", dt.date(2013, 11, 7), dt.date(2022, 10, 27), ()),
    "KIMpL": ("Kimco Realty Corp. 5.125% Class L Cumulative Redeemable Preferred", "stocks",
              "PFD", dt.date(2017, 8, 16), None, ()),
    # A plain stock outside the demo universe (a universe that is not the demo's, in tests).
    "IBM": ("International Business Machines Corporation", "stocks", "CS", None, None, ()),
}
_CHANGES = {"META": (TickerChange(dt.date(2012, 5, 18), "FB"),
                     TickerChange(dt.date(2022, 6, 9), "META"))}


def _reference(ticker: str) -> TickerReference | None:
    """What the sample reference says ``ticker`` is (None: it does not know it)."""
    if ticker in _MORE_LISTINGS:
        name, cls, kind, listed, last, changes = _MORE_LISTINGS[ticker]
    elif ticker in _DEMO_CLASS:
        cls = _DEMO_CLASS[ticker]
        name, kind, listed, last = _DEMO_NAME[ticker], _TYPES.get(cls), _LISTED.get(ticker), None
        changes = _CHANGES.get(ticker, ())
    elif _SYNTHETIC.match(ticker):
        name, cls, kind, listed, last, changes = f"Synthetic {ticker[1:]}", "stocks", "CS", \
            None, None, ()
    else:
        return None
    figi, share_figi = _FIGI.get(ticker, (None, None))
    return TickerReference(ticker, name, _MARKETS[cls], kind, last is None, listed, last,
                           figi, share_figi, changes, "sample")


def _relabel(frames: list[pl.DataFrame], ticker: str, empty: pl.DataFrame) -> pl.DataFrame:
    frames = [f for f in frames if f.height]
    if not frames:
        return empty
    out = frames[0] if len(frames) == 1 else pl.concat(frames)
    return out.with_columns(symbol=pl.lit(ticker))


_DEMO_CLASS = {s.symbol: s.asset_class for s in DEMO_UNIVERSE}
_DEMO_NAME = {s.symbol: s.name for s in DEMO_UNIVERSE}
_OCC_ROOTS = {s.symbol.replace(".", ""): s.symbol for s in DEMO_UNIVERSE if "." in s.symbol}
_TRADE_DOLLARS = {"stocks": 15_000.0, "etfs": 30_000.0, "crypto": 2_500.0}  # per trade


@dataclass(frozen=True)
class _Profile:
    symbol: str
    key: int
    asset_class: str
    calendar: str
    anchor: float  # close on REF_DAY, today's share basis
    vol: float
    drift: float
    adv: float  # average daily volume, today's share basis
    div_yield: float
    div_start: dt.date
    revenue: float  # quarterly, USD, around REF_DAY
    rev_growth: float
    margin: float
    shares: float  # outstanding, today's share basis
    fy_end_month: int
    seasonality: float
    splits: tuple[tuple[dt.date, float, float], ...]
    split_days: tuple[int, ...]  # epoch-day index of each execution date
    skew: float
    smile: float

    @property
    def occ_root(self) -> str:
        return self.symbol.replace(".", "")  # class shares fold in: BRK.B -> BRKB

    @property
    def has_options(self) -> bool:
        root = self.occ_root
        return (self.asset_class in ("stocks", "etfs") and len(root) <= 6 and not root.isdigit()
                and root.isalnum() and root == root.upper() and "~" not in self.symbol)

    @property
    def has_earnings(self) -> bool:
        return self.asset_class == "stocks"

    def basis(self, day_idx):
        """Product of the split ratios executed after ``day_idx`` (scalar or array): a price
        on that day's share basis is the price on today's basis times this."""
        if not self.splits:  # most symbols: asked several times per request
            return 1.0 if np.ndim(day_idx) == 0 else np.ones(np.shape(day_idx))
        g = np.ones(np.shape(day_idx))
        for (_, s_from, s_to), e in zip(self.splits, self.split_days, strict=True):
            g = np.where(np.asarray(day_idx) < e, g * (s_to / s_from), g)
        return float(g) if np.ndim(day_idx) == 0 else g


def _day_idx(day: dt.date) -> int:
    return (day - EPOCH).days


def _idx_of(days: np.ndarray) -> np.ndarray:
    return (days - _EPOCH64).astype(np.int64)


@functools.lru_cache(maxsize=2)
def _session_idx(cal: str) -> np.ndarray:
    return _idx_of(calendars.session_array(cal, EPOCH, LAST_DAY))


def _next_session_idx(day_idx: np.ndarray) -> np.ndarray:
    """First XNYS session on or after each day (plain weekdays past the calendar's end)."""
    sess = _session_idx("XNYS")
    day_idx = np.asarray(day_idx, dtype=np.int64)
    pos = np.searchsorted(sess, day_idx, "left")
    inside = pos < len(sess)
    wd = (day_idx + 5) % 7  # weekday, Monday = 0 (2000-01-01 was a Saturday)
    beyond = day_idx + np.where(wd >= 5, 7 - wd, 0)
    return np.where(inside, sess[np.minimum(pos, len(sess) - 1)], beyond)


def _prev_session_idx(day_idx: np.ndarray) -> np.ndarray:
    """Last XNYS session on or before each day (plain weekdays past the calendar's end)."""
    sess = _session_idx("XNYS")
    day_idx = np.asarray(day_idx, dtype=np.int64)
    pos = np.searchsorted(sess, day_idx, "right") - 1
    inside = day_idx <= sess[-1]
    wd = (day_idx + 5) % 7
    beyond = day_idx - np.where(wd >= 5, wd - 4, 0)
    return np.where(inside, sess[np.maximum(pos, 0)], beyond)


@functools.lru_cache(maxsize=4096)
def _profile(symbol: str) -> _Profile:
    key = _stable_key(symbol)
    cls = _DEMO_CLASS.get(symbol) or asset_class_of(symbol.partition("~")[0])
    u = _uniform(key, _PROFILE, np.arange(20)).tolist()

    def loguni(x: float, lo: float, hi: float) -> float:
        return math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * x)

    known = _KNOWN.get(symbol)
    if known is not None:
        anchor, vol, drift, adv, dy = known[:5]
        revenue, growth, margin, shares, fy_end = (
            (known[5] * 1e9, known[6], known[7], known[8] * 1e9, known[9])
            if len(known) > 5 else (0.0, 0.0, 0.0, 0.0, 12))
    else:
        if cls == "crypto":
            anchor, vol, drift = loguni(u[1], 0.1, 3000.0), 0.6 + 0.4 * u[2], 0.1 + 0.3 * u[3]
            adv = loguni(u[4], 1e4, 1e8) / anchor
        elif cls == "fx":
            anchor, vol, drift, adv = 0.5 + 1.5 * u[1], 0.08, 0.0, 2e5
        elif cls == "indices":
            anchor, vol, drift, adv = loguni(u[1], 1000.0, 20000.0), 0.18, 0.07, 0.0
        else:
            anchor, vol, drift = loguni(u[1], 8.0, 400.0), 0.2 + 0.4 * u[2], 0.02 + 0.12 * u[3]
            adv = loguni(u[4], 2e5, 2e7)
        dy = 0.005 + 0.035 * u[5] if u[6] < 0.7 else 0.0
        revenue = loguni(u[7], 0.05, 20.0) * 1e9
        growth, margin = -0.02 + 0.17 * u[8], -0.05 + 0.30 * u[9]
        shares = revenue * 4 * (1.0 + 7.0 * u[10]) / anchor  # price/sales between 1 and 8
        fy_end = 12 if u[11] < 0.75 else (3, 6, 9)[int(3 * u[12])]
    if cls not in ("stocks", "etfs"):
        dy = 0.0
    splits = _KNOWN_SPLITS.get(symbol, ())
    if known is None and cls == "stocks" and u[13] < 1 / 40:
        first, last = _day_idx(dt.date(2004, 1, 1)), _day_idx(dt.date(2025, 12, 31))
        exec_idx = int(_next_session_idx(np.asarray(first + int((last - first) * u[14]))))
        ratio = ((1.0, 2.0), (1.0, 3.0), (2.0, 3.0), (10.0, 1.0))[int(4 * u[15])]
        splits = ((EPOCH + dt.timedelta(days=exec_idx), *ratio),)
    return _Profile(
        symbol=symbol, key=key, asset_class=cls, calendar=calendar_for(cls), anchor=anchor,
        vol=vol, drift=drift, adv=adv, div_yield=dy,
        div_start=_DIVIDEND_START.get(symbol, EPOCH), revenue=revenue, rev_growth=growth,
        margin=margin, shares=shares, fy_end_month=fy_end, seasonality=0.12 * u[16],
        splits=splits, split_days=tuple(_day_idx(d) for d, _, _ in splits),
        skew=0.0 if cls == "crypto" else 0.10 + 0.08 * u[17], smile=0.06 + 0.05 * u[18],
    )


# ----------------------------------------------------------------------------- calendars


@functools.lru_cache(maxsize=1)
def _et_midnight_us() -> np.ndarray:
    """UTC instant (µs since the Unix epoch) of midnight America/New_York, per epoch day."""
    import pandas as pd

    days = pd.date_range(EPOCH, periods=N_DAYS, freq="D", unit="us")
    out = days.tz_localize(calendars.EXCHANGE_TZ).tz_convert("UTC").asi8.copy()
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=1)
def _xnys_slots() -> np.ndarray:
    """Regular-hours 5-minute slots (09:30 ET to the close) per epoch day: 78, 42 on half-days."""
    slots = np.full(N_DAYS, 78, dtype=np.int64)
    midnight = _et_midnight_us()
    for i in _session_idx("XNYS").tolist():
        close = calendars.session_close_utc("XNYS", EPOCH + dt.timedelta(days=i))
        minutes = (int(close.timestamp() * 1_000_000) - midnight[i]) // _US_PER_MIN - 570
        slots[i] = max(1, min(78, minutes // 5))
    slots.flags.writeable = False
    return slots


def _session_start_us(cal: str, idx: np.ndarray) -> np.ndarray:
    """Daily bar ``ts`` (µs, UTC): New York midnight, or UTC midnight on the calendars of UTC
    days (crypto's 24/7, forex's FX), as ``enrich.conventions`` says."""
    if cal in _UTC_DAY_CALENDARS:
        return (idx + _UNIX_DAYS) * _US_PER_DAY
    return _et_midnight_us()[idx]


_UTC_DAY_CALENDARS = ("24/7", "FX")
# Forex: the share of a full trading day each UTC weekday trades (Monday = 0): Friday closes
# at 17:00 New York, Sunday opens then, Saturday is closed. Five days of trading a week.
_FX_DAY_WEIGHT = np.array([1.0, 1.0, 1.0, 1.0, 0.875, 0.0, 0.125])


def _fx_weight(idx: np.ndarray) -> np.ndarray:
    return _FX_DAY_WEIGHT[(idx + 5) % 7]
