"""The ``sample`` provider: offline, deterministic demo data behind the Provider interface.

Everything is a pure function of the symbol and the date, so the same request gives the same
rows on any machine and a later request extends history instead of rewriting it.

Model
-----
* Randomness. Daily log returns come from a per-symbol ``numpy`` PCG64 stream seeded from a
  SHA-256 of the symbol, one draw per *calendar day* from ``EPOCH`` (2000-01-01) to
  ``LAST_DAY``, so day i's value never depends on the requested range. Everything else (a
  day's open, range, volume; intraday steps; news; open interest) comes from a counter-based
  hash (splitmix64 of symbol key, purpose, day, slot), computed only for the days asked for.
* Prices. A geometric Brownian motion of the value of one share (on today's share basis) with
  per-symbol drift and volatility (ETFs calm, crypto wild), anchored so that the close on
  ``REF_DAY`` (2024-01-02) is at a realistic level. Exchange-listed symbols move a little
  over weekends (Monday gaps); crypto trades every day and opens at the previous close.
  Prices are rounded to cents (more decimals below $1), one grid per row so that
  low <= open, close, vwap <= high always holds.
* Splits. Real splits for a few well-known tickers, plus one synthetic split for about one in
  40 unknown stock tickers. The company value is continuous, so the unadjusted price drops at
  the split. Bars are split-adjusted as of the request's effective end ``e`` (its end, capped
  at the latest completed session): splits executed on or before ``e`` are reflected (prices
  divided by split_to/split_from before the execution date, volume multiplied), later ones
  are not, and every row carries ``adjusted_asof = e``. So fetching [a, d1], later
  [d1+1, d2], and adjusting the first piece by a split in between equals fetching [a, d2].
* Sessions. XNYS (holidays; half-days trade less) through ``enrich.calendars``; crypto every
  day on the "24/7" calendar. A daily bar's ``ts`` is the session's midnight in New York as a
  UTC instant (as Massive does); for crypto, whose "24/7" sessions are UTC days in
  ``enrich.calendars``, it is midnight UTC. Intraday bars ("1h", "5m") cover 09:30 ET to the
  close (crypto: the whole UTC day); hours start at :30 like the session. They reproduce the
  daily bar exactly: first open, last close, max high, min low, summed volume and trades.
* Events. Quarterly dividends (as declared per then-current share), quarterly earnings (the
  real fiscal calendars where known; EPS on the then-current share basis), 2-5 news items a
  week with a sentiment that follows the day's move, and option chains priced with
  Black-Scholes-Merton on an IV surface with skew, smile and term structure. An event is only
  returned once it is known at the clock's instant (declared, filed, published, executed).
* Options. A contract's daily bars are priced at the model IV from the underlying's close on
  each session up to expiry (intrinsic value on the expiry day), unrounded, so IV computed
  back from them matches the chain. Days with a model price under $0.01 have no bar (no
  trade), as with a real feed.

Universe-wide requests
----------------------
``market_rows`` answers a ``MarketRequest`` as the real provider would (one "request" per
session for bars, one per date window for events) and derives each symbol's rows from the
per-symbol model lazily, in whichever process asks for them (``SampleMarketRows`` pickles), so
a universe-wide refresh returns exactly what per-symbol calls return for the same window.

Failure injection and retries
-----------------------------
With ``failure_rate > 0`` every request first draws ``u = hash(seed, symbol, method, n)``,
where ``n`` counts the requests made on this instance (across threads), and raises
``TransientError`` when ``u < failure_rate``. The provider's ``RetryPolicy`` retries that
request (a new ``n``), so retries eventually succeed, and a fresh instance making the same
calls fails the same ones. Every attempt counts as a request in ``take_requests``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import itertools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy.special import ndtri

from enrich import calendars
from enrich.errors import NotFoundError, ProviderError, TransientError
from enrich.identity import TickerChange, TickerReference
from enrich.providers.base import OPTION_CONTRACTS, MarketRequest, ProbeResult
from enrich.providers.retry import NO_RETRY, RequestLedger, RequestStats, RetryPolicy
from enrich.quant import rates
from enrich.quant.american import american_price
from enrich.quant.occ import format_occ, format_occ_array, parse_occ
from enrich.schemas import BARS, DIVIDENDS, EARNINGS, NEWS, OPTIONS_IV, RATES, SPLITS, Dataset
from enrich.symbols import DEMO_UNIVERSE, asset_class_of, calendar_for, validate_symbol

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

# Purposes of the random draws. Each has its own numbers, so changing one never shifts another.
_RET, _DAY, _GAP, _HIGH, _LOW, _VWAP, _VOL = 1, 2, 3, 4, 5, 6, 7
_I_STEP, _I_WICK, _I_VOL, _I_VWAP = 11, 12, 13, 14
_N_COUNT, _N_DAY, _N_TIME, _N_ID, _N_SENT, _N_TITLE, _N_PUB = 21, 22, 23, 24, 25, 26, 27
_DIV, _EARN, _OI, _OPT, _FAIL, _PROFILE, _CURVE, _QUOTE = 31, 32, 33, 34, 35, 36, 37, 38
# The draws _daily makes per day and _news_frame per item, as columns: hashed against a row of
# day (item) hashes they give one contiguous row of draws per purpose, in one call.
_DAY_PURPOSES = np.array([_GAP, _HIGH, _LOW, _VWAP, _VOL])[:, None]
_NEWS_PURPOSES = np.array([_N_SENT, _N_TITLE, _N_PUB])[:, None]

# ----------------------------------------------------------------------------- hashing


def _stable_key(text: str) -> int:
    """A 64-bit key that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1
# The same constants as 0-d uint64 arrays, which numpy combines with arrays faster than scalars.
_GOLDEN_U, _MIX1_U, _MIX2_U, _SH11, _SH27, _SH30, _SH31 = (
    np.array(v, dtype=np.uint64) for v in (_GOLDEN, _MIX1, _MIX2, 11, 27, 30, 31))


def _mix(*parts) -> np.ndarray:
    """splitmix64 folded over the parts (ints or int arrays, broadcast); at least 1-d.

    Python-int parts fold in Python until the first array part: the symbol key and purpose
    lead most calls, and numpy costs about a microsecond per operation even on one value.
    uint64 array arithmetic wraps silently, as the hash wants."""
    h: int | np.ndarray = 0
    for part in parts:
        x: int | np.ndarray
        if isinstance(part, int) and isinstance(h, int):
            x = h ^ ((part + _GOLDEN) & _MASK64)
            x = ((x ^ (x >> 30)) * _MIX1) & _MASK64
            x = ((x ^ (x >> 27)) * _MIX2) & _MASK64
            h = x ^ (x >> 31)
        else:
            x = h ^ (np.asarray(part).astype(np.uint64) + _GOLDEN_U)
            x = (x ^ (x >> _SH30)) * _MIX1_U
            x = (x ^ (x >> _SH27)) * _MIX2_U
            h = x ^ (x >> _SH31)
    return np.array([h], dtype=np.uint64) if isinstance(h, int) else np.atleast_1d(h)


def _unit(h: np.ndarray) -> np.ndarray:
    """Hashes -> uniforms in (0, 1)."""
    return ((h >> _SH11).astype(np.float64) + 0.5) * (1.0 / 2**53)


def _uniform(*parts) -> np.ndarray:
    return _unit(_mix(*parts))


def _normal(*parts) -> np.ndarray:
    return ndtri(_uniform(*parts))


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


def _hex_ids(h: np.ndarray, prefix: str = "") -> pl.Series:
    """uint64 hashes -> ``prefix`` + 16 lower-case hex digits, written into a byte matrix
    (no Python loop, no polars expression)."""
    digits = _HEX_DIGITS[((h[:, None] >> _NIBBLE_SHIFTS) & np.uint64(15)).astype(np.intp)]
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    out = np.concatenate((np.broadcast_to(head, (len(h), len(head))), digits), axis=1)
    return pl.Series(out.view(f"S{out.shape[1]}").ravel()).cast(pl.String)


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


# ----------------------------------------------------------------------------- price path


@dataclass(frozen=True)
class _Path:
    log_close: np.ndarray  # per epoch day, today's share basis
    sigma_d: float  # volatility per trading day
    drift_d: float  # drift per trading day


def _trading_weekdays(p: _Profile, idx: np.ndarray) -> np.ndarray:
    return np.ones(len(idx), bool) if p.calendar == "24/7" else (idx + 5) % 7 < 5


_ALL_DAYS = np.arange(N_DAYS)


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
        trading = _trading_weekdays(p, _ALL_DAYS)
        calm = 0.25 * sigma_d  # weekends move a little: Monday gaps
        s = np.where(trading, sigma_d, calm)
        # Mean log return mu - s^2/2, worked out once per kind of day (the same float
        # operations as per day, so the same values).
        mean_r = np.where(trading, drift_d - 0.5 * sigma_d * sigma_d, 0.0 - 0.5 * calm * calm)
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([p.key, _RET])))
    r = mean_r + s * rng.standard_normal(N_DAYS)
    cum = np.cumsum(r)
    log_close = math.log(p.anchor) + cum - cum[_day_idx(REF_DAY)]
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
    ret = np.diff(path.log_close, prepend=path.log_close[0])
    z2 = np.minimum(np.square(ret / path.sigma_d), 25.0)
    alpha = 1.0 - 0.5 ** (1.0 / 20.0)  # 20-day half-life
    ema = lfilter([alpha], [1.0, -(1.0 - alpha)], z2, zi=[1.0 - alpha])[0]
    out = 0.75 + 0.25 * np.sqrt(ema)
    out.flags.writeable = False
    return out


# ----------------------------------------------------------------------------- provider


class SampleProvider:
    """Offline, deterministic demo data (the model is described in the module docstring).

    ``clock`` (default: now, UTC) decides the latest completed session and what is already
    known; ``failure_rate`` and ``seed`` drive the injected transient failures.
    """

    name = "sample"
    is_demo = True
    rate_limited = False

    def __init__(
        self,
        failure_rate: float = 0.0,
        clock: Callable[[], dt.datetime] | None = None,
        seed: int = 0,
        retry: RetryPolicy | None = None,
    ):
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within [0, 1], got {failure_rate}")
        self.failure_rate = float(failure_rate)
        self.seed = int(seed)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._retry = retry or NO_RETRY
        self._calls = itertools.count()  # next() is atomic: safe across threads
        self._ledger = RequestLedger()

    def process_factory(self) -> Callable[..., SampleProvider]:
        """Builds this provider in a worker process (``enrich.pipeline.workers``), given a
        ``clock``: its rows are computed on the CPU, so large runs use processes rather than
        threads."""
        return functools.partial(SampleProvider, failure_rate=self.failure_rate, seed=self.seed,
                                 retry=self._retry)

    def with_priority(self, priority: int) -> SampleProvider:
        return self  # no rate limit to queue on

    # -- bookkeeping

    def take_requests(self) -> RequestStats:
        """Data calls (and retries) made by the calling thread since the last take."""
        return self._ledger.take()

    def take_request_count(self) -> int:
        """Data calls made by the calling thread since the last take; resets the count."""
        return self.take_requests().requests

    def request(self, method: str, what: str,
                fault: Callable[[], None] | None = None) -> None:
        """One "request" for ``what``: counted, maybe failing (``failure_rate``), retried by
        the policy. ``fault``, called on every attempt, may raise to fail it too: a demo or a
        test injects its own provider errors where a real one would arise."""
        self._ledger.retrying(self._retry, method,
                              lambda: self._attempt(method, what, fault))

    _request = request

    def _attempt(self, method: str, what: str, fault: Callable[[], None] | None = None) -> None:
        self._ledger.sent()
        if fault is not None:
            fault()
        n = next(self._calls)
        if self.failure_rate > 0.0:
            u = float(_uniform(self.seed, _stable_key(what), _stable_key(method), n, _FAIL)[0])
            if u < self.failure_rate:
                raise TransientError(
                    f"injected transient failure (demo, failure_rate={self.failure_rate:g})",
                    provider=self.name, endpoint=method, status=503, request_id=f"sample-{n}")

    def _begin(self, method: str, symbol: str) -> str:
        """Count the call, maybe inject a failure, and return the canonical symbol."""
        raw = symbol.strip() if isinstance(symbol, str) else repr(symbol)
        self._request(method, raw)
        if method == "option_bars":
            return raw
        try:
            return validate_symbol(raw)
        except ValueError as exc:
            raise NotFoundError(str(exc), provider=self.name, endpoint=method) from None

    def _now(self) -> dt.datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the clock must return a timezone-aware datetime")
        return now

    def _latest(self, cal: str) -> dt.date:
        """The latest completed session at the clock's instant."""
        return min(calendars.latest_session(cal, self._now()), LAST_DAY)

    # -- bars

    def bars(self, symbol: str, timeframe: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Bars of the sessions in [start, end] up to the latest completed session,
        split-adjusted as of the effective end (``adjusted_asof``)."""
        sym = self._begin("bars", symbol)
        if timeframe not in TIMEFRAMES:
            raise ProviderError(
                f"unsupported timeframe {timeframe!r}: use one of {', '.join(TIMEFRAMES)}",
                provider=self.name, endpoint="bars")
        eff_end = min(end, self._latest(_profile(sym).calendar))
        pieces = _as_traded(sym, start, eff_end)
        if len(pieces) == 1 and pieces[0][0] == sym:
            return self._bars_of(sym, timeframe, start, eff_end)
        return _relabel([self._bars_of(sec, timeframe, a, z, eff_end) for sec, a, z in pieces],
                        sym, BARS.empty())

    def _bars_of(self, security: str, timeframe: str, start: dt.date, end: dt.date,
                 asof: dt.date | None = None) -> pl.DataFrame:
        """The bars of ``security`` on the sessions in [start, end] (``end`` at most the
        latest completed session), on the share basis of ``asof`` (default ``end``)."""
        p = _profile(security)
        asof = asof or end
        sess = calendars.session_array(p.calendar, max(start, EPOCH), end)
        if start > end or len(sess) == 0:
            return BARS.empty()
        idx = _idx_of(sess)
        g = p.basis(_day_idx(asof))
        minutes = TIMEFRAMES[timeframe]
        if minutes == 0:
            day = _daily(p, idx)
            cols = {k: day[k] for k in ("open", "high", "low", "close", "vwap", "volume",
                                        "trades")}
            ts, session = _session_start_us(p.calendar, idx), idx
        else:
            ts, session, cols = _intraday(p, idx, minutes)
        cols = _rebase(cols, g)
        if p.asset_class == "indices":  # an index has no volume, VWAP or trades (null)
            cols = {k: v for k, v in cols.items() if k not in ("volume", "vwap", "trades")}
        return _bars_frame(security, timeframe, ts, session, cols, asof)

    # -- corporate actions and events

    def splits(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Splits executed in [start, end], up to the latest session."""
        sym = self._begin("splits", symbol)
        last = min(end, self._latest(_profile(sym).calendar))
        rows = [(sym, d, f, t, "forward_split" if t > f else "reverse_split")
                for sec, a, z in _as_traded(sym, start, last)
                for d, f, t in _profile(sec).splits if a <= d <= z]
        if not rows:
            return SPLITS.empty()
        return pl.DataFrame(rows, orient="row", schema=SPLITS.schema)

    def dividends(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Quarterly cash dividends with ex_date in [start, end] that are declared by now."""
        sym = self._begin("dividends", symbol)
        pieces = _as_traded(sym, start, end)
        frames = [self._dividends_of(sec, a, z) for sec, a, z in pieces]
        if len(pieces) == 1 and pieces[0][0] == sym:
            return frames[0]
        return _relabel(frames, sym, DIVIDENDS.empty())

    def _dividends_of(self, security: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        table = _dividend_table(security)
        if table is None:
            return DIVIDENDS.empty()
        frame, ex, declared = table
        lo = np.searchsorted(ex, _day_idx(start), "left")
        hi = min(np.searchsorted(ex, _day_idx(end), "right"),
                 np.searchsorted(declared, _day_idx(self._latest("XNYS")), "right"))
        return frame.slice(int(lo), max(int(hi - lo), 0))

    def earnings(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Quarterly results with filing_date in [start, end] that are filed by now."""
        sym = self._begin("earnings", symbol)
        pieces = _as_traded(sym, start, end)
        frames = [self._earnings_of(sec, a, z) for sec, a, z in pieces]
        if len(pieces) == 1 and pieces[0][0] == sym:
            return frames[0]
        return _relabel(frames, sym, EARNINGS.empty())

    def _earnings_of(self, security: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        table = _earnings_table(security)
        if table is None:
            return EARNINGS.empty()
        frame, filed = table
        lo = np.searchsorted(filed, _day_idx(start), "left")
        hi = np.searchsorted(filed, _day_idx(min(end, self._latest("XNYS"))), "right")
        return frame.slice(int(lo), max(int(hi - lo), 0))

    def news(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """News published on [start, end] (UTC dates), up to the clock's instant."""
        sym = self._begin("news", symbol)
        now_us = int(self._now().timestamp() * 1_000_000)
        pieces = _as_traded(sym, max(start, EPOCH), min(end, LAST_DAY))
        frames = [_news_frame(_profile(sec), a, z, now_us) for sec, a, z in pieces]
        if len(pieces) == 1 and pieces[0][0] == sym:
            return frames[0]
        return _relabel(frames, sym, NEWS.empty())

    # -- options

    def option_chain(self, symbol: str, as_of: dt.date,
                     spot: float | None = None) -> pl.DataFrame:
        """Chain snapshot of the session ``as_of``: its closing state once it has closed, or
        the state at the clock's instant while it trades (priced off the last 5-minute bar;
        ``snapshot_at`` says when). Empty if ``as_of`` is not such a session or the symbol
        has no options. About 7 expiries x ~21 strikes x call/put."""
        sym = self._begin("option_chain", symbol)
        p = _profile(sym)
        if not p.has_options or not self._is_snapshot_session(p, as_of):
            return OPTIONS_IV.empty()
        return _chain_frame(p, as_of, self._now())

    def option_contracts(self, underlying: str, as_of: dt.date, *,
                         strikes: tuple[float, float] | None = None,
                         expirations: tuple[dt.date, dt.date] | None = None) -> pl.DataFrame:
        """Contracts listed on ``as_of`` (those of its chain), in OPTION_CONTRACTS columns,
        within ``strikes`` and ``expirations`` when given."""
        sym = self._begin("option_contracts", underlying)
        p = _profile(sym)
        if not p.has_options or not self._is_past_session(p, as_of):
            return OPTION_CONTRACTS.empty()
        listed = _chain_frame(p, as_of, None).select(OPTION_CONTRACTS.columns)
        if strikes is not None:
            listed = listed.filter(pl.col("strike").is_between(*strikes))
        if expirations is not None:
            listed = listed.filter(pl.col("expiration").is_between(*expirations))
        return listed

    def option_bars(self, contract: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Daily bars of one contract from its listing to its expiration (BARS schema,
        symbol = the OCC ticker), priced as traded that day (not split-adjusted)."""
        ticker = self._begin("option_bars", contract)
        try:
            occ = parse_occ(ticker)
        except ValueError as exc:
            raise NotFoundError(str(exc), provider=self.name, endpoint="option_bars") from None
        p = _profile(_OCC_ROOTS.get(occ.underlying, occ.underlying))
        if not p.has_options:
            raise NotFoundError(f"no options on {p.symbol} in the sample data",
                                provider=self.name, endpoint="option_bars")
        ticker = format_occ(occ.underlying, occ.expiration, occ.contract_type, occ.strike)
        eff_end = min(end, occ.expiration, self._latest(p.calendar))
        return _option_bars_frame(p, ticker, occ.expiration, occ.contract_type, occ.strike,
                                  start, eff_end)

    def _is_past_session(self, p: _Profile, day: dt.date) -> bool:
        return EPOCH <= day <= self._latest(p.calendar) and calendars.is_session(p.calendar, day)

    def _is_snapshot_session(self, p: _Profile, day: dt.date) -> bool:
        """A completed session, or the one trading at the clock's instant."""
        if not (EPOCH <= day <= LAST_DAY and calendars.is_session(p.calendar, day)):
            return False
        return day <= calendars.snapshot_session(p.calendar, self._now())[0]

    # -- rates

    def treasury_yields(self, start: dt.date, end: dt.date) -> pl.DataFrame:
        """The demo Treasury curve of every XNYS session in [start, end], up to the latest
        completed session (``_curve``)."""
        self._request("treasury_yields", f"{start}:{end}")
        last = min(end, self._latest("XNYS"))
        sess = calendars.session_array("XNYS", max(start, EPOCH), last)
        if start > last or len(sess) == 0:
            return RATES.empty()
        idx = _idx_of(sess)
        curve = _curve(idx)
        return _frame(RATES, len(idx), {
            "symbol": rates.CURVE, "date": _dates(idx),
            **{col: curve[:, i] for i, col in enumerate(rates.TENORS)}})

    # -- universe-wide

    def estimate_requests(self, request: MarketRequest) -> int:
        """One per session for bars, one per window for events (``market_rows``)."""
        return max(1, len(request.sessions)) if request.dataset == "bars" else 1

    def market_rows(self, request: MarketRequest) -> SampleMarketRows:
        """One request per session (bars) or per window (events), like grouped daily and the
        market-wide endpoints; each symbol's rows are derived lazily (``SampleMarketRows``)."""
        method = f"market_{request.dataset}"
        if request.dataset == "bars":
            for session in request.sessions or (request.end,):
                self._request(method, f"{request.market}:{session.isoformat()}")
        else:
            self._request(method, f"{request.market}:{request.start}:{request.end}")
        return SampleMarketRows(request, functools.partial(SampleProvider, seed=self.seed),
                                self._now())

    def ticker_reference(self, symbol: str) -> TickerReference:
        """What the sample's own universe says ``symbol`` is (the demo universe, TWTR
        (delisted), KIMpL (a preferred), IBM, S0000-S9999); ``NotFoundError`` for anything else."""
        self._request("ticker_reference", symbol)
        ref = _reference(symbol.strip()) if isinstance(symbol, str) else None
        if ref is None:
            raise NotFoundError(
                f"{symbol!r} is not a ticker of the sample data (it knows the demo universe, "
                "TWTR, KIMpL, IBM and S0000-S9999; tickers are case-sensitive)",
                provider=self.name, endpoint="ticker_reference", status=404)
        return ref

    def probe(self) -> ProbeResult:
        return ProbeResult(ok=True, latency_ms=0.0, status="demo",
                           message="sample provider: offline demo data")


@dataclass(frozen=True)
class SampleMarketRows:
    """A universe-wide answer of the sample provider: each symbol's rows are the per-symbol
    model's for the request's window, as known at ``now``. Picklable, so a run's worker
    processes derive their own symbols' rows (no request is counted or failed again)."""

    request: MarketRequest
    factory: Callable[..., SampleProvider]
    now: dt.datetime
    not_yet: tuple[dt.date, ...] = ()  # the sample data are published at the close

    def for_symbol(self, symbol: str) -> pl.DataFrame:
        r = self.request
        p = _quiet_provider(self.factory, self.now)
        if r.dataset == "bars":
            frame = p.bars(symbol, "1d", r.start, r.end)
            if r.sessions:
                frame = frame.filter(pl.col("session").is_in(list(r.sessions)))
            return frame
        call = {"dividends": p.dividends, "splits": p.splits, "earnings": p.earnings,
                "news": p.news}[r.dataset]
        return call(symbol, r.start, r.end)


@functools.lru_cache(maxsize=8)
def _quiet_provider(factory: Callable[..., SampleProvider], now: dt.datetime) -> SampleProvider:
    return factory(clock=lambda: now)


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
            s = pl.Series(name, [value], dtype=dtype).new_from_index(0, n)
        series.append(s if s.dtype == dtype else s.cast(dtype))
    return pl.DataFrame(series)


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


_PUT_CALL = pl.Series(["put", "call"])
_TICK = 0.01


def _quotes(p: _Profile, a: int, price: np.ndarray, ee: np.ndarray, kk: np.ndarray,
            cc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bid and ask around the model price on a cent grid: a spread of about 1 cent plus 2 %
    of the price, a little wider or narrower per contract and day; no bid under 1 cent."""
    u = _uniform(p.key, _QUOTE, a, ee, np.round(kk * 1000).astype(np.int64), cc)
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
    close_at = calendars.session_close_utc(p.calendar, as_of)
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
    exps = _expirations(as_of)
    e_idx = np.array([_day_idx(e) for e in exps])
    ee, kk, cc = (x.ravel() for x in np.meshgrid(e_idx, strikes, [True, False], indexing="ij"))
    t = (ee - a) / 365.0
    q = p.div_yield
    r = _rates_to(np.full(t.size, a), t)
    fwd = spot * np.exp((r - q) * t)
    iv = _model_iv(p, float(_vol_regime(p.symbol)[a]), kk, fwd, t)
    monthly = np.array([_is_monthly(e) for e in exps])[np.searchsorted(e_idx, ee)]
    dist = np.log(kk / fwd) / (iv * np.sqrt(t))
    oi = (3000.0 * math.sqrt(max(p.adv, 1.0) / 1e7) * np.exp(-0.5 * dist * dist)
          * np.where(monthly, 3.0, 1.0)
          * np.exp(0.5 * _normal(p.key, _OI, a, ee, np.round(kk * 1000).astype(np.int64), cc)))
    listing = {
        "symbol": p.symbol,
        "as_of": as_of,
        "contract": format_occ_array(p.occ_root, _EPOCH64 + ee, cc, kk),
        "expiration": _dates(ee),
        "strike": kk,
        "contract_type": _PUT_CALL[cc.astype(np.int64)],
        "shares_per_contract": 100.0,
        "exercise_style": "american",
    }
    if now is None:
        return _frame(OPTIONS_IV, len(kk), listing)
    price = american_price(spot, kk, t, r, q, iv, cc)
    bid, ask = _quotes(p, a, price, ee, kk, cc)
    h = _mix(p.key, _QUOTE, a, ee, np.round(kk * 1000).astype(np.int64), cc, 1)
    # The session's volume so far; the last trade some minutes before the snapshot, inside
    # the spread.
    elapsed = min(1.0, max(0.0, (snapshot_at - calendars.session_open_utc(p.calendar, as_of))
                           .total_seconds() / (close_at - calendars.session_open_utc(
                               p.calendar, as_of)).total_seconds()))
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
        "trade_price": pl.Series(np.where(traded, trade, np.nan)).fill_nan(None),
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


__all__ = ["SampleProvider"]
