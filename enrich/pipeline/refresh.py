"""The refresh plan: what a run fetches, by which path, and what that costs in requests.

For every symbol × dataset the run needs a window (``window_for``): from the day after what is
held (re-asking the last ``refetch_sessions`` sessions of bars, and looking back
``event_lookback_days`` for events published late) to the latest completed session, or the
whole history on a first fetch. Then, per dataset and market, the plan picks the cheaper of
two paths, which store identical rows:

- **universe-wide**: one request per missing session (grouped daily bars) or one paginated
  window of market-wide events, filtered to the universe locally, serving every symbol whose
  window lies inside it;
- **per symbol**: one request per symbol (first enrichments, symbols far behind, indices,
  intraday bars, option chains).

The choice is exact for this family: sort the incremental windows by start; a universe-wide
request reaching back to the k-th start serves every symbol starting at or after it, and the
rest go per symbol; the cheapest k wins (ties go per symbol). The provider estimates what a
universe-wide request costs (``estimate_requests``); a per-symbol request costs one.

The plan is also the run's **budget**: requests per dataset and the time they take at the
plan's rate, shown before a run (``enrich run --dry-run``, Controls) and against its progress.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from enrich import calendars
from enrich.identity import Identity
from enrich.providers.base import MarketRequest, market_of
from enrich.quant import rates
from enrich.symbols import DATASETS_BY_CLASS, calendar_for

NEWS_FIRST_DAYS = 365  # a first news fetch reaches back a year, not the whole history
# Filings and articles carry the date they were published, so a late one has a late date;
# a few days still catch those indexed after their day ended.
SHORT_LOOKBACK_DAYS = 3
EVENT_DATASETS = ("dividends", "splits")  # dated by an ex/execution date, often published late
FETCH_ORDER = ("splits", "bars", "dividends", "earnings", "news", "rates", "options_iv")
REFERENCE = "reference"  # a symbol's ticker reference (its identity), read before its data


def coverage_key(dataset: str, timeframe: str) -> str:
    """The key of a dataset in a symbol's fetched-through record (``Lake.read_coverage``)."""
    return f"bars:{timeframe}" if dataset == "bars" else dataset


def datasets_for(asset_class: str, wanted: Sequence[str] | None, symbol: str | None = None,
                 options_symbols: Sequence[str] | None = None) -> list[str]:
    """The datasets a run fetches for a symbol of ``asset_class``, in fetch order. Splits go
    with bars whenever bars are fetched (they are part of the bars' integrity); option chains
    only for ``options_symbols`` when that is set (``ENRICH_OPTIONS_SYMBOLS``)."""
    applicable = DATASETS_BY_CLASS.get(asset_class, ("bars",))
    if options_symbols is not None and symbol not in options_symbols:
        applicable = tuple(d for d in applicable if d != "options_iv")
    out = [d for d in (wanted or applicable) if d in applicable]
    if "bars" in out and "splits" in applicable and "splits" not in out:
        out.append("splits")
    return [d for d in FETCH_ORDER if d in out]


def window_for(dataset: str, covered: dt.date | None, expected: dt.date, calendar: str, *,
               lookback_days: int | None, history_years: int, refetch_sessions: int,
               event_lookback_days: int) -> tuple[dt.date, dt.date] | None:
    """The window a run fetches for one symbol × dataset, or None when it is up to date.

    ``covered``: fetched through (None: never fetched). ``expected``: the latest completed
    session. A first fetch reaches back ``lookback_days`` (default: ``history_years``; news a
    year; an option chain is a snapshot of ``expected``). Later fetches start after
    ``covered`` but re-ask the last ``refetch_sessions`` held sessions of bars (a bar stored
    before the provider's final publication is replaced), look back ``event_lookback_days``
    for dividends and splits (announced after their ex or execution date) and
    ``SHORT_LOOKBACK_DAYS`` for income statements and news (indexed after their filing or
    publication day). Nothing is asked again while nothing new is due.
    """
    if covered is not None and covered >= expected:
        return None
    if dataset == "options_iv":
        return expected, expected
    if dataset == "rates":  # one request either way: the whole curve history, or a refresh
        if covered is None:
            return rates.FIRST_DATE, expected
        return covered + dt.timedelta(days=1 - rates.LOOKBACK_DAYS), expected
    if covered is None:
        if lookback_days is not None:
            days = lookback_days
        elif dataset == "news":
            days = NEWS_FIRST_DAYS
        else:
            days = int(history_years * 365.25)
        return expected - dt.timedelta(days=days), expected
    start = covered + dt.timedelta(days=1)
    if dataset == "bars" and refetch_sessions > 0:
        held = calendars.sessions(calendar, covered - dt.timedelta(days=10 * refetch_sessions + 10),
                                  covered)
        if held:
            start = min(start, held[-min(refetch_sessions, len(held))])
    elif dataset in EVENT_DATASETS:
        start = min(start, covered + dt.timedelta(days=1 - event_lookback_days))
    elif dataset in ("earnings", "news"):
        start = min(start, covered + dt.timedelta(days=1 - SHORT_LOOKBACK_DAYS))
    return start, expected


@dataclass(frozen=True)
class Target:
    """One symbol of a run with what it holds, and its identity when known (no window
    before its listing or ticker change, none after its delisting)."""

    symbol: str
    asset_class: str
    coverage: dict[str, dt.date]
    identity: Identity | None = None


@dataclass
class Unit:
    """One symbol × dataset to fetch this run, and how."""

    symbol: str
    dataset: str
    window: tuple[dt.date, dt.date]
    calendar: str
    market: MarketRequest | None = None  # None: a per-symbol request


@dataclass
class DatasetBudget:
    dataset: str
    symbols: int = 0  # symbols whose dataset is fetched
    up_to_date: int = 0  # symbols with nothing new to fetch
    universe_requests: int = 0  # universe-wide requests (estimated)
    universe_symbols: int = 0  # symbols they serve
    symbol_requests: int = 0  # per-symbol requests (one each)
    per_symbol_only: int = 0  # what the per-symbol path alone would cost

    @property
    def requests(self) -> int:
        return self.universe_requests + self.symbol_requests

    @property
    def path(self) -> str:
        if not self.symbols:
            return "up to date"
        if self.universe_requests and self.symbol_requests:
            return "universe-wide + per symbol"
        return "universe-wide" if self.universe_requests else "per symbol"


@dataclass
class RefreshPlan:
    units: dict[tuple[str, str], Unit] = field(default_factory=dict)
    markets: list[MarketRequest] = field(default_factory=list)
    market_cost: dict[MarketRequest, int] = field(default_factory=dict)
    budget: dict[str, DatasetBudget] = field(default_factory=dict)
    rate_limit_per_min: float | None = None  # None: the provider is not rate limited
    expected: dict[str, dt.date] = field(default_factory=dict)  # per calendar
    rates: tuple[dt.date, dt.date] | None = None  # the Treasury curve's window, one request

    @property
    def requests(self) -> int:
        return sum(b.requests for b in self.budget.values())

    @property
    def per_symbol_requests(self) -> int:
        return sum(b.per_symbol_only for b in self.budget.values())

    def eta_s(self, requests: int | None = None) -> float | None:
        """Seconds ``requests`` (default: the whole plan) take at the plan's rate."""
        if self.rate_limit_per_min is None:
            return None
        n = self.requests if requests is None else requests
        return n * 60.0 / self.rate_limit_per_min

    def markets_for(self, symbol: str) -> dict[str, MarketRequest]:
        return {u.dataset: u.market for (s, _), u in self.units.items()
                if s == symbol and u.market is not None}

    def rows(self) -> list[dict[str, Any]]:
        """The budget as table rows, in fetch order."""
        out = []
        for ds in (REFERENCE, *FETCH_ORDER):
            b = self.budget.get(ds)
            if b is None:
                continue
            out.append({"dataset": ds, "path": b.path, "symbols": b.symbols,
                        "up_to_date": b.up_to_date, "requests": b.requests,
                        "universe_requests": b.universe_requests,
                        "symbol_requests": b.symbol_requests,
                        "per_symbol_path": b.per_symbol_only,
                        "minutes": None if self.rate_limit_per_min is None
                        else round(b.requests / self.rate_limit_per_min, 2)})
        return out

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "per_symbol_requests": self.per_symbol_requests,
                "rate_limit_per_min": self.rate_limit_per_min, "eta_s": self.eta_s(),
                "datasets": self.rows(),
                "universe_wide": [{"dataset": m.dataset, "market": m.market,
                                   "start": m.start, "end": m.end,
                                   "sessions": len(m.sessions), "symbols": len(m.symbols),
                                   "requests": self.market_cost[m]} for m in self.markets]}

    def describe(self) -> str:
        if not self.requests:
            return "nothing to fetch: every symbol is up to date"
        eta = self.eta_s()
        when = "" if eta is None else f", about {_duration(eta)} at " \
            f"{self.rate_limit_per_min:g} requests/min"
        return (f"{self.requests} requests ({self.per_symbol_requests} by the per-symbol path)"
                f"{when}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_refresh(targets: Iterable[Target], *, now: dt.datetime, provider: Any,
                 datasets: Sequence[str] | None, timeframe: str, lookback_days: int | None,
                 history_years: int, refetch_sessions: int, event_lookback_days: int,
                 not_entitled: set[tuple[str, str]] | frozenset = frozenset(),
                 rate_limit_per_min: float | None = None,
                 universe_wide: bool = True,
                 options_symbols: Sequence[str] | None = None) -> RefreshPlan:
    """Plan a run over ``targets`` at instant ``now`` (see the module docstring).
    ``universe_wide=False`` forces the per-symbol path (the reference it is measured by)."""
    plan = RefreshPlan(rate_limit_per_min=rate_limit_per_min)
    groups: dict[tuple[str, str], list[Unit]] = {}  # (dataset, market) -> incremental units
    for t in targets:
        cal = calendar_for(t.asset_class)
        if cal not in plan.expected:
            plan.expected[cal] = calendars.latest_session(cal, now)
        expected = plan.expected[cal]
        ident = t.identity
        if ident is not None and ident.delisted is not None:
            held = calendars.sessions(cal, ident.delisted - dt.timedelta(days=14), ident.delisted)
            expected = min(expected, held[-1] if held else expected)
        for ds in datasets_for(t.asset_class, datasets, t.symbol, options_symbols):
            if ds == "options_iv" and ident is not None and ident.delisted is not None:
                continue
            b = plan.budget.setdefault(ds, DatasetBudget(ds))
            if (t.symbol, ds) in not_entitled:
                continue
            covered = t.coverage.get(coverage_key(ds, timeframe))
            window = window_for(ds, covered, expected, cal, lookback_days=lookback_days,
                                history_years=history_years, refetch_sessions=refetch_sessions,
                                event_lookback_days=event_lookback_days)
            if window is not None and ident is not None and ds != "options_iv":
                window = ident.clamp(*window)
            if window is None:
                b.up_to_date += 1
                continue
            unit = Unit(t.symbol, ds, window, cal)
            plan.units[(t.symbol, ds)] = unit
            b.symbols += 1
            b.per_symbol_only += 1
            market = market_of(ds, t.asset_class, timeframe)
            if (universe_wide and covered is not None and market is not None
                    and lookback_days is None):
                groups.setdefault((ds, market), []).append(unit)
            else:
                b.symbol_requests += 1
    for (ds, market), units in groups.items():
        _choose(plan, ds, market, units, provider)
    return plan


def plan_references(plan: RefreshPlan, asset_classes: Sequence[str], provider: Any) -> None:
    """Add the ticker references a run reads first: those of the symbols of
    ``asset_classes`` (one item a symbol) whose identity the catalog does not hold yet (a
    first enrichment; an unknown ticker is asked again after a week), at the provider's
    ``reference_requests`` each."""
    if asset_classes:
        b = plan.budget.setdefault(REFERENCE, DatasetBudget(REFERENCE))
        b.symbols = len(asset_classes)
        b.symbol_requests = b.per_symbol_only = sum(
            provider.reference_requests(c) for c in asset_classes)


def plan_rates(plan: RefreshPlan, covered: dt.date | None, expected: dt.date, *,
               wanted: bool) -> None:
    """Add the Treasury curve to ``plan`` (one request, ``enrich.quant.rates``) when the run
    computes option IVs or asks for it (``wanted``), unless it holds ``expected`` already."""
    if not (wanted or any(ds == "options_iv" for _, ds in plan.units)):
        return
    b = plan.budget.setdefault("rates", DatasetBudget("rates"))
    window = window_for("rates", covered, expected, "XNYS", lookback_days=None,
                        history_years=0, refetch_sessions=0, event_lookback_days=0)
    if window is None:
        b.up_to_date += 1
        return
    plan.rates = window
    b.symbols += 1
    b.universe_requests += 1
    b.universe_symbols += 1
    b.per_symbol_only += 1


def _choose(plan: RefreshPlan, ds: str, market: str, units: list[Unit], provider: Any) -> None:
    """Serve a suffix of ``units`` (by window start) universe-wide when that is cheaper."""
    b = plan.budget[ds]
    units = sorted(units, key=lambda u: u.window[0])
    end = max(u.window[1] for u in units)
    cal = units[0].calendar
    best: tuple[int, int, MarketRequest | None] = (len(units), len(units), None)
    seen: set[dt.date] = set()
    for i, u in enumerate(units):
        start = u.window[0]
        if start in seen:
            continue
        seen.add(start)
        served = units[i:]
        request = _request(ds, market, start, end, served, cal)
        if ds == "bars" and not request.sessions:
            continue
        cost = provider.estimate_requests(request) + i
        if cost < best[0]:
            best = (cost, i, request)
    cost, first, chosen = best
    if chosen is None:
        b.symbol_requests += len(units)
        return
    plan.markets.append(chosen)
    plan.market_cost[chosen] = cost - first
    b.universe_requests += cost - first
    b.universe_symbols += len(units) - first
    b.symbol_requests += first
    for u in units[first:]:
        u.market = chosen


def _request(ds: str, market: str, start: dt.date, end: dt.date, units: list[Unit],
             calendar: str) -> MarketRequest:
    sessions = tuple(calendars.sessions(calendar, start, end)) if ds == "bars" else ()
    return MarketRequest(ds, market, start, end, frozenset(u.symbol for u in units), sessions)
