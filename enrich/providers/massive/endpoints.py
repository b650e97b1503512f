"""The listing endpoints the desk reads (dividends, splits, income statements, news), as data.

Each dataset has a ``Source``: the endpoint asked first and, where Massive has one, the older
endpoint that answers when the first is refused (a plan without the new one, or a deployment
without it). A ``Listing`` says how one endpoint is asked — its date filter, ticker filter,
sort, page size and fixed parameters — and which row parser reads its rows
(``enrich.providers.massive.parse``). ``MassiveProvider._listing`` is the one loop that asks a
source, per ticker or for the whole market; paging, retries and errors are the transport's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from enrich.errors import NotEntitledError, NotFoundError, ProviderError
from enrich.providers.massive.parse import (
    _dividend_row_v1,
    _dividend_row_v3,
    _earnings_row_v1,
    _earnings_row_vx,
)

ET = ZoneInfo("America/New_York")

DIVIDENDS_V1 = "/stocks/v1/dividends"
DIVIDENDS_V3 = "/v3/reference/dividends"
SPLITS_V1 = "/stocks/v1/splits"
SPLITS_V3 = "/v3/reference/splits"
INCOME_V1 = "/stocks/financials/v1/income-statements"
FINANCIALS_VX = "/vX/reference/financials"
NEWS_V2 = "/v2/reference/news"


@dataclass(frozen=True)
class Listing:
    """How one paginated listing endpoint is asked, and how its rows are read."""

    path: str  # also the ``endpoint`` recorded on errors
    date_field: str  # filtered by ``.gte`` and ``.lte``
    limit: int  # rows a page asks for, one ticker
    market_limit: int | None = None  # rows a page asks for the whole market (None: ``limit``)
    ticker_param: str = "ticker"
    order_param: bool = False  # ``sort=FIELD&order=asc`` (v2, v3, vX), not ``sort=FIELD.asc`` (v1)
    fixed: tuple[tuple[str, str], ...] = ()  # always sent, first
    instants: bool = False  # the field is an instant: New York days' bounds in RFC 3339
    parse: Callable[[dict], Any] | None = None  # the row parser of this version, if it differs

    @property
    def row_parser(self) -> Callable[[dict], Any]:
        """``parse``, for the datasets whose versions differ row by row (dividends,
        earnings); the others' frames read either version's rows themselves."""
        if self.parse is None:
            raise TypeError(f"{self.path}: no row parser of its own")
        return self.parse

    def params(self, ticker: str | None, start: dt.date, end: dt.date) -> dict[str, Any]:
        """The query of the first page: ``ticker``'s rows (None: the whole market) whose date
        field lies in [start, end]."""
        out: dict[str, Any] = dict(self.fixed)
        if ticker is not None:
            out[self.ticker_param] = ticker
        if self.instants:
            first = dt.datetime.combine(start, dt.time(), ET)
            after = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), ET)
            low, high = _rfc3339(first), _rfc3339(after - dt.timedelta(seconds=1))
        else:
            low, high = start.isoformat(), end.isoformat()
        out[f"{self.date_field}.gte"] = low
        out[f"{self.date_field}.lte"] = high
        out["limit"] = self.limit if ticker is not None or self.market_limit is None \
            else self.market_limit
        if self.order_param:
            out["sort"] = self.date_field
            out["order"] = "asc"
        else:
            out["sort"] = f"{self.date_field}.asc"
        return out


@dataclass(frozen=True)
class Source:
    """A dataset's endpoint and its fallback: ``fallback`` is asked when ``first`` answers one
    of ``fallback_on`` (remembered: later calls go straight to it). ``first_if_gone``: when
    the fallback is not found either (a retired endpoint), the first refusal is the answer."""

    first: Listing
    fallback: Listing | None = None
    fallback_on: tuple[type[ProviderError], ...] = ()
    first_if_gone: bool = False


_QUARTERLY = (("timeframe", "quarterly"),)

SOURCES: dict[str, Source] = {
    "dividends": Source(
        Listing(DIVIDENDS_V1, "ex_dividend_date", 5000, parse=_dividend_row_v1),
        Listing(DIVIDENDS_V3, "ex_dividend_date", 1000, order_param=True,
                parse=_dividend_row_v3),
        (NotFoundError,)),
    "splits": Source(
        Listing(SPLITS_V1, "execution_date", 5000),
        Listing(SPLITS_V3, "execution_date", 1000, order_param=True),
        (NotFoundError,)),
    # /stocks/financials/v1 needs an advanced plan: on 404 or 403 the deprecated
    # /vX/reference/financials is asked; when both deny, the first refusal stands.
    "earnings": Source(
        Listing(INCOME_V1, "filing_date", 1000, market_limit=50000, ticker_param="tickers",
                fixed=_QUARTERLY, parse=_earnings_row_v1),
        Listing(FINANCIALS_VX, "filing_date", 100, fixed=_QUARTERLY, order_param=True,
                parse=_earnings_row_vx),
        (NotFoundError, NotEntitledError), first_if_gone=True),
    "news": Source(Listing(NEWS_V2, "published_utc", 1000, order_param=True, instants=True)),
}


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
