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

Where it lives: ``randomness`` (the hash and its draws), ``profiles`` (the time axis, each
symbol's profile, session indexes), ``prices`` (the price path, daily and intraday bars),
``events`` (dividends, earnings, news), ``options`` (chains, the curve, contract bars); this
module is the provider over them.

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
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import polars as pl

from enrich import calendars
from enrich.errors import NotFoundError, ProviderError, TransientError
from enrich.identity import TickerReference
from enrich.providers.base import OPTION_CONTRACTS, MarketRequest, ProbeResult
from enrich.providers.retry import NO_RETRY, RequestLedger, RequestStats, RetryPolicy
from enrich.providers.sample.events import _dividend_frame, _earnings_frame, _news_frame
from enrich.providers.sample.options import _chain_frame, _curve, _option_bars_frame
from enrich.providers.sample.prices import _bars_frame, _daily, _dates, _frame, _intraday, _rebase
from enrich.providers.sample.profiles import (
    _OCC_ROOTS,
    EPOCH,
    LAST_DAY,
    TIMEFRAMES,
    _as_traded,
    _day_idx,
    _idx_of,
    _Profile,
    _profile,
    _reference,
    _relabel,
    _session_start_us,
)
from enrich.providers.sample.randomness import _FAIL, _stable_key, _uniform
from enrich.quant import rates
from enrich.quant.occ import format_occ, parse_occ
from enrich.schemas import BARS, DIVIDENDS, EARNINGS, NEWS, OPTIONS_IV, RATES, SPLITS
from enrich.symbols import validate_symbol

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
        return _latest_session(cal, self._now())

    # -- bars

    def bars(self, symbol: str, timeframe: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Bars of the sessions in [start, end] up to the latest completed session,
        split-adjusted as of the effective end (``adjusted_asof``)."""
        return self._bars(symbol, timeframe, start, end)

    def _bars(self, symbol: str, timeframe: str, start: dt.date, end: dt.date,
              only: tuple[dt.date, ...] | None = None) -> pl.DataFrame:
        """``bars``, keeping only the sessions in ``only`` when given (grouped daily bars:
        each row depends on its own session alone, so the rest are never computed)."""
        sym = self._begin("bars", symbol)
        if timeframe not in TIMEFRAMES:
            raise ProviderError(
                f"unsupported timeframe {timeframe!r}: use one of {', '.join(TIMEFRAMES)}",
                provider=self.name, endpoint="bars")
        eff_end = min(end, self._latest(_profile(sym).calendar))
        pieces = _as_traded(sym, start, eff_end)
        if len(pieces) == 1 and pieces[0][0] == sym:
            return self._bars_of(sym, timeframe, start, eff_end, only=only)
        return _relabel([self._bars_of(sec, timeframe, a, z, eff_end, only)
                         for sec, a, z in pieces], sym, BARS.empty())

    def _bars_of(self, security: str, timeframe: str, start: dt.date, end: dt.date,
                 asof: dt.date | None = None,
                 only: tuple[dt.date, ...] | None = None) -> pl.DataFrame:
        """The bars of ``security`` on the sessions in [start, end] (``end`` at most the
        latest completed session; those in ``only`` if given), on the share basis of
        ``asof`` (default ``end``)."""
        p = _profile(security)
        asof = asof or end
        sess = calendars.session_array(p.calendar, max(start, EPOCH), end)
        if only is not None:
            wanted = set(only)
            sess = sess[[d in wanted for d in sess.tolist()]]
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
        return _dividend_frame(_profile(security), _day_idx(start), _day_idx(end),
                               _day_idx(self._latest("XNYS")))

    def earnings(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Quarterly results with filing_date in [start, end] that are filed by now."""
        sym = self._begin("earnings", symbol)
        pieces = _as_traded(sym, start, end)
        frames = [self._earnings_of(sec, a, z) for sec, a, z in pieces]
        if len(pieces) == 1 and pieces[0][0] == sym:
            return frames[0]
        return _relabel(frames, sym, EARNINGS.empty())

    def _earnings_of(self, security: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        return _earnings_frame(_profile(security), _day_idx(start),
                               _day_idx(min(end, self._latest("XNYS"))))

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

    def reference_requests(self, asset_class: str) -> int:
        return 1

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
            return p._bars(symbol, "1d", r.start, r.end, r.sessions or None)
        call = {"dividends": p.dividends, "splits": p.splits, "earnings": p.earnings,
                "news": p.news}[r.dataset]
        return call(symbol, r.start, r.end)


@functools.lru_cache(maxsize=64)
def _latest_session(cal: str, now: dt.datetime) -> dt.date:
    """The latest completed session at ``now``, within the generated history (a fixed clock,
    as a run's, asks the same for every symbol and dataset)."""
    return min(calendars.latest_session(cal, now), LAST_DAY)


@functools.lru_cache(maxsize=8)
def _quiet_provider(factory: Callable[..., SampleProvider], now: dt.datetime) -> SampleProvider:
    return factory(clock=lambda: now)


__all__ = ["SampleProvider"]
