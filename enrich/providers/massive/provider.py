"""Massive (formerly Polygon.io) over httpx.

Each method builds a query, fetches raw JSON through one request path (the transport, at the
end of the class), and transforms it into a frame in the lake schema: rows are parsed one by
one in ``enrich.providers.massive.parse``, parsed rows become each symbol's frame in
``enrich.providers.massive.frames``. Endpoint facts: ``/work/shared/reference/massive-rest-api.md``.

The API key travels only in the ``Authorization: Bearer`` header: never in a URL, a log line,
an error message or a repr. Every HTTP request passes the rate limiter first.

Errors are translated once, in ``_send`` / ``_decode``, into ``enrich.errors``:

    401                                   AuthError             (check MASSIVE_API_KEY)
    403, or a body with NOT_AUTHORIZED    NotEntitledError      (the plan does not include it)
      "today's data before end of day"    NotYetAvailableError  (due: asked after midnight ET)
      "doesn't include … data timeframe"  HistoryLimitError     (beyond the plan's history)
    404                                   NotFoundError
    403 or 404 whose body is not JSON     ProviderError         (a proxy, a firewall, or
                                                                 MASSIVE_BASE_URL elsewhere)
    429                                   RateLimitedError      (retry_after from Retry-After;
                                                                 the shared limiter holds)
    408, 499, 5xx, timeouts, transport    TransientError
    200 but not JSON / wrong envelope     MalformedPayloadError (ticker details without
                                                                 their results object too)
    any other status                      ProviderError
    rows that do not fit the schema       ValidationError       (nothing partial is returned)

Retries are per request: ``_get`` runs each request (a first page, or one ``next_url``) under
the provider's ``RetryPolicy``, so a 429 or 5xx on page k retries page k, never page 1; every
attempt and wait is recorded in the per-thread ledger (``take_requests``). ``next_url`` pages
are requested as given, on the configured host (the cursor encodes the query).

Universe-wide requests (``market_rows``): grouped daily bars per session and market, and the
market-wide dividends, splits, income statements and news for a date window, filtered to the
requested symbols *before* rows are parsed (a bad row of a ticker nobody follows never refuses
the payload), then transformed per symbol by the same code as the per-symbol calls.
"""

from __future__ import annotations

import copy
import datetime as dt
import email.utils
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import quote, unquote_plus, urlsplit
from zoneinfo import ZoneInfo

import httpx
import polars as pl

from enrich import conventions
from enrich.config import DEFAULT_BASE_URL, Settings, host_of
from enrich.errors import (
    AuthError,
    ConfigError,
    HistoryLimitError,
    InvalidSymbolError,
    MalformedPayloadError,
    NotEntitledError,
    NotFoundError,
    NotYetAvailableError,
    ProviderError,
    ProviderUnreachableError,
    RateLimitedError,
    TransientError,
    ValidationError,
)
from enrich.identity import TickerChange, TickerReference
from enrich.providers.base import OPTION_CONTRACTS, MarketRequest, ProbeResult, estimate_pages
from enrich.providers.massive.endpoints import (
    DIVIDENDS_V1,
    ET,
    INCOME_V1,
    SOURCES,
    SPLITS_V1,
    Listing,
)
from enrich.providers.massive.frames import (
    MassiveMarketRows,
    _apart,
    _by_ticker,
    _dividends_frame,
    _earnings_frame,
    _news_frame,
    _splits_frame,
)
from enrich.providers.massive.parse import (
    _BAR_ROW_SCHEMA,
    _CHAIN_ROW_SCHEMA,
    _CONTRACT_ROW_SCHEMA,
    CONTRACT_TERMS,
    MAX_CAUSES,
    _bar_frame,
    _bar_row,
    _chain_row,
    _Check,
    _contract_row,
    _obj,
    _off_calendar,
    _req_str,
    _ticker_change,
    _ticker_details,
    _treasury_row,
    _unnamed_change,
)
from enrich.providers.ratelimit import MAX_HOLD_S, PLAN_WINDOW_S, RateLimiter, shared_limiter
from enrich.providers.retry import NO_RETRY, RequestLedger, RequestStats, RetryPolicy
from enrich.quant.occ import PREFIX as OCC_PREFIX
from enrich.quant.occ import parse_occ
from enrich.quant.rates import TENORS
from enrich.redact import redact, register
from enrich.schemas import BARS, DIVIDENDS, EARNINGS, NEWS, OPTIONS_IV, RATES, SPLITS, conform

log = logging.getLogger(__name__)


class _ErrorContext(TypedDict, total=False):
    """The context every ``ProviderError`` raised here carries (never the key)."""

    provider: str
    endpoint: str
    status: int
    request_id: str | None

PROVIDER = "massive"

# Path templates double as the ``endpoint`` recorded on errors: no values, no query.
AGGS = "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}"
GROUPED = "/v2/aggs/grouped/locale/us/market/stocks/{date}"
GROUPED_GLOBAL = "/v2/aggs/grouped/locale/global/market/{market}/{date}"
# Grouped daily per market: path, and the zone whose midnight starts the session's bar (the
# per-ticker daily bars' ``t``): New York for US stocks, UTC for crypto and forex.
GROUPED_MARKETS: dict[str, tuple[str, str, ZoneInfo | dt.timezone]] = {
    "stocks": (GROUPED, "/v2/aggs/grouped/locale/us/market/stocks/", ET),
    "crypto": (GROUPED_GLOBAL, "/v2/aggs/grouped/locale/global/market/crypto/", dt.UTC),
    "fx": (GROUPED_GLOBAL, "/v2/aggs/grouped/locale/global/market/fx/", dt.UTC),
}
CHAIN = "/v3/snapshot/options/{underlying}"
CONTRACTS = "/v3/reference/options/contracts"
TREASURY = "/fed/v1/treasury-yields"
MARKET_STATUS = "/v1/marketstatus/now"
TICKER_DETAILS = "/v3/reference/tickers/{ticker}"
TICKER_EVENTS = "/vX/reference/tickers/{id}/events"
# The API's two names (reference §10): a next_url naming either is followed on the base URL.
API_HOSTS = frozenset({"api.massive.com", "api.polygon.io"})
# Markets whose entities change tickers (the events endpoint is about companies).
_EVENT_MARKETS = {"stocks", "otc"}

TIMEFRAMES: dict[str, tuple[int, str]] = {"1d": (1, "day"), "1h": (1, "hour"), "5m": (5, "minute")}
DEFAULT_MAX_PAGES = 50
MARKET_MAX_PAGES = 1000  # a market-wide window pages through every ticker's rows
# Rough rows per calendar day of the whole US market, to estimate what a market-wide window
# costs before asking (the plan's budget; the run counts what it really made).
MARKET_ROWS_PER_DAY = {"dividends": 110.0, "splits": 2.0, "earnings": 70.0, "news": 1500.0}
MAX_ERROR_TEXT = 300  # characters of a server's error text kept in a message (after scrubbing)
MAX_REQUEST_ID = 100


@dataclass(frozen=True)
class ChainFilters:
    """What a chain snapshot asks for (``ENRICH_OPTIONS_MAX_DAYS``, ``…_MONEYNESS``,
    ``…_MAX_PAGES``): the pages an underlying costs stay bounded."""

    max_days: int = 120
    moneyness: float = 0.3
    max_pages: int = 8


def build_client(timeout: float = 30.0) -> httpx.Client:
    """An httpx client with bounded timeouts and keep-alive, for ``from_settings``."""
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=10.0),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10, keepalive_expiry=30),
        headers={"Accept": "application/json", "User-Agent": "enrich (httpx)"},
        follow_redirects=False,
    )


def parse_retry_after(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP-date)."""
    if not value or not value.strip():
        return None
    raw = value.strip()
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


class MassiveProvider:
    name = "massive"
    is_demo = False
    rate_limited = True

    def __init__(
        self,
        client: httpx.Client,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        limiter: RateLimiter | None = None,
        priority: int = 0,
        *,
        max_pages: int = DEFAULT_MAX_PAGES,
        today: Callable[[], dt.date] | None = None,
        owns_client: bool = False,
        retry: RetryPolicy | None = None,
        chain: ChainFilters | None = None,
    ):
        if not api_key:
            raise ConfigError("the massive provider needs MASSIVE_API_KEY")
        if max_pages < 1:
            raise ValueError("max_pages must be at least 1")
        self._client = client
        self._key = api_key
        register(api_key)  # every error built from now on has it scrubbed (enrich.redact)
        self._base_url = base_url.rstrip("/")
        self._base = httpx.URL(self._base_url)  # next_url pages are asked of its origin
        self._limiter = limiter
        self._priority = priority
        self._max_pages = max_pages
        self._today = today or (lambda: dt.datetime.now(ET).date())
        self._owns_client = owns_client
        self._retry = retry or NO_RETRY
        self._chain = chain or ChainFilters()
        self._ledger = RequestLedger()
        # Found once an answer shows it (``option_contracts``): ``expired`` is judged against
        # ``as_of``, and a past session needs one listing request, not two.
        self._expired_vs_as_of = False
        # Endpoints that answered 404/403 once: go straight to the fallback afterwards.
        self._skip: dict[str, ProviderError] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, client: httpx.Client | None = None, **kw: Any
    ) -> MassiveProvider:
        """Build from settings; the limiter is the one of the data directory, shared by every
        thread and every process using it (its schedule is under ``<data_dir>/locks/``)."""
        if not settings.api_key:
            raise ConfigError(
                "ENRICH_PROVIDER=massive needs MASSIVE_API_KEY (or POLYGON_API_KEY)"
            )
        if "limiter" not in kw:
            kw["limiter"] = shared_limiter(settings.data_dir, settings.rate_limit_per_min)
        kw.setdefault("chain", ChainFilters(settings.options_max_days, settings.options_moneyness,
                                            settings.options_max_pages))
        owns = client is None
        return cls(
            client if client is not None else build_client(),
            settings.api_key,
            settings.base_url,
            owns_client=owns,
            **kw,
        )

    def with_priority(self, priority: int) -> MassiveProvider:
        """The same provider (client, limiter, key, ledger, fallbacks) queuing at another
        priority; closing it never closes the client."""
        clone = copy.copy(self)
        clone._priority = priority
        clone._owns_client = False
        return clone

    def process_factory(self) -> None:
        return None  # rows come over the network: threads wait on it together

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> MassiveProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # The host only: a base URL's user-info may hold a password.
        return f"MassiveProvider(host={host_of(self._base_url)!r}, priority={self._priority})"

    def take_requests(self) -> RequestStats:
        """HTTP requests (and retries) made by the calling thread since the last take."""
        return self._ledger.take()

    def take_request_count(self) -> int:
        """HTTP requests made by the calling thread since the last call; resets the count."""
        return self.take_requests().requests

    # ---- datasets -------------------------------------------------------------------------

    def bars(self, symbol: str, timeframe: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Split-adjusted bars. ``session`` is the date of ``t`` in the zone of the ticker's
        class (``enrich.conventions``: New York for stocks and indices, UTC for crypto and
        forex); a daily bar's ``ts`` is that session's midnight there. Index bars carry no
        volume (null); a forex row on a Saturday is no session and is left out (a note says
        so)."""
        if timeframe not in TIMEFRAMES:
            raise ValueError(f"unknown timeframe {timeframe!r}; use one of {sorted(TIMEFRAMES)}")
        return self._aggs(symbol, timeframe, start, end, f"{symbol} {timeframe} bars")

    def option_bars(self, contract: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        if not contract.startswith(OCC_PREFIX):
            raise InvalidSymbolError(
                f"invalid option contract {contract!r}: expected O:ROOT+YYMMDD+C|P+strike, "
                "e.g. O:AAPL250117C00150000"
            )
        parse_occ(contract)  # strict: raises InvalidSymbolError saying what is wrong
        return self._aggs(contract, "1d", start, end, f"{contract} option bars")

    def _aggs(
        self, ticker: str, timeframe: str, start: dt.date, end: dt.date, subject: str
    ) -> pl.DataFrame:
        multiplier, timespan = TIMEFRAMES[timeframe]
        path = (
            f"/v2/aggs/ticker/{_seg(ticker)}/range/{multiplier}/{timespan}/"
            f"{start.isoformat()}/{end.isoformat()}"
        )
        conv = conventions.of_symbol(ticker)
        params: dict[str, Any] = {"adjusted": "true", "sort": "asc", "limit": 50000}
        if conv.asset_class == "indices":
            # The indices path takes no ``adjusted`` (an index has no splits; the spec lists
            # only sort and limit): only what the endpoint knows is sent.
            del params["adjusted"]
        pages = None
        if timespan != "day":
            # ``limit`` counts the minute aggregates scanned (reference §1): ten years of a
            # crypto pair's hours are ~105 pages of 50,000 minutes, past the default bound.
            # The bound follows the window, so it still stops a listing that never ends.
            minutes = ((end - start).days + 1) * 24 * 60
            pages = max(self._max_pages, -(-minutes // params["limit"]) + 1)
        rows = self._collect(AGGS, path, params, subject, pages)
        check = _Check(subject, len(rows))
        parsed = [r for i, raw in enumerate(rows)
                  if (r := check.row(i, raw, _bar_row, conv.volume_expected))]
        check.done()
        frame = _bar_frame(parsed, conv, daily=timeframe == "1d")
        frame = frame.with_columns(
            symbol=pl.lit(ticker),
            timeframe=pl.lit(timeframe),
            adjusted_asof=pl.lit(self._today(), dtype=pl.Date),
        ).filter(pl.col("session").is_between(start, end))
        off = _off_calendar(frame, conv.calendar)
        if off is not None and off.any():
            days = sorted(set(frame.filter(off)["session"].to_list()))
            self._ledger.note(f"{subject}: left out {int(off.sum())} rows on "
                              f"{', '.join(d.isoformat() for d in days[:3])}"
                              f"{' …' if len(days) > 3 else ''}: no {conv.calendar} session")
            frame = frame.filter(~off)
        return conform(frame.unique("ts", keep="first").sort("ts"), BARS)

    def grouped_daily(self, session: dt.date, market: str = "stocks",
                      symbols: Iterable[str] | None = None, *,
                      errors: dict[str, Exception] | None = None) -> pl.DataFrame:
        """Daily bars of every ticker of ``market`` (stocks, crypto, fx) for one session, in
        one request, in the BARS schema; only ``symbols`` when given (filtered before parsing).
        ``errors``: when given, a ticker whose row does not fit is left out and its
        ValidationError kept there under its ticker, instead of refusing the whole answer.

        The rows are keyed by the requested date, never by ``t``: grouped rows stamp ``t`` at
        the close (stocks) or the end of the UTC day (fx), per-ticker daily bars at the
        session's midnight; ``ts`` is set to that midnight so both land on the same lake key.
        """
        if market not in GROUPED_MARKETS:
            raise ValueError(f"no grouped daily bars for market {market!r}")
        endpoint, prefix, zone = GROUPED_MARKETS[market]
        conv = conventions.convention(market)
        subject = f"grouped daily {market} bars {session.isoformat()}"
        # OTC stocks are followed as stocks, but the API leaves them out unless asked.
        params = {"adjusted": "true", **({"include_otc": "true"} if market == "stocks" else {})}
        rows = self._collect(endpoint, prefix + session.isoformat(), params, subject)
        if symbols is not None:
            wanted = set(symbols)
            rows = [r for r in rows if isinstance(r, dict) and r.get("T") in wanted]
        check = _Check(subject, len(rows))

        def parse(raw: dict) -> dict:
            row = _bar_row(raw, conv.volume_expected)
            row["symbol"] = _req_str(raw, "T")
            return row

        parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, parse))]
        if errors is not None and check.rejected:
            # Each ticker's rows again, on their own: only the ones that do not fit fail.
            parsed = []
            for raw in rows:
                own = _Check(f"{raw.get('T')} 1d bars ({subject})", 1)
                row = own.row(0, raw, parse)
                try:
                    own.done()
                except ValidationError as exc:
                    errors.setdefault(str(raw.get("T")), exc)
                    continue
                if row is not None:
                    parsed.append(row)
        else:
            check.done()
        midnight = dt.datetime.combine(session, dt.time(), zone).astimezone(dt.UTC)
        frame = pl.DataFrame(
            parsed,
            schema={"symbol": pl.String, **_BAR_ROW_SCHEMA},
        ).with_columns(
            ts=pl.lit(midnight, dtype=pl.Datetime("us", "UTC")),
            session=pl.lit(session, dtype=pl.Date),
            timeframe=pl.lit("1d"),
            adjusted_asof=pl.lit(self._today(), dtype=pl.Date),
        )
        return conform(frame.unique("symbol", keep="first").sort("symbol"), BARS)

    def dividends(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Cash dividends as declared (not split-adjusted), one row per ex-date."""
        subject = f"{symbol} dividends"
        rows, listing = self._listing("dividends", symbol, start, end, subject)
        return _dividends_frame(symbol, rows, listing.row_parser, start, end, subject)

    def splits(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        subject = f"{symbol} splits"
        rows, _ = self._listing("splits", symbol, start, end, subject)
        return _splits_frame(symbol, rows, start, end, subject)

    def earnings(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Quarterly income-statement figures filed in [start, end].

        ``/stocks/financials/v1`` needs an advanced plan: on 404 or 403 the deprecated
        ``/vX/reference/financials`` is tried; when both deny, NotEntitledError.
        """
        subject = f"{symbol} earnings"
        rows, listing = self._listing("earnings", symbol, start, end, subject)
        return _earnings_frame(symbol, rows, listing.row_parser, subject)

    def news(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Articles published on New York dates [start, end] (``published_utc`` stays UTC);
        sentiment is the insight whose ticker is ``symbol``."""
        subject = f"{symbol} news"
        rows, _ = self._listing("news", symbol, start, end, subject)
        return _news_frame(symbol, rows, start, end, subject, self._scrub)

    def _listing(self, dataset: str, ticker: str | None, start: dt.date, end: dt.date,
                 subject: str, max_pages: int | None = None) -> tuple[list, Listing]:
        """Every row of ``dataset`` (``endpoints.SOURCES``) for ``ticker`` (None: the whole
        market) dated in [start, end], and the listing that answered (whose row parser reads
        them): its first endpoint, or the fallback once the first refused."""
        source = SOURCES[dataset]
        first, fallback = source.first, source.fallback
        if fallback is None:
            return self._collect(first.path, first.path, first.params(ticker, start, end),
                                 subject, max_pages), first
        try:
            return self._collect_unless_skipped(
                first.path, first.params(ticker, start, end), subject, source.fallback_on,
                max_pages), first
        except source.fallback_on as refused:
            try:
                rows = self._collect(fallback.path, fallback.path,
                                     fallback.params(ticker, start, end), subject, max_pages)
            except NotFoundError:
                if source.first_if_gone:  # the older endpoint is retired: the first answer
                    raise refused from None
                raise
            return rows, fallback

    # ---- ticker reference -----------------------------------------------------------------

    def ticker_reference(self, symbol: str) -> TickerReference:
        """What Massive's reference says ``symbol`` is now (``/v3/reference/tickers/{ticker}``)
        and, for companies, the ticker changes of the entity holding it
        (``/vX/reference/tickers/{id}/events``, experimental: when it is refused or missing,
        the listing date alone bounds the history). Raises ``NotFoundError`` for a ticker the
        reference does not know (tickers are case-sensitive)."""
        subject = f"{symbol} ticker details"
        body = self._get(TICKER_DETAILS, self._base_url + f"/v3/reference/tickers/{_seg(symbol)}",
                         {}, subject)
        results = body.get("results")
        if not isinstance(results, dict):
            # An unknown ticker is a 404 (NOT_FOUND): an answer without the details object is
            # a malformed one, asked again next run — not "unknown" for a week.
            raise MalformedPayloadError(f"{subject}: the answer holds no ticker details "
                                        "(no results object)", provider=PROVIDER,
                                        endpoint=TICKER_DETAILS, status=200,
                                        request_id=_request_id(body))
        check = _Check(subject, 1)
        details = check.row(0, results, _ticker_details)
        check.done()  # raises when the row was refused
        assert details is not None
        changes: tuple[TickerChange, ...] = ()
        if details["market"] in _EVENT_MARKETS:
            changes = self._ticker_changes(details["ticker"])
        return TickerReference(**details, changes=changes, source=PROVIDER)

    def reference_requests(self, asset_class: str) -> int:
        """The ticker details, and for a company (a stock or ETF) its ticker events."""
        return 2 if asset_class in ("stocks", "etfs") else 1

    def _ticker_changes(self, ticker: str) -> tuple[TickerChange, ...]:
        subject = f"{ticker} ticker events"
        try:
            body = self._get(TICKER_EVENTS,
                             self._base_url + f"/vX/reference/tickers/{_seg(ticker)}/events",
                             {"types": "ticker_change"}, subject)
        except (NotFoundError, NotEntitledError) as exc:
            self._ledger.note(f"{subject}: {exc.message}; the listing date alone bounds the "
                              "history")
            return ()
        events = _obj(body, "results").get("events") if isinstance(body, dict) else None
        if events is None:
            return ()
        if not isinstance(events, list):
            raise MalformedPayloadError(f"{subject}: 'events' is not a list", provider=PROVIDER,
                                        endpoint=TICKER_EVENTS, status=200)
        unnamed = [e for e in events if _unnamed_change(e)]
        if unnamed:
            dates = ", ".join(f"{e.get('date')!s:.20}" for e in unnamed[:MAX_CAUSES])
            self._ledger.note(f"{subject}: left out {len(unnamed)} of {len(events)} ticker "
                              f"changes without the new ticker (dated {dates})")
            events = [e for e in events if not _unnamed_change(e)]
        check = _Check(subject, len(events))
        parsed = [r for i, raw in enumerate(events) if (r := check.row(i, raw, _ticker_change))]
        check.done()
        return tuple(sorted(parsed, key=lambda c: c.date))

    # ---- universe-wide --------------------------------------------------------------------

    def estimate_requests(self, request: MarketRequest) -> int:
        """Requests ``market_rows(request)`` should take: one per session for bars; pages of
        the endpoint in use (after any fallback) for an estimated market volume otherwise."""
        if request.dataset == "bars":
            return max(1, len(request.sessions))
        limits = {
            "dividends": 1000 if DIVIDENDS_V1 in self._skip else 5000,
            "splits": 1000 if SPLITS_V1 in self._skip else 5000,
            "earnings": 100 if INCOME_V1 in self._skip else 50000,
            "news": 1000,
        }
        days = (request.end - request.start).days + 1
        return estimate_pages(days * MARKET_ROWS_PER_DAY[request.dataset],
                              limits[request.dataset])

    def market_rows(self, request: MarketRequest) -> MassiveMarketRows:
        """One universe-wide fetch (``enrich.providers.MarketRequest``): grouped daily bars,
        one request per session; or a market-wide window of events, paginated. Rows are
        filtered to ``request.symbols`` before they are parsed, and each symbol's frame is
        built by the same transform as the per-symbol call. A symbol whose rows do not fit
        fails alone (``for_symbol`` raises its ValidationError)."""
        r, syms = request, request.symbols
        start, end = r.start, r.end
        subject = f"market-wide {r.dataset} {start.isoformat()}..{end.isoformat()}"
        if r.dataset == "bars":
            frames, pending = [], []
            errors: dict[str, Exception] = {}
            for session in r.sessions or (end,):
                try:
                    frames.append(self.grouped_daily(session, r.market, syms, errors=errors))
                except NotYetAvailableError:
                    pending.append(session)  # not served yet: due, asked again later
            bars = pl.concat(frames) if frames else BARS.empty()
            answer = MassiveMarketRows.of_frame(BARS, bars, errors)
            answer.not_yet = tuple(pending)
            return answer
        pages = max(self._max_pages, MARKET_MAX_PAGES)
        if r.dataset == "dividends":
            rows, listing = self._listing("dividends", None, start, end, subject, pages)
            return MassiveMarketRows.build(
                DIVIDENDS, _by_ticker(rows, syms, "ticker"),
                lambda sym, rs: _dividends_frame(sym, rs, listing.row_parser, start, end,
                                                 f"{sym} dividends"))
        if r.dataset == "splits":
            rows, _ = self._listing("splits", None, start, end, subject, pages)
            return MassiveMarketRows.build(
                SPLITS, _by_ticker(rows, syms, "ticker"),
                lambda sym, rs: _splits_frame(sym, rs, start, end, f"{sym} splits"))
        if r.dataset == "earnings":
            rows, listing = self._listing("earnings", None, start, end, subject, pages)
            return MassiveMarketRows.build(
                EARNINGS, _by_ticker(rows, syms, "tickers"),
                lambda sym, rs: _earnings_frame(sym, rs, listing.row_parser, f"{sym} earnings"))
        if r.dataset == "news":
            rows, _ = self._listing("news", None, start, end, subject, pages)
            return MassiveMarketRows.build(
                NEWS, _by_ticker(rows, syms, "tickers"),
                lambda sym, rs: _news_frame(sym, rs, start, end, f"{sym} news", self._scrub))
        raise ValueError(f"no universe-wide request for {r.dataset!r}")

    def option_chain(self, symbol: str, as_of: dt.date,
                     spot: float | None = None) -> pl.DataFrame:
        """Live chain snapshot for the session ``as_of``: per contract the last quote, the
        last trade (or the day's close when the plan has no trades), the day's volume, open
        interest, the contract's terms and Massive's own IV (``provider_iv``); IV and greeks
        are computed by ``enrich.quant.snapshots``.

        Capped by the chain filters (``chain_filters``): expirations from ``as_of`` up to
        ``max_days`` out and, when the underlying's ``spot`` is known, strikes within
        ``spot × (1 ± moneyness)``, sent to the API; a chain still longer than ``max_pages``
        pages is truncated (a note in the ledger says so), never failed whole."""
        subject = f"{symbol} option chain"
        path = f"/v3/snapshot/options/{_seg(symbol)}"
        f = self._chain
        params: dict[str, Any] = {
            "limit": 250, "expiration_date.gte": as_of.isoformat(),
            "expiration_date.lte": (as_of + dt.timedelta(days=f.max_days)).isoformat()}
        if spot:
            params["strike_price.gte"] = round(spot * max(1 - f.moneyness, 0.0), 4)
            params["strike_price.lte"] = round(spot * (1 + f.moneyness), 4)
        rows: list = []
        for pages, body in enumerate(self._pages(CHAIN, path, params, subject,
                                                 max_pages=10**9), start=1):
            results = body.get("results")
            if isinstance(results, list):
                rows.extend(results)
            if pages >= f.max_pages and body.get("next_url"):
                self._ledger.note(f"{subject} truncated after {pages} pages ({len(rows)} "
                                  "contracts): raise ENRICH_OPTIONS_MAX_PAGES or narrow "
                                  "ENRICH_OPTIONS_MAX_DAYS / ENRICH_OPTIONS_MONEYNESS")
                break
        check = _Check(subject, len(rows))
        parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, _chain_row))]
        check.done()
        # A contract without its terms is passed on after the others, for validation to
        # refuse it alone (``frames._apart``): a snapshot cannot be asked again later.
        frame, unusable = _apart(pl.DataFrame(parsed, schema=_CHAIN_ROW_SCHEMA),
                                 tuple(CONTRACT_TERMS))
        frame = pl.concat([
            frame.unique("contract", keep="first").sort("expiration", "strike", "contract_type"),
            unusable,
        ]).with_columns(
            symbol=pl.lit(symbol),
            as_of=pl.lit(as_of, dtype=pl.Date),
            source=pl.lit("snapshot"),
        )
        return conform(frame, OPTIONS_IV)

    def option_contracts(self, underlying: str, as_of: dt.date, *,
                         strikes: tuple[float, float] | None = None,
                         expirations: tuple[dt.date, dt.date] | None = None) -> pl.DataFrame:
        """Contracts that were listed and live on ``as_of``, with their terms.

        ``as_of`` lists the contracts as they were that day. What ``expired`` is judged
        against is not stated by the spec (reference §9): by ``as_of`` (what one report
        observed) or by today (what another project's knowledge base says). So a past session
        is asked twice, both answers merged: ``expired=false``, then ``expired=true`` for the
        expirations from ``as_of`` to yesterday; the second request is dropped for good once
        an answer shows that ``expired`` is judged against ``as_of`` (the first one lists a
        contract that has expired since). Expiration window (default: ``as_of`` to the chain
        filters' ``max_days``) and strike band are sent to the API."""
        subject = f"{underlying} option contracts"
        lo, hi = expirations or (as_of, as_of + dt.timedelta(days=self._chain.max_days))
        params: dict[str, Any] = {
            "underlying_ticker": underlying, "as_of": as_of.isoformat(),
            "expiration_date.gte": max(lo, as_of).isoformat(),
            "expiration_date.lte": hi.isoformat(), "limit": 1000}
        if strikes is not None:
            params["strike_price.gte"] = round(strikes[0], 4)
            params["strike_price.lte"] = round(strikes[1], 4)
        rows = self._collect(CONTRACTS, CONTRACTS, {**params, "expired": "false"}, subject)
        today = self._today()
        if as_of < today and not self._expired_vs_as_of:
            since = [r.get("expiration_date") for r in rows if isinstance(r, dict)]
            if any(isinstance(e, str) and e < today.isoformat() for e in since):
                self._expired_vs_as_of = True  # expired is judged against as_of
            elif max(lo, as_of) < today:
                gone = {**params, "expired": "true",
                        "expiration_date.lte": min(hi, today - dt.timedelta(days=1)).isoformat()}
                rows = rows + self._collect(CONTRACTS, CONTRACTS, gone, subject)
        check = _Check(subject, len(rows))
        parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, _contract_row))]
        check.done()
        frame, unusable = _apart(pl.DataFrame(parsed, schema=_CONTRACT_ROW_SCHEMA),
                                 tuple(CONTRACT_TERMS))
        if unusable.height:  # no lake dataset to validate it: left out here, and said so
            self._ledger.note(f"{subject}: left out {unusable.height} of {len(rows)} contracts "
                              f"without their terms ({_missing_terms(unusable)})")
        frame = (
            frame.filter(pl.col("expiration") >= as_of)
            .unique("contract", keep="first")
            .sort("expiration", "strike", "contract_type")
            .with_columns(symbol=pl.lit(underlying))
        )
        return conform(frame, OPTION_CONTRACTS)

    def treasury_yields(self, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Treasury constant-maturity yields (percent) observed on [start, end], one request
        of up to 50,000 dates (``enrich.quant.rates``; reference §10)."""
        subject = "treasury yields"
        params = {"date.gte": start.isoformat(), "date.lte": end.isoformat(),
                  "limit": 50000, "sort": "date.asc"}
        rows = self._collect(TREASURY, TREASURY, params, subject,
                             max(self._max_pages, MARKET_MAX_PAGES))
        check = _Check(subject, len(rows))
        parsed = [r for i, raw in enumerate(rows) if (r := check.row(i, raw, _treasury_row))]
        check.done()
        frame, undated = _apart(
            pl.DataFrame(parsed, schema={"date": pl.Date, **{c: pl.Float64 for c in TENORS}}),
            ("date",))  # passed on after the others, for validation to refuse them alone
        return conform(pl.concat([frame.unique("date", keep="first").sort("date"), undated])
                       .with_columns(symbol=pl.lit("UST")), RATES)

    def probe(self) -> ProbeResult:
        """One small request: is the host reachable and does it accept the key? Its latency
        is the request's own, from when it left: not the wait for the plan's rate limit
        (seconds after a run on a 5-a-minute plan)."""
        started = time.perf_counter()
        try:
            body = self._get(MARKET_STATUS, self._base_url + MARKET_STATUS, {}, "market status")
            latency = self._since_sent(started)
            if not isinstance(body, dict) or "market" not in body:
                raise MalformedPayloadError(
                    "market status without a 'market' field", provider=PROVIDER,
                    endpoint=MARKET_STATUS, status=200,
                )
        except AuthError as exc:
            return ProbeResult(False, self._since_sent(started), "invalid key", exc.message)
        except NotEntitledError as exc:
            return ProbeResult(False, self._since_sent(started), "not entitled", exc.message)
        except RateLimitedError as exc:  # it answered: reached, the key not refused
            return ProbeResult(False, self._since_sent(started), "rate limited", str(exc))
        except ProviderUnreachableError as exc:
            return ProbeResult(False, self._since_sent(started), "unreachable", str(exc))
        except ProviderError as exc:  # a 5xx, a malformed answer: reached, but no answer
            return ProbeResult(False, self._since_sent(started), "provider error", str(exc))
        return ProbeResult(True, latency, "valid", f"key accepted; market {body['market']}")

    def _since_sent(self, started: float) -> float:
        """Milliseconds since this thread's last request left (``started`` if none did)."""
        return _ms(max(started, self._ledger.last_sent_at() or started))

    # ---- transport ------------------------------------------------------------------------

    def _collect_unless_skipped(
        self, endpoint: str, params: dict, subject: str,
        fallback_on: tuple[type[ProviderError], ...],
        max_pages: int | None = None,
    ) -> list:
        """``_collect`` on an endpoint that has a fallback; remember a denial for next time."""
        earlier = self._skip.get(endpoint)
        if earlier is not None:
            raise type(earlier)(
                f"{subject}: {earlier.message.partition(': ')[2]}", provider=PROVIDER,
                endpoint=endpoint, status=earlier.status, request_id=earlier.request_id,
            )
        try:
            return self._collect(endpoint, endpoint, params, subject, max_pages)
        except fallback_on as exc:
            if isinstance(exc, HistoryLimitError):
                raise  # this window is beyond the plan, not the endpoint: ask it next time
            self._skip[endpoint] = exc
            log.info("massive %s answered %s; using its fallback from now on", endpoint,
                     exc.status)
            raise

    def _collect(self, endpoint: str, path: str, params: dict, subject: str,
                 max_pages: int | None = None) -> list:
        """Every page's ``results`` rows, in order."""
        rows: list = []
        for body in self._pages(endpoint, path, params, subject, max_pages):
            results = body.get("results")
            if results is None:  # "no data" leaves the key out
                continue
            if not isinstance(results, list):
                raise MalformedPayloadError(
                    f"{subject}: 'results' is a {type(results).__name__}, not a list",
                    provider=PROVIDER, endpoint=endpoint, status=200,
                    request_id=_request_id(body),
                )
            rows.extend(results)
        return rows

    def _pages(self, endpoint: str, path: str, params: dict, subject: str,
               max_pages: int | None = None) -> Iterator[dict]:
        limit = max_pages or self._max_pages
        body = self._get(endpoint, self._base_url + path, params, subject)
        yield body
        seen: set[str] = set()
        pages = 1
        while (next_url := body.get("next_url")) is not None:
            url = self._checked_next(next_url, endpoint, subject)
            if url is None:  # "" (the Go client's end), or a next_url naming no page
                return
            if url in seen:
                log.warning("massive %s: next_url repeated after %d pages; stopping", endpoint,
                            pages)
                # What was read is kept, but it is no complete answer for the window: a
                # noted request keeps the engine from removing stored rows it did not list.
                self._ledger.note(f"{subject}: next_url repeated after {pages} pages; the "
                                  "listing may be incomplete")
                return
            if pages >= limit:
                raise MalformedPayloadError(
                    f"{subject}: still more pages after {pages}; narrow the date range "
                    f"or raise max_pages", provider=PROVIDER, endpoint=endpoint, status=200,
                )
            seen.add(url)
            # No params: httpx would replace the query string, dropping the cursor.
            body = self._get(endpoint, url, None, subject)
            pages += 1
            yield body

    def _checked_next(self, next_url: object, endpoint: str, subject: str) -> str | None:
        """The URL to ask for the next page: ``next_url``'s path and query on the configured
        host (as the official Python client does), so the Bearer header never goes over plain
        http or to another port, and an answer naming the API's other name (``api.massive.com``
        to a client of ``api.polygon.io``) or a broken port (``:443:443``, polygon-io/issues
        #143) is still followed; any other host is refused. None when it names no page: empty
        (the Go client's end of a listing), or without a query (the spec's vX example,
        ``…/financials?``: no cursor and none of the filters)."""
        try:
            if not isinstance(next_url, str):
                raise ValueError("not a string")
            if not next_url.strip():
                return None
            parts = urlsplit(next_url.strip())
            if not parts.path.startswith("/"):
                raise ValueError("no path")
        except ValueError as exc:
            raise MalformedPayloadError(
                f"{subject}: unusable next_url ({exc})", provider=PROVIDER, endpoint=endpoint,
                status=200,
            ) from None
        host = parts.hostname
        if host is not None and host not in API_HOSTS and host != self._base.host.lower():
            raise MalformedPayloadError(
                f"{subject}: next_url points at {parts.scheme}://{host}, not the API host",
                provider=PROVIDER, endpoint=endpoint, status=200,
            )
        query = "&".join(p for p in parts.query.split("&")
                         if p and unquote_plus(p.partition("=")[0]) != "apiKey")
        if not query:
            log.warning("massive %s: next_url without a query; the listing ends there",
                        endpoint)
            return None
        prefix = self._base.raw_path.decode("ascii").rstrip("/")  # a proxy's path, if any
        path = parts.path if parts.path.startswith(prefix + "/") else prefix + parts.path
        try:
            url = self._base.copy_with(raw_path=f"{path}?{query}".encode("ascii"))
        except (UnicodeEncodeError, httpx.InvalidURL) as exc:
            raise MalformedPayloadError(
                f"{subject}: unusable next_url ({type(exc).__name__})", provider=PROVIDER,
                endpoint=endpoint, status=200,
            ) from None
        return str(url)

    def _get(self, endpoint: str, url: str, params: dict | None, subject: str) -> Any:
        """One request (under the retry policy: a failed page is retried on its own)."""
        def attempt() -> Any:
            response = self._send(endpoint, url, params, subject)
            return self._decode(response, endpoint, subject)

        return self._ledger.retrying(self._retry, endpoint, attempt)

    def _send(
        self, endpoint: str, url: str, params: dict | None, subject: str
    ) -> httpx.Response:
        if self._limiter is not None:
            self._limiter.acquire(self._priority)
        self._ledger.sent(time.perf_counter())
        headers = {"Authorization": f"Bearer {self._key}", "Accept": "application/json"}
        ctx: _ErrorContext = {"provider": PROVIDER, "endpoint": endpoint}
        try:
            if params is None:
                response = self._client.get(url, headers=headers)
            else:
                response = self._client.get(url, params=params, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError) as exc:
            self._ledger.unsent()  # nothing reached the provider: not a request of the plan
            raise ProviderUnreachableError(
                f"{subject}: cannot reach {self._base.host} ({type(exc).__name__}: "
                f"{self._scrub(str(exc))}); check the network, MASSIVE_BASE_URL or a proxy",
                **ctx,
            ) from exc
        except httpx.TimeoutException as exc:
            raise TransientError(f"{subject}: request timed out ({type(exc).__name__})",
                                 **ctx) from exc
        except httpx.TransportError as exc:
            raise TransientError(
                f"{subject}: connection failed ({type(exc).__name__}: {self._scrub(str(exc))})",
                **ctx,
            ) from exc
        except httpx.DecodingError as exc:
            raise MalformedPayloadError(f"{subject}: undecodable response body", **ctx) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"{subject}: {type(exc).__name__}", **ctx) from exc
        log.debug("massive GET %s -> %s", endpoint, response.status_code)
        return response

    def _decode(self, response: httpx.Response, endpoint: str, subject: str) -> Any:
        status = response.status_code
        try:
            body: Any = json.loads(response.content)
            json_error = None
        except (ValueError, UnicodeDecodeError) as exc:
            body, json_error = None, exc
        request_id = _clip(self._scrub(_request_id(body) or response.headers.get("x-request-id")),
                           MAX_REQUEST_ID) or None
        ctx: _ErrorContext = {"provider": PROVIDER, "endpoint": endpoint, "status": status,
                              "request_id": request_id}
        text = _clip(self._scrub(_error_text(body)), MAX_ERROR_TEXT)  # scrub, then cut
        detail = f": {text}" if text else ""
        reason = self._scrub(response.reason_phrase)
        body_status = body.get("status") if isinstance(body, dict) else None

        if status == 401:
            raise AuthError(f"{subject}: Massive rejected the API key{detail}; "
                            "check MASSIVE_API_KEY", **ctx)
        if status in (403, 404) and not isinstance(body, dict):
            # Massive answers both in JSON (reference §0 c, §6); a page that is not is a
            # proxy's, a firewall's or a wrong base URL's: a failure asked again next run,
            # never a plan's refusal or an unknown ticker remembered for a week.
            kind = self._scrub(
                response.headers.get("content-type", "no content type").split(";")[0])
            raise ProviderError(
                f"{subject}: HTTP {status} {reason} answered by something other than Massive's "
                f"API ({kind}, not its JSON): a proxy or firewall in the way, or "
                "MASSIVE_BASE_URL pointing elsewhere", **ctx)
        if status == 403 or body_status == "NOT_AUTHORIZED":
            # The 403 texts tell a plan's limits apart (reference §0 g, §6).
            lowered = text.lower()
            if "today's data" in lowered or "before end of day" in lowered:
                raise NotYetAvailableError(
                    f"{subject}: your Massive plan serves a session only after its day ends "
                    f"in New York{detail}", **ctx)
            if "data timeframe" in lowered:
                raise HistoryLimitError(
                    f"{subject}: your Massive plan does not reach this far back{detail}",
                    **ctx)
            raise NotEntitledError(f"{subject}: your Massive plan does not include this "
                                   f"data{detail}", **ctx)
        if status == 404 or body_status == "NOT_FOUND":
            raise NotFoundError(f"{subject}: not found{detail}", **ctx)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            self._window_spent(endpoint, retry_after)
            raise RateLimitedError(f"{subject}: rate limit exceeded{detail}",
                                   retry_after=retry_after, **ctx)
        if status in (408, 499) or status >= 500:
            raise TransientError(f"{subject}: server error {reason}{detail}", **ctx)
        if status != 200:
            raise ProviderError(f"{subject}: unexpected answer {reason}{detail}", **ctx)
        if json_error is not None:
            kind = self._scrub(
                response.headers.get("content-type", "no content type").split(";")[0])
            raise MalformedPayloadError(
                f"{subject}: response is not valid JSON ({kind}; {_short(json_error)})", **ctx
            )
        if not isinstance(body, dict):
            raise MalformedPayloadError(
                f"{subject}: expected a JSON object, got {type(body).__name__}", **ctx
            )
        if body_status == "ERROR":
            raise ProviderError(f"{subject}: Massive reported an error{detail}", **ctx)
        return body

    def _window_spent(self, endpoint: str, retry_after: float | None) -> None:
        """A 429: the key's quota for the plan's window is spent, by another consumer of the
        key (the limiter paces this desk). Every thread and process of the data directory
        holds off for ``Retry-After``, else one window (``RateLimiter.hold``)."""
        if self._limiter is None:
            return
        wait = PLAN_WINDOW_S if retry_after is None else retry_after
        self._limiter.hold(wait)
        log.warning("massive %s answered 429%s: no request leaves this data directory for "
                    "%.0f s", endpoint, "" if retry_after is None else " with Retry-After",
                    min(wait, MAX_HOLD_S))

    def _scrub(self, text: str | None) -> str | None:
        """``text`` without the key or any 8-character piece of it (``enrich.redact``)."""
        return redact(text, (self._key,)) if text else text


# ---- helpers --------------------------------------------------------------------------------


def _seg(value: str) -> str:
    """A symbol as one path segment: nothing in it can change the path."""
    return quote(value, safe=":.")


def _missing_terms(contracts: pl.DataFrame) -> str:
    """Which contract lacks which term, for the first few (``parse.CONTRACT_TERMS``)."""
    said = []
    for row in contracts.head(MAX_CAUSES).iter_rows(named=True):
        lacks = ", ".join(f"no {field!r}" for col, field in CONTRACT_TERMS.items()
                          if row[col] is None)
        said.append(f"{row['contract'] or 'a contract'}: {lacks}")
    more = " …" if contracts.height > MAX_CAUSES else ""
    return "; ".join(said) + more


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _short(exc: Exception) -> str:
    return str(exc)[:120]


def _request_id(body: Any) -> str | None:
    if isinstance(body, dict) and body.get("request_id") is not None:
        return str(body["request_id"])
    return None


def _error_text(body: Any) -> str:
    """The server's own words from an error body, whole: the caller scrubs, then cuts."""
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()
    return ""


def _clip(text: str | None, limit: int) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[:limit - 1] + "…"
