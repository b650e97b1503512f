"""MassiveProvider against httpx.MockTransport routes and the loopback fake.

Fixtures are written from the field lists in the API reference; values are made up.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from zoneinfo import ZoneInfo

import httpx
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from enrich.config import Settings
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
    RateLimitedError,
    TransientError,
    ValidationError,
)
from enrich.providers import Provider
from enrich.providers.massive.provider import MassiveProvider, parse_retry_after
from enrich.providers.ratelimit import RateLimiter, clear_limiters
from enrich.providers.retry import RetryPolicy
from enrich.quant.occ import parse_occ
from enrich.schemas import BARS, DIVIDENDS, EARNINGS, NEWS, OPTIONS_IV, RATES, SPLITS
from tests.fakes.massive_server import FakeMassive

KEY = "sk-live-Zq8SECRETxY41"
BASE = "https://api.massive.com"
TODAY = dt.date(2025, 6, 2)
ET = ZoneInfo("America/New_York")
D = dt.date


def et_ms(day: dt.date, hour: int = 0, minute: int = 0) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), ET).timestamp() * 1000)


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


Handler = Callable[[httpx.Request], httpx.Response]


class Api:
    """A MockTransport router: path -> handler (or a list answered in turn); records requests.

    Every request is checked on the way in: Bearer key present, key nowhere in the URL.
    """

    def __init__(self, routes: dict[str, Handler | dict | list] | None = None):
        self.routes: dict[str, Handler | dict | list] = dict(routes or {})
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert KEY not in str(request.url), "the key leaked into a URL"
        assert request.headers.get("authorization") == f"Bearer {KEY}"
        route = self.routes.get(request.url.path)
        if route is None:
            return httpx.Response(404, json={"status": "NOT_FOUND", "request_id": "r404",
                                             "message": "no such path"})
        if isinstance(route, list):
            route = route.pop(0) if len(route) > 1 else route[0]
        if callable(route):
            return route(request)
        # json.dumps, not json=: a payload may carry NaN, as a broken server might send.
        return httpx.Response(200, content=json.dumps(route).encode(),
                              headers={"content-type": "application/json"})

    def paths(self) -> list[str]:
        return [r.url.path for r in self.requests]


def make(api: Api, **kw) -> MassiveProvider:
    client = httpx.Client(transport=httpx.MockTransport(api))
    kw.setdefault("today", lambda: TODAY)
    return MassiveProvider(client, KEY, BASE, kw.pop("limiter", None), **kw)


def ok(results: list | None, **extra) -> dict:
    body = {"status": "OK", "request_id": "req-1", **extra}
    if results is not None:
        body["results"] = results
    return body


def reply(status: int, body: object = None, headers: dict | None = None,
          raw: bytes | None = None, content_type: str = "application/json") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        content = raw if raw is not None else json.dumps(body).encode()
        return httpx.Response(status, content=content,
                              headers={"content-type": content_type, **(headers or {})})
    return handler


AAPL_AGGS = "/v2/aggs/ticker/AAPL/range/1/day/2024-03-01/2024-11-05"


def bar(t: int, o=100.0, h=102.0, lo=99.0, c=101.0, v=1000.0, **extra) -> dict:
    return {"o": o, "h": h, "l": lo, "c": c, "v": v, "t": t, **extra}


# ---- protocol and construction --------------------------------------------------------------


def test_provider_satisfies_the_protocol_and_labels():
    p = make(Api())
    assert isinstance(p, Provider)
    assert (p.name, p.is_demo, p.rate_limited) == ("massive", False, True)


def test_key_never_in_repr_or_str():
    p = make(Api())
    assert KEY not in repr(p) and KEY not in str(p)


def test_a_base_url_password_never_in_repr_or_str():
    client = httpx.Client(transport=httpx.MockTransport(Api()))
    p = MassiveProvider(client, KEY, "https://ops:hunter2-secret@proxy.example:8443", None,
                        today=lambda: TODAY)
    for text in (repr(p), str(p)):
        assert "hunter2" not in text and "ops:" not in text, text
        assert "proxy.example:8443" in text  # which endpoint it talks to stays visible


def test_missing_key_is_a_config_error():
    with pytest.raises(ConfigError, match="MASSIVE_API_KEY"):
        MassiveProvider(httpx.Client(), "", BASE, None)
    with pytest.raises(ConfigError, match="MASSIVE_API_KEY"):
        MassiveProvider.from_settings(Settings(provider="massive", api_key=None))


def test_from_settings_builds_a_client_and_shares_the_host_limiter():
    clear_limiters()
    try:
        s = Settings(provider="massive", api_key=KEY, rate_limit_per_min=5)
        a = MassiveProvider.from_settings(s)
        b = MassiveProvider.from_settings(s, priority=1)
        try:
            assert a._limiter is b._limiter is not None
            assert a._limiter.per_minute == 5
            assert a._client.timeout.connect == 10.0 and a._client.timeout.read == 30.0
            assert a._client is not b._client
            assert KEY not in str(dict(a._client.headers))
        finally:
            a.close()
            b.close()
    finally:
        clear_limiters()


def test_from_settings_uses_a_given_client_and_leaves_it_open():
    api = Api({"/v1/marketstatus/now": {"market": "open"}})
    client = httpx.Client(transport=httpx.MockTransport(api))
    s = Settings(provider="massive", api_key=KEY)
    with MassiveProvider.from_settings(s, client=client, limiter=None) as p:
        assert p.probe().ok
    assert not client.is_closed


# ---- bars -----------------------------------------------------------------------------------


def test_daily_bars_parse_with_et_sessions_across_dst():
    rows = [
        bar(1709874000000),  # 2024-03-08 00:00 EST = 05:00 UTC
        bar(1710129600000, vw=100.5, n=42),  # 2024-03-11 00:00 EDT = 04:00 UTC (after DST)
        bar(et_ms(D(2024, 11, 4)), v=1.5e6),  # after the November change: 05:00 UTC again
    ]
    api = Api({AAPL_AGGS: ok(rows, ticker="AAPL", queryCount=3, resultsCount=3)})
    frame = make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert frame.schema == BARS.schema
    assert frame["session"].to_list() == [D(2024, 3, 8), D(2024, 3, 11), D(2024, 11, 4)]
    assert frame["ts"].to_list() == [utc(2024, 3, 8, 5), utc(2024, 3, 11, 4), utc(2024, 11, 4, 5)]
    assert frame["vwap"].to_list() == [None, 100.5, None]
    assert frame["trades"].to_list() == [None, 42, None]
    assert frame["volume"].to_list() == [1000.0, 1000.0, 1.5e6]
    assert set(frame["symbol"]) == {"AAPL"} and set(frame["timeframe"]) == {"1d"}
    assert set(frame["adjusted_asof"]) == {TODAY}
    (req,) = api.requests
    assert dict(req.url.params) == {"adjusted": "true", "sort": "asc", "limit": "50000"}


def test_spec_example_timestamp_is_the_second_of_january():
    path = "/v2/aggs/ticker/AAPL/range/1/day/2020-01-01/2020-01-03"
    api = Api({path: ok([bar(1577941200000)])})
    frame = make(api).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 3))
    assert frame["session"].to_list() == [D(2020, 1, 2)]


@pytest.mark.parametrize("timeframe, segment", [("1d", "1/day"), ("1h", "1/hour"),
                                                ("5m", "5/minute")])
def test_timeframes_map_to_multiplier_and_timespan(timeframe, segment):
    api = Api()
    api.routes[f"/v2/aggs/ticker/MSFT/range/{segment}/2024-01-02/2024-01-03"] = ok(None)
    assert make(api).bars("MSFT", timeframe, D(2024, 1, 2), D(2024, 1, 3)).is_empty()
    assert len(api.requests) == 1


def test_intraday_session_is_the_new_york_date_not_the_utc_date():
    path = "/v2/aggs/ticker/AAPL/range/1/hour/2024-03-11/2024-03-11"
    evening = et_ms(D(2024, 3, 11), 19)  # 23:00 UTC the same day
    late = et_ms(D(2024, 3, 11), 21)  # 01:00 UTC the next day
    next_morning = et_ms(D(2024, 3, 12), 4)  # outside the requested range: dropped
    api = Api({path: ok([bar(evening), bar(late), bar(next_morning)])})
    frame = make(api).bars("AAPL", "1h", D(2024, 3, 11), D(2024, 3, 11))
    assert frame["ts"].to_list() == [utc(2024, 3, 11, 23), utc(2024, 3, 12, 1)]
    assert frame["session"].to_list() == [D(2024, 3, 11), D(2024, 3, 11)]


def test_no_results_key_is_an_empty_frame():
    api = Api({AAPL_AGGS: {"ticker": "AAPL", "queryCount": 0, "resultsCount": 0,
                           "adjusted": True, "status": "OK", "request_id": "x"}})
    frame = make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert frame.is_empty() and frame.schema == BARS.schema


def test_unknown_timeframe_is_refused_before_any_request():
    api = Api()
    with pytest.raises(ValueError, match="timeframe"):
        make(api).bars("AAPL", "2d", D(2024, 1, 1), D(2024, 1, 2))
    assert api.requests == []


def test_bad_rows_refuse_the_whole_payload_with_causes():
    rows = [
        bar(et_ms(D(2024, 3, 8))),
        bar(et_ms(D(2024, 3, 11)), h=98.0, lo=99.0),  # high < low
        bar(et_ms(D(2024, 3, 12)), o=-1.0),  # negative price
        {"o": 1, "h": 1, "l": 1, "v": 1, "t": et_ms(D(2024, 3, 13))},  # no close
        bar(et_ms(D(2024, 3, 14)), c="101.0"),  # mistyped
        bar(et_ms(D(2024, 3, 15)), v=-5),  # negative volume
        bar(et_ms(D(2024, 3, 18)), c=float("nan")),  # not finite
        "not an object",
    ]
    api = Api({AAPL_AGGS: ok(rows)})
    with pytest.raises(ValidationError) as info:
        make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    err = info.value
    assert err.rejected == 7
    assert len(err.causes) == 5
    assert "high 98.0 < low 99.0" in err.causes[0]
    assert "'o' is negative" in err.causes[1]
    assert "missing 'c'" in err.causes[2]
    assert "'c' is not a number" in err.causes[3]
    assert not err.retryable


def test_option_bars_use_the_occ_ticker_in_the_path():
    contract = "O:AAPL250117C00150000"
    path = f"/v2/aggs/ticker/{contract}/range/1/day/2025-01-02/2025-01-17"
    api = Api({path: ok([bar(et_ms(D(2025, 1, 2)), o=5.0, h=5.5, lo=4.8, c=5.2)])})
    frame = make(api).option_bars(contract, D(2025, 1, 2), D(2025, 1, 17))
    assert frame["symbol"].to_list() == [contract]
    assert frame["session"].to_list() == [D(2025, 1, 2)]
    assert api.requests[0].url.raw_path.startswith(b"/v2/aggs/ticker/O:AAPL250117C00150000/")


@pytest.mark.parametrize("bad", ["AAPL250117C00150000", "O:AAPL250117X00150000",
                                 "O:AAPL2501C00150000", "O:../../v1/x250117C00150000"])
def test_option_bars_refuse_a_malformed_contract_without_a_request(bad):
    api = Api()
    with pytest.raises(InvalidSymbolError):
        make(api).option_bars(bad, D(2025, 1, 2), D(2025, 1, 17))
    assert api.requests == []


def test_symbol_cannot_escape_its_path_segment():
    api = Api()
    with pytest.raises(NotFoundError):
        make(api).bars("../v1/x", "1d", D(2024, 1, 2), D(2024, 1, 3))
    assert api.requests[0].url.raw_path.startswith(b"/v2/aggs/ticker/..%2Fv1%2Fx/range/")


def test_grouped_daily_normalises_ts_to_midnight_new_york():
    close = et_ms(D(2024, 3, 11), 16)  # grouped rows stamp the close, not midnight
    rows = [{"T": "AAPL", **bar(close)}, {"T": "KIMpL", **bar(close, c=25.9, vw=26.0, n=74)}]
    api = Api({"/v2/aggs/grouped/locale/us/market/stocks/2024-03-11": ok(rows)})
    frame = make(api).grouped_daily(D(2024, 3, 11))
    assert frame.schema == BARS.schema
    assert frame["symbol"].to_list() == ["AAPL", "KIMpL"]
    assert set(frame["ts"]) == {utc(2024, 3, 11, 4)}
    assert set(frame["session"]) == {D(2024, 3, 11)}
    assert dict(api.requests[0].url.params) == {"adjusted": "true", "include_otc": "true"}


def test_grouped_daily_without_results_is_empty():
    api = Api({"/v2/aggs/grouped/locale/us/market/stocks/2024-03-09": ok(None, queryCount=0)})
    assert make(api).grouped_daily(D(2024, 3, 9)).is_empty()


# ---- dividends and splits -------------------------------------------------------------------

DIV_V1 = {
    "id": "Eabc123", "ticker": "XYZ", "cash_amount": 0.5, "split_adjusted_cash_amount": 0.25,
    "currency": "USD", "declaration_date": "2025-01-02", "ex_dividend_date": "2025-01-15",
    "record_date": "2025-01-15", "pay_date": "2025-02-01", "frequency": 4,
    "distribution_type": "recurring", "historical_adjustment_factor": 0.9951,
}


def test_dividends_v1_parse_and_query():
    sparse = {"id": "E2", "ticker": "XYZ", "cash_amount": 1.25, "ex_dividend_date": "2025-03-20",
              "distribution_type": "special"}
    api = Api({"/stocks/v1/dividends": ok([DIV_V1, sparse])})
    frame = make(api).dividends("XYZ", D(2025, 1, 1), D(2025, 3, 31))
    expected = pl.DataFrame({
        "symbol": ["XYZ", "XYZ"], "ex_date": [D(2025, 1, 15), D(2025, 3, 20)],
        "declaration_date": [D(2025, 1, 2), None], "record_date": [D(2025, 1, 15), None],
        "pay_date": [D(2025, 2, 1), None], "cash_amount": [0.5, 1.25],
        "currency": ["USD", None], "frequency": [4, None],
        "distribution_type": ["recurring", "special"], "regular_cash_amount": [None, None],
    }, schema=DIVIDENDS.schema)
    assert_frame_equal(frame, expected)
    assert dict(api.requests[0].url.params) == {
        "ticker": "XYZ", "ex_dividend_date.gte": "2025-01-01",
        "ex_dividend_date.lte": "2025-03-31", "limit": "5000", "sort": "ex_dividend_date.asc"}


def test_dividends_on_one_ex_date_are_summed():
    special = {**DIV_V1, "id": "Eother", "cash_amount": 1.0, "distribution_type": "special"}
    api = Api({"/stocks/v1/dividends": ok([DIV_V1, special])})
    frame = make(api).dividends("XYZ", D(2025, 1, 1), D(2025, 3, 31))
    assert frame.height == 1
    assert frame["cash_amount"].to_list() == [1.5]
    assert frame["distribution_type"].to_list() == ["recurring+special"]


def test_dividends_fall_back_to_v3_on_404_and_remember_it():
    v3 = {"id": "E1", "ticker": "XYZ", "cash_amount": 0.5, "currency": "USD",
          "declaration_date": "2025-01-02", "ex_dividend_date": "2025-01-15",
          "record_date": "2025-01-16", "pay_date": "2025-02-01", "frequency": 4,
          "dividend_type": "CD"}
    v3_special = {**v3, "id": "E2", "ex_dividend_date": "2025-02-15", "dividend_type": "SC",
                  "frequency": 0}
    api = Api({"/v3/reference/dividends": ok([v3, v3_special])})
    p = make(api)
    frame = p.dividends("XYZ", D(2025, 1, 1), D(2025, 3, 31))
    assert frame["distribution_type"].to_list() == ["recurring", "special"]
    assert frame["record_date"].to_list() == [D(2025, 1, 16), D(2025, 1, 16)]
    assert api.paths() == ["/stocks/v1/dividends", "/v3/reference/dividends"]
    params = dict(api.requests[1].url.params)
    assert params["sort"] == "ex_dividend_date" and params["order"] == "asc"
    assert params["limit"] == "1000"
    p.dividends("XYZ", D(2025, 1, 1), D(2025, 3, 31))
    assert api.paths()[2:] == ["/v3/reference/dividends"]


def test_dividend_with_negative_amount_is_refused():
    api = Api({"/stocks/v1/dividends": ok([{**DIV_V1, "cash_amount": -0.5}])})
    with pytest.raises(ValidationError, match="1 of 1 rows refused"):
        make(api).dividends("XYZ", D(2025, 1, 1), D(2025, 3, 31))


def test_splits_v1_parse():
    row = {"id": "Edef456", "ticker": "XYZ", "execution_date": "2024-06-10", "split_from": 1,
           "split_to": 4, "adjustment_type": "forward_split",
           "historical_adjustment_factor": 0.25}
    api = Api({"/stocks/v1/splits": ok([row])})
    frame = make(api).splits("XYZ", D(2024, 1, 1), D(2024, 12, 31))
    expected = pl.DataFrame({"symbol": ["XYZ"], "execution_date": [D(2024, 6, 10)],
                             "split_from": [1.0], "split_to": [4.0],
                             "adjustment_type": ["forward_split"]}, schema=SPLITS.schema)
    assert_frame_equal(frame, expected)
    params = dict(api.requests[0].url.params)
    assert params["execution_date.gte"] == "2024-01-01" and params["limit"] == "5000"


def test_splits_fall_back_to_v3_and_read_the_type_off_the_ratio():
    rows = [
        {"id": "a", "ticker": "XYZ", "execution_date": "2020-08-31", "split_from": 1,
         "split_to": 4},
        {"id": "b", "ticker": "XYZ", "execution_date": "2023-05-01", "split_from": 10,
         "split_to": 1},
        {"id": "c", "ticker": "XYZ", "execution_date": "2023-06-01", "split_from": 2.5,
         "split_to": 2.5},
    ]
    api = Api({"/v3/reference/splits": ok(rows)})
    frame = make(api).splits("XYZ", D(2020, 1, 1), D(2024, 12, 31))
    assert frame["adjustment_type"].to_list() == ["forward_split", "reverse_split", "unknown"]
    assert api.paths() == ["/stocks/v1/splits", "/v3/reference/splits"]


def test_split_with_zero_ratio_is_refused():
    api = Api({"/stocks/v1/splits": ok([{"execution_date": "2024-06-10", "split_from": 0,
                                         "split_to": 4}])})
    with pytest.raises(ValidationError) as info:
        make(api).splits("XYZ", D(2024, 1, 1), D(2024, 12, 31))
    assert "not positive" in info.value.causes[0]


# ---- earnings -------------------------------------------------------------------------------

INCOME = "/stocks/financials/v1/income-statements"
VX = "/vX/reference/financials"
V1_ROW = {"tickers": ["XYZ"], "cik": "0000000001", "timeframe": "quarterly", "fiscal_year": 2024,
          "fiscal_quarter": 2, "period_end": "2024-06-30", "filing_date": "2024-08-01",
          "revenue": 1.0e9, "basic_earnings_per_share": 1.23,
          "diluted_earnings_per_share": 1.20}
VX_ROW = {
    "tickers": ["XYZ"], "cik": "0000000001", "company_name": "XYZ Corp", "fiscal_period": "Q2",
    "fiscal_year": "2024", "timeframe": "quarterly", "start_date": "20240401",
    "end_date": "20240630", "filing_date": "2024-08-01",
    "financials": {"income_statement": {
        "revenues": {"label": "Revenues", "order": 100, "unit": "USD", "value": 1.0e9},
        "basic_earnings_per_share": {"label": "Basic EPS", "order": 4200,
                                     "unit": "USD / shares", "value": 1.23},
        "diluted_earnings_per_share": {"label": "Diluted EPS", "order": 4300,
                                       "unit": "USD / shares", "value": 1.20}}},
}
EXPECTED_EARNINGS = pl.DataFrame({
    "symbol": ["XYZ"], "fiscal_year": [2024], "fiscal_quarter": [2],
    "period_end": [D(2024, 6, 30)], "filing_date": [D(2024, 8, 1)], "revenue": [1.0e9],
    "eps_basic": [1.23], "eps_diluted": [1.20],
}, schema=EARNINGS.schema)
NOT_ENTITLED = reply(403, {"status": "NOT_AUTHORIZED", "request_id": "r403",
                           "message": "You are not entitled to this data. Please upgrade your "
                                      "plan at https://massive.com/pricing"})


def test_earnings_v1_parse_and_query():
    api = Api({INCOME: ok([V1_ROW])})
    assert_frame_equal(make(api).earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31)),
                       EXPECTED_EARNINGS)
    assert dict(api.requests[0].url.params) == {
        "tickers": "XYZ", "timeframe": "quarterly", "filing_date.gte": "2024-01-01",
        "filing_date.lte": "2024-12-31", "limit": "1000", "sort": "filing_date.asc"}


def test_restated_quarter_keeps_the_latest_filing():
    amended = {**V1_ROW, "filing_date": "2024-09-15", "revenue": 1.1e9}
    api = Api({INCOME: ok([amended, V1_ROW])})
    frame = make(api).earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31))
    assert frame["revenue"].to_list() == [1.1e9]


@pytest.mark.parametrize("v1", [reply(404, {"status": "NOT_FOUND"}), NOT_ENTITLED])
def test_earnings_fall_back_to_vx_on_404_and_403(v1):
    fy = {**VX_ROW, "fiscal_period": "FY"}  # not a quarter: skipped, not refused
    api = Api({INCOME: v1, VX: ok([VX_ROW, fy])})
    frame = make(api).earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31))
    assert_frame_equal(frame, EXPECTED_EARNINGS)
    params = dict(api.requests[1].url.params)
    assert params == {"ticker": "XYZ", "timeframe": "quarterly", "filing_date.gte": "2024-01-01",
                      "filing_date.lte": "2024-12-31", "limit": "100", "sort": "filing_date",
                      "order": "asc"}


def test_vx_dates_in_either_format_and_missing_concepts():
    row = {**VX_ROW, "end_date": "2024-06-30", "financials": {"income_statement": {}}}
    api = Api({INCOME: NOT_ENTITLED, VX: ok([row])})
    frame = make(api).earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31))
    assert frame["period_end"].to_list() == [D(2024, 6, 30)]
    assert frame["revenue"].to_list() == [None] and frame["eps_basic"].to_list() == [None]


def test_earnings_when_both_deny_is_not_entitled():
    api = Api({INCOME: NOT_ENTITLED, VX: NOT_ENTITLED})
    with pytest.raises(NotEntitledError, match="plan does not include"):
        make(api).earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31))


def test_earnings_v1_denied_and_vx_gone_is_still_not_entitled():
    api = Api({INCOME: NOT_ENTITLED})
    p = make(api)
    with pytest.raises(NotEntitledError) as info:
        p.earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31))
    assert info.value.endpoint == INCOME
    # Remembered: the next call goes straight to the fallback.
    with pytest.raises(NotEntitledError):
        p.earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31))
    assert api.paths() == [INCOME, VX, VX]


def test_earnings_with_a_bad_quarter_is_refused():
    api = Api({INCOME: ok([{**V1_ROW, "fiscal_quarter": 5}])})
    with pytest.raises(ValidationError, match="fiscal quarter 5"):
        make(api).earnings("XYZ", D(2024, 1, 1), D(2024, 12, 31))


# ---- news -----------------------------------------------------------------------------------

NEWS_ROW = {
    "id": "n-123", "title": "XYZ beats estimates", "author": "A. Writer",
    "published_utc": "2025-03-01T14:30:00Z", "article_url": "https://example.com/a",
    "tickers": ["XYZ", "ABC"],
    "publisher": {"name": "Example News", "homepage_url": "https://example.com",
                  "logo_url": "https://example.com/l.png",
                  "favicon_url": "https://example.com/f.ico"},
    "insights": [{"ticker": "ABC", "sentiment": "negative", "sentiment_reasoning": "not us"},
                 {"ticker": "XYZ", "sentiment": "positive", "sentiment_reasoning": "beat"}],
}


def test_news_parse_takes_the_insight_for_the_symbol():
    bare = {"id": "n-124", "title": "Plain", "published_utc": "2025-03-02T09:15:30.123-05:00",
            "article_url": "https://example.com/b", "publisher": {"name": "Wire"}}
    api = Api({"/v2/reference/news": ok([NEWS_ROW, bare], count=2)})
    frame = make(api).news("XYZ", D(2025, 3, 1), D(2025, 3, 2))
    expected = pl.DataFrame({
        "symbol": ["XYZ", "XYZ"], "id": ["n-123", "n-124"],
        "published_utc": [utc(2025, 3, 1, 14, 30), utc(2025, 3, 2, 14, 15, 30, 123000)],
        "title": ["XYZ beats estimates", "Plain"], "publisher": ["Example News", "Wire"],
        "url": ["https://example.com/a", "https://example.com/b"],
        "sentiment": ["positive", None], "sentiment_reasoning": ["beat", None],
    }, schema=NEWS.schema)
    assert_frame_equal(frame, expected)
    assert dict(api.requests[0].url.params) == {
        "ticker": "XYZ", "published_utc.gte": "2025-03-01T05:00:00Z",
        "published_utc.lte": "2025-03-03T04:59:59Z", "limit": "1000", "order": "asc",
        "sort": "published_utc"}


def test_news_days_are_new_york_days():
    late = {**NEWS_ROW, "id": "late", "published_utc": "2025-03-03T03:00:00Z"}  # Mar 2, 22:00 ET
    early = {**NEWS_ROW, "id": "early", "published_utc": "2025-03-01T04:00:00Z"}  # Feb 28 ET
    api = Api({"/v2/reference/news": ok([early, late])})
    frame = make(api).news("XYZ", D(2025, 3, 1), D(2025, 3, 2))
    assert frame["id"].to_list() == ["late"]


def test_news_text_a_server_echoes_the_key_in_is_stored_without_it():
    """Found by a QA pass: a server echoing the key in an article's title and URL (or a
    lower-cased piece of it) had it stored in the lake and the catalog's news table, and
    served by GET /symbols/{symbol}/news. The README promises such text is scrubbed."""
    echo = {**NEWS_ROW, "title": f"title with {KEY}",
            "article_url": f"https://example.com/a?apiKey={KEY.lower()}",
            "publisher": {"name": f"by {KEY[3:15]}"},
            "insights": [{"ticker": "XYZ", "sentiment": "positive",
                          "sentiment_reasoning": f"key {KEY.upper()} inside"}]}
    frame = make(Api({"/v2/reference/news": ok([echo])})).news("XYZ", D(2025, 3, 1),
                                                                 D(2025, 3, 2))
    row = frame.row(0, named=True)
    for field in ("title", "url", "publisher", "sentiment_reasoning"):
        assert "SECRET" not in row[field].upper() and "***" in row[field], (field, row[field])
    assert row["title"].startswith("title with ")


def test_news_without_id_or_time_is_refused():
    rows = [{**NEWS_ROW, "id": None}, {**NEWS_ROW, "published_utc": "yesterday"}]
    api = Api({"/v2/reference/news": ok(rows)})
    with pytest.raises(ValidationError) as info:
        make(api).news("XYZ", D(2025, 3, 1), D(2025, 3, 2))
    assert info.value.rejected == 2


# ---- options --------------------------------------------------------------------------------

CHAIN_ROW = {
    "details": {"ticker": "O:XYZ250620C00150000", "contract_type": "call",
                "exercise_style": "american", "expiration_date": "2025-06-20",
                "strike_price": 150, "shares_per_contract": 100},
    "greeks": {"delta": 0.52, "gamma": 0.03, "theta": -0.05, "vega": 0.12},
    "implied_volatility": 0.31, "open_interest": 1200, "break_even_price": 155.4,
    "day": {"open": 5.0, "high": 5.6, "low": 4.9, "close": 5.4, "volume": 300, "vwap": 5.3},
    "last_quote": {"bid": 5.3, "ask": 5.5, "midpoint": 5.4, "timeframe": "DELAYED"},
    "underlying_asset": {"ticker": "XYZ", "price": 151.2, "change_to_break_even": 4.2},
}


# The chain snapshot's example row from the OpenAPI spec (massive-com/client-go
# rest/scripts/openapi.json @ 9471d9b, GET /v3/snapshot/options/{underlyingAsset}), ticker
# fixed to 8 strike digits (the spec's has 9: a typo, massive-rest-api.md §6).
SPEC_CHAIN_ROW = {
    "break_even_price": 151.2,
    "day": {"change": 4.5, "change_percent": 6.76, "close": 120.73, "high": 120.81,
            "last_updated": 1605195918507251700, "low": 118.9, "open": 119.32,
            "previous_close": 119.12, "volume": 868, "vwap": 119.31},
    "details": {"contract_type": "call", "exercise_style": "american",
                "expiration_date": "2022-01-21", "shares_per_contract": 100,
                "strike_price": 150, "ticker": "O:AAPL220121C00150000"},
    "fmv": 0.05, "fmv_last_updated": 1605195918508251600,
    "greeks": {"delta": 1, "gamma": 0, "theta": 0.00229, "vega": 0},
    "implied_volatility": 5,
    "last_quote": {"ask": 120.3, "ask_size": 4, "bid": 120.28, "bid_size": 8,
                   "last_updated": 1605195918507251700, "midpoint": 120.29,
                   "timeframe": "REAL-TIME"},
    "last_trade": {"conditions": [209], "decimal_size": "2.0", "exchange": 316, "price": 0.05,
                   "sip_timestamp": 1675280958783136800, "size": 2, "timeframe": "REAL-TIME"},
    "open_interest": 1543,
    "underlying_asset": {"change_to_break_even": 4.2, "last_updated": 1605195918507251700,
                         "price": 147, "ticker": "AAPL", "timeframe": "DELAYED"},
}


def test_option_chain_keeps_the_quote_the_last_trade_and_the_terms():
    no_trades = {"details": {"ticker": "O:AAPL220121P00032500", "contract_type": "put",
                             "expiration_date": "2022-01-21", "strike_price": 32.5},
                 "open_interest": 7, "day": {"close": 0.07, "volume": 3,
                                             "last_updated": 1605195918507251700},
                 "underlying_asset": {"ticker": "AAPL", "price": 147}}
    other = {"details": {"ticker": "O:AAPL1220121C00150000", "contract_type": "other",
                         "expiration_date": "2022-01-21", "strike_price": 150},
             "open_interest": 1}
    api = Api({"/v3/snapshot/options/AAPL": ok([SPEC_CHAIN_ROW, no_trades, other])})
    frame = make(api).option_chain("AAPL", D(2020, 11, 12))
    assert frame.schema == OPTIONS_IV.schema
    rows = frame.to_dicts()
    assert [r["contract"] for r in rows] == ["O:AAPL220121P00032500", "O:AAPL220121C00150000"]
    put, call = rows
    stamp = utc(2020, 11, 12, 15, 45, 18, 507251)  # 1605195918507251700 ns
    assert {k: call[k] for k in (
        "symbol", "as_of", "expiration", "strike", "contract_type", "underlying_price",
        "open_interest", "bid", "ask", "quote_at", "trade_price", "trade_at", "volume",
        "shares_per_contract", "exercise_style", "provider_iv", "source")} == {
        "symbol": "AAPL", "as_of": D(2020, 11, 12), "expiration": D(2022, 1, 21),
        "strike": 150.0, "contract_type": "call", "underlying_price": 147.0,
        "open_interest": 1543, "bid": 120.28, "ask": 120.3, "quote_at": stamp,
        "trade_price": 0.05, "trade_at": utc(2023, 2, 1, 19, 49, 18, 783136),
        "volume": 868.0, "shares_per_contract": 100.0, "exercise_style": "american",
        "provider_iv": 5.0, "source": "snapshot"}
    # IV and greeks are ours to compute (enrich.quant.snapshots), never Massive's.
    assert call["iv"] is None and call["delta"] is None and call["option_price"] is None
    # A plan without trades: the day's close stands in for the last trade, with its time.
    assert (put["trade_price"], put["trade_at"], put["bid"]) == (0.07, stamp, None)
    assert put["strike"] == 32.5 and put["exercise_style"] is None
    # Capped by the chain filters: expirations within 120 days (no spot given: no strikes).
    assert dict(api.requests[0].url.params) == {
        "limit": "250", "expiration_date.gte": "2020-11-12",
        "expiration_date.lte": "2021-03-12"}


def test_option_chain_with_negative_iv_is_refused():
    api = Api({"/v3/snapshot/options/XYZ": ok([{**CHAIN_ROW, "implied_volatility": -0.2}])})
    with pytest.raises(ValidationError):
        make(api).option_chain("XYZ", D(2025, 6, 2))


# The contracts example of the OpenAPI spec (GET /v3/reference/options/contracts, @ 9471d9b):
# the second contract carries adjusted deliverables.
SPEC_CONTRACTS = [
    {"cfi": "OCASPS", "contract_type": "call", "exercise_style": "american",
     "expiration_date": "2021-11-19", "primary_exchange": "BATO", "shares_per_contract": 100,
     "strike_price": 85, "ticker": "O:AAPL211119C00085000", "underlying_ticker": "AAPL"},
    {"additional_underlyings": [{"amount": 44, "type": "equity", "underlying": "VMW"},
                                {"amount": 6.53, "type": "currency", "underlying": "USD"}],
     "cfi": "OCASPS", "contract_type": "call", "exercise_style": "american",
     "expiration_date": "2021-11-19", "primary_exchange": "BATO", "shares_per_contract": 100,
     "strike_price": 90, "ticker": "O:AAPL211119C00090000", "underlying_ticker": "AAPL"},
]


def test_option_contracts_parse_the_terms_and_send_the_filters():
    api = Api({"/v3/reference/options/contracts": ok(SPEC_CONTRACTS)})
    frame = make(api, today=lambda: D(2021, 11, 1)).option_contracts(
        "AAPL", D(2021, 11, 1), strikes=(80.0, 120.0))
    assert frame.to_dicts() == [
        {"symbol": "AAPL", "contract": "O:AAPL211119C00085000", "expiration": D(2021, 11, 19),
         "strike": 85.0, "contract_type": "call", "shares_per_contract": 100.0,
         "exercise_style": "american", "deliverables": None},
        {"symbol": "AAPL", "contract": "O:AAPL211119C00090000", "expiration": D(2021, 11, 19),
         "strike": 90.0, "contract_type": "call", "shares_per_contract": 100.0,
         "exercise_style": "american",
         "deliverables": '[{"amount": 44, "type": "equity", "underlying": "VMW"}, '
                         '{"amount": 6.53, "type": "currency", "underlying": "USD"}]'}]
    # as_of today: one request, live contracts only; expirations up to 120 days, strikes.
    assert [dict(r.url.params) for r in api.requests] == [{
        "underlying_ticker": "AAPL", "as_of": "2021-11-01", "expiration_date.gte": "2021-11-01",
        "expiration_date.lte": "2022-03-01", "strike_price.gte": "80.0",
        "strike_price.lte": "120.0", "limit": "1000", "expired": "false"}]


def test_a_past_listing_asks_for_contracts_expired_since_until_the_answer_says_otherwise():
    # Expired judged against today: the first request lists only contracts still live today,
    # the second (expired=true, expirations from as_of to yesterday) the ones gone since.
    live = [{**SPEC_CONTRACTS[0], "ticker": "O:AAPL211217C00085000",
             "expiration_date": "2021-12-17"}]
    api = Api({"/v3/reference/options/contracts": [ok(live), ok(SPEC_CONTRACTS[:1])]})
    provider = make(api, today=lambda: D(2021, 12, 1))
    got = provider.option_contracts("AAPL", D(2021, 11, 1))
    assert got["contract"].to_list() == ["O:AAPL211119C00085000", "O:AAPL211217C00085000"]
    assert [(r.url.params["expired"], r.url.params["expiration_date.lte"])
            for r in api.requests] == [("false", "2022-03-01"), ("true", "2021-11-30")]
    # Expired judged against as_of: the first answer already holds a contract that has
    # expired since; from then on one request per session.
    api = Api({"/v3/reference/options/contracts": ok(SPEC_CONTRACTS[:1] + live)})
    provider = make(api, today=lambda: D(2021, 12, 1))
    assert provider.option_contracts("AAPL", D(2021, 11, 1)).height == 2
    provider.option_contracts("AAPL", D(2021, 11, 2))
    assert [r.url.params["expired"] for r in api.requests] == ["false", "false"]


def test_treasury_yields_from_the_spec_example():
    # GET /fed/v1/treasury-yields example of the OpenAPI spec (@ 9471d9b): 1962, three tenors,
    # a numeric request_id.
    body = {"count": 1, "request_id": 1, "status": "OK", "results": [
        {"date": "1962-01-02", "yield_10_year": 4.06, "yield_1_year": 3.22,
         "yield_5_year": 3.88}]}
    api = Api({"/fed/v1/treasury-yields": body})
    frame = make(api).treasury_yields(D(1962, 1, 1), D(1962, 1, 31))
    assert frame.schema == RATES.schema
    row = frame.row(0, named=True)
    assert (row["symbol"], row["date"], row["yield_1_year"], row["yield_5_year"],
            row["yield_10_year"], row["yield_3_month"]) == ("UST", D(1962, 1, 2), 3.22, 3.88,
                                                            4.06, None)
    assert dict(api.requests[0].url.params) == {
        "date.gte": "1962-01-01", "date.lte": "1962-01-31", "limit": "50000",
        "sort": "date.asc"}
    bad = Api({"/fed/v1/treasury-yields": ok([{"date": "2024-01-02", "yield_1_year": "4.1"}])})
    with pytest.raises(ValidationError, match="yield_1_year"):
        make(bad).treasury_yields(D(2024, 1, 1), D(2024, 1, 31))


# ---- probe ----------------------------------------------------------------------------------


def test_probe_valid():
    api = Api({"/v1/marketstatus/now": {"market": "closed", "serverTime": "x",
                                        "exchanges": {"nyse": "closed"}}})
    result = make(api).probe()
    assert result.ok and result.status == "valid" and result.latency_ms >= 0
    assert "closed" in result.message


@pytest.mark.parametrize("handler, status", [
    (reply(401, {"status": "ERROR", "error": "Unknown API Key"}), "invalid key"),
    (NOT_ENTITLED, "not entitled"),
    # It answered: reached, and the key not refused (a 429, a 5xx, an answer of no use).
    (reply(429, {"status": "ERROR", "error": "too many requests"}), "rate limited"),
    (reply(503, raw=b"<html>down</html>", content_type="text/html"), "provider error"),
    (reply(200, {"status": "OK"}), "provider error"),
])
def test_probe_failures(handler, status):
    result = make(Api({"/v1/marketstatus/now": handler})).probe()
    assert not result.ok and result.status == status
    assert KEY not in result.message


def test_probe_unreachable_host():
    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    result = make(Api({"/v1/marketstatus/now": refuse})).probe()
    assert (result.ok, result.status) == (False, "unreachable")


# ---- pagination -----------------------------------------------------------------------------


def paged(pages: list[tuple[list, str | None]]) -> Handler:
    """Answer the first request, then each cursor, with the given (rows, next cursor)."""
    by_cursor = {None: pages[0]}
    for i, (_, cursor) in enumerate(pages[:-1]):
        by_cursor[cursor] = pages[i + 1]

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        rows, nxt = by_cursor[cursor]
        body = ok(rows)
        if nxt:
            body["next_url"] = f"{BASE}:443{request.url.path}?cursor={nxt}"
        return httpx.Response(200, json=body)

    return handler


def test_pagination_follows_next_url_unchanged_with_the_bearer_header():
    days = [D(2024, 3, d) for d in (4, 5, 6, 7, 8, 11)]
    api = Api({AAPL_AGGS: paged([
        ([bar(et_ms(days[0])), bar(et_ms(days[1]))], "c2"),
        ([bar(et_ms(days[2])), bar(et_ms(days[3]))], "c3"),
        ([bar(et_ms(days[4])), bar(et_ms(days[5]))], None),
    ])})
    p = make(api)
    frame = p.bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert frame["session"].to_list() == days
    assert [str(r.url.query, "ascii") for r in api.requests] == [
        "adjusted=true&sort=asc&limit=50000", "cursor=c2", "cursor=c3"]
    for r in api.requests:  # also asserted by Api on the way in
        assert KEY not in str(r.url) and r.headers["authorization"] == f"Bearer {KEY}"
    assert p.take_request_count() == 3


def test_repeating_cursor_stops_and_keeps_what_was_read():
    api = Api({AAPL_AGGS: paged([
        ([bar(et_ms(D(2024, 3, 4)))], "loop"),
        ([bar(et_ms(D(2024, 3, 5)))], "loop"),
    ])})
    frame = make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert frame.height == 2
    assert len(api.requests) == 2


def test_page_cap_refuses_a_never_ending_listing():
    def endless(request):
        n = int(request.url.params.get("cursor", "0")) + 1
        return httpx.Response(200, json=ok([bar(et_ms(D(2024, 3, 4)))],
                                           next_url=f"{BASE}{AAPL_AGGS}?cursor={n}"))

    api = Api({AAPL_AGGS: endless})
    with pytest.raises(MalformedPayloadError, match="after 3"):
        make(api, max_pages=3).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert len(api.requests) == 3


@pytest.mark.parametrize("next_url", ["https://evil.example.com/v2/aggs?cursor=x",
                                      12])
def test_next_url_elsewhere_is_refused(next_url):
    api = Api({AAPL_AGGS: ok([bar(et_ms(D(2024, 3, 4)))], next_url=next_url)})
    with pytest.raises(MalformedPayloadError, match="next_url"):
        make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert len(api.requests) == 1


def test_next_url_carrying_an_api_key_has_it_removed():
    def handler(request):
        if "cursor" not in request.url.params:
            return httpx.Response(200, json=ok([bar(et_ms(D(2024, 3, 4)))],
                                               next_url=f"{BASE}{AAPL_AGGS}?cursor=c2&apiKey=k"))
        return httpx.Response(200, json=ok([bar(et_ms(D(2024, 3, 5)))]))

    api = Api({AAPL_AGGS: handler})
    make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert str(api.requests[1].url.query, "ascii") == "cursor=c2"


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("handler, cls, retryable, text", [
    (reply(401, {"status": "ERROR", "request_id": "rq", "error": "Unknown API Key"}),
     AuthError, False, "check MASSIVE_API_KEY"),
    (NOT_ENTITLED, NotEntitledError, False, "plan does not include"),
    (reply(200, {"status": "NOT_AUTHORIZED", "request_id": "rq",
                 "message": "Your plan doesn't include this data timeframe."}),
     HistoryLimitError, False, "doesn't include this data timeframe"),
    (reply(403, {"status": "NOT_AUTHORIZED", "request_id": "rq",
                 "message": "Attempted to request today's data before end of day. Please "
                            "upgrade your plan at https://massive.com/pricing"}),
     NotYetAvailableError, False, "before end of day"),
    (reply(404, {"status": "NOT_FOUND", "request_id": "rq", "message": "Not found"}),
     NotFoundError, False, "not found"),
    (reply(429, {"status": "ERROR", "request_id": "rq",
                 "error": "You've exceeded the maximum requests per minute"}),
     RateLimitedError, True, "maximum requests"),
    (reply(500, {"status": "ERROR", "request_id": "rq", "error": "boom"}),
     TransientError, True, "boom"),
    (reply(502, raw=b"<html><body>Bad gateway</body></html>", content_type="text/html"),
     TransientError, True, "Bad Gateway"),
    (reply(503, raw=b""), TransientError, True, "Service Unavailable"),
    (reply(400, {"status": "ERROR", "request_id": "rq", "error": "bad from date"}),
     ProviderError, False, "bad from date"),
    (reply(200, raw=b'{"status": "OK", "results": [{"o": 1'), MalformedPayloadError, False,
     "not valid JSON"),
    (reply(200, raw=b"<!DOCTYPE html><html>maintenance</html>", content_type="text/html"),
     MalformedPayloadError, False, "text/html"),
    (reply(200, [1, 2]), MalformedPayloadError, False, "JSON object"),
    (reply(200, {"status": "OK", "results": {"o": 1}}), MalformedPayloadError, False,
     "not a list"),
])
def test_http_answers_map_to_the_error_tree(handler, cls, retryable, text):
    api = Api({AAPL_AGGS: handler})
    with pytest.raises(cls) as info:
        make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    err = info.value
    assert type(err) is cls
    assert err.retryable is retryable
    assert text in str(err)
    assert err.provider == "massive"
    assert err.endpoint == "/v2/aggs/ticker/{ticker}/range/{multiplier}/{timespan}/{from}/{to}"
    assert err.status is not None
    assert KEY not in str(err) and KEY not in repr(err)


def test_error_context_carries_request_id_and_status():
    api = Api({AAPL_AGGS: reply(500, {"status": "ERROR", "request_id": "abc123", "error": "x"})})
    with pytest.raises(TransientError) as info:
        make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert (info.value.status, info.value.request_id) == (500, "abc123")
    assert "request abc123" in str(info.value) and "HTTP 500" in str(info.value)


@pytest.mark.parametrize("exc", [httpx.ReadTimeout("read timed out"),
                                 httpx.ConnectTimeout("connect timed out"),
                                 httpx.ConnectError("refused"),
                                 httpx.RemoteProtocolError("peer closed")])
def test_transport_failures_are_transient(exc):
    def fail(request):
        exc.request = request
        raise exc

    with pytest.raises(TransientError) as info:
        make(Api({AAPL_AGGS: fail})).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert info.value.retryable and info.value.status is None


def test_key_echoed_by_the_server_is_scrubbed_from_messages():
    api = Api({AAPL_AGGS: reply(401, {"status": "ERROR", "error": f"Unknown API Key {KEY}"})})
    with pytest.raises(AuthError) as info:
        make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert "***" in str(info.value)


@pytest.mark.parametrize("header, expected", [("7", 7.0), ("0", 0.0), ("2.5", 2.5),
                                              ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
                                              ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
                                              ("soon", None), ("", None), (None, None)])
def test_parse_retry_after(header, expected):
    now = dt.datetime(2015, 10, 21, 7, 28, 0, tzinfo=dt.UTC)
    assert parse_retry_after(header, now=now) == expected


@pytest.mark.parametrize("headers, expected", [({"Retry-After": "12"}, 12.0), ({}, None)])
def test_rate_limited_carries_retry_after(headers, expected):
    api = Api({AAPL_AGGS: reply(429, {"status": "ERROR", "error": "slow down"}, headers)})
    with pytest.raises(RateLimitedError) as info:
        make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert info.value.retry_after == expected


# ---- retry policy on top of the provider ----------------------------------------------------


def sequence(*answers: Handler) -> list[Handler]:
    return list(answers)


def test_retry_policy_retries_exactly_the_retryable_errors():
    api = Api({AAPL_AGGS: sequence(
        reply(500, {"status": "ERROR", "error": "boom"}),
        reply(429, {"status": "ERROR", "error": "slow"}, {"Retry-After": "3"}),
        lambda r: httpx.Response(504),
        reply(200, ok([bar(et_ms(D(2024, 3, 8)))])),
    )})
    p = make(api)
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=3, sleep=sleeps.append)
    frame, attempts = policy.call(lambda: p.bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5)))
    assert frame.height == 1
    assert attempts == 4
    assert len(sleeps) == 3 and sleeps[1] == 3.0  # Retry-After honoured
    assert p.take_request_count() == 4


@pytest.mark.parametrize("handler", [
    reply(401, {"status": "ERROR", "error": "Unknown API Key"}),
    NOT_ENTITLED,
    reply(404, {"status": "NOT_FOUND"}),
    reply(200, raw=b"{truncated"),
    reply(200, ok([bar(1, h=1.0, lo=2.0)])),
])
def test_retry_policy_does_not_retry_the_others(handler):
    api = Api({AAPL_AGGS: handler})
    sleeps: list[float] = []
    with pytest.raises(Exception) as info:
        RetryPolicy(max_retries=3, sleep=sleeps.append).call(
            lambda: make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5)))
    assert info.value.attempts == 1
    assert sleeps == [] and len(api.requests) == 1


def test_retry_policy_gives_up_after_max_retries():
    api = Api({AAPL_AGGS: reply(503, raw=b"")})
    sleeps: list[float] = []
    with pytest.raises(TransientError) as info:
        RetryPolicy(max_retries=2, sleep=sleeps.append).call(
            lambda: make(api).bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5)))
    assert info.value.attempts == 3 and len(sleeps) == 2 and len(api.requests) == 3


# ---- limiter and request counting -----------------------------------------------------------


class RecordingLimiter(RateLimiter):
    def __init__(self):
        super().__init__(60_000)
        self.calls: list[int] = []

    def acquire(self, priority: int = 0) -> float:
        self.calls.append(priority)
        return 0.0


def test_every_request_passes_the_limiter_with_the_provider_priority():
    api = Api({AAPL_AGGS: paged([([bar(et_ms(D(2024, 3, 4)))], "c2"),
                                 ([bar(et_ms(D(2024, 3, 5)))], None)]),
               "/v1/marketstatus/now": {"market": "open"}})
    limiter = RecordingLimiter()
    p = make(api, limiter=limiter, priority=1)
    p.bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    p.probe()
    p.with_priority(0).probe()
    assert limiter.calls == [1, 1, 1, 0]
    assert len(api.requests) == 4


def test_request_count_is_per_thread_and_resets():
    api = Api({"/v1/marketstatus/now": {"market": "open"}})
    p = make(api)
    p.probe()
    p.probe()
    other: list[int] = []

    def worker():
        p.probe()
        other.append(p.take_request_count())

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert other == [1]
    assert p.take_request_count() == 2
    assert p.take_request_count() == 0


def test_failed_requests_count_too():
    p = make(Api({AAPL_AGGS: reply(500, {})}))
    with pytest.raises(TransientError):
        p.bars("AAPL", "1d", D(2024, 3, 1), D(2024, 11, 5))
    assert p.take_request_count() == 1


# ---- over real sockets: the loopback fake ---------------------------------------------------


@pytest.fixture
def fake():
    with FakeMassive(page_size=100, today=D(2025, 6, 2)) as server:
        yield server


def over(fake: FakeMassive, key: str | None = None, **kw) -> MassiveProvider:
    """A provider on a real socket client it owns: use it as a context manager."""
    kw.setdefault("today", lambda: TODAY)
    return MassiveProvider(httpx.Client(timeout=30), key or fake.api_key, fake.base_url,
                           kw.pop("limiter", None), owns_client=True, **kw)


def test_loopback_pagination_serves_every_row_once(fake):
    with over(fake) as p:
        frame = p.bars("AAPL", "1d", D(2024, 1, 1), D(2024, 12, 31))
        assert frame.height == 252  # XNYS sessions in 2024
        assert frame["session"].is_sorted() and frame["ts"].n_unique() == 252
        assert fake.count("/v2/aggs/ticker/AAPL/") == 3
        assert p.take_request_count() == 3
        assert not fake.key_in_url
        assert len(fake.served_rows("AAPL", "bars")) == 252
        served = sorted(r["c"] for r in fake.served_rows("AAPL", "bars"))
        assert sorted(frame["close"].to_list()) == served


def test_loopback_fake_refuses_a_cursor_with_resent_params(fake):
    with httpx.Client() as client:
        first = client.get(f"{fake.base_url}/v2/aggs/ticker/AAPL/range/1/day/2024-01-01/"
                           "2024-12-31", headers={"Authorization": f"Bearer {fake.api_key}"})
        resent = httpx.URL(first.json()["next_url"]).copy_merge_params({"limit": 50000})
        again = client.get(resent, headers={"Authorization": f"Bearer {fake.api_key}"})
    assert again.status_code == 400


def test_loopback_injected_429_then_retry_succeeds(fake):
    fake.fail("/v2/aggs/ticker/MSFT/", nth=2, status=429, retry_after="1")
    with over(fake) as p:
        with pytest.raises(RateLimitedError) as info:  # page 2 of the first call
            p.bars("MSFT", "1d", D(2024, 1, 1), D(2024, 12, 31))
        assert info.value.retry_after == 1.0 and info.value.status == 429
        sleeps: list[float] = []
        frame, attempts = RetryPolicy(max_retries=2, sleep=sleeps.append).call(
            lambda: p.bars("MSFT", "1d", D(2024, 1, 1), D(2024, 12, 31)))
        assert frame.height == 252 and attempts == 1
        assert fake.statuses()[429] == 1


def test_loopback_429_without_retry_after_and_500_are_retried(fake):
    fake.fail("/v2/aggs/ticker/SPY/", nth=1, status=429)
    fake.fail("/v2/aggs/ticker/SPY/", nth=2, status=500)
    with over(fake) as p:
        sleeps: list[float] = []
        errors: list[BaseException] = []
        frame, attempts = RetryPolicy(max_retries=3, sleep=sleeps.append).call(
            lambda: p.bars("SPY", "1d", D(2024, 6, 3), D(2024, 6, 28)),
            on_retry=lambda n, exc, wait: errors.append(exc),
        )
        assert attempts == 3 and frame.height == 19
        assert [type(e) for e in errors] == [RateLimitedError, TransientError]
        assert errors[0].retry_after is None
        assert fake.statuses() == {429: 1, 500: 1, 200: 1}


def test_loopback_fallbacks_and_entitlements():
    with FakeMassive(today=D(2025, 6, 2), missing={"/stocks/v1/dividends"},
                     not_entitled={"/stocks/financials/v1"}) as fake, over(fake) as p:
        divs = p.dividends("MSFT", D(2024, 1, 1), D(2024, 12, 31))
        assert divs.height == 4 and set(divs["distribution_type"]) == {"recurring"}
        earnings = p.earnings("MSFT", D(2024, 1, 1), D(2024, 12, 31))
        assert earnings["fiscal_quarter"].to_list() == [4, 1, 2, 3]
        assert fake.counts()["/v3/reference/dividends"] == 1
        assert fake.counts()["/vX/reference/financials"] == 1


def test_loopback_every_dataset_parses(fake):
    with over(fake) as p:
        assert p.splits("AAPL", D(2010, 1, 1), D(2025, 1, 1))["split_to"].to_list() == [7.0, 4.0]
        assert p.news("AAPL", D(2025, 1, 1), D(2025, 1, 31)).height == 10
        chain = p.option_chain("SPY", TODAY)
        # 3 weeklies + 3 monthlies x 5 strikes x call/put, with quotes, trades and terms.
        assert chain.height == 60 and chain["provider_iv"].null_count() < chain.height
        assert chain["bid"].is_not_null().all() and chain["trade_at"].is_not_null().all()
        assert p.treasury_yields(D(2025, 5, 26), D(2025, 5, 30)).height == 5
        contracts = p.option_contracts("SPY", D(2025, 3, 3))
        first = contracts["contract"][0]
        assert p.option_bars(first, D(2025, 3, 3), D(2025, 3, 31)).height > 0
        grouped = p.grouped_daily(D(2025, 5, 30))
        assert grouped["symbol"].to_list() == ["AAPL", "MSFT", "SPY"]
        assert p.probe().status == "valid"
        assert p.bars("NOPE", "1d", D(2024, 1, 1), D(2024, 1, 31)).is_empty()
        assert not fake.key_in_url


def test_loopback_plan_limit_answers_429_with_retry_after():
    with FakeMassive(rate_limit_per_min=2, rate_limit_retry_after=True) as fake, \
            over(fake) as p:
        assert p.probe().ok and p.probe().ok
        with pytest.raises(RateLimitedError) as info:
            p.bars("AAPL", "1d", D(2024, 1, 2), D(2024, 1, 5))
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60
        assert fake.rejected_by_limit == 1


def test_loopback_wrong_key_is_an_auth_error(fake):
    with over(fake, key="wrong-key") as p:
        with pytest.raises(AuthError, match="Unknown API Key"):
            p.bars("AAPL", "1d", D(2024, 1, 2), D(2024, 1, 5))
        assert p.probe().status == "invalid key"


@pytest.mark.parametrize("reading", ["as_of", "today"])
def test_acceptance_a_historical_listing_holds_the_contracts_live_on_as_of(reading):
    """Listing AAPL as of 2025-04-25 on 2025-06-02 (the loopback fake lists the next three
    Fridays and the next monthlies of each day): every contract live that day comes back,
    those expired since and those still trading after today, whichever way the API judges
    ``expired``. The old query (``expired=true`` with ``as_of``) loses the ones after today
    when ``expired`` is judged against today."""
    as_of = D(2025, 4, 25)
    with FakeMassive(today=TODAY, expired_against=reading) as fake, over(fake) as p:
        listed = p.option_contracts("AAPL", as_of, expirations=(as_of, D(2025, 12, 31)))
        live = {r["ticker"] for r in fake.data.contracts("AAPL", as_of)}
        assert set(listed["contract"]) == live
        exps = set(listed["expiration"])
        assert min(exps) < TODAY < max(exps)  # expired since, and still trading after today
        assert listed["exercise_style"].to_list() == ["american"] * listed.height
        assert listed["deliverables"].drop_nulls().len() == len(exps)  # the adjusted ones
        old = httpx.get(f"{fake.base_url}/v3/reference/options/contracts", params={
            "underlying_ticker": "AAPL", "as_of": as_of.isoformat(), "expired": "true",
            "limit": 1000}, headers={"Authorization": f"Bearer {fake.api_key}"}).json()
        after_today = {t for t in live if parse_occ(t).expiration >= TODAY}
        got_old = {r["ticker"] for r in old.get("results", [])}
        if reading == "today":
            assert after_today and not got_old & after_today
        # Past sessions cost one listing request once the answer shows the reading.
        before = fake.count("/v3/reference/options/contracts")
        p.option_contracts("AAPL", D(2025, 4, 28), expirations=(as_of, D(2025, 12, 31)))
        extra = fake.count("/v3/reference/options/contracts") - before
        assert extra == (1 if reading == "as_of" else 2)
