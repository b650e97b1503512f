"""A loopback HTTP fake of the Massive REST API, for tests and benchmarks over real sockets.

    with FakeMassive(rate_limit_per_min=None) as fake:
        provider = MassiveProvider(httpx.Client(), fake.api_key, fake.base_url, limiter=None)
        ...
        fake.requests            # every request seen, in order (path, query, status, ...)
        fake.count("/v2/aggs")   # requests whose path starts with a prefix
        fake.key_in_url          # True if any request target carried the API key
        fake.served_rows("AAPL", "bars")

Data are deterministic functions of (symbol, date), so two fakes serve the same rows. Symbols
outside ``symbols`` are valid but have no data (the envelope without ``results``). Behaviour
follows ``/work/shared/reference/massive-rest-api.md``: Bearer auth (401 otherwise), cursors in
an absolute ``next_url`` that must be requested without re-sent parameters (400 otherwise),
403 ``NOT_AUTHORIZED`` for endpoints listed in ``not_entitled``, 404 for ``missing`` ones, and
an optional sliding-window request limit answering 429 like the real plan limit.

Failures on demand: ``fake.fail("/v2/aggs/ticker/AAPL", nth=2, status=429, retry_after="1")``
answers the 2nd request whose path starts with the prefix with that status (``body`` and
``content_type`` override the JSON error body: truncated JSON, an HTML page, ...; ``headers``
adds response headers such as ``X-Request-Id``, ``reason`` replaces the status line's reason);
``fail_every=7`` answers every 7th request (after auth) with a 500.

Crypto, forex and index aggregates follow the recorded responses and the spec's examples
(reference ``massive-refresh-and-correctness.md`` §7; OpenAPI spec in massive-com/client-go
``rest/scripts/openapi.json`` @ 9471d9b): ``X:`` daily bars start at 00:00 UTC every day,
weekends included, with fractional ``v`` (recorded X:BTCUSD 2023-01-01..07); ``C:`` daily bars
start at 00:00 UTC (the spec's C:EURUSD example, t=1626912000000), Sunday to Friday plus a
Saturday row of a few stray quotes, ``v`` equal to ``n`` (recorded C:EURUSD 2023-01-01..10);
``I:`` bars carry ``o h l c t`` only, ``t`` at 01:00 New York, and the envelope has ``count``
but no ``resultsCount`` or ``adjusted`` (the spec's I:NDX example, t=1678341600000).

The ticker reference: ``/v3/reference/tickers/{ticker}`` answers every symbol of the market
in the shape of the spec's AAPL example, and 404 ``Ticker not found.`` for any other (§0 c);
``/vX/reference/tickers/{id}/events`` gives one ticker change at the listing, except META,
whose events are the spec's example (FB from 2012-05-18, META from 2022-06-09). META is served
as traded: its bars before 2022-06-09 are another, ~$12 security's that stopped on 2022-04-29,
and FB's bars (2012-05-18..2022-06-08) continue Meta's prices (§8).

Options and rates follow the OpenAPI spec (``massive-com/client-go`` ``rest/scripts/openapi.json``
@ 9471d9b, reference ``massive-refresh-and-correctness.md`` §5, §9, §10): chain snapshot rows
carry ``last_quote`` and ``last_trade`` as in the spec's example; contract listings honour
``as_of``, ``expired`` and the ``expiration_date.*`` / ``strike_price.*`` filters, with one
adjusted contract per underlying and expiry carrying ``additional_underlyings`` like the spec's
example (44 VMW + 6.53 USD). What ``expired`` is judged against is not in the spec, so the fake
takes either reading: ``expired_against="as_of"`` (default: what one report observed,
reference §9) or ``"today"`` (what the provider's knowledge base is said to state).
``/fed/v1/treasury-yields`` serves a curve per weekday (``curve=`` a function of the date,
returning the tenors in percent, overrides the default).

A market: ``FakeMassive(symbols=market_tickers(520), ...)`` serves hundreds of tickers; the
market-wide endpoints (grouped daily; dividends, splits, income statements and news without a
ticker) answer for every one of them, paginated like the per-ticker queries, so a client can
refresh a universe with a handful of requests. Per-ticker and market-wide answers are the same
rows: ``ticker=X`` on news returns the articles whose ``tickers`` include X.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

from enrich.calendars import sessions
from enrich.quant.occ import format_occ, parse_occ

ET = ZoneInfo("America/New_York")
DEFAULT_KEY = "fake-massive-key-7f3a9c0d2e"
DEFAULT_SYMBOLS = ("AAPL", "MSFT", "SPY")
# Deterministic corporate actions: (execution date, split_from, split_to).
SPLITS = {
    "AAPL": [(dt.date(2014, 6, 9), 1.0, 7.0), (dt.date(2020, 8, 31), 1.0, 4.0)],
    "XYZ": [(dt.date(2023, 5, 1), 10.0, 1.0)],
}
DIVIDEND_PER_SHARE = {"AAPL": 0.24, "MSFT": 0.75, "SPY": 1.6, "XYZ": 0.1}
# The 403 texts of plan limits (reference: massive-refresh-and-correctness.md §0 g, §6).
HISTORY_LIMIT_TEXT = ("Your plan doesn't include this data timeframe. Please upgrade your plan "
                      "at https://massive.com/pricing")
TODAY_TEXT = ("Attempted to request today's data before end of day. Please upgrade your plan "
              "at https://massive.com/pricing")
# Tickers that named different securities over time (reference §8): (first, last, security).
AS_TRADED: dict[str, list[tuple[dt.date, dt.date, str]]] = {
    "FB": [(dt.date(2012, 5, 18), dt.date(2022, 6, 8), "META")],
    "META": [(dt.date(2000, 1, 1), dt.date(2022, 4, 29), "META~2022"),
             (dt.date(2022, 6, 9), dt.date(2100, 1, 1), "META")],
}
# The spec's events example (vX/reference/tickers/{id}/events) and names for the reference.
META_EVENTS = {"name": "Meta Platforms, Inc. Class A Common Stock", "events": [
    {"date": "2022-06-09", "ticker_change": {"ticker": "META"}, "type": "ticker_change"},
    {"date": "2012-05-18", "ticker_change": {"ticker": "FB"}, "type": "ticker_change"}]}
LISTED = {"META": "2012-05-18", "AAPL": "1980-12-12"}
DEFAULT_LISTED = "1993-01-29"
RATE_LIMIT_TEXT = (
    "You've exceeded the maximum requests per minute, please wait or upgrade your "
    "subscription to continue. https://massive.com/pricing"
)


class SlidingWindow:
    """At most ``limit`` admissions in any ``window`` seconds, judged on arrival times.

    An arrival at ``now`` is refused when ``limit`` admissions already lie in
    ``(now - window, now]``; refused requests do not count.
    """

    def __init__(
        self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ):
        self.limit = limit
        self.window = window
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()

    def admit(self, at: float | None = None) -> bool:
        now = self._clock() if at is None else at
        with self._lock:
            self._trim(now)
            if len(self._times) >= self.limit:
                return False
            self._times.append(now)
            return True

    def wait(self, at: float | None = None) -> float:
        """Seconds until the next admission could succeed."""
        now = self._clock() if at is None else at
        with self._lock:
            self._trim(now)
            if len(self._times) < self.limit:
                return 0.0
            return self._times[0] + self.window - now


@dataclass
class Seen:
    """One request as the fake saw it."""

    path: str
    query: str
    status: int
    at: float
    target: str  # the raw request target (path + query), as sent


@dataclass
class _Failure:
    prefix: str
    nth: int
    status: int
    retry_after: str | None
    body: bytes | None
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    reason: str | None = None
    seen: int = 0


@dataclass
class _Reply:
    status: int
    payload: object = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = "application/json"
    reason: str | None = None


def _u(*parts: object) -> float:
    """A deterministic uniform number in [0, 1) from its arguments."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def market_tickers(n: int, prefix: str = "") -> tuple[str, ...]:
    """``n`` distinct, deterministic stock tickers (three or four letters) for a market."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        h = int(_u("ticker", i) * 26**4)
        size = 3 + (i % 2)
        name = prefix + "".join(chr(65 + (h // 26**k) % 26) for k in range(size))
        if name not in out and name not in DEFAULT_SYMBOLS:
            out.append(name)
        i += 1
    return tuple(out)


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def _in_range(value: str | None, query: dict[str, str], name: str) -> bool:
    """The API's ``name``, ``name.gte/.gt/.lte/.lt`` filters on ISO dates or timestamps."""
    if value is None:
        return not any(k.startswith(name) for k in query)
    checks = {
        "": lambda v, q: v == q,
        ".gte": lambda v, q: v >= q,
        ".gt": lambda v, q: v > q,
        ".lte": lambda v, q: v <= q,
        ".lt": lambda v, q: v < q,
    }
    for suffix, ok in checks.items():
        bound = query.get(name + suffix)
        if bound is None:
            continue
        # Compare like with like: a date bound against the date part of a timestamp.
        v = value if len(bound) > 10 else value[:10]
        if not ok(v, bound):
            return False
    return True


def _in_number_range(value: float, query: dict[str, str], name: str) -> bool:
    """The API's numeric ``name``, ``name.gte/.gt/.lte/.lt`` filters (``strike_price``)."""
    checks = {"": lambda v, q: v == q, ".gte": lambda v, q: v >= q, ".gt": lambda v, q: v > q,
              ".lte": lambda v, q: v <= q, ".lt": lambda v, q: v < q}
    for suffix, ok in checks.items():
        bound = query.get(name + suffix)
        if bound is not None and not ok(float(value), float(bound)):
            return False
    return True


class FakeData:
    """Deterministic market data for the symbols of a market.

    Named symbols (AAPL, MSFT, SPY, XYZ) have fixed dividends and splits; any other symbol
    pays a quarterly dividend with a probability of 0.6 and splits rarely, on dates drawn from
    its name. Income statements are filed 25-55 days after the quarter (per symbol); news comes
    every ``news_every`` days per symbol.
    """

    def __init__(self, symbols: Iterable[str], today: dt.date, news_every: int = 3,
                 curve: Callable[[dt.date], dict | None] | None = None):
        self.symbols = tuple(symbols)
        self.today = today
        self.news_every = news_every
        self.curve = curve
        self._known = set(self.symbols)
        self._traded = self._known | ({"FB"} if "META" in self._known else set())

    def close(self, symbol: str, day: dt.date) -> float:
        i = (day - dt.date(2000, 1, 1)).days
        base = 3.6 if symbol == "META~2022" else 20 + 180 * _u(symbol, "base")  # ~$12 in 2022
        # Split-adjusted history (what adjusted=true serves): continuous across splits.
        wave = 0.15 * math.sin(i / 40 + 6 * _u(symbol, "phase"))
        noise = 0.02 * (_u(symbol, day, "c") - 0.5)
        return round(base * math.exp(0.00015 * i + wave + noise), 4)

    def security(self, ticker: str, day: dt.date) -> str | None:
        """The security ``ticker`` named on ``day`` (None: the ticker did not trade)."""
        spans = AS_TRADED.get(ticker)
        if spans is None:
            return ticker
        return next((sec for a, z, sec in spans if a <= day <= z), None)

    def bar(self, symbol: str, start: dt.datetime, span: str) -> dict:
        sec = self.security(symbol, start.date())
        key = (sec, start.isoformat(), span)
        ref = self.close(sec, start.date())
        c = round(ref * (1 + 0.01 * (_u(*key, "c") - 0.5)), 4)
        o = round(ref * (1 + 0.01 * (_u(*key, "o") - 0.5)), 4)
        h = round(max(o, c) * (1 + 0.01 * _u(*key, "h")), 4)
        lo = round(min(o, c) * (1 - 0.01 * _u(*key, "l")), 4)
        v = float(int(1e5 + 5e6 * _u(*key, "v")))
        return {"v": v, "vw": round((o + h + lo + c) / 4, 4), "o": o, "c": c, "h": h, "l": lo,
                "t": _ms(start), "n": int(100 + 5e4 * _u(*key, "n"))}

    def aggs(self, ticker: str, mult: int, timespan: str, start: dt.date,
             end: dt.date) -> list[dict]:
        if ticker.startswith("O:"):
            return self._option_aggs(ticker, start, end)
        if ticker not in self._traded:
            return []
        if ticker[:2] in ("X:", "C:", "I:"):
            return self._global_aggs(ticker, mult, timespan, start, min(end, self.today))
        days = [d for d in sessions("XNYS", start, min(end, self.today))
                if self.security(ticker, d) is not None]
        if timespan == "day":
            return [self.bar(ticker, dt.datetime.combine(d, dt.time(), ET), "day") for d in days]
        step = dt.timedelta(hours=mult) if timespan == "hour" else dt.timedelta(minutes=mult)
        out = []
        for d in days:
            t = dt.datetime.combine(d, dt.time(9, 30), ET)
            close = dt.datetime.combine(d, dt.time(16, 0), ET)
            while t < close:
                out.append(self.bar(ticker, t, f"{mult}{timespan}"))
                t += step
        return out

    def _global_aggs(self, ticker: str, mult: int, timespan: str, start: dt.date,
                     end: dt.date) -> list[dict]:
        """Crypto, forex and index bars as recorded (see the module docstring)."""
        if ticker.startswith("I:"):
            days = sessions("XNYS", start, end)
            hours = [dt.datetime.combine(d, dt.time(1), ET) for d in days]  # 01:00 New York
            if timespan != "day":
                step = dt.timedelta(hours=mult) if timespan == "hour" else \
                    dt.timedelta(minutes=mult)
                hours = [dt.datetime.combine(d, dt.time(9, 30), ET) + k * step for d in days
                         for k in range(int(dt.timedelta(hours=6, minutes=30) / step))]
            out = []
            for t in hours:
                b = self.bar(ticker, t, "day" if timespan == "day" else f"{mult}{timespan}")
                out.append({k: b[k] * 1.000000123 if k in "ohlc" else b[k]
                            for k in ("o", "h", "l", "c", "t")})  # full-precision floats
            return out
        days = [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]
        if timespan == "day":
            return [self.global_bar(ticker, d) for d in days]
        step = dt.timedelta(hours=mult) if timespan == "hour" else dt.timedelta(minutes=mult)
        out = []
        for d in days:
            if ticker.startswith("C:") and d.weekday() == 5:
                continue
            t = dt.datetime.combine(d, dt.time(), dt.UTC)
            while t.date() == d:
                out.append(self.bar(ticker, t, f"{mult}{timespan}"))
                t += step
        return out

    def global_bar(self, ticker: str, day: dt.date) -> dict:
        """A crypto or forex daily bar: starts 00:00 UTC; crypto's ``v`` fractional; forex's
        ``v`` a count of quotes equal to ``n``, a few on a Saturday, fewer on a Sunday."""
        b = self.bar(ticker, dt.datetime.combine(day, dt.time(), dt.UTC), "day")
        if ticker.startswith("X:"):
            b["v"] = round(b["v"] / 1000 + _u(ticker, day, "frac"), 8)
        else:
            quotes = {5: 2, 6: 4731}.get(day.weekday(), int(b["v"] / 25))
            b["v"] = b["n"] = quotes
        return b

    def _option_aggs(self, ticker: str, start: dt.date, end: dt.date) -> list[dict]:
        contract = parse_occ(ticker)
        if contract.underlying not in self.symbols:
            return []
        out = []
        for d in sessions("XNYS", start, min(end, contract.expiration, self.today)):
            spot = self.close(contract.underlying, d)
            intrinsic = (
                max(spot - contract.strike, 0.0) if contract.contract_type == "call"
                else max(contract.strike - spot, 0.0)
            )
            years = max((contract.expiration - d).days, 1) / 365
            c = round(intrinsic + 0.4 * spot * math.sqrt(years) * 0.4 + 0.05, 2)
            o = round(c * (1 + 0.04 * (_u(ticker, d, "o") - 0.5)), 2)
            h, lo = max(o, c), round(min(o, c) * 0.97, 2)
            out.append({"v": float(int(10 + 900 * _u(ticker, d))), "vw": c, "o": o, "c": c,
                        "h": h, "l": lo, "t": _ms(dt.datetime.combine(d, dt.time(), ET)),
                        "n": int(1 + 50 * _u(ticker, d, "n"))})
        return out

    def grouped(self, day: dt.date, market: str = "stocks") -> list[dict]:
        """Grouped daily: stocks stamp ``t`` at the close (16:00 New York), the global
        markets at the end of the UTC day (the spec's fx example); values are those of the
        per-ticker daily bar of the session."""
        if day > self.today:
            return []
        if market == "stocks":
            if day not in sessions("XNYS", day, day):
                return []
            members = [s for s in self.symbols if ":" not in s]
            stamp = dt.datetime.combine(day, dt.time(16, 0), ET)
            start = dt.datetime.combine(day, dt.time(), ET)
        else:
            prefix = {"crypto": "X:", "fx": "C:"}[market]
            members = [s for s in self.symbols if s.startswith(prefix)]
            stamp = dt.datetime.combine(day, dt.time(23, 59, 59, 999000), dt.UTC)
            return [{"T": s, **self.global_bar(s, day), "t": _ms(stamp)} for s in members]
        return [{"T": s, **self.bar(s, start, "day"), "t": _ms(stamp)} for s in members
                if self.security(s, day) is not None]

    def ticker_details(self, ticker: str) -> dict | None:
        """``/v3/reference/tickers/{ticker}`` results, in the shape of the spec's AAPL
        example (None: not found)."""
        if ticker not in self._known:
            return None
        market = {"X:": "crypto", "C:": "fx", "I:": "indices"}.get(ticker[:2], "stocks")
        row = {"ticker": ticker, "name": META_EVENTS["name"] if ticker == "META"
               else f"{ticker} Inc.", "market": market,
               "locale": "us" if market in ("stocks", "indices") else "global",
               "active": True, "currency_name": "usd"}
        if market == "stocks":
            row.update(type="CS", list_date=LISTED.get(ticker, DEFAULT_LISTED),
                       primary_exchange="XNAS", cik=f"{int(1e9 * _u(ticker, 'cik')):010d}",
                       composite_figi=f"BBG{int(1e9 * _u(ticker, 'figi')):09d}",
                       share_class_figi=f"BBG{int(1e9 * _u(ticker, 'share')):09d}")
        elif market == "indices":
            row["type"] = "INDEX"
        return row

    def ticker_events(self, ticker: str) -> dict | None:
        """``/vX/reference/tickers/{id}/events`` results (None: not found)."""
        if ticker == "META" and "META" in self._known:
            return META_EVENTS
        details = self.ticker_details(ticker)
        if details is None or details["market"] != "stocks":
            return None
        return {"name": details["name"], "events": [
            {"type": "ticker_change", "date": details["list_date"],
             "ticker_change": {"ticker": ticker}}]}

    def dividend_per_share(self, symbol: str) -> float | None:
        if symbol in DIVIDEND_PER_SHARE:
            return DIVIDEND_PER_SHARE[symbol]
        if symbol in ("AAPL", "MSFT", "SPY", "XYZ") or _u(symbol, "pays") >= 0.6:
            return None
        return round(0.05 + 0.95 * _u(symbol, "dps"), 2)

    def dividends(self, symbol: str) -> list[dict]:
        if symbol not in self._known or ":" in symbol:
            return []
        dps = self.dividend_per_share(symbol)
        if dps is None:
            return []
        phase = 0 if symbol in DIVIDEND_PER_SHARE else int(3 * _u(symbol, "phase"))
        day = 10 if symbol in DIVIDEND_PER_SHARE else 1 + int(27 * _u(symbol, "day"))
        out = []
        for year in range(2005, self.today.year + 1):
            for month in (2 + phase, 5 + phase, 8 + phase, 11 + phase):
                if month > 12:
                    continue
                ex = dt.date(year, month, day)
                if ex.weekday() >= 5:  # a weekend: the next Monday
                    ex += dt.timedelta(days=7 - ex.weekday())
                if ex > self.today:
                    continue
                out.append({
                    "id": f"E{hashlib.sha1(f'{symbol}{ex}'.encode()).hexdigest()[:12]}",
                    "ticker": symbol,
                    "cash_amount": dps,
                    "split_adjusted_cash_amount": dps,
                    "currency": "USD",
                    "declaration_date": (ex - dt.timedelta(days=28)).isoformat(),
                    "ex_dividend_date": ex.isoformat(),
                    "record_date": ex.isoformat(),
                    "pay_date": (ex + dt.timedelta(days=14)).isoformat(),
                    "frequency": 4,
                    "distribution_type": "recurring",
                    "historical_adjustment_factor": 0.995,
                })
        return out

    def split_events(self, symbol: str) -> list[tuple[dt.date, float, float]]:
        if symbol in SPLITS or symbol in DEFAULT_SYMBOLS or ":" in symbol:
            return SPLITS.get(symbol, [])
        if _u(symbol, "splits") >= 0.03:
            return []
        when = dt.date(2010, 1, 4) + dt.timedelta(days=int(6000 * _u(symbol, "split day")))
        while when.weekday() >= 5:
            when += dt.timedelta(days=1)
        return [(when, 1.0, 2.0)]

    def splits(self, symbol: str) -> list[dict]:
        if symbol not in self._known:
            return []
        return [
            {"id": f"S{symbol}{when:%Y%m%d}", "ticker": symbol,
             "execution_date": when.isoformat(), "split_from": s_from, "split_to": s_to,
             "adjustment_type": "forward_split" if s_to > s_from else "reverse_split",
             "historical_adjustment_factor": s_from / s_to}
            for when, s_from, s_to in self.split_events(symbol) if when <= self.today
        ]

    def income(self, symbol: str) -> list[dict]:
        if symbol not in self._known or ":" in symbol:
            return []
        lag = 35 if symbol in DEFAULT_SYMBOLS or symbol == "XYZ" \
            else 25 + int(30 * _u(symbol, "lag"))
        out = []
        for year in range(2005, self.today.year + 1):
            for q in range(1, 5):
                end = dt.date(year, 3 * q, 30 if q in (2, 3) else 31)
                filed = end + dt.timedelta(days=lag)
                if filed > self.today:
                    continue
                revenue = round(1e9 * (1 + 9 * _u(symbol, "rev")) * (1 + 0.1 * _u(symbol, end)))
                eps = round(0.2 + 3 * _u(symbol, end, "eps"), 2)
                out.append({
                    "tickers": [symbol], "cik": f"{int(1e9 * _u(symbol, 'cik')):010d}",
                    "timeframe": "quarterly", "fiscal_year": year, "fiscal_quarter": q,
                    "period_end": end.isoformat(), "filing_date": filed.isoformat(),
                    "revenue": float(revenue), "basic_earnings_per_share": eps,
                    "diluted_earnings_per_share": round(eps * 0.98, 2),
                })
        return out

    def financials_vx(self, symbol: str) -> list[dict]:
        """The same quarters in the legacy nested shape (string year, ``Q#``, YYYYMMDD)."""
        out = []
        for row in self.income(symbol):
            out.append({
                "tickers": row["tickers"], "cik": row["cik"], "company_name": f"{symbol} Inc",
                "fiscal_period": f"Q{row['fiscal_quarter']}",
                "fiscal_year": str(row["fiscal_year"]), "timeframe": "quarterly",
                "start_date": row["period_end"][:8] + "01",
                "end_date": row["period_end"].replace("-", ""),
                "filing_date": row["filing_date"],
                "financials": {"income_statement": {
                    "revenues": {"label": "Revenues", "order": 100, "unit": "USD",
                                 "value": row["revenue"]},
                    "basic_earnings_per_share": {
                        "label": "Basic Earnings Per Share", "order": 4200,
                        "unit": "USD / shares", "value": row["basic_earnings_per_share"]},
                    "diluted_earnings_per_share": {
                        "label": "Diluted Earnings Per Share", "order": 4300,
                        "unit": "USD / shares", "value": row["diluted_earnings_per_share"]},
                }},
            })
        return out

    def news(self, symbol: str, start: dt.date, end: dt.date) -> list[dict]:
        """Articles about ``symbol`` (those whose ``tickers`` include it)."""
        if symbol not in self._known:
            return []
        out = []
        every = self.news_every
        day = max(start, dt.date(2015, 1, 1))
        phase = 0 if every == 3 else int(every * _u(symbol, "news phase"))
        day += dt.timedelta(days=(phase - day.toordinal()) % every)  # a fixed grid
        moods = ("positive", "neutral", "negative")
        while day <= min(end, self.today):
            other = f"{symbol}.WS"  # a mentioned ticker nobody follows (its warrant)
            out.append({
                "id": f"N{symbol}{day:%Y%m%d}",
                "publisher": {"name": "Fake Wire", "homepage_url": "https://example.com",
                              "logo_url": "https://example.com/l.png",
                              "favicon_url": "https://example.com/f.ico"},
                "title": f"{symbol} note for {day.isoformat()}",
                "author": "A. Writer",
                "published_utc": f"{day.isoformat()}T13:30:00Z",
                "article_url": f"https://example.com/{symbol}/{day.isoformat()}",
                "tickers": [symbol, other],
                "insights": [
                    {"ticker": other, "sentiment": "neutral", "sentiment_reasoning": "mention"},
                    {"ticker": symbol, "sentiment": moods[int(3 * _u(symbol, day, "s"))],
                     "sentiment_reasoning": f"about {symbol}"},
                ],
            })
            day += dt.timedelta(days=every)
        return out

    def market_news(self, start: dt.date, end: dt.date) -> list[dict]:
        rows = [a for s in self.symbols for a in self.news(s, start, end)]
        return sorted(rows, key=lambda a: (a["published_utc"], a["id"]))

    def _expirations(self, after: dt.date) -> list[dt.date]:
        """The next three Fridays and the third Fridays of the next four months."""
        fridays = []
        d = after + dt.timedelta(days=1)
        while len(fridays) < 3:
            if d.weekday() == 4:
                fridays.append(d)
            d += dt.timedelta(days=1)
        y, m = after.year, after.month
        for _ in range(5):
            first = dt.date(y, m, 1)
            third = first + dt.timedelta(days=(4 - first.weekday()) % 7 + 14)
            if third > after and third not in fridays and len(fridays) < 7:
                fridays.append(third)
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return sorted(fridays)

    def contracts(self, underlying: str, as_of: dt.date) -> list[dict]:
        """The contracts listed on ``as_of``, each with its terms; the highest call strike of
        every expiry is an adjusted contract (the spec example's deliverables)."""
        if underlying not in self.symbols:
            return []
        spot = self.close(underlying, as_of)
        step = 5.0 if spot > 50 else 1.0
        atm = round(spot / step) * step
        out = []
        for exp in self._expirations(as_of):
            for k in (atm - 2 * step, atm - step, atm, atm + step, atm + 2 * step):
                for kind in ("call", "put"):
                    row = {
                        "ticker": format_occ(underlying, exp, kind, k),
                        "underlying_ticker": underlying, "contract_type": kind,
                        "exercise_style": "american", "expiration_date": exp.isoformat(),
                        "strike_price": k, "shares_per_contract": 100,
                        "primary_exchange": "BATO", "cfi": "OCASPS" if kind == "call" else "OPASPS",
                    }
                    if kind == "call" and k == atm + 2 * step:
                        row["additional_underlyings"] = [
                            {"amount": 44, "type": "equity", "underlying": "VMW"},
                            {"amount": 6.53, "type": "currency", "underlying": "USD"}]
                    out.append(row)
        return out

    def chain(self, underlying: str) -> list[dict]:
        """Snapshot rows in the spec example's shape: a quote around a BSM price at the fake's
        smile, a last trade inside the spread, the day's bar."""
        from enrich.quant.bsm import price_and_greeks

        spot = self.close(underlying, self.today)
        close_ns = int(dt.datetime.combine(self.today, dt.time(16, 0), ET).timestamp()) \
            * 1_000_000_000
        out = []
        for c in self.contracts(underlying, self.today):
            exp = dt.date.fromisoformat(c["expiration_date"])
            t = max((exp - self.today).days, 1) / 365
            k = c["strike_price"]
            sigma = 0.25 + 0.3 * (math.log(k / spot)) ** 2
            g = price_and_greeks(spot, k, t, 0.04, 0.0, sigma, c["contract_type"] == "call")
            price = round(float(g["price"]), 2)
            half = max(0.01, round(0.02 * price, 2))
            row = {
                "details": {key: c[key] for key in ("ticker", "contract_type", "exercise_style",
                                                    "expiration_date", "strike_price",
                                                    "shares_per_contract")},
                "greeks": {"delta": float(g["delta"]), "gamma": float(g["gamma"]),
                           "theta": float(g["theta"]) / 365, "vega": float(g["vega"]) / 100},
                "implied_volatility": round(sigma, 6),
                "open_interest": int(10 + 5000 * _u(c["ticker"], "oi")),
                "break_even_price": k + price,
                "day": {"open": price, "high": price, "low": price, "close": price,
                        "volume": 10, "vwap": price, "change": 0.0, "change_percent": 0.0,
                        "previous_close": price, "last_updated": close_ns},
                "last_quote": {"ask": round(price + half, 2), "ask_size": 4,
                               "bid": round(max(price - half, 0.0), 2), "bid_size": 8,
                               "last_updated": close_ns - 1_000_000_000,
                               "midpoint": price, "timeframe": "DELAYED"},
                "last_trade": {"conditions": [209], "exchange": 316, "price": price,
                               "sip_timestamp": close_ns - int(600e9 * _u(c["ticker"], "tr")),
                               "size": 2, "timeframe": "DELAYED"},
                "underlying_asset": {"ticker": underlying, "price": spot,
                                     "change_to_break_even": k + price - spot,
                                     "last_updated": close_ns, "timeframe": "DELAYED"},
            }
            if _u(c["ticker"], "nogreeks") < 0.1:  # deep contracts sometimes come without
                del row["greeks"]
                del row["implied_volatility"]
            out.append(row)
        return out

    def treasury(self, day: dt.date) -> dict | None:
        """The curve observed on ``day`` (weekdays up to today), tenors in percent."""
        if day.weekday() >= 5 or day > self.today:
            return None
        if self.curve is not None:
            yields = self.curve(day)
            return None if yields is None else {"date": day.isoformat(), **yields}
        level = 1.0 + 4.0 * _u("curve", day.year, day.month)
        return {"date": day.isoformat(), "yield_1_month": round(level, 2),
                "yield_3_month": round(level + 0.05, 2), "yield_1_year": round(level + 0.1, 2),
                "yield_10_year": round(level + 0.6, 2)}


class FakeMassive:
    """The fake API server; a context manager that serves on ``127.0.0.1`` on a free port."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_KEY,
        rate_limit_per_min: int | None = None,
        rate_limit_retry_after: bool = False,
        symbols: Iterable[str] = DEFAULT_SYMBOLS,
        today: dt.date | None = None,
        page_size: int | None = None,
        missing: Iterable[str] = (),
        not_entitled: Iterable[str] = (),
        news_every: int = 3,
        fail_every: int | None = None,
        history_days: int | None = None,
        not_yet: dt.date | None = None,
        expired_against: str = "as_of",
        curve: Callable[[dt.date], dict | None] | None = None,
    ):
        if expired_against not in ("today", "as_of"):
            raise ValueError("expired_against is 'today' or 'as_of'")
        self.api_key = api_key
        self.expired_against = expired_against
        self.data = FakeData(symbols, today or dt.datetime.now(ET).date(), news_every, curve)
        self.fail_every = fail_every
        self._answered = 0
        # A plan's limits on aggregates: history older than ``history_days`` before today,
        # and the session ``not_yet`` (today's, before its end of day), answer 403.
        self.history_days = history_days
        self.not_yet = not_yet
        self.page_size = page_size
        self.missing = set(missing)
        self.not_entitled = set(not_entitled)
        self.window = SlidingWindow(rate_limit_per_min) if rate_limit_per_min else None
        self.rate_limit_retry_after = rate_limit_retry_after
        self.rejected_by_limit = 0
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._failures: list[_Failure] = []
        self._served: dict[tuple[str, str], dict[object, dict]] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> FakeMassive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> FakeMassive:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fake-massive", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---- inspection ---------------------------------------------------------------------

    @property
    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self._seen)

    def count(self, prefix: str = "/") -> int:
        """Requests whose path starts with ``prefix``."""
        return sum(1 for s in self.requests if s.path.startswith(prefix))

    def counts(self) -> Counter[str]:
        return Counter(s.path for s in self.requests)

    def statuses(self) -> Counter[int]:
        return Counter(s.status for s in self.requests)

    @property
    def key_in_url(self) -> bool:
        return any(self.api_key in s.target for s in self.requests)

    def served_rows(self, symbol: str, dataset: str) -> list[dict]:
        """Rows served so far for a symbol, once each, in API shape.

        ``dataset`` is the lake name: bars (also option bars under the O: ticker), dividends,
        splits, earnings, news, options_iv, option_contracts.
        """
        with self._lock:
            return list(self._served.get((symbol, dataset), {}).values())

    def fail(self, prefix: str, nth: int = 1, status: int = 500, *,
             retry_after: str | None = None, body: bytes | None = None,
             content_type: str = "application/json", headers: dict[str, str] | None = None,
             reason: str | None = None) -> None:
        """Answer the ``nth`` request whose path starts with ``prefix`` with ``status``."""
        with self._lock:
            self._failures.append(_Failure(prefix, nth, status, retry_after, body, content_type,
                                           dict(headers or {}), reason))

    # ---- serving ------------------------------------------------------------------------

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self._seen.append(seen)

    def _serve_rows(self, symbol: str, dataset: str, rows: list[dict], key: str) -> None:
        with self._lock:
            store = self._served.setdefault((symbol, dataset), {})
            for r in rows:
                k = json.dumps(r.get(key) if key else r, sort_keys=True, default=str)
                store.setdefault(k, r)

    def _injected(self, path: str) -> _Reply | None:
        due = None
        with self._lock:
            for f in self._failures:  # every matching rule counts every request
                if path.startswith(f.prefix):
                    f.seen += 1
                    if f.seen == f.nth and due is None:
                        due = f
        if due is None:
            return None
        headers = {"Retry-After": due.retry_after} if due.retry_after else {}
        headers.update(due.headers)
        if due.body is not None:
            return _Reply(due.status, headers=headers, raw=due.body,
                          content_type=due.content_type, reason=due.reason)
        return _Reply(due.status, _error_body(due.status), headers, reason=due.reason)

    def handle(self, target: str, headers: dict[str, str]) -> _Reply:
        parts = urlsplit(target)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        auth = headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}" and query.get("apiKey") != self.api_key:
            text = "API Key was not provided" if not auth and "apiKey" not in query \
                else "Unknown API Key"
            return _Reply(401, {"status": "ERROR", "request_id": _rid(), "error": text})
        query.pop("apiKey", None)
        if self.window is not None and not self.window.admit():
            with self._lock:
                self.rejected_by_limit += 1
            hdrs = {}
            if self.rate_limit_retry_after:
                hdrs["Retry-After"] = str(max(1, math.ceil(self.window.wait())))
            return _Reply(429, {"status": "ERROR", "request_id": _rid(),
                                "error": RATE_LIMIT_TEXT}, hdrs)
        injected = self._injected(path)
        if injected is not None:
            return injected
        if self.fail_every:
            with self._lock:
                self._answered += 1
                nth = self._answered
            if nth % self.fail_every == 0:
                return _Reply(500, _error_body(500))
        if any(path.startswith(p) for p in self.missing):
            return _Reply(404, _error_body(404))
        if any(path.startswith(p) for p in self.not_entitled):
            return _Reply(403, _error_body(403))
        if "cursor" in query:
            if len(query) > 1:
                return _Reply(400, {"status": "ERROR", "request_id": _rid(),
                                    "error": "a cursor request takes no other parameters"})
            try:
                state = json.loads(base64.urlsafe_b64decode(query["cursor"]))
                query, offset = state["q"], int(state["o"])
            except (ValueError, KeyError):
                return _Reply(400, {"status": "ERROR", "request_id": _rid(),
                                    "error": "bad cursor"})
        else:
            offset = 0
        return self._route(path, query, offset)

    def _route(self, path: str, q: dict[str, str], offset: int) -> _Reply:
        seg = path.strip("/").split("/")
        d = self.data
        if path == "/v1/marketstatus/now":
            return _Reply(200, {
                "market": "closed", "serverTime": dt.datetime.now(ET).isoformat(timespec="seconds"),
                "earlyHours": False, "afterHours": False,
                "exchanges": {"nasdaq": "closed", "nyse": "closed", "otc": "closed"},
                "currencies": {"fx": "open", "crypto": "open"}})
        if len(seg) == 4 and seg[:3] == ["v3", "reference", "tickers"]:
            details = d.ticker_details(seg[3])
            if details is None:
                return _Reply(404, {"status": "NOT_FOUND", "request_id": _rid(),
                                    "message": "Ticker not found."})
            return _Reply(200, {"status": "OK", "request_id": _rid(), "results": details})
        if len(seg) == 5 and seg[:3] == ["vX", "reference", "tickers"] and seg[4] == "events":
            events = d.ticker_events(seg[3])
            if events is None:
                return _Reply(404, _error_body(404))
            return _Reply(200, {"status": "OK", "request_id": _rid(), "results": events})
        if len(seg) == 9 and seg[:3] == ["v2", "aggs", "ticker"] and seg[4] == "range":
            ticker, mult, span = seg[3], int(seg[5]), seg[6]
            start, end = dt.date.fromisoformat(seg[7]), dt.date.fromisoformat(seg[8])
            limited = self._plan_limit(start, end)
            if limited is not None:
                return limited
            rows = d.aggs(ticker, mult, span, start, end)
            if q.get("sort") == "desc":
                rows.reverse()
            reply = self._page(path, q, offset, rows, int(q.get("limit", 5000)),
                               ticker, "bars", "t", aggs=True)
            reply.payload.update({"ticker": ticker, "adjusted": q.get("adjusted") != "false"})
            if ticker.startswith("I:"):  # the spec's I:NDX example: count, no resultsCount
                reply.payload["count"] = reply.payload.pop("resultsCount")
                del reply.payload["adjusted"]
            return reply
        if len(seg) == 8 and seg[:3] == ["v2", "aggs", "grouped"]:
            day = dt.date.fromisoformat(seg[7])
            limited = self._plan_limit(day, day)
            if limited is not None:
                return limited
            rows = d.grouped(day, seg[6])
            for r in rows:
                self._serve_rows(r["T"], "bars", [r], "t")
            body = {"status": "OK", "request_id": _rid(), "adjusted": True,
                    "queryCount": len(rows), "resultsCount": len(rows)}
            if rows:
                body["results"] = rows
            return _Reply(200, body)
        if path in ("/stocks/v1/dividends", "/v3/reference/dividends"):
            tickers = [q["ticker"]] if "ticker" in q else d.symbols
            rows = [r for t in tickers for r in d.dividends(t)
                    if _in_range(r["ex_dividend_date"], q, "ex_dividend_date")]
            if "ticker" not in q:
                rows.sort(key=lambda r: (r["ex_dividend_date"], r["ticker"]))
            if path.startswith("/v3"):
                rows = [_v3_dividend(r) for r in rows]
            return self._page(path, q, offset, rows, int(q.get("limit", 100)),
                              q.get("ticker", ""), "dividends", "id")
        if path in ("/stocks/v1/splits", "/v3/reference/splits"):
            tickers = [q["ticker"]] if "ticker" in q else d.symbols
            rows = [r for t in tickers for r in d.splits(t)
                    if _in_range(r["execution_date"], q, "execution_date")]
            if "ticker" not in q:
                rows.sort(key=lambda r: (r["execution_date"], r["ticker"]))
            if path.startswith("/v3"):
                rows = [{k: r[k] for k in ("id", "ticker", "execution_date", "split_from",
                                           "split_to")} for r in rows]
            return self._page(path, q, offset, rows, int(q.get("limit", 100)),
                              q.get("ticker", ""), "splits", "id")
        if path == "/stocks/financials/v1/income-statements":
            tickers = [q["tickers"]] if "tickers" in q else d.symbols
            rows = [r for t in tickers for r in d.income(t)
                    if _in_range(r["filing_date"], q, "filing_date")]
            if "tickers" not in q:
                rows.sort(key=lambda r: (r["filing_date"], r["tickers"][0]))
            return self._page(path, q, offset, rows, int(q.get("limit", 100)),
                              q.get("tickers", ""), "earnings", "period_end")
        if path == "/vX/reference/financials":
            tickers = [q["ticker"]] if "ticker" in q else d.symbols
            rows = [r for t in tickers for r in d.financials_vx(t)
                    if _in_range(r["filing_date"], q, "filing_date")]
            if "ticker" not in q:
                rows.sort(key=lambda r: (r["filing_date"], r["tickers"][0]))
            return self._page(path, q, offset, rows, min(int(q.get("limit", 10)), 100),
                              q.get("ticker", ""), "earnings", "end_date")
        if path == "/v2/reference/news":
            sym = q.get("ticker", "")
            lo = dt.date.fromisoformat((q.get("published_utc.gte") or "2015-01-01")[:10])
            hi = dt.date.fromisoformat((q.get("published_utc.lte") or d.today.isoformat())[:10])
            found = d.news(sym, lo, hi) if sym else d.market_news(lo, hi)
            rows = [r for r in found if _in_range(r["published_utc"], q, "published_utc")]
            if q.get("order") == "desc":
                rows.reverse()
            reply = self._page(path, q, offset, rows, min(int(q.get("limit", 10)), 1000),
                               sym, "news", "id")
            reply.payload["count"] = len(reply.payload.get("results", []))
            return reply
        if len(seg) == 4 and seg[:3] == ["v3", "snapshot", "options"]:
            rows = d.chain(seg[3]) if seg[3] in d.symbols else []
            rows = [r for r in rows if _in_range(r["details"]["expiration_date"], q,
                                                 "expiration_date")
                    and _in_number_range(r["details"]["strike_price"], q, "strike_price")]
            return self._page(path, q, offset, rows, min(int(q.get("limit", 10)), 250),
                              seg[3], "options_iv", "details")
        if path == "/v3/reference/options/contracts":
            und = q.get("underlying_ticker", "")
            as_of = dt.date.fromisoformat(q.get("as_of") or d.today.isoformat())
            expired = q.get("expired", "false") == "true"
            judged = as_of if self.expired_against == "as_of" else d.today
            rows = [r for r in d.contracts(und, as_of)
                    if (r["expiration_date"] < judged.isoformat()) == expired
                    and _in_range(r["expiration_date"], q, "expiration_date")
                    and _in_number_range(r["strike_price"], q, "strike_price")]
            return self._page(path, q, offset, rows, min(int(q.get("limit", 10)), 1000),
                              und, "option_contracts", "ticker")
        if path == "/fed/v1/treasury-yields":
            lo = dt.date.fromisoformat(q.get("date.gte") or "2000-01-01")
            hi = min(dt.date.fromisoformat(q.get("date.lte") or d.today.isoformat()), d.today)
            days = [lo + dt.timedelta(days=i) for i in range((hi - lo).days + 1)]
            rows = [r for day in days if (r := d.treasury(day)) is not None
                    and _in_range(r["date"], q, "date")]
            if q.get("sort") == "date.desc":
                rows.reverse()
            # ``page_size`` models the row caps of the other endpoints; the curve is served
            # in pages of what was asked (up to 50,000 dates), so a test with small pages
            # does not walk 25 years of curve ten dates at a time.
            reply = self._page(path, q, offset, rows, min(int(q.get("limit", 100)), 50000),
                               "UST", "rates", "date", capped=False)
            reply.payload["request_id"] = 1  # the spec example's request_id is a number
            return reply
        return _Reply(404, _error_body(404))

    def _plan_limit(self, start: dt.date, end: dt.date) -> _Reply | None:
        if self.history_days is not None and \
                start < self.data.today - dt.timedelta(days=self.history_days):
            return _Reply(403, {"status": "NOT_AUTHORIZED", "request_id": _rid(),
                                "message": HISTORY_LIMIT_TEXT})
        if self.not_yet is not None and start <= self.not_yet <= end:
            return _Reply(403, {"status": "NOT_AUTHORIZED", "request_id": _rid(),
                                "message": TODAY_TEXT})
        return None

    def _page(self, path: str, q: dict[str, str], offset: int, rows: list[dict], limit: int,
              symbol: str, dataset: str, key: str, aggs: bool = False,
              capped: bool = True) -> _Reply:
        size = max(1, min(limit, (self.page_size if capped else None) or limit))
        page = rows[offset:offset + size]
        if symbol:
            self._serve_rows(symbol, dataset, page, key)
        else:  # a market-wide page: each row is served for the tickers it is about
            for r in page:
                about = r.get("tickers") or [r.get("ticker")]
                for t in about:
                    if isinstance(t, str):
                        self._serve_rows(t, dataset, [r], key)
        body: dict = {"status": "OK", "request_id": _rid()}
        if aggs:
            body.update(queryCount=len(page), resultsCount=len(page))
        if page or not aggs:
            body["results"] = page
        if offset + size < len(rows):
            cursor = base64.urlsafe_b64encode(
                json.dumps({"o": offset + size, "q": q}).encode()
            ).decode()
            body["next_url"] = f"{self.base_url}{path}?cursor={cursor}"
        return _Reply(200, body)


def _rid() -> str:
    return uuid.uuid4().hex


def _error_body(status: int) -> dict:
    if status == 403:
        return {"status": "NOT_AUTHORIZED", "request_id": _rid(),
                "message": "You are not entitled to this data. Please upgrade your plan at "
                           "https://massive.com/pricing"}
    if status == 404:
        return {"status": "NOT_FOUND", "request_id": _rid(), "message": "Data not found."}
    if status == 429:
        return {"status": "ERROR", "request_id": _rid(), "error": RATE_LIMIT_TEXT}
    return {"status": "ERROR", "request_id": _rid(), "error": f"fake failure {status}"}


def _v3_dividend(row: dict) -> dict:
    keep = ("id", "ticker", "cash_amount", "currency", "declaration_date", "ex_dividend_date",
            "record_date", "pay_date", "frequency")
    return {**{k: row[k] for k in keep}, "dividend_type": "CD"}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeMassive
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out in separate writes

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        fake = self.owner
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = fake.handle(self.path, headers)
        except Exception as exc:  # a bug in the fake must still answer, loudly
            reply = _Reply(500, {"status": "ERROR", "request_id": _rid(),
                                 "error": f"fake crashed: {type(exc).__name__}: {exc}"})
        raw = reply.raw if reply.raw is not None else json.dumps(reply.payload).encode()
        fake._record(Seen(urlsplit(self.path).path, urlsplit(self.path).query, reply.status,
                          time.monotonic(), self.path))
        self.send_response(reply.status, reply.reason)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # quiet: tests read fake.requests instead
