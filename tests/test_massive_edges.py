"""The Massive client's rough edges, judged against the API's own documents.

SPEC is the OpenAPI spec bundled with the official Go client (``massive-com/client-go``
``rest/scripts/openapi.json`` @ 9471d9b, 2026-07-08); each test cites the JSON path it relies
on. REF is ``/work/shared/reference/massive-rest-api.md`` (and its supplement
``massive-refresh-and-correctness.md``). Offline: ``httpx.MockTransport`` (through
``tests.test_massive_spec.Api``, which also checks that the key stays in the header) and fake
clocks; nothing sleeps.
"""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from enrich.api.app import create_app
from enrich.checks.validate import check
from enrich.config import load_settings
from enrich.errors import RateLimitedError, ValidationError
from enrich.health import PROBE_TTL_S, ProbeCache
from enrich.providers import MarketRequest
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.ratelimit import PLAN_WINDOW_S, RateLimiter
from enrich.providers.retry import RetryPolicy
from enrich.quant.snapshots import price_chain
from enrich.schemas import DIVIDENDS, RATES, SPLITS
from enrich.service import Services
from tests.test_api import Api as AsgiApi
from tests.test_massive_spec import AGGS_EXAMPLE, BASE, KEY, TODAY, Api, _json, make

D = dt.date
AAPL_AGGS = "/v2/aggs/ticker/AAPL/range/1/day/2020-01-01/2020-01-10"
# REF §9: the 429 body (the text from the official plugin guidance; the rest third-party).
RATE_LIMITED = {"status": "ERROR", "request_id": "r429",
                "error": "You've exceeded the maximum requests per minute, please wait or "
                         "upgrade your subscription to continue."}


class FakeClock:
    """A monotonic clock that only moves when someone sleeps on it."""

    def __init__(self, start: float = 1000.0):
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)


def answers(*replies: httpx.Response):
    """A route answering ``replies`` in turn (the last one again once they run out)."""
    queue = list(replies)

    def handler(request: httpx.Request) -> httpx.Response:
        return queue.pop(0) if len(queue) > 1 else queue[0]
    return handler


def rate_limited(retry_after: str | None = None) -> httpx.Response:
    response = _json(429, RATE_LIMITED)
    if retry_after is not None:
        response.headers["Retry-After"] = retry_after
    return response


def provider(api: Api, limiter: RateLimiter | None = None, **kw) -> MassiveProvider:
    client = httpx.Client(transport=httpx.MockTransport(api))
    return MassiveProvider(client, KEY, BASE, limiter, today=lambda: TODAY, **kw)


# ---- 1. a 429 without Retry-After ---------------------------------------------------------------

def test_a_429_without_retry_after_waits_one_plan_window():
    """SPEC documents no response header on any path (``paths.*.get.responses`` has no
    ``headers``), and REF §9 / §11 leave ``Retry-After`` on 429 unconfirmed. Plans limit
    requests per minute (REF §9 "Plan limits": Basic 5/min; the 429 text says "maximum
    requests per minute"): a 429 means the minute's quota is spent, and REF §9's advice is
    "on 429, sleep until the minute window has passed". A retry after 0.25-2 s earns another
    429; every retry waits one window, and the wait is what the ledger records."""
    api = Api({AAPL_AGGS: answers(rate_limited(), rate_limited(), _json(200, AGGS_EXAMPLE))})
    sleeps: list[float] = []
    p = provider(api, retry=RetryPolicy(max_retries=3, sleep=sleeps.append))
    frame = p.bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert frame.height == 2
    assert sleeps == [PLAN_WINDOW_S, PLAN_WINDOW_S] == [60.0, 60.0]
    stats = p.take_requests()
    assert stats.requests == 3
    assert [(r.attempt, r.wait_s, r.error_class) for r in stats.retries] == [
        (1, 60.0, "rate_limited"), (2, 60.0, "rate_limited")]


def test_a_429_with_retry_after_still_waits_what_the_server_said():
    api = Api({AAPL_AGGS: answers(rate_limited("7"), _json(200, AGGS_EXAMPLE))})
    sleeps: list[float] = []
    provider(api, retry=RetryPolicy(max_retries=3, sleep=sleeps.append)).bars(
        "AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert sleeps == [7.0]


@pytest.mark.parametrize("retry_after, held", [
    (None, 60.0),  # one plan window
    ("7", 7.0),  # what the server said
    ("86400", 120.0),  # bounded: two windows at most, whatever a header says
])
def test_a_429_holds_the_shared_limiter_for_every_process(tmp_path, retry_after, held):
    """The plan's quota is per key, and the limiter of a data directory is shared by every
    process through its state file (``enrich.providers.ratelimit``): after a 429 no process
    on that directory may send before the window has passed, or the others' requests earn
    429s of their own. Two limiter objects on one state file stand for two processes."""
    clock = FakeClock()
    state = tmp_path / "locks" / "ratelimit.json"
    ours = RateLimiter(600, clock, clock.sleep, state=state)
    theirs = RateLimiter(600, clock, clock.sleep, state=state)
    api = Api({AAPL_AGGS: answers(rate_limited(retry_after))})
    start = clock()
    with pytest.raises(RateLimitedError):
        provider(api, ours).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert theirs.acquire() >= start + held  # another process waits the window out
    assert ours.acquire() >= start + held + theirs.interval  # and so does this one
    assert clock() < start + held + 1.0  # but not longer than that


def test_a_hold_written_before_a_reboot_is_not_waited_out(tmp_path):
    """The limiter's clock is CLOCK_MONOTONIC, which restarts at boot: a state file from
    before a reboot is discarded (``ratelimit`` docstring), a hold in it too."""
    state = tmp_path / "ratelimit.json"
    before, after = FakeClock(10_000.0), FakeClock(5.0)
    RateLimiter(600, before, before.sleep, state=state).hold(PLAN_WINDOW_S)
    assert RateLimiter(600, after, after.sleep, state=state).acquire() == 5.0


def test_a_429_holds_the_other_threads_of_this_process():
    clock = FakeClock()
    limiter = RateLimiter(600, clock, clock.sleep)
    api = Api({AAPL_AGGS: answers(rate_limited())})
    with pytest.raises(RateLimitedError):
        provider(api, limiter).bars("AAPL", "1d", D(2020, 1, 1), D(2020, 1, 10))
    assert limiter.acquire() >= 1000.0 + PLAN_WINDOW_S


# ---- 2. index aggregates take no ``adjusted`` ---------------------------------------------------

INDEX_AGGS = "/v2/aggs/ticker/I:NDX/range/1/day/2023-03-09/2023-03-10"
# SPEC paths./v2/aggs/ticker/{indicesTicker}/range/{multiplier}/{timespan}/{from}/{to}.get
#   .responses.200.content.application/json.example (I:NDX, t at 01:00 New York).
INDEX_EXAMPLE = {
    "count": 2, "queryCount": 2, "request_id": "0cf72b6da685bcd386548ffe2895904a",
    "results": [
        {"c": 11995.88235998666, "h": 12340.44936267155, "l": 11970.34221717375,
         "o": 12230.83658266843, "t": 1678341600000},
        {"c": 11830.28178808306, "h": 12069.62262033557, "l": 11789.85923449393,
         "o": 12001.69552583921, "t": 1678428000000}],
    "status": "OK", "ticker": "I:NDX"}


def test_index_aggregates_are_asked_without_adjusted():
    """SPEC paths./v2/aggs/ticker/{indicesTicker}/range/{multiplier}/{timespan}/{from}/{to}
    .get.parameters: indicesTicker, multiplier, timespan, from, to, ``sort``, ``limit`` — no
    ``adjusted`` (indices have no splits; the response carries no ``adjusted`` either, REF
    supplement §7 "no `adjusted` parameter"). Sending it is at best ignored."""
    api = Api({INDEX_AGGS: lambda r: _json(200, INDEX_EXAMPLE)})
    frame = make(api).bars("I:NDX", "1d", D(2023, 3, 9), D(2023, 3, 10))
    assert frame["session"].to_list() == [D(2023, 3, 9), D(2023, 3, 10)]
    assert frame["volume"].to_list() == [None, None]
    assert dict(api.requests[0].url.params) == {"sort": "asc", "limit": "50000"}


@pytest.mark.parametrize("ticker", [
    # SPEC paths./v2/aggs/ticker/{stocksTicker|cryptoTicker|forexTicker|optionsTicker}/range/
    #   {multiplier}/{timespan}/{from}/{to}.get.parameters: each lists ``adjusted``.
    "AAPL", "X:BTCUSD", "C:EURUSD"])
def test_the_other_aggregates_are_still_asked_split_adjusted(ticker):
    path = f"/v2/aggs/ticker/{ticker}/range/1/day/2023-03-09/2023-03-10"
    api = Api({path: lambda r: _json(200, {"status": "OK", "request_id": "r", "ticker": ticker,
                                           "queryCount": 0, "resultsCount": 0,
                                           "adjusted": True})})
    assert make(api).bars(ticker, "1d", D(2023, 3, 9), D(2023, 3, 10)).is_empty()
    assert dict(api.requests[0].url.params) == {"adjusted": "true", "sort": "asc",
                                                "limit": "50000"}


def test_option_aggregates_are_still_asked_split_adjusted():
    contract = "O:SPY251219C00650000"
    path = f"/v2/aggs/ticker/{contract}/range/1/day/2025-06-02/2025-06-06"
    api = Api({path: lambda r: _json(200, {"status": "OK", "request_id": "r",
                                           "ticker": contract, "queryCount": 0,
                                           "resultsCount": 0, "adjusted": True})})
    assert make(api).option_bars(contract, D(2025, 6, 2), D(2025, 6, 6)).is_empty()
    assert api.requests[0].url.params.get("adjusted") == "true"


# ---- 3. a dividend without cash_amount ----------------------------------------------------------

DIVIDENDS_V1 = "/stocks/v1/dividends"
# SPEC paths./stocks/v1/dividends.get.responses.200.content.application/json.example
#   .results[0] (AAPL, ex 2025-08-11, 0.26 USD; ``request_id`` is a number there).
SPEC_DIVIDEND = {
    "cash_amount": 0.26, "currency": "USD", "declaration_date": "2025-07-31",
    "distribution_type": "recurring", "ex_dividend_date": "2025-08-11", "frequency": 4,
    "historical_adjustment_factor": 0.997899,
    "id": "Ed2c9da60abda1e3f0e99a43f6465863c137b671e1f5cd3f833d1fcb4f4eb27fe",
    "pay_date": "2025-08-14", "record_date": "2025-08-11", "split_adjusted_cash_amount": 0.26,
    "ticker": "AAPL"}
# SPEC ...stocks/v1/dividends.get.responses.200.content.application/json.schema.properties
#   .results.items.required == ["distribution_type"]: every other field may be absent, the
#   amount included — a distribution declared without a cash amount (in shares, or only a
#   ratio). The lake holds cash dividends (``enrich.schemas.DIVIDENDS``: "Cash dividends as
#   declared"; validation refuses an amount that is not > 0), so such a row is refused alone,
#   counted and named in the fetch log; the page's other rows are stored.
NO_CASH = {"distribution_type": "special", "ex_dividend_date": "2025-05-12", "frequency": 0,
           "id": "Eno-cash", "ticker": "AAPL", "currency": "USD",
           "declaration_date": "2025-04-30"}


def dividends_page(*rows: dict) -> Api:
    return Api({DIVIDENDS_V1: lambda r: _json(200, {"request_id": 1, "status": "OK",
                                                    "results": list(rows)})})


def test_a_dividend_without_cash_amount_is_refused_alone():
    frame = make(dividends_page(SPEC_DIVIDEND, NO_CASH)).dividends(
        "AAPL", D(2025, 1, 1), D(2025, 12, 31))
    checked = check("dividends", frame)  # the pipeline's validation, before the lake
    assert checked.good.select("ex_date", "cash_amount", "distribution_type").rows() == [
        (D(2025, 8, 11), 0.26, "recurring")]
    assert checked.rejected == 1
    assert checked.causes == ["symbol=AAPL, ex_date=2025-05-12: no cash amount"]


def test_a_cashless_distribution_on_a_cash_dividend_s_ex_date_leaves_the_cash_alone():
    """Two distributions on one ex-date are summed into the lake's one row; one without an
    amount adds nothing to the sum and nothing to its type."""
    stock = {**NO_CASH, "ex_dividend_date": "2025-08-11"}
    frame = make(dividends_page(SPEC_DIVIDEND, stock)).dividends(
        "AAPL", D(2025, 1, 1), D(2025, 12, 31))
    checked = check("dividends", frame)
    assert checked.good.select("ex_date", "cash_amount", "distribution_type").rows() == [
        (D(2025, 8, 11), 0.26, "recurring")]
    assert checked.rejected == 1


def test_a_dividend_without_an_ex_date_is_refused_alone():
    undated = {k: v for k, v in SPEC_DIVIDEND.items() if k != "ex_dividend_date"}
    undated["id"] = "Eundated"
    frame = make(dividends_page(SPEC_DIVIDEND, undated)).dividends(
        "AAPL", D(2025, 1, 1), D(2025, 12, 31))
    checked = check("dividends", frame)
    assert checked.good["ex_date"].to_list() == [D(2025, 8, 11)]
    assert checked.rejected == 1 and "null key column" in checked.causes[0]


def test_the_market_wide_dividends_keep_the_other_rows_and_symbols():
    msft = {**SPEC_DIVIDEND, "ticker": "MSFT", "cash_amount": 0.83, "id": "Emsft"}
    answer = make(dividends_page(SPEC_DIVIDEND, NO_CASH, msft)).market_rows(MarketRequest(
        "dividends", "stocks", D(2025, 1, 1), D(2025, 12, 31), frozenset({"AAPL", "MSFT"})))
    aapl = check("dividends", answer.for_symbol("AAPL"))
    assert aapl.good["cash_amount"].to_list() == [0.26] and aapl.rejected == 1
    assert answer.for_symbol("MSFT")["cash_amount"].to_list() == [0.83]


def test_an_amount_of_the_wrong_type_still_refuses_the_payload():
    """Absent is what the spec allows; a text where the spec says ``number`` is a changed
    format, and nothing of that answer is trusted."""
    bad = {**SPEC_DIVIDEND, "cash_amount": "0.26"}
    with pytest.raises(ValidationError, match="'cash_amount' is not a number"):
        make(dividends_page(bad)).dividends("AAPL", D(2025, 1, 1), D(2025, 12, 31))


# ---- 5. the other fields the spec lets a listing leave out --------------------------------------

SPLITS_V1 = "/stocks/v1/splits"
# SPEC paths./stocks/v1/splits.get.responses.200.content.application/json.example.results[0]
SPEC_SPLIT = {"adjustment_type": "forward_split", "execution_date": "2005-02-28",
              "historical_adjustment_factor": 0.017857,
              "id": "E90a77bdf742661741ed7c8fc086415f0457c2816c45899d73aaa88bdc8ff6025",
              "split_from": 1, "split_to": 2, "ticker": "AAPL"}


def test_a_split_without_its_ratio_is_refused_alone():
    """SPEC paths./stocks/v1/splits.get.responses.200.content.application/json.schema
    .properties.results.items.required == ["adjustment_type"]: ``split_from``, ``split_to``
    and ``execution_date`` may be absent. Such a row cannot re-base anything: it is refused by
    validation, counted; the other rows are stored. A ratio-less row on the date of a whole
    one never hides it."""
    no_ratio = {"adjustment_type": "stock_dividend", "execution_date": "2005-02-28",
                "id": "Eno-ratio", "ticker": "AAPL"}
    undated = {**SPEC_SPLIT, "id": "Eundated"}
    del undated["execution_date"]
    api = Api({SPLITS_V1: lambda r: _json(200, {"request_id": 1, "status": "OK",
                                                "results": [no_ratio, SPEC_SPLIT, undated]})})
    frame = make(api).splits("AAPL", D(2005, 1, 1), D(2005, 12, 31))
    checked = check("splits", frame)
    assert checked.good.select("execution_date", "split_from", "split_to").rows() == [
        (D(2005, 2, 28), 1.0, 2.0)]
    assert checked.rejected == 2


INCOME_V1 = "/stocks/financials/v1/income-statements"
# SPEC paths./stocks/financials/v1/income-statements.get.responses.200.content
#   .application/json.example.results[0] (AAPL fiscal 2025 Q3), the fields the desk reads.
SPEC_INCOME = {"basic_earnings_per_share": 1.57, "cik": "0000320193",
               "diluted_earnings_per_share": 1.57, "filing_date": "2025-08-01",
               "fiscal_quarter": 3, "fiscal_year": 2025, "period_end": "2025-06-28",
               "revenue": 94036000000, "tickers": ["AAPL"], "timeframe": "quarterly"}


def test_an_income_statement_without_its_fiscal_quarter_is_refused_alone():
    """SPEC paths./stocks/financials/v1/income-statements.get.responses.200.content
    .application/json.schema.properties.results.items has no ``required``: ``fiscal_year``
    and ``fiscal_quarter`` (the lake's key) may be absent. That row is refused by validation;
    the filing beside it is stored."""
    unkeyed = {**SPEC_INCOME, "period_end": "2025-03-29", "filing_date": "2025-05-02"}
    del unkeyed["fiscal_quarter"]
    api = Api({INCOME_V1: lambda r: _json(200, {"request_id": "r", "status": "OK",
                                                "results": [SPEC_INCOME, unkeyed]})})
    frame = make(api).earnings("AAPL", D(2025, 1, 1), D(2025, 12, 31))
    checked = check("earnings", frame)
    assert checked.good.select("fiscal_year", "fiscal_quarter", "revenue").rows() == [
        (2025, 3, 94036000000.0)]
    assert checked.rejected == 1 and "null key column" in checked.causes[0]


# ---- 4. the health probe spends one request a minute at most ------------------------------------

# REF massive-rest-api.md §8 "/v1/marketstatus/now: a good connectivity and key probe"; its
# fields from SPEC paths./v1/marketstatus/now.get.responses.200.content.application/json
#   .schema.properties (market, serverTime, earlyHours, afterHours, exchanges, currencies).
MARKET_STATUS = {"market": "closed", "serverTime": "2025-01-04T10:00:00-05:00",
                 "earlyHours": False, "afterHours": False,
                 "exchanges": {"nasdaq": "closed", "nyse": "closed", "otc": "closed"},
                 "currencies": {"fx": "open", "crypto": "open"}}


def counted_status(calls: list, body: dict | None = None, status: int = 200):
    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _json(status, body or MARKET_STATUS)
    return handler


def test_two_api_health_probes_within_the_window_make_one_request(tmp_path):
    """A monitor polling ``GET /api/v1/health?probe=true`` every 10 s spent one request of
    the plan's quota per poll (6 a minute, the free plan allows 5). Within ``PROBE_TTL_S`` the
    probe's answer is reused, with its age; after it, the provider is asked again."""
    calls: list = []
    api = Api({"/v1/marketstatus/now": counted_status(calls)})
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data"),
                              "ENRICH_SCHEDULER": "off", "ENRICH_API_TOKEN": "t" * 32,
                              "ENRICH_PROVIDER": "massive", "MASSIVE_API_KEY": KEY},
                             dotenv_path=None)
    svc = Services(settings, provider=provider(api), alerts=False).start()
    clock = FakeClock()
    svc.probes = ProbeCache(clock=clock)
    try:
        http = AsgiApi(create_app(settings, svc))
        first = http.ok("/api/v1/health", probe="true")["provider"]
        clock.now += PROBE_TTL_S - 0.5
        second = http.ok("/api/v1/health", probe="true")["provider"]
        assert len(calls) == 1
        assert first["status"] == second["status"] == "valid"
        assert first["probe_age_s"] == 0.0 and second["probe_age_s"] == PROBE_TTL_S - 0.5
        assert second["probed_at"] == first["probed_at"] is not None
        assert http.ok("/api/v1/health")["provider"]["status"] == "not probed"
        clock.now += 0.5
        third = http.ok("/api/v1/health", probe="true")["provider"]
        assert len(calls) == 2 and third["probe_age_s"] == 0.0
    finally:
        svc.stop()


def test_a_failed_probe_is_reused_too_and_the_cache_is_per_provider():
    """A refused key is as costly to ask again (and as refused a second later); another
    provider object (settings changed: a new key) is asked afresh."""
    calls: list = []
    refused = Api({"/v1/marketstatus/now": counted_status(
        calls, {"status": "ERROR", "request_id": "r", "error": "Unknown API Key"}, 401)})
    clock = FakeClock()
    cache = ProbeCache(clock=clock)
    bad = provider(refused)
    parts = [cache.get(bad, lambda: probe_part(bad)) for _ in range(3)]
    assert len(calls) == 1 and {p["status"] for p in parts} == {"invalid key"}
    other = provider(refused)
    cache.get(other, lambda: probe_part(other))
    assert len(calls) == 2


def test_processes_of_a_desk_share_the_probe_answer(tmp_path):
    """Each ``enrich health`` (a new process, say from cron every minute) spent a request of
    the plan on the probe: the desk's processes now share its answer for ``PROBE_TTL_S``, kept
    in ``locks/probe.json``, which names the provider without its key; another key is asked
    afresh, and after the window the provider is asked again."""
    calls: list = []
    api = Api({"/v1/marketstatus/now": counted_status(calls)})
    clock = FakeClock()
    path = tmp_path / "locks" / "probe.json"
    one, two = (ProbeCache(clock=clock, shared=(path, "massive host digest-a"))
                for _ in range(2))  # two processes' caches
    p = provider(api)
    first = one.get(p, lambda: {**probe_part(p), "probed_at": dt.datetime.now(dt.UTC)})
    clock.now += PROBE_TTL_S - 1
    second = two.get(object(), lambda: pytest.fail("probed again within the window"))
    assert len(calls) == 1 and second["status"] == first["status"] == "valid"
    assert second["probed_at"] == first["probed_at"] and second["probe_age_s"] == PROBE_TTL_S - 1
    assert KEY not in path.read_text()
    clock.now += 1  # the window has passed
    two.get(p, lambda: probe_part(p))
    assert len(calls) == 2
    other_key = ProbeCache(clock=clock, shared=(path, "massive host digest-b"))
    other_key.get(p, lambda: probe_part(p))
    assert len(calls) == 3


def test_enrich_health_twice_probes_once(tmp_path, monkeypatch, capsys):
    from enrich.cli import main
    from tests.fakes.massive_server import FakeMassive

    with FakeMassive(symbols=("AAPL",), today=TODAY) as fake:
        for name, value in {"ENRICH_DATA_DIR": str(tmp_path / "data"),
                            "ENRICH_PROVIDER": "massive", "MASSIVE_API_KEY": fake.api_key,
                            "MASSIVE_BASE_URL": fake.base_url}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        main(["symbols", "list", "--seed-demo"])  # the desk
        capsys.readouterr()
        for _ in range(2):
            main(["health"])
        out = capsys.readouterr().out
        probes = [r for r in fake.requests if r.path == "/v1/marketstatus/now"]
    assert len(probes) == 1
    assert out.count("provider     massive: valid") == 2


def probe_part(p: MassiveProvider) -> dict:
    res = p.probe()
    return {"ok": res.ok, "status": res.status}


def test_a_vx_filing_without_its_fiscal_year_is_refused_alone():
    """SPEC paths./vX/reference/financials.get.responses.200.content.application/json.schema
    .properties.results.items.required: cik, company_name, financials, fiscal_period,
    timeframe — ``fiscal_year`` may be absent (the fallback when income statements v1 is
    refused: here it answers 404, unrouted)."""
    # SPEC ...vX/reference/financials...example.results[0] (SiteOne, fiscal 2022 Q1).
    site = {"cik": "0001650729", "company_name": "SiteOne Landscape Supply, Inc.",
            "end_date": "2022-04-03", "filing_date": "2022-05-04", "fiscal_period": "Q1",
            "fiscal_year": "2022", "start_date": "2022-01-03", "tickers": ["SITE"],
            "timeframe": "quarterly",
            "financials": {"income_statement": {
                "revenues": {"label": "Revenues", "order": 100, "unit": "USD",
                             "value": 805300000}}}}
    no_year = {**site, "fiscal_period": "Q4", "end_date": "2021-12-31",
               "filing_date": "2022-02-16"}
    del no_year["fiscal_year"]
    api = Api({"/vX/reference/financials": lambda r: _json(200, {
        "count": 2, "request_id": "r", "status": "OK", "results": [site, no_year]})})
    frame = make(api).earnings("SITE", D(2022, 1, 1), D(2022, 12, 31))
    checked = check("earnings", frame)
    assert checked.good.select("fiscal_year", "fiscal_quarter", "revenue").rows() == [
        (2022, 1, 805300000.0)]
    assert checked.rejected == 1


# ---- 6. option contracts, the Treasury curve: rows the spec lets be incomplete ------------------

CHAIN_AAPL = "/v3/snapshot/options/AAPL"
# SPEC paths./v3/snapshot/options/{underlyingAsset}.get.responses.200.content.application/json
#   .example.results[0], expiration moved after TODAY and the ticker made a valid OCC symbol.
SPEC_CHAIN_ROW = {
    "break_even_price": 151.2,
    "day": {"change": 4.5, "change_percent": 6.76, "close": 120.73, "high": 120.81,
            "last_updated": 1605195918507251700, "low": 118.9, "open": 119.32,
            "previous_close": 119.12, "volume": 868, "vwap": 119.31},
    "details": {"contract_type": "call", "exercise_style": "american",
                "expiration_date": "2025-06-20", "shares_per_contract": 100,
                "strike_price": 150, "ticker": "O:AAPL250620C00150000"},
    "implied_volatility": 5,
    "last_quote": {"ask": 120.3, "ask_size": 4, "bid": 120.28, "bid_size": 8,
                   "last_updated": 1605195918507251700, "midpoint": 120.29,
                   "timeframe": "REAL-TIME"},
    "open_interest": 1543,
    "underlying_asset": {"change_to_break_even": 4.2, "last_updated": 1605195918507251700,
                         "price": 147, "ticker": "AAPL", "timeframe": "DELAYED"}}
CHAIN_FIELDS = {"strike_price": "no strike", "contract_type": "no contract type",
                "expiration_date": "no expiration", "ticker": "null key column"}


def chain_page(*rows: dict) -> Api:
    return Api({CHAIN_AAPL: lambda r: _json(200, {"request_id": "r", "status": "OK",
                                                  "results": list(rows)})})


def _without(row: dict, field: str, n: int) -> dict:
    details = {k: v for k, v in row["details"].items() if k != field}
    if field != "ticker":
        details["ticker"] = f"O:AAPL250620P0016{n}000"
    return {**row, "details": details}


@pytest.mark.parametrize("field", sorted(CHAIN_FIELDS))
def test_a_chain_contract_without_its_terms_is_refused_alone(field):
    """SPEC paths./v3/snapshot/options/{underlyingAsset}.get.responses.200.content
    .application/json.schema.properties.results.items.properties.details.required lists
    ticker, contract_type, expiration_date and strike_price, but the contracts listing
    (SPEC paths./v3/reference/options/contracts...results.items) requires none of them and
    REF massive-refresh-and-correctness.md §9's listing example has no ``contract_type``: the
    two are one record. A snapshot cannot be asked again for a past session, so one contract
    without its terms is refused by validation, with its cause, and the chain is stored."""
    incomplete = _without(SPEC_CHAIN_ROW, field, 1)
    frame = make(chain_page(SPEC_CHAIN_ROW, incomplete, _without(SPEC_CHAIN_ROW, field, 2))
                 ).option_chain("AAPL", TODAY)
    priced = price_chain(frame, curves=RATES.empty(), dividends=DIVIDENDS.empty(),
                         splits=SPLITS.empty(), fallback_rate=0.04)
    checked = check("options_iv", priced)  # the pipeline prices the chain, then validates
    assert checked.good["contract"].to_list() == ["O:AAPL250620C00150000"]
    assert checked.rejected == 2  # two unkeyed contracts are two refused rows, not one
    assert CHAIN_FIELDS[field] in checked.causes[0]


def test_a_chain_contract_of_the_wrong_type_still_refuses_the_chain():
    bad = {**SPEC_CHAIN_ROW, "details": {**SPEC_CHAIN_ROW["details"], "strike_price": "150"}}
    with pytest.raises(ValidationError, match="'strike_price' is not a number"):
        make(chain_page(SPEC_CHAIN_ROW, bad)).option_chain("AAPL", TODAY)


def test_a_fractional_open_interest_is_read_rounded():
    """SPEC ...snapshot/options/{underlyingAsset}...results.items.properties.open_interest is
    ``{"type": "number", "format": "double"}``: a fractional value is within the spec. The
    lake keeps open interest as a count of contracts (``enrich.schemas.OPTIONS_IV``, Int64:
    stored files and the views read it so), so it is rounded to the nearest whole contract."""
    fractional = {**SPEC_CHAIN_ROW, "open_interest": 1543.6}
    frame = make(chain_page(fractional)).option_chain("AAPL", TODAY)
    assert frame["open_interest"].to_list() == [1544]


CONTRACTS = "/v3/reference/options/contracts"
# SPEC paths./v3/reference/options/contracts.get.responses.200.content.application/json
#   .example.results[0], expiration moved after TODAY.
SPEC_CONTRACT = {"cfi": "OCASPS", "contract_type": "call", "exercise_style": "american",
                 "expiration_date": "2025-06-20", "primary_exchange": "BATO",
                 "shares_per_contract": 100, "strike_price": 85,
                 "ticker": "O:AAPL250620C00085000", "underlying_ticker": "AAPL"}


@pytest.mark.parametrize("field", sorted(CHAIN_FIELDS))
def test_a_listed_contract_without_its_terms_is_left_out_alone(field):
    """SPEC paths./v3/reference/options/contracts.get.responses.200.content.application/json
    .schema.properties.results.items has no ``required``; REF massive-refresh-and-correctness.md
    §9's example has no ``contract_type``. The listing is no lake dataset (it picks the
    contracts a backfill follows): such a contract is left out, and the request's notes
    count and name it; the others are listed."""
    incomplete = {k: v for k, v in SPEC_CONTRACT.items() if k != field}
    if field != "ticker":
        incomplete["ticker"] = "O:AAPL250620P00090000"
    api = Api({CONTRACTS: lambda r: _json(200, {"request_id": "r", "status": "OK",
                                                "results": [SPEC_CONTRACT, incomplete]})})
    p = make(api)
    listed = p.option_contracts("AAPL", TODAY)
    assert listed["contract"].to_list() == ["O:AAPL250620C00085000"]
    notes = p.take_requests().notes
    assert len(notes) == 1 and "left out 1 of 2" in notes[0] and field in notes[0]


TREASURY = "/fed/v1/treasury-yields"
# SPEC paths./fed/v1/treasury-yields.get.responses.200.content.application/json.example
SPEC_YIELDS = {"date": "1962-01-02", "yield_10_year": 4.06, "yield_1_year": 3.22,
               "yield_5_year": 3.88}


def test_a_treasury_row_without_its_date_is_refused_alone():
    """SPEC paths./fed/v1/treasury-yields.get.responses.200.content.application/json.schema
    .properties.results.items has no ``required``: ``date`` may be absent. That row is
    refused by validation; the curves beside it are stored."""
    undated = {"yield_10_year": 4.1, "yield_1_year": 3.3}
    api = Api({TREASURY: lambda r: _json(200, {"count": 3, "request_id": 1, "status": "OK",
                                               "results": [SPEC_YIELDS, undated, undated]})})
    frame = make(api).treasury_yields(D(1962, 1, 1), D(1962, 1, 31))
    checked = check("rates", frame)
    assert checked.good.select("date", "yield_10_year").rows() == [(D(1962, 1, 2), 4.06)]
    assert checked.rejected == 2 and "null key column" in checked.causes[0]


def test_a_yield_of_the_wrong_type_still_refuses_the_curve():
    bad = {**SPEC_YIELDS, "yield_10_year": "4.06"}
    api = Api({TREASURY: lambda r: _json(200, {"request_id": 1, "status": "OK",
                                               "results": [bad]})})
    with pytest.raises(ValidationError, match="'yield_10_year' is not a number"):
        make(api).treasury_yields(D(1962, 1, 1), D(1962, 1, 31))


# ---- 7. the other listings the client reads -----------------------------------------------------
# News (SPEC paths./v2/reference/news...results.items.required: id, published_utc, …), grouped
# daily and aggregates (…results.items.required: o, h, l, c, t, v[, T]) and ticker details
# (…/v3/reference/tickers/{ticker}…results.required: ticker, …) require every field the desk
# needs: a row without one is a broken payload there, refused whole as before. Market status
# requires nothing, but the probe reads only that it answers. Ticker events remain.

META_DETAILS = "/v3/reference/tickers/META"
META_EVENTS = "/vX/reference/tickers/META/events"
# SPEC paths./vX/reference/tickers/{id}/events.get.responses.200.content.application/json
#   .example (META's two ticker changes).
SPEC_EVENTS = {"request_id": "31d59dda", "status": "OK", "results": {
    "name": "Meta Platforms, Inc. Class A Common Stock",
    "events": [{"date": "2022-06-09", "ticker_change": {"ticker": "META"},
                "type": "ticker_change"},
               {"date": "2012-05-18", "ticker_change": {"ticker": "FB"},
                "type": "ticker_change"}]}}


def test_a_ticker_change_without_its_new_ticker_is_left_out_alone():
    """SPEC ...vX/reference/tickers/{id}/events...results.properties.events.items.oneOf[0]
    .required == ["event_type", "date"]: ``ticker_change`` (and its ``ticker``) may be absent.
    Such an event names no ticker to follow: it is left out, and the request's notes say so;
    the other changes still bound the ticker's history."""
    body = {**SPEC_EVENTS, "results": {**SPEC_EVENTS["results"], "events": [
        *SPEC_EVENTS["results"]["events"],
        {"date": "2015-01-02", "type": "ticker_change", "ticker_change": {}}]}}
    api = Api({META_DETAILS: lambda r: _json(200, {"request_id": "r", "status": "OK",
                                                   "results": {"ticker": "META",
                                                               "market": "stocks",
                                                               "active": True}}),
               META_EVENTS: lambda r: _json(200, body)})
    p = make(api)
    ref = p.ticker_reference("META")
    assert [(c.date, c.ticker) for c in ref.changes] == [
        (D(2012, 5, 18), "FB"), (D(2022, 6, 9), "META")]
    notes = p.take_requests().notes
    assert len(notes) == 1 and "left out 1 of 3" in notes[0] and "2015-01-02" in notes[0]


def test_a_ticker_change_naming_a_number_still_refuses_the_events():
    body = {**SPEC_EVENTS, "results": {**SPEC_EVENTS["results"], "events": [
        {"date": "2015-01-02", "type": "ticker_change", "ticker_change": {"ticker": 7}}]}}
    api = Api({META_EVENTS: lambda r: _json(200, body)})
    with pytest.raises(ValidationError, match="'ticker' is not text"):
        make(api)._ticker_changes("META")


def test_a_listing_whose_next_url_repeats_is_noted_as_incomplete():
    """A cursor that comes back (a server bug, or a proxy's cache) ends the listing with what
    was read, as before — but a complete answer for a window now replaces the symbol's
    stored rows dated in it (cancelled events leave the lake), so an answer cut short this
    way must say so in the request's notes: the engine then keeps the upsert and removes
    nothing."""
    loop = f"{BASE}{DIVIDENDS_V1}?cursor=loop"

    def page(request):
        return _json(200, {"request_id": 1, "status": "OK", "results": [SPEC_DIVIDEND],
                           "next_url": loop})

    p = make(Api({DIVIDENDS_V1: page}))
    frame = p.dividends("AAPL", D(2025, 1, 1), D(2025, 12, 31))
    assert frame["ex_date"].to_list() == [D(2025, 8, 11)]
    notes = p.take_requests().notes
    assert len(notes) == 1 and "repeated" in notes[0] and "incomplete" in notes[0]


# ---- pages that are not Massive's JSON: a proxy's 404, a firewall's 403 -----------------------
# REF massive-refresh-and-correctness.md §0 c: an unknown ticker is HTTP 404 with
# {"status":"NOT_FOUND",…} (reported); a plan's refusal is a 403 with NOT_AUTHORIZED (§6).
NGINX_404 = httpx.Response(404, content=b"<html><body><h1>404 Not Found</h1>nginx</body></html>",
                           headers={"content-type": "text/html"})
WAF_403 = httpx.Response(403, content=b"<html>Request blocked by WAF</html>",
                         headers={"content-type": "text/html"})


@pytest.mark.parametrize("page", [NGINX_404, WAF_403], ids=["404 html", "403 html"])
def test_a_page_that_is_not_massive_json_is_a_failure_not_a_fact(page):
    """Found by a QA pass: one HTML 404 from a proxy (or a wrong MASSIVE_BASE_URL) marked every
    symbol "not in massive's ticker reference" for a week — after the cause was fixed a run
    made 0 requests and failed them all; a firewall's HTML 403 marked options "not included
    in the plan" for a week and the run read succeeded. Either is a ProviderError now: the
    step fails, the run says so, the next run asks again."""
    from enrich.errors import NotEntitledError, NotFoundError, ProviderError

    p = make(Api({META_DETAILS: lambda r: page}))
    with pytest.raises(ProviderError, match="other than Massive's API") as caught:
        p.ticker_reference("META")
    assert not isinstance(caught.value, NotFoundError | NotEntitledError)
    assert "text/html" in str(caught.value) and "MASSIVE_BASE_URL" in str(caught.value)


def test_an_unknown_ticker_is_still_massives_json_404():
    from enrich.errors import NotFoundError

    p = make(Api({META_DETAILS: lambda r: _json(404, {
        "status": "NOT_FOUND", "request_id": "r1", "message": "Ticker not found."})}))
    with pytest.raises(NotFoundError, match="Ticker not found"):
        p.ticker_reference("META")


def test_ticker_details_without_their_results_object_are_malformed_not_unknown():
    from enrich.errors import MalformedPayloadError, NotFoundError

    p = make(Api({META_DETAILS: lambda r: _json(200, {"status": "OK", "request_id": "r2"})}))
    with pytest.raises(MalformedPayloadError, match="no ticker details") as caught:
        p.ticker_reference("META")
    assert not isinstance(caught.value, NotFoundError)


# ---- intraday history: as many pages as the window's minutes need ---------------------------
class PagedHours(Api):
    """Hourly aggregates of X:BTCUSD, one bar a page, ``pages`` pages chained by ``next_url``
    (REF massive-rest-api.md §1: ``limit`` counts the minute aggregates scanned, so ten years
    of a crypto pair's hours are ~105 pages of 50,000 minutes)."""

    def __init__(self, pages: int):
        super().__init__({})
        self.pages = pages

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.headers.get("authorization") == f"Bearer {KEY}"
        k = int(request.url.params.get("cursor", "0"))
        t = 1481587200000 + k * 3_600_000  # 2016-12-13 00:00 UTC, then an hour a page
        body = {"status": "OK", "request_id": f"r{k}", "ticker": "X:BTCUSD",
                "queryCount": 1, "resultsCount": 1,
                "results": [{"o": 1.0, "h": 1.0, "l": 1.0, "c": 1.0, "v": 1.0, "vw": 1.0,
                             "n": 1, "t": t}]}
        if k + 1 < self.pages:
            body["next_url"] = (f"https://api.massive.com{request.url.path}"
                                f"?cursor={k + 1}")
        return _json(200, body)


def test_ten_years_of_a_crypto_pairs_hours_page_to_the_end():
    """Found by a QA pass: a first `run --timeframe 1h` of X:BTCUSD (10 years, the default
    history) failed "still more pages after 50" on every run, 50 requests each time."""
    api = PagedHours(105)
    frame = make(api).bars("X:BTCUSD", "1h", D(2016, 12, 13), D(2026, 12, 3))
    assert len(api.requests) == 105 and frame.height == 105
    # The bound follows the window: a listing that never ends still stops.
    short = PagedHours(10_000)
    from enrich.errors import MalformedPayloadError

    with pytest.raises(MalformedPayloadError, match="still more pages after 50"):
        make(short).bars("X:BTCUSD", "1h", D(2026, 11, 1), D(2026, 11, 30))
