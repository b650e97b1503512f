"""The operator's moments when the provider is in trouble, as each surface tells them.

Plan limits are facts, not failures (the refresh issue's rule; reference
massive-refresh-and-correctness.md §0 g, §6): a dataset the plan refuses (HTTP 403
``NOT_AUTHORIZED``, the loopback fake's ``not_entitled``), history beyond the plan's window and
today's session before its day ends are shown as *not entitled* / *due*; a run whose only
"failures" are such refusals is not failed, and opens no ``run_failed`` incident.

A run the provider stops (the key refused, HTTP 401, as the fake answers a key it does not
know — reference massive-rest-api.md, errors table) says it stopped and why on every surface;
the symbols it did not attempt read as *not attempted*, never as cancelled or failed.
"""

from __future__ import annotations

import datetime as dt

import httpx
import polars as pl
import pytest

from enrich.alerts import lifecycle as alert_lifecycle
from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import RunParams, describe
from enrich.providers.massive.provider import MassiveProvider
from enrich.providers.retry import RetryPolicy
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from enrich.views.status import status_grid
from tests.fakes.massive_server import DEFAULT_KEY, FakeMassive, market_tickers

UTC = dt.UTC
FRIDAY = dt.datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # after Friday's close
SYMS = ("AAPL", "MSFT")
NEWS = "/v2/reference/news"


def _desk(tmp_path):
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    settings = settings.with_(provider="massive", history_years=1, max_concurrent_symbols=1)
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, "stocks", None) for s in SYMS])
    return store, settings


def _provider(fake, today: dt.date) -> MassiveProvider:
    return MassiveProvider(httpx.Client(timeout=30), fake.api_key, fake.base_url, None,
                           today=lambda: today, owns_client=True,
                           retry=RetryPolicy(max_retries=1, sleep=lambda s: None))


def _run(store, settings, fake, when=FRIDAY, datasets=("bars", "news")):
    with _provider(fake, when.date()) as p:
        return Engine(store, p, settings, clock=lambda: when).run(
            RunParams(datasets=list(datasets)))


def test_a_dataset_the_plan_refuses_is_not_a_failed_symbol(tmp_path):
    store, settings = _desk(tmp_path)
    with FakeMassive(symbols=SYMS, today=FRIDAY.date(), not_entitled={NEWS}) as fake:
        summary = _run(store, settings, fake)
        assert fake.count(NEWS) >= 1 and fake.statuses()[403] >= 1  # it was refused
    assert summary.failed == 0, [(r.symbol, r.state, r.errors) for r in summary.results]
    assert summary.state == "succeeded"
    assert "failed" not in describe(summary)
    state, failed, message = store.catalog.query(
        "SELECT state, symbols_failed, message FROM runs WHERE run_id = ?",
        [summary.run_id]).row(0)
    assert (state, failed) == ("succeeded", 0), message
    ev = alert_lifecycle.evaluate(store.catalog, FRIDAY, FRIDAY, channels=False)
    assert not [a for a in ev.opened if a["rule"] == "run_failed"], ev.opened
    # The refusal stays visible, as what it is.
    news = status_grid(store.catalog, FRIDAY).filter(pl.col("dataset") == "news")
    assert set(news["state"]) == {"not_entitled"}, news.to_dicts()


def _halted_by_a_refusal(tmp_path, monkeypatch):
    """A run of a few symbols side by side whose first own request meets a 401: the others
    were already started (each waits for the run to stop before it goes on)."""
    syms = market_tickers(4)
    settings = load_settings({"ENRICH_DATA_DIR": str(tmp_path / "data")}, dotenv_path=None)
    settings = settings.with_(provider="massive", history_years=1,
                              max_concurrent_symbols=len(syms))
    store = Store.from_settings(settings)
    add_symbols(store.catalog, [(s, "stocks", None) for s in syms])
    first: list[str] = []
    enrich = Engine.enrich_symbol

    def waits_for_the_stop(self, symbol, asset_class, params, run_id, log, not_entitled,
                           cancel, fetched):
        with lock:
            first.append(symbol)
            lead = first[0] == symbol
        if not lead:
            assert cancel.wait(30)  # the run stops on the lead's refusal
        return enrich(self, symbol, asset_class, params, run_id, log, not_entitled, cancel,
                      fetched)

    import threading

    lock = threading.Lock()
    monkeypatch.setattr(Engine, "enrich_symbol", waits_for_the_stop)
    with FakeMassive(symbols=syms, today=FRIDAY.date()) as fake:
        fake.fail("/v2/aggs/ticker/", nth=1, status=401)
        summary = _run(store, settings, fake, datasets=("bars",))
    return store, summary, first[0]


def test_symbols_a_stopped_run_did_not_attempt_never_read_as_cancelled(tmp_path, monkeypatch):
    store, summary, lead = _halted_by_a_refusal(tmp_path, monkeypatch)
    assert summary.stopped and summary.state == "failed"
    assert summary.failed == 1 and summary.not_attempted == 3
    tasks = dict(store.catalog.query(
        "SELECT symbol, state FROM tasks WHERE run_id = ?", [summary.run_id]).rows())
    assert tasks.pop(lead) == "failed"
    assert tasks and set(tasks.values()) == {"not_attempted"}, tasks


def test_the_run_failed_alert_of_a_stopped_run_says_why(tmp_path, monkeypatch):
    store, summary, lead = _halted_by_a_refusal(tmp_path, monkeypatch)
    ev = alert_lifecycle.evaluate(store.catalog, FRIDAY, FRIDAY, channels=False)
    (alert,) = [a for a in ev.opened if a["rule"] == "run_failed"]
    text = f"{alert['title']} {alert['detail']}"
    assert "stopped early" in text and "rejected the API key" in text, text
    assert "MASSIVE_API_KEY" in text  # what to do
    assert "3 not attempted" in text, text
    message = store.catalog.scalar("SELECT message FROM runs WHERE run_id = ?",
                                   [summary.run_id])
    assert DEFAULT_KEY not in text and DEFAULT_KEY not in message


def test_a_stopped_run_that_had_started_every_symbol_does_not_say_0_not_attempted():
    from enrich.pipeline.run_model import RunSummary

    summary = RunSummary(
        run_id="r", state="failed", total=4, ok=0, failed=4, skipped=0, records=0,
        requests=5, retries=0, errors_by_class={"unreachable": 23}, started_at=FRIDAY,
        finished_at=FRIDAY, stopped="cannot reach the host — the provider could not be "
        "reached 3 times in a row")
    text = describe(summary)
    assert text.startswith("stopped early: cannot reach") and "4 failed" in text
    assert "not attempted" not in text, text


# -- Health's "Test key" when the provider answers, but not with data ------------------------
@pytest.fixture
def dashboard_on_fake(monkeypatch, tmp_path):
    """The dashboard's desk on the Massive client against the loopback fake (no retries)."""
    from enrich.service import reset_services

    fake = FakeMassive(symbols=SYMS, today=FRIDAY.date()).start()
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FRIDAY.isoformat())
    monkeypatch.setenv("ENRICH_PROVIDER", "massive")
    monkeypatch.setenv("MASSIVE_API_KEY", fake.api_key)
    monkeypatch.setenv("MASSIVE_BASE_URL", fake.base_url)
    monkeypatch.setenv("ENRICH_MAX_RETRIES", "0")
    monkeypatch.chdir(tmp_path)  # no developer .env
    try:
        yield fake
    finally:
        reset_services()
        fake.stop()


def _test_key(status: int) -> str:
    from streamlit.testing.v1 import AppTest

    from tests.test_pages import APP, texts

    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page("pages/health.py")
    at.run()
    at.button(key="test_key").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return texts(at)


@pytest.mark.parametrize("status", [429, 503])
def test_a_provider_that_answers_with_an_error_is_not_called_unreachable(dashboard_on_fake,
                                                                          status):
    """A 429 storm (or a 5xx) is the provider answering: the network and MASSIVE_BASE_URL
    are fine, and the key was not refused."""
    dashboard_on_fake.fail("/v1/marketstatus/now", nth=1, status=status, retry_after="30")
    shown = _test_key(status)
    assert dashboard_on_fake.count("/v1/marketstatus/now") == 1
    assert "could not be reached" not in shown and "unreachable" not in shown, shown
    assert f"HTTP {status}" in shown, shown
    if status == 429:
        assert "rate limited" in shown and "ENRICH_RATE_LIMIT_PER_MIN" in shown, shown


def test_a_run_that_met_a_429_storm_says_what_to_do(tmp_path):
    """Every request answered 429 (the plan's requests per minute used up, reference
    massive-rest-api.md: rate limits): the run's message says so and what to change."""
    store, settings = _desk(tmp_path)
    with FakeMassive(symbols=SYMS, today=FRIDAY.date()) as fake:
        for n in range(1, 30):
            fake.fail("/v2/aggs/ticker/", nth=n, status=429)
        summary = _run(store, settings, fake, datasets=("bars",))
    assert summary.failed == len(SYMS) and set(summary.errors_by_class) == {"rate_limited"}
    message = store.catalog.scalar("SELECT message FROM runs WHERE run_id = ?",
                                   [summary.run_id])
    assert message == describe(summary)
    assert "rate_limited" in message and "ENRICH_RATE_LIMIT_PER_MIN" in message, message


def test_symbols_a_stopped_run_did_not_attempt_are_not_counted_up_to_date(
        tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from enrich.service import reset_services
    from enrich.views import runs as runs_view
    from tests.test_pages import APP, metric

    store, summary, _ = _halted_by_a_refusal(tmp_path, monkeypatch)
    d = runs_view.run_detail(store.catalog, summary.run_id)
    assert (d["symbols_ok"], d["symbols_failed"], d["symbols_skipped"]) == (0, 1, 0), d
    assert d["symbols_not_attempted"] == 3
    monkeypatch.setenv("ENRICH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", FRIDAY.isoformat())
    monkeypatch.chdir(tmp_path)
    try:
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.switch_page("pages/runs.py")
        at.query_params["run"] = summary.run_id
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        assert metric(at, "Up to date") == "0" and metric(at, "Failed") == "1"
        assert metric(at, "Not attempted") == "3"
    finally:
        reset_services()


def test_test_keys_latency_is_the_requests_not_the_wait_for_the_plans_rate(monkeypatch):
    """After a run on a 5-a-minute plan, Test key waits its turn (up to 12 s); the latency
    shown (Health page, `enrich health`, GET /health?probe=true) was that wait."""
    from types import SimpleNamespace

    from enrich.providers.massive import provider as massive
    from enrich.providers.ratelimit import RateLimiter

    clock = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(massive, "time", SimpleNamespace(perf_counter=lambda: clock.t))

    class Paced(RateLimiter):
        def __init__(self):
            super().__init__(5)

        def acquire(self, priority: int = 0) -> float:
            clock.t += 12.0  # its turn comes 12 s later
            return 12.0

    def answer(request: httpx.Request) -> httpx.Response:
        clock.t += 0.004  # the provider answers in 4 ms
        if request.headers["Authorization"] != "Bearer the-key":
            return httpx.Response(401, json={"status": "ERROR", "error": "Unknown API Key"})
        return httpx.Response(200, json={"market": "closed"})

    for key, status in (("the-key", "valid"), ("a-wrong-key", "invalid key")):
        p = MassiveProvider(httpx.Client(transport=httpx.MockTransport(answer)), key,
                            "https://api.massive.test", Paced(), today=lambda: FRIDAY.date(),
                            retry=RetryPolicy(max_retries=0, sleep=lambda s: None))
        result = p.probe()
        assert result.status == status
        assert result.latency_ms == pytest.approx(4.0, abs=0.5), result
