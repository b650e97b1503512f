"""An adversarial review of the Massive client against the API's own documents.

Every fixture is taken from the OpenAPI spec bundled with the official Go client
(``massive-com/client-go`` ``rest/scripts/openapi.json`` @ 9471d9b, 2026-07-08; cited below as
SPEC with the JSON path of the example or schema used), from the official clients' code, or from
the reference notes in ``/work/shared/reference/``. Offline: ``httpx.MockTransport`` only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

import httpx
import pytest

from enrich.errors import HistoryLimitError, MalformedPayloadError, ValidationError
from enrich.providers import MarketRequest
from enrich.providers.massive.provider import MassiveProvider

KEY = "sk-hunt-Q7wTOPSECRETz93"
BASE = "https://api.massive.com"
TODAY = dt.date(2025, 6, 2)
D = dt.date

Handler = Callable[[httpx.Request], httpx.Response]


class Api:
    """Routes by path; records every request and checks the key stays in the header, on the
    configured host only."""

    def __init__(self, routes: dict[str, Handler], host: str = "api.massive.com"):
        self.routes = routes
        self.host = host
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert KEY not in str(request.url), "the key leaked into a URL"
        assert request.headers.get("authorization") == f"Bearer {KEY}"
        assert (request.url.scheme, request.url.host) == ("https", self.host), \
            f"the Bearer key went to {request.url.scheme}://{request.url.host}"
        route = self.routes.get(request.url.path)
        if route is None:
            return _json(404, {"status": "NOT_FOUND", "request_id": "r404",
                               "message": "no such path"})
        return route(request)


def _json(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode(),
                          headers={"content-type": "application/json"})


def make(api: Api, base: str = BASE) -> MassiveProvider:
    client = httpx.Client(transport=httpx.MockTransport(api))
    return MassiveProvider(client, KEY, base, None, today=lambda: TODAY)


# ---- grouped daily: OTC tickers ----------------------------------------------------------------

# SPEC paths./v2/aggs/grouped/locale/us/market/stocks/{date}.get.responses.200.content
#   .application/json.example.results (KIMpL, TANH, VSAT; t = 2020-10-14 16:00 EDT)
GROUPED_STOCKS_EXAMPLE = [
    {"T": "KIMpL", "c": 25.9102, "h": 26.25, "l": 25.91, "n": 74, "o": 26.07,
     "t": 1602705600000, "v": 4369, "vw": 26.0407},
    {"T": "TANH", "c": 23.4, "h": 24.763, "l": 22.65, "n": 1096, "o": 24.5,
     "t": 1602705600000, "v": 25933.6, "vw": 23.493},
    {"T": "VSAT", "c": 34.24, "h": 35.47, "l": 34.21, "n": 4966, "o": 34.9,
     "t": 1602705600000, "v": 312583, "vw": 34.4736},
]
# An OTC row as the same schema describes it: ``otc`` "will be left off if false", and the
# parameter ``include_otc`` is "Default is false (don't include OTC securities)"
# (SPEC ...stocks/{date}.get.parameters[name=include_otc]); the row is the supplement's
# grouped example (massive-refresh-and-correctness.md §1, ``ABCpA`` with ``"otc": true``).
OTC_ROW = {"T": "ABCpA", "o": 25.0, "h": 25.1, "l": 24.9, "c": 25.0, "v": 900, "vw": 25.0,
           "n": 12, "t": 1602705600000, "otc": True}


def grouped_stocks(request: httpx.Request) -> httpx.Response:
    """The grouped endpoint as the spec describes it: OTC rows only when asked for."""
    rows = list(GROUPED_STOCKS_EXAMPLE)
    if request.url.params.get("include_otc") == "true":
        rows.append(OTC_ROW)
    return _json(200, {"adjusted": True, "queryCount": len(rows), "request_id": "r1",
                       "results": rows, "resultsCount": len(rows), "status": "OK"})


def test_grouped_stocks_include_otc_tickers():
    """A followed OTC stock (class ``stocks``, served universe-wide by grouped daily) must be
    in the grouped answer; without ``include_otc=true`` the API leaves it out and the symbol
    would never advance past its first backfill."""
    api = Api({"/v2/aggs/grouped/locale/us/market/stocks/2020-10-14": grouped_stocks})
    frame = make(api).grouped_daily(D(2020, 10, 14), "stocks", {"ABCpA", "VSAT"})
    assert frame["symbol"].to_list() == ["ABCpA", "VSAT"]
    assert frame["close"].to_list() == [25.0, 34.24]
    assert api.requests[0].url.params.get("include_otc") == "true"


@pytest.mark.parametrize("market, path", [
    # SPEC paths./v2/aggs/grouped/locale/global/market/{crypto,fx}/{date}.get.parameters:
    # ``adjusted`` only; there is no ``include_otc`` on these two.
    ("crypto", "/v2/aggs/grouped/locale/global/market/crypto/2020-10-14"),
    ("fx", "/v2/aggs/grouped/locale/global/market/fx/2020-10-14"),
])
def test_grouped_crypto_and_fx_send_only_adjusted(market, path):
    api = Api({path: lambda r: _json(200, {"status": "OK", "request_id": "r1",
                                           "resultsCount": 0, "queryCount": 0,
                                           "adjusted": True})})
    assert make(api).grouped_daily(D(2020, 10, 14), market).is_empty()
    assert dict(api.requests[0].url.params) == {"adjusted": "true"}


def test_a_bad_grouped_row_fails_its_symbol_alone():
    """``market_rows``: "A symbol whose rows do not fit fails alone" (its docstring; the desk's
    "one bad file never stops the desk"). The spec's grouped example with TANH's high made
    lower than its low: TANH is refused, VSAT and KIMpL still get their bar."""
    rows = [dict(r) for r in GROUPED_STOCKS_EXAMPLE]
    rows[1]["h"] = 22.0  # below its low, 22.65
    api = Api({"/v2/aggs/grouped/locale/us/market/stocks/2020-10-14": lambda r: _json(
        200, {"adjusted": True, "queryCount": 3, "request_id": "r1", "results": rows,
              "resultsCount": 3, "status": "OK"})})
    day = D(2020, 10, 14)
    answer = make(api).market_rows(MarketRequest(
        "bars", "stocks", day, day, frozenset({"KIMpL", "TANH", "VSAT"}), (day,)))
    assert answer.for_symbol("VSAT")["close"].to_list() == [34.24]
    assert answer.for_symbol("KIMpL")["close"].to_list() == [25.9102]
    with pytest.raises(ValidationError, match="high 22.0 < low 22.65"):
        answer.for_symbol("TANH")


# ---- next_url ---------------------------------------------------------------------------------

AAPL_AGGS = "/v2/aggs/ticker/AAPL/range/1/day/2020-01-01/2020-01-10"
# SPEC paths./v2/aggs/ticker/{stocksTicker}/range/{multiplier}/{timespan}/{from}/{to}.get
#   .responses.200.content.application/json.example: the two AAPL bars (2020-01-02, -03).
AGGS_EXAMPLE = {
    "adjusted": True, "queryCount": 2, "request_id": "6a7e466379af0a71039d60cc78e72282",
    "results": [
        {"c": 75.0875, "h": 75.15, "l": 73.7975, "n": 1, "o": 74.06, "t": 1577941200000,
         "v": 135647456, "vw": 74.6099},
        {"c": 74.3575, "h": 75.145, "l": 74.125, "n": 1, "o": 74.2875, "t": 1578027600000,
         "v": 146535512, "vw": 74.7026},
    ],
    "resultsCount": 2, "status": "OK", "ticker": "AAPL",
}
# The same example's cursor (``limit=2&sort=asc``) and path (``from`` as Unix ms).
CURSOR = "bGltaXQ9MiZzb3J0PWFzYw"
NEXT_PATH = "/v2/aggs/ticker/AAPL/range/1/day/1578114000000/2020-01-10"
SECOND_PAGE = {"adjusted": True, "queryCount": 1, "request_id": "r2", "resultsCount": 1,
               "status": "OK", "ticker": "AAPL",
               "results": [{"c": 74.95, "h": 75.22, "l": 74.37, "n": 1, "o": 74.29,
                            "t": 1578373200000, "v": 108872000, "vw": 74.8}]}


def aggs_pages(next_url: object) -> dict[str, Handler]:
    return {AAPL_AGGS: lambda r: _json(200, {**AGGS_EXAMPLE, "next_url": next_url}),
            NEXT_PATH: lambda r: _json(200, SECOND_PAGE)}


def test_an_empty_next_url_ends_the_listing():
    """The official Go client stops on an empty ``next_url`` (``rest/iterator.go``,
    ``Iterator.Next``: ``it.nextURL == nil || *it.nextURL == ""``): it means no more pages,
    not a malformed answer."""
    api = Api(aggs_pages(""))
    frame = make(api).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert frame["close"].to_list() == [75.0875, 74.3575]
    assert len(api.requests) == 1


def test_a_next_url_without_a_query_is_not_followed():
    """SPEC paths./vX/reference/financials.get.responses.200.content.application/json.example:
    ``count`` 1 and ``next_url`` "https://api.massive.com/vX/reference/financials?" — no
    cursor and none of the filters. Asking it would list every company's filings (the query
    is gone) under this ticker's name; it names no next page, so the listing ends there."""
    spec_vx = {
        "count": 1, "next_url": "https://api.massive.com/vX/reference/financials?",
        "request_id": "55eb92ed43b25568ab0cce159830ea34", "status": "OK",
        "results": [{
            "cik": "0001650729", "company_name": "SiteOne Landscape Supply, Inc.",
            "end_date": "2022-04-03", "filing_date": "2022-05-04", "fiscal_period": "Q1",
            "fiscal_year": "2022", "start_date": "2022-01-03", "tickers": ["SITE"],
            "financials": {"income_statement": {
                "basic_earnings_per_share": {"label": "Basic Earnings Per Share",
                                             "order": 4200, "unit": "USD / shares",
                                             "value": 0.72},
                "diluted_earnings_per_share": {"label": "Diluted Earnings Per Share",
                                               "order": 4300, "unit": "USD / shares",
                                               "value": 0.7},
                "revenues": {"label": "Revenues", "order": 100, "unit": "USD",
                             "value": 805300000}}},
        }],
    }
    other_company = {**spec_vx["results"][0], "cik": "0000320193", "company_name": "Apple Inc.",
                     "fiscal_year": "2021", "tickers": ["AAPL"]}

    def vx(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("ticker") == "SITE":
            return _json(200, spec_vx)
        # No filters: the whole market's filings (here one other company's).
        return _json(200, {"count": 1, "request_id": "r2", "status": "OK",
                           "results": [other_company]})

    api = Api({"/vX/reference/financials": vx})  # income statements v1: 404 (unrouted)
    frame = make(api).earnings("SITE", D(2022, 1, 1), D(2022, 12, 31))
    assert [r.url.path for r in api.requests] == [
        "/stocks/financials/v1/income-statements", "/vX/reference/financials"]
    assert frame.select("fiscal_year", "fiscal_quarter", "revenue", "eps_basic",
                        "eps_diluted").rows() == [(2022, 1, 805300000.0, 0.72, 0.7)]


@pytest.mark.parametrize("base, next_url", [
    # Base ``https://api.polygon.io`` still answers (reference §0, §10); every next_url the
    # spec shows is on api.massive.com (SPEC ...range/...get.responses.200...example.next_url).
    ("https://api.polygon.io", f"https://api.massive.com{NEXT_PATH}?cursor={CURSOR}"),
    # polygon-io/issues #143: the API once sent ``:443:443`` in next_url.
    (BASE, f"https://api.massive.com:443:443{NEXT_PATH}?cursor={CURSOR}"),
    # Another scheme or port: the key must not travel over plain http, nor elsewhere.
    (BASE, f"http://api.massive.com{NEXT_PATH}?cursor={CURSOR}"),
    (BASE, f"https://api.massive.com:8443{NEXT_PATH}?cursor={CURSOR}"),
    # Relative: on the API host.
    (BASE, f"{NEXT_PATH}?cursor={CURSOR}"),
])
def test_a_next_url_elsewhere_is_followed_at_the_api_host(base, next_url):
    """The official Python client takes only the path and query of ``next_url`` and asks its
    own base URL (``massive/rest/base.py``, ``_paginate_iter``): the cursor is followed, the
    Bearer header never leaves the configured host (``Api`` asserts it). A host that is not
    the API's is still refused (``test_massive.py::test_next_url_elsewhere_is_refused``)."""
    api = Api(aggs_pages(next_url), host=httpx.URL(base).host)
    frame = make(api, base).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert frame["close"].to_list() == [75.0875, 74.3575, 74.95]
    second = api.requests[1].url
    assert (second.scheme, second.host, second.port, second.path) == (
        "https", httpx.URL(base).host, None, NEXT_PATH)
    assert str(second.query, "ascii") == f"cursor={CURSOR}"


def test_a_next_url_that_is_not_text_is_still_refused():
    api = Api(aggs_pages(12))
    with pytest.raises(MalformedPayloadError, match="next_url"):
        make(api).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert len(api.requests) == 1


# ---- a window-level 403 is not an endpoint-level refusal ----------------------------------------

INCOME = "/stocks/financials/v1/income-statements"
# SPEC paths./stocks/financials/v1/income-statements.get.responses.200.content
#   .application/json.example.results[0] (AAPL, fiscal 2025 Q3; numbers as the spec types
#   them: ``fiscal_year`` / ``fiscal_quarter`` are number/double).
INCOME_EXAMPLE = {
    "basic_earnings_per_share": 1.57, "basic_shares_outstanding": 14902886000,
    "cik": "0000320193", "diluted_earnings_per_share": 1.57, "filing_date": "2025-08-01",
    "fiscal_quarter": 3, "fiscal_year": 2025, "period_end": "2025-06-28",
    "revenue": 94036000000, "tickers": ["AAPL"], "timeframe": "quarterly",
}
# Reference §0 g (polygon-io/issues #313, third-party probes): beyond the plan's history.
TIMEFRAME_403 = {"status": "NOT_AUTHORIZED", "request_id": "dd68e9ff6c00458b806e1947d8bbe2ff",
                 "message": "Your plan doesn't include this data timeframe. Please upgrade "
                            "your plan at https://massive.com/pricing"}


def test_a_history_limit_on_income_statements_is_not_remembered_for_every_window():
    """A 403 "doesn't include this data timeframe" refuses one window (the engine probes for
    the plan's edge and asks again inside it), not the endpoint: the next window inside the
    plan must be asked of ``/stocks/financials/v1`` again. Here ``/vX/reference/financials``
    is retired (404: its sunset was announced, reference §4a)."""
    def income(request: httpx.Request) -> httpx.Response:
        if request.url.params["filing_date.gte"] < "2024-01-01":
            return _json(403, TIMEFRAME_403)
        return _json(200, {"request_id": "r1", "status": "OK", "results": [INCOME_EXAMPLE]})

    api = Api({INCOME: income})
    p = make(api)
    with pytest.raises(HistoryLimitError):
        p.earnings("AAPL", D(2015, 1, 1), D(2025, 12, 31))
    frame = p.earnings("AAPL", D(2025, 1, 1), D(2025, 12, 31))
    assert frame.select("fiscal_year", "fiscal_quarter", "revenue").rows() == [
        (2025, 3, 94036000000.0)]
    assert [r.url.path for r in api.requests][-1] == INCOME


@pytest.mark.parametrize("query, asked", [
    # The JS client appends ``&apiKey=`` to next_url (reference §0, S2); were one sent back,
    # it is dropped, however its name is encoded, and the cursor is asked exactly as given.
    (f"cursor={CURSOR}&apiKey={KEY}", f"cursor={CURSOR}"),
    (f"apiKe%79={KEY}&cursor={CURSOR}", f"cursor={CURSOR}"),
    # Nothing but the key: no page named (as the spec's vX example), the listing ends.
    (f"apiKey={KEY}", None),
])
def test_a_key_in_next_url_is_never_sent(query, asked):
    api = Api(aggs_pages(f"https://api.massive.com{NEXT_PATH}?{query}"))
    make(api).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert [str(r.url.query, "ascii") for r in api.requests[1:]] == \
        ([asked] if asked else [])


def test_a_next_url_of_the_api_is_asked_through_a_base_url_with_a_path():
    """A base URL with a path (a proxy, ``MASSIVE_BASE_URL=https://proxy.example/massive``)
    asks first pages under that path; a next_url naming the API's own host is asked under it
    too (as the Python client's ``BASE + path``), and one already under it is kept as is."""
    base = "https://proxy.example/massive"
    routes = {"/massive" + p: h for p, h in aggs_pages(
        f"https://api.massive.com{NEXT_PATH}?cursor={CURSOR}").items()}
    api = Api(routes, host="proxy.example")
    frame = make(api, base).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert frame.height == 3
    assert [r.url.raw_path.decode() for r in api.requests] == [
        f"/massive{AAPL_AGGS}?adjusted=true&sort=asc&limit=50000",
        f"/massive{NEXT_PATH}?cursor={CURSOR}"]
    routes[f"/massive{AAPL_AGGS}"] = lambda r: _json(200, {
        **AGGS_EXAMPLE, "next_url": f"https://proxy.example/massive{NEXT_PATH}?cursor={CURSOR}"})
    make(api, base).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert api.requests[-1].url.raw_path.decode() == f"/massive{NEXT_PATH}?cursor={CURSOR}"
