"""The provider protocol and its value types (``Provider``, ``MarketRequest``, ``MarketRows``,
``ProbeResult``, ``OPTION_CONTRACTS``, ``market_of``): what every provider implements and the
engine and the refresh plan speak, below the providers themselves (``enrich.providers`` adds
the registry that builds them). See the package's docstring for the contract.
"""


from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import polars as pl

from enrich.schemas import Dataset

if TYPE_CHECKING:
    from enrich.identity import TickerReference
    from enrich.providers.retry import RequestStats


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    latency_ms: float
    # "valid" | "invalid key" | "not entitled" | "rate limited" | "provider error" |
    # "unreachable" | "demo"
    status: str
    message: str


# Universe-wide requests: which market serves a dataset for an asset class. Bars come from
# grouped daily (one request per session and market; there is none for indices); the event
# datasets from market-wide date windows of US listings.
MARKETS: dict[str, dict[str, str]] = {
    "bars": {"stocks": "stocks", "etfs": "stocks", "crypto": "crypto", "fx": "fx"},
    "dividends": {"stocks": "stocks", "etfs": "stocks"},
    "splits": {"stocks": "stocks", "etfs": "stocks"},
    "earnings": {"stocks": "stocks"},
    "news": {"stocks": "stocks", "etfs": "stocks"},
}


def market_of(dataset: str, asset_class: str, timeframe: str = "1d") -> str | None:
    """The market whose universe-wide request serves ``dataset`` of ``asset_class`` (None:
    only per-symbol requests). Intraday bars have no grouped endpoint."""
    if dataset == "bars" and timeframe != "1d":
        return None
    return MARKETS.get(dataset, {}).get(asset_class)


@dataclass(frozen=True)
class MarketRequest:
    """One universe-wide fetch: ``dataset`` of ``market`` for ``symbols``.

    Bars: the sessions ``sessions`` (one request each). Event datasets: the window
    [``start``, ``end``] of ex-dates, execution dates, filing dates or New York publication
    dates (paginated). ``start``/``end`` always span the request.
    """

    dataset: str
    market: str
    start: dt.date
    end: dt.date
    symbols: frozenset[str]
    sessions: tuple[dt.date, ...] = ()


class MarketRows(Protocol):
    """The answer to a ``MarketRequest``: each symbol's rows in the lake schema, exactly as the
    per-symbol call for the same window would give them (empty when the market had none).
    ``not_yet``: sessions of the request the plan does not serve yet (they are due)."""

    @property
    def not_yet(self) -> tuple[dt.date, ...]: ...  # read-only: a frozen dataclass satisfies it

    def for_symbol(self, symbol: str) -> pl.DataFrame: ...


# What ``option_contracts`` returns. Not a lake dataset: listings pick the contracts followed.
OPTION_CONTRACTS = Dataset(
    "option_contracts",
    {
        "symbol": pl.String,  # the underlying
        "contract": pl.String,
        "expiration": pl.Date,
        "strike": pl.Float64,
        "contract_type": pl.String,
        "shares_per_contract": pl.Float64,
        "exercise_style": pl.String,
        "deliverables": pl.String,  # JSON of additional_underlyings; null when standard
    },
    key=("symbol", "contract"),
    description="Option contracts listed on a date",
)


@runtime_checkable
class Provider(Protocol):
    name: str
    is_demo: bool  # labelled as demo data wherever shown
    rate_limited: bool  # whether calls must pass the shared rate limiter

    def bars(
        self, symbol: str, timeframe: str, start: dt.date, end: dt.date
    ) -> pl.DataFrame: ...

    def dividends(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def splits(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def earnings(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def news(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame: ...

    def option_chain(self, symbol: str, as_of: dt.date,
                     spot: float | None = None) -> pl.DataFrame:
        """Snapshot of the chain for the session ``as_of`` (the session in progress, or the
        latest one that closed): OPTIONS_IV columns with the quote, the last trade, volume,
        open interest, the contract's terms, ``provider_iv`` and ``snapshot_at``; IV and
        greeks are left to ``enrich.quant.snapshots``. ``spot`` (the underlying's latest close,
        when known) lets the provider ask only for strikes near it."""
        ...

    def option_contracts(self, underlying: str, as_of: dt.date, *,
                         strikes: tuple[float, float] | None = None,
                         expirations: tuple[dt.date, dt.date] | None = None) -> pl.DataFrame:
        """Contracts that were listed and live on ``as_of`` (including those that have
        expired since), in OPTION_CONTRACTS columns; only strikes within ``strikes`` and
        expirations within ``expirations`` (default: from ``as_of``, up to the chain
        filters' horizon) when given."""
        ...

    def treasury_yields(self, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Treasury yield curves observed on [start, end] (RATES schema; ``enrich.quant.rates``)."""
        ...

    def option_bars(self, contract: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        """Daily bars of one contract (BARS schema, symbol = the OCC ticker)."""
        ...

    def market_rows(self, request: MarketRequest) -> MarketRows:
        """A universe-wide fetch (see the module docstring)."""
        ...

    def estimate_requests(self, request: MarketRequest) -> int:
        """Requests ``market_rows(request)`` is expected to make (the run's budget)."""
        ...

    def take_requests(self) -> RequestStats:
        """Requests (and retries) made by the calling thread since the last take."""
        ...

    def with_priority(self, priority: int) -> Provider:
        """The same provider queuing at ``priority`` on the shared rate limiter (a provider
        that is not rate limited returns itself)."""
        ...

    def process_factory(self) -> Callable[..., Provider] | None:
        """A picklable callable that builds this provider again in a worker process, for
        providers that compute rows on the CPU; None for network providers."""
        ...

    def ticker_reference(self, symbol: str) -> TickerReference:
        """What the provider's ticker reference says ``symbol`` is now, with the ticker
        changes of the entity holding it (``enrich.identity``). Raises ``NotFoundError`` for
        a ticker it does not know."""
        ...

    def reference_requests(self, asset_class: str) -> int:
        """Requests ``ticker_reference`` makes for a symbol of ``asset_class`` (the budget)."""
        ...

    def probe(self) -> ProbeResult: ...


def estimate_pages(rows: float, page_limit: int) -> int:
    """Requests a paginated answer of about ``rows`` rows takes (at least one)."""
    return max(1, math.ceil(rows / page_limit))
