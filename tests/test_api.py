"""The JSON API through httpx's ASGI transport: every endpoint's JSON against the catalog,
the token on every mutation, reads from other hosts, error codes, secrets in responses.

The store is the dashboard tests' populated one (``tests.test_queries.populate``: five
symbols enriched at FIXED_NOW, SPY's news failing, MSFT's options not entitled, one of KO's
bars refused). ``ENDPOINTS`` maps every route of the app to the test that covers it; a route
without a test fails ``test_every_endpoint_has_a_test``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import polars as pl
import pytest

from enrich.alerts import lifecycle as alert_lifecycle
from enrich.api.app import create_app
from enrich.api_token import ensure_token
from enrich.backfill import heatmap as coverage
from enrich.backfill import jobs as backfill
from enrich.config import load_settings
from enrich.errors import CatalogBusyError
from enrich.schemas import DATASETS
from enrich.service import Services
from enrich.store.catalog import WriteBatch, host_and_pid, utcnow
from enrich.store.store import Store
from enrich.views import status as status_view
from enrich.views import symbols as symbols_view
from tests.conftest import FIXED_NOW, subprocess_env
from tests.test_queries import populate

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BASE = "http://127.0.0.1:8765"  # what a script on this machine asks (the Host it sends)
V1 = "/api/v1"
TIMEOUT = 120.0

ENDPOINTS = {
    ("GET", "/api/v1/overview"): "test_overview_matches_the_catalog",
    ("GET", "/api/v1/symbols"): "test_symbols_filter_page_and_count",
    ("GET", "/api/v1/symbols/{symbol}"): "test_symbol_detail_matches_its_status",
    ("GET", "/api/v1/symbols/{symbol}/{dataset}"): "test_symbol_rows_as_json_csv_and_parquet",
    ("GET", "/api/v1/runs"): "test_runs_filter_page_and_count",
    ("GET", "/api/v1/runs/{run_id}"): "test_run_detail_matches_its_tasks_and_log",
    ("GET", "/api/v1/metrics"): "test_metrics_match_the_logs",
    ("GET", "/api/v1/health"): "test_health_is_200_when_healthy_503_with_the_reason",
    ("GET", "/api/v1/schedule"): "test_schedule_pause_and_resume",
    ("GET", "/api/v1/backfills"): "test_backfills_start_list_pause_resume_cancel",
    ("GET", "/api/v1/backfills/{backfill_id}"): "test_backfills_start_list_pause_resume_cancel",
    ("GET", "/api/v1/alerts"): "test_alerts_list_ack_snooze_and_test",
    ("GET", "/api/v1/alerts/{incident_id}"): "test_alerts_list_ack_snooze_and_test",
    ("GET", "/api/v1/quality"): "test_quality_matches_the_checks",
    ("GET", "/api/v1/coverage"): "test_coverage_and_fills",
    ("GET", "/api/v1/settings"): "test_provider_key_never_in_a_response",
    ("POST", "/api/v1/runs"): "test_post_run_returns_202_and_the_run_ends",
    ("POST", "/api/v1/runs/{run_id}/cancel"): "test_cancel_and_retry_failed",
    ("POST", "/api/v1/runs/{run_id}/retry-failed"): "test_cancel_and_retry_failed",
    ("POST", "/api/v1/schedule/pause"): "test_schedule_pause_and_resume",
    ("POST", "/api/v1/schedule/resume"): "test_schedule_pause_and_resume",
    ("POST", "/api/v1/backfills"): "test_backfills_start_list_pause_resume_cancel",
    ("POST", "/api/v1/backfills/{backfill_id}/pause"):
        "test_backfills_start_list_pause_resume_cancel",
    ("POST", "/api/v1/backfills/{backfill_id}/cancel"):
        "test_backfills_start_list_pause_resume_cancel",
    ("POST", "/api/v1/backfills/{backfill_id}/resume"):
        "test_backfills_start_list_pause_resume_cancel",
    ("POST", "/api/v1/fills"): "test_coverage_and_fills",
    ("POST", "/api/v1/quality/audit"): "test_quality_audit_rechecks_in_the_background",
    ("POST", "/api/v1/alerts/test"): "test_alerts_list_ack_snooze_and_test",
    ("POST", "/api/v1/alerts/{alert_id}/ack"): "test_alerts_list_ack_snooze_and_test",
    ("POST", "/api/v1/alerts/{target}/snooze"): "test_alerts_list_ack_snooze_and_test",
    ("POST", "/api/v1/alerts/{target}/unsnooze"): "test_alerts_list_ack_snooze_and_test",
}


class Api:
    """A synchronous face over ``httpx.AsyncClient`` + ``httpx.ASGITransport``."""

    def __init__(self, app, client: tuple[str, int] = ("127.0.0.1", 50123)):
        self.app, self.client = app, client

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=self.client)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                return await c.request(method, path, **kw)

        return anyio.run(go)

    def get(self, path: str, **kw) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        kw.setdefault("headers", AUTH)
        return self.request("POST", path, **kw)

    def ok(self, path: str, **params) -> dict:
        r = self.get(path, params=params)
        assert r.status_code == 200, r.text
        return r.json()


def settings_for(data: Path, **env: str):
    return load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off",
                          "ENRICH_NOW": FIXED_NOW.isoformat(), "ENRICH_API_TOKEN": TOKEN,
                          **env}, dotenv_path=None).with_(history_years=1, max_retries=0)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    data = tmp_path_factory.mktemp("api") / "data"
    summary = populate(settings_for(data))
    store = Store(data)
    alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False)  # the partial run, KO's gap
    return data, summary


class Desk:
    def __init__(self, data: Path, **env: str):
        self.settings = settings_for(data, **env)
        self.svc = Services(self.settings, alerts=False).start()
        self.store = self.svc.store
        self.catalog = self.store.catalog
        self.app = create_app(self.settings, self.svc)
        self.api = Api(self.app)

    def sql(self, sql: str, params=None) -> pl.DataFrame:
        return self.catalog.query(sql, params)

    def one(self, sql: str, params=None):
        return self.catalog.scalar(sql, params)


@pytest.fixture(scope="module")
def reads(template, tmp_path_factory):
    """One desk for the read-only tests (nothing in them writes)."""
    data = tmp_path_factory.mktemp("api-reads") / "data"
    shutil.copytree(template[0], data)
    desk = Desk(data)
    yield desk, template[1]
    desk.svc.stop()


@pytest.fixture
def desk(template, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(template[0], data)
    d = Desk(data)
    yield d
    d.svc.stop()


def wait_run(desk: Desk, run_id: str) -> dict:
    deadline = time.monotonic() + TIMEOUT
    while True:
        r = desk.api.ok(f"{V1}/runs/{run_id}")
        if r["state"] not in ("queued", "running"):
            return r
        assert time.monotonic() < deadline, r
        time.sleep(0.1)


def ts(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


# -- reads ------------------------------------------------------------------------------------
def test_overview_matches_the_catalog(reads):
    desk, _ = reads
    j = desk.api.ok(f"{V1}/overview")
    assert j["as_of"] == "2026-11-25T22:00:00Z"
    assert j["symbols"] == desk.one("SELECT count(*) FROM symbols WHERE active")
    expected = status_view.symbol_state_counts(status_view.symbol_summary(
        status_view.status_grid(desk.catalog, FIXED_NOW)))
    assert j["states"] == expected and j["states"]["failing"] == 1
    grid_rows = status_view.status_grid(desk.catalog, FIXED_NOW).height
    assert sum(r["symbols"] for r in j["distribution"]) == grid_rows
    steps = desk.one("SELECT count(*) FROM fetch_log WHERE status IN ('ok', 'up_to_date', "
                     "'failed') AND started_at >= ?", [FIXED_NOW - dt.timedelta(hours=24)])
    assert j["metrics_24h"]["fetch"]["steps"] == steps
    assert j["metrics_24h"]["fetch"]["rejected"] == desk.one(
        "SELECT sum(rejected) FROM fetch_log") == 1
    assert j["active_runs"] == []
    assert j["needs_attention"]["top"][0]["symbol"] == "SPY"
    open_ids = set(desk.sql("SELECT incident_id FROM alerts o WHERE event = 'opened' AND NOT "
                            "EXISTS (SELECT 1 FROM alerts r WHERE r.incident_id = "
                            "o.incident_id AND r.event = 'resolved')")["incident_id"])
    assert {a["incident_id"] for a in j["open_alerts"]} == open_ids and len(open_ids) == 2


def test_symbols_filter_page_and_count(reads):
    desk, _ = reads
    j = desk.api.ok(f"{V1}/symbols", limit=1000)
    assert j["total"] == desk.one("SELECT count(*) FROM symbols WHERE active")
    assert j["items"][0]["symbol"] == "SPY"  # needs attention first: failing
    first = desk.api.ok(f"{V1}/symbols", limit=7, sort="symbol")
    second = desk.api.ok(f"{V1}/symbols", limit=7, offset=7, sort="symbol")
    names = sorted(desk.sql("SELECT symbol FROM symbols WHERE active")["symbol"])
    assert [r["symbol"] for r in first["items"] + second["items"]] == names[:14]
    assert first["total"] == second["total"] == len(names)
    failing = desk.api.ok(f"{V1}/symbols", state="failing")
    assert [r["symbol"] for r in failing["items"]] == ["SPY"] and failing["total"] == 1
    entitled = desk.api.ok(f"{V1}/symbols", state="not_entitled", dataset="options_iv")
    assert [r["symbol"] for r in entitled["items"]] == ["MSFT"]
    aapl = desk.api.ok(f"{V1}/symbols", search="aapl")["items"][0]
    score = desk.one("SELECT score FROM (" + _score_sql() + ") WHERE symbol = 'AAPL'")
    assert aapl["quality"] == pytest.approx(score)
    r = desk.api.get(f"{V1}/symbols", params={"state": "sparkly"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_symbols_sort_by_quality_over_every_symbol_worst_first(reads):
    """Issue 18: the sort is done by the server over the whole universe, not a page."""
    desk, _ = reads
    scores = desk.sql("SELECT symbol, score FROM (" + _score_sql() + ") ORDER BY score, symbol")
    page = desk.api.ok(f"{V1}/symbols", sort="worst quality", limit=3)
    assert [r["symbol"] for r in page["items"]] == scores["symbol"].to_list()[:3]
    assert page["items"][0]["quality"] == pytest.approx(scores["score"][0]) and \
        scores["score"][0] < 1
    every = desk.api.ok(f"{V1}/symbols", sort="worst quality", limit=1000)["items"]
    rated = [r["quality"] for r in every if r["quality"] is not None]
    assert rated == sorted(rated)
    assert all(r["quality"] is None for r in every[len(rated):])  # not checked: last


def _score_sql() -> str:
    w = "(CASE severity WHEN 'error' THEN 3.0 WHEN 'warning' THEN 1.0 ELSE 1.0 END)"
    return (f"SELECT symbol, sum({w} * CAST(passed AS INTEGER)) / sum({w}) AS score "
            "FROM quality_status GROUP BY symbol")


def test_symbol_detail_matches_its_status(reads):
    desk, _ = reads
    j = desk.api.ok(f"{V1}/symbols/AAPL")
    assert j["symbol"] == "AAPL" and j["asset_class"] == "stocks"
    held = dict(desk.sql("SELECT dataset, CAST(latest_session AS VARCHAR) FROM symbol_status "
                         "WHERE symbol = 'AAPL'").iter_rows())
    assert {d["dataset"]: d["latest_session"] for d in j["datasets"]} == held
    assert {d["dataset"] for d in j["quality"]} == set(desk.sql(
        "SELECT DISTINCT dataset FROM quality_status WHERE symbol = 'AAPL'")["dataset"])
    spy = desk.api.ok(f"{V1}/symbols/SPY")
    err = desk.sql("SELECT dataset, last_error_class, last_error_message FROM symbol_status "
                   "WHERE symbol = 'SPY' AND last_error_at IS NOT NULL").row(0, named=True)
    assert {k: spy["last_error"][k] for k in err} == err
    assert err["last_error_class"] == "transient"
    ko = desk.api.ok(f"{V1}/symbols/KO")
    assert [c["check_name"] for c in ko["failing_checks"]] == list(desk.sql(
        "SELECT check_name FROM quality_status WHERE symbol = 'KO' AND NOT passed")[
        "check_name"])
    # Tickers keep their case; one typed in another case finds the held spelling, with the
    # identity the provider's reference gave it.
    low = desk.api.ok(f"{V1}/symbols/aapl")
    assert low["symbol"] == "AAPL" and low["datasets"] == j["datasets"]
    assert {"ticker_type", "market", "delisted_on", "history_from"} <= set(low)
    r = desk.api.get(f"{V1}/symbols/NOPE")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_symbol"
    r = desk.api.get(f"{V1}/symbols/bad%20symbol!")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_symbol"


def test_symbol_rows_as_json_csv_and_parquet(reads):
    desk, _ = reads
    lake = pl.read_parquet(desk.store.lake.files("bars", ["AAPL"], level="1d")).filter(
        pl.col("session").is_between(dt.date(2026, 11, 2), dt.date(2026, 11, 20)))
    q = {"from": "2026-11-02", "to": "2026-11-20"}
    j = desk.api.ok(f"{V1}/symbols/AAPL/bars", **q)
    assert j["rows"] == lake.height == len(j["items"]) == 15
    assert [r["session"] for r in j["items"]] == [d.isoformat() for d in lake["session"]]
    assert [r["close"] for r in j["items"]] == lake["close"].to_list()
    r = desk.api.get(f"{V1}/symbols/AAPL/bars", params=q, headers={"Accept": "text/csv"})
    assert r.headers["content-type"].startswith("text/csv")
    csv = pl.read_csv(io.BytesIO(r.content))
    assert csv.height == 15 and csv["close"].to_list() == lake["close"].to_list()
    r = desk.api.get(f"{V1}/symbols/AAPL/bars", params=q,
                     headers={"Accept": "application/vnd.apache.parquet"})
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert pl.read_parquet(io.BytesIO(r.content)).equals(lake)
    j = desk.api.ok(f"{V1}/symbols/aapl/bars", **q)  # the held spelling's rows
    assert j["symbol"] == "AAPL" and j["rows"] == 15
    news = desk.api.ok(f"{V1}/symbols/AAPL/news", **{"from": "2026-11-01"})
    assert all(n["published_utc"] >= "2026-11-01" for n in news["items"]) and news["rows"]
    # Every lake dataset filters by its date: vol_summary by as_of (a from/to was a 500).
    assert set(symbols_view.DATE_COLUMNS) == set(DATASETS)
    held = desk.store.lake.read("vol_summary", ["AAPL"])["as_of"].max()
    vol = desk.api.ok(f"{V1}/symbols/AAPL/vol_summary", **{"to": held.isoformat()})
    assert vol["rows"] >= 1 and vol["items"][-1]["as_of"] == held.isoformat()
    after = (held + dt.timedelta(days=1)).isoformat()
    assert desk.api.ok(f"{V1}/symbols/AAPL/vol_summary", **{"from": after})["rows"] == 0
    r = desk.api.get(f"{V1}/symbols/AAPL/bars", params={"from": "2026-11-20", "to": "2026-11-02"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = desk.api.get(f"{V1}/symbols/AAPL/quotes")
    assert r.status_code == 422


def test_runs_filter_page_and_count(reads):
    desk, summary = reads
    j = desk.api.ok(f"{V1}/runs")
    assert j["total"] == desk.one("SELECT count(*) FROM runs") == 1
    run = j["items"][0]
    row = desk.sql("SELECT run_id, state, symbols_total, symbols_failed, records_written "
                   "FROM runs").row(0, named=True)
    assert {k: run[k] for k in row} == row
    assert run["params"]["symbols"] == ["AAPL", "MSFT", "SPY", "KO", "X:BTCUSD"]
    assert desk.api.ok(f"{V1}/runs", state="partial")["total"] == 1
    assert desk.api.ok(f"{V1}/runs", state="failed")["total"] == 0
    assert desk.api.ok(f"{V1}/runs", symbol="SPY")["total"] == 1
    assert desk.api.ok(f"{V1}/runs", symbol="NVDA")["total"] == 0
    later = (utcnow() + dt.timedelta(days=1)).isoformat()
    assert desk.api.ok(f"{V1}/runs", since=later)["total"] == 0
    assert desk.api.get(f"{V1}/runs", params={"limit": 0}).status_code == 422


def test_run_detail_matches_its_tasks_and_log(reads):
    desk, summary = reads
    j = desk.api.ok(f"{V1}/runs/{summary.run_id}")
    assert j["state"] == "partial" and j["progress"]["done"] == j["progress"]["total"] == 5
    tasks = desk.sql("SELECT symbol, state FROM tasks WHERE run_id = ? ORDER BY symbol",
                     [summary.run_id])
    assert sorted((t["symbol"], t["state"]) for t in j["tasks"]) == list(tasks.iter_rows())
    n = desk.one("SELECT count(*) FROM fetch_log WHERE run_id = ? AND status IN "
                 "('failed', 'retried')", [summary.run_id])
    assert j["errors"]["total"] == n and n > 0
    assert {e["error_class"] for e in j["errors"]["items"]} >= {"transient"}
    by_ds = {f["dataset"]: f["steps"] for f in j["fetch"]}
    assert by_ds == dict(desk.sql(
        "SELECT dataset, count(*) FILTER (status IN ('ok', 'up_to_date', 'failed')) FROM "
        "fetch_log WHERE run_id = ? GROUP BY dataset", [summary.run_id]).iter_rows())
    r = desk.api.get(f"{V1}/runs/no-such-run")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_run"


def test_metrics_match_the_logs(reads):
    desk, _ = reads
    j = desk.api.ok(f"{V1}/metrics", hours=24 * 30)
    assert j["pipeline"]["fetch"]["requests"] == desk.one(
        "SELECT sum(requests) FROM fetch_log WHERE started_at >= ?",
        [FIXED_NOW - dt.timedelta(days=30)])
    assert j["alltime"]["runs"] == desk.one("SELECT count(*) FROM runs")
    assert {r["dataset"] for r in j["fetch_by_dataset"]} == set(
        desk.sql("SELECT DISTINCT dataset FROM fetch_log")["dataset"])
    failures = {r["error_class"]: r["failures"] for r in j["failures_by_class"]}
    assert failures == dict(desk.sql(
        "SELECT error_class, count(*) FROM (SELECT error_class FROM fetch_log WHERE status = "
        "'failed' UNION ALL SELECT error_class FROM compute_log WHERE status = 'failed') "
        "GROUP BY 1").iter_rows())
    assert j["rows_refused"][0]["dataset"] == "bars"


def test_quality_matches_the_checks(reads):
    desk, _ = reads
    j = desk.api.ok(f"{V1}/quality")
    assert {r["symbol"]: r["score"] for r in j["symbols"]} == pytest.approx(
        dict(desk.sql(_score_sql()).iter_rows()))
    failing = desk.api.ok(f"{V1}/quality", failing="true")["failing"]
    assert sorted((r["symbol"], r["check_name"]) for r in failing) == sorted(desk.sql(
        "SELECT symbol, check_name FROM quality_status WHERE NOT passed").iter_rows())
    ko = desk.api.ok(f"{V1}/quality", symbol="KO", failing="true")
    assert ko["symbol"] == "KO" and all(not c["passed"] for c in ko["checks"])
    assert desk.api.get(f"{V1}/quality", params={"symbol": "NOPE"}).status_code == 404


def test_health_is_200_when_healthy_503_with_the_reason(desk, monkeypatch):
    b = WriteBatch()  # the desk's runs two days older: the daily fires since did not run
    b.execute("UPDATE runs SET requested_at = requested_at - INTERVAL 2 DAY")
    desk.catalog.write(b)
    r = desk.api.get(f"{V1}/health")
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["reasons"] == []
    assert r.json()["catalog"]["ok"] is True
    from enrich.diagnosis import schedule_facts  # what the Overview counts as missed

    facts = schedule_facts(desk.catalog, desk.settings.schedule_utc,
                           ts(r.json()["checked_at"]), False)  # the runs' clock: the wall
    missed = sorted(facts["unrun_fires"] + facts["missed_runs"])
    assert [ts(x) for x in r.json()["schedule"]["missed_fires"]] == missed and len(missed) >= 2
    b = WriteBatch()
    b.execute("UPDATE scheduler_state SET pid = 4242, host = 'elsewhere', heartbeat_at = ?, "
              "heartbeat_interval_s = 5 WHERE id = 1", [utcnow() - dt.timedelta(minutes=5)])
    desk.catalog.write(b)
    r = desk.api.get(f"{V1}/health")
    assert r.status_code == 503 and r.json()["scheduler"]["state"] == "dead"
    assert r.json()["reasons"][0].startswith("scheduler dead: pid 4242 on elsewhere")

    def busy(*a, **k):
        raise CatalogBusyError("the catalog is held by another program (PID 1)")

    monkeypatch.setattr(desk.catalog, "connect", busy)
    r = desk.api.get(f"{V1}/health")
    assert r.status_code == 503
    assert r.json()["reasons"] == ["catalog unreachable: the catalog is held by another "
                                   "program (PID 1)"]


def test_the_next_fire_in_exchange_time_keeps_its_offset_in_json():
    # Found by a QA pass: the API wrote `next_fire_exchange` in UTC, the same value as
    # `next_fire_utc` ("2026-12-07T07:46:00Z" for 02:46 in New York).
    from enrich.api.common import plain
    from enrich.health import _schedule_part

    fire = dt.datetime(2026, 12, 7, 7, 46, tzinfo=dt.UTC)
    part = plain(_schedule_part(load_settings({}, dotenv_path=None), fire, fire))
    assert part["next_fire_utc"] == "2026-12-07T07:46:00Z"
    assert part["next_fire_exchange"] == "2026-12-07T02:46:00-05:00"


# -- actions ----------------------------------------------------------------------------------
def test_post_run_returns_202_and_the_run_ends(desk):
    r = desk.api.post(f"{V1}/runs", json={"symbols": ["aapl"], "datasets": ["bars"],
                                          "lookback": 10})  # any case finds the held AAPL
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert r.json()["url"] == f"{V1}/runs/{run_id}"
    j = wait_run(desk, run_id)
    assert j["state"] == "succeeded" and j["kind"] == "api"
    assert [t["symbol"] for t in j["tasks"]] == ["AAPL"]
    assert desk.one("SELECT params->>'$.datasets[0]' FROM runs WHERE run_id = ?",
                    [run_id]) == "bars"
    r = desk.api.post(f"{V1}/runs", json={"symbols": ["ZZZZ"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_symbol"
    r = desk.api.post(f"{V1}/runs", json={"datasets": ["quotes"]})
    assert r.status_code == 422 and "datasets" in r.json()["error"]["message"]


def test_cancel_and_retry_failed(desk, template):
    partial = template[1].run_id
    r = desk.api.post(f"{V1}/runs/{partial}/retry-failed")
    assert r.status_code == 202, r.text
    retry = r.json()["run_id"]
    j = wait_run(desk, retry)
    assert j["parent_run_id"] == partial and j["kind"] == "retry"
    assert [t["symbol"] for t in j["tasks"]] == ["SPY"]  # MSFT's refusal is the plan's
    assert j["state"] == "succeeded"  # no demo faults this time
    r = desk.api.post(f"{V1}/runs/{retry}/retry-failed")
    assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
    assert "no failed symbols" in r.json()["error"]["message"]
    r = desk.api.post(f"{V1}/runs/{partial}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "run_finished"
    r = desk.api.post(f"{V1}/runs/nope/retry-failed")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_run"
    # Cancel a running run that cannot finish first: it waits for AAPL, held here (as by
    # another run enriching it). Once let go it stops before AAPL, cancelled by whoever asked.
    lock = desk.store.lake.symbol_lock("AAPL")
    lock.acquire()
    try:
        run_id = desk.svc.trigger(symbols=["AAPL"], lookback=10)
        deadline = time.monotonic() + TIMEOUT
        while desk.api.ok(f"{V1}/runs/{run_id}")["state"] != "running":
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        r = desk.api.post(f"{V1}/runs/{run_id}/cancel")
        assert r.status_code == 202, r.text
        assert r.json() == {"run_id": run_id, "cancel_requested": True}
    finally:
        lock.release()
    j = wait_run(desk, run_id)
    assert j["state"] == "cancelled", j
    # The symbol the cancel left unrun is not attempted, not "up to date".
    assert (j["symbols_ok"], j["symbols_failed"], j["symbols_skipped"],
            j["symbols_not_attempted"]) == (0, 0, 0, 1), j
    assert desk.one("SELECT cancel_requested_by FROM runs WHERE run_id = ?",
                    [run_id]) == "api (127.0.0.1)"
    r = desk.api.post(f"{V1}/runs/{run_id}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "run_finished"
    assert r.json()["error"]["state"] == "cancelled"


def test_a_killed_runs_reads_interrupted_and_its_cancel_is_refused(desk):
    """Found by a QA pass: the API showed a run whose process was killed as `running` and
    answered its cancel 202 "cancel requested" (nothing left to act on it) until the
    schedule owner's next heartbeat closed it."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no process now
    run_id = "00000000-0000-4000-8000-0000000000d1"
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with desk.catalog.connect() as con:
        con.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, pid, host, "
                    "heartbeat_at) VALUES (?, 'cli', 'running', '{}', ?, ?, ?, ?)",
                    [run_id, old, gone.pid, host_and_pid()[0], old])
    r = desk.api.post(f"{V1}/runs/{run_id}/cancel")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "run_finished"
    assert r.json()["error"]["state"] == "interrupted"
    assert desk.one("SELECT cancel_requested_by FROM runs WHERE run_id = ?", [run_id]) is None
    assert desk.api.ok(f"{V1}/runs/{run_id}")["state"] == "interrupted"
    with desk.catalog.connect() as con:  # killed again, as another reader would find it
        con.execute("UPDATE runs SET state = 'running' WHERE run_id = ?", [run_id])
    assert desk.api.ok(f"{V1}/runs/{run_id}")["state"] == "interrupted"
    with desk.catalog.connect() as con:
        con.execute("UPDATE runs SET state = 'running' WHERE run_id = ?", [run_id])
    listed = desk.api.ok(f"{V1}/runs", state="running")
    assert run_id not in [x["run_id"] for x in listed["items"]]
    with desk.catalog.connect() as con:
        con.execute("UPDATE runs SET state = 'running' WHERE run_id = ?", [run_id])
    assert run_id not in [x["run_id"] for x in desk.api.ok(f"{V1}/overview")["active_runs"]]


def test_schedule_pause_and_resume(desk):
    r = desk.api.post(f"{V1}/schedule/pause", json={"reason": "provider maintenance"})
    assert r.status_code == 200 and r.json()["paused"] is True
    row = desk.sql("SELECT paused, paused_by, pause_reason FROM scheduler_state").row(0)
    assert row == (True, "api (127.0.0.1)", "provider maintenance")
    assert desk.api.ok(f"{V1}/schedule")["paused"] is True
    # Its liveness, as `schedule show --json` says it (found by a QA pass: missing here).
    assert desk.api.ok(f"{V1}/schedule")["state"] == "stopped"  # ENRICH_SCHEDULER=off
    r = desk.api.post(f"{V1}/schedule/resume")
    assert r.status_code == 200 and r.json()["paused"] is False
    assert desk.one("SELECT paused FROM scheduler_state") is False
    assert desk.api.ok(f"{V1}/schedule")["schedule_utc"] == "01:30"


def test_backfills_start_list_pause_resume_cancel(desk):
    body = {"dataset": "dividends", "symbols": ["AAPL"], "years": 2}
    plan = desk.api.post(f"{V1}/backfills", json={**body, "dry_run": True})
    assert plan.status_code == 200 and plan.json()["chunks_total"] >= 1
    assert desk.one("SELECT count(*) FROM backfills") == 0  # a dry run starts nothing
    r = desk.api.post(f"{V1}/backfills", json=body)
    assert r.status_code == 202, r.text
    bid, run_id = r.json()["backfill_id"], r.json()["run_id"]
    assert bid == plan.json()["backfill_id"]
    assert backfill.wait_for(bid, TIMEOUT)
    listed = desk.api.ok(f"{V1}/backfills")
    assert listed["total"] == desk.one("SELECT count(*) FROM backfills") == 1
    one = desk.api.ok(f"{V1}/backfills/{bid}")
    assert one["status"] == "complete" and one["last_run_id"] == run_id
    assert one["chunks_done"] == desk.one("SELECT count(*) FROM backfill_progress WHERE "
                                          "backfill_id = ? AND state = 'done'", [bid])
    assert [s["step"] for s in one["steps"]] == list(
        backfill.backfill_steps(desk.catalog, bid)["step"])
    # It is complete: nothing to pause or cancel (both once recorded an intent on it).
    r = desk.api.post(f"{V1}/backfills/{bid}/pause")
    assert r.status_code == 409 and r.json()["error"]["status"] == "complete", r.text
    assert desk.one("SELECT status FROM backfills WHERE backfill_id = ?", [bid]) == "active"
    runs_before = desk.one("SELECT count(*) FROM runs")
    r = desk.api.post(f"{V1}/backfills/{bid}/resume", json={"retry_failed": True})
    assert r.status_code == 200 and r.json()["run_id"] is None  # no failed chunk: no run
    assert r.json()["status"] == "complete" and "no failed chunks" in r.json()["message"]
    assert desk.one("SELECT count(*) FROM runs") == runs_before
    r = desk.api.post(f"{V1}/backfills/{bid}/cancel")
    assert r.status_code == 409 and r.json()["error"]["code"] == "backfill_finished"
    assert desk.one("SELECT status FROM backfills WHERE backfill_id = ?", [bid]) == "active"
    r = desk.api.get(f"{V1}/backfills/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_backfill"
    r = desk.api.post(f"{V1}/backfills/nope/pause")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_backfill"
    r = desk.api.post(f"{V1}/backfills", json={"dataset": "bars", "years": 1, "days": 3})
    assert r.status_code == 400 and r.json()["error"]["code"] == "config"


def test_coverage_and_fills(desk):
    from tests.test_coverage import drop_sessions

    gone = desk.store.lake.read("bars", ["AAPL"], level="1d")["session"].to_list()[-12:-9]
    drop_sessions(desk.store, "AAPL", gone)
    j = desk.api.ok(f"{V1}/coverage", dataset="bars", sessions=40)
    report = coverage.gaps_report(desk.catalog, "bars", FIXED_NOW, 40)
    assert j["totals"] == report["totals"] and len(j["gaps"]) == report["gaps"].height
    aapl = [g for g in j["gaps"] if g["symbol"] == "AAPL"]
    assert aapl == [{"symbol": "AAPL", "state": "missing", "first_session": gone[0].isoformat(),
                     "last_session": gone[-1].isoformat(), "sessions": 3,
                     "never_fetched": False}]
    r = desk.api.post(f"{V1}/fills", json={"dataset": "bars", "symbols": ["AAPL", "MSFT"],
                                           "from": gone[0].isoformat(),
                                           "to": gone[-1].isoformat()})
    assert r.status_code == 202 and r.json()["cells"] == 3, r.text
    [run_id] = r.json()["run_ids"]
    bid = desk.one("SELECT backfill_id FROM backfills WHERE last_run_id = ?", [run_id])
    assert backfill.wait_for(bid, TIMEOUT)  # the backfill, then the re-check it triggers
    after = desk.api.ok(f"{V1}/coverage", dataset="bars", sessions=40)
    assert [g for g in after["gaps"] if g["symbol"] == "AAPL"] == []
    r = desk.api.post(f"{V1}/fills", json={"dataset": "bars", "symbols": ["AAPL"],
                                           "from": gone[0].isoformat(),
                                           "to": gone[-1].isoformat()})
    assert r.status_code == 200 and r.json()["run_ids"] == []  # nothing left to fill
    assert desk.api.get(f"{V1}/coverage", params={"dataset": "quotes"}).status_code == 422


def test_quality_audit_rechecks_in_the_background(desk):
    before = desk.one("SELECT count(*) FROM quality_log WHERE symbol = 'AAPL'")
    # What the template's run checked, to tell the re-check's rows apart (a window of wall
    # time would also take in the run's rows when the template was built under a second ago).
    since = desk.one("SELECT max(checked_at) FROM quality_log")
    r = desk.api.post(f"{V1}/quality/audit", json={"symbols": ["AAPL"],
                                                   "datasets": ["bars"]})
    assert r.status_code == 202
    deadline = time.monotonic() + TIMEOUT
    while desk.one("SELECT count(*) FROM quality_log WHERE symbol = 'AAPL'") == before:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert desk.one("SELECT count(DISTINCT dataset) FROM quality_log WHERE symbol = 'AAPL' "
                    "AND checked_at > ?", [since]) == 1


def test_alerts_list_ack_snooze_and_test(desk):
    j = desk.api.ok(f"{V1}/alerts")
    assert j["total"] == desk.one("SELECT count(*) FROM alerts WHERE event IN "
                                  "('opened', 'test')") == 2
    assert {i["rule"] for i in j["items"]} == {"run_failed", "quality"}
    assert j["channels"] == [] and j["snoozes"] == []
    inc = next(i for i in j["items"] if i["rule"] == "quality")
    one = desk.api.ok(f"{V1}/alerts/{inc['incident_id']}")
    assert [e["event"] for e in one["events"]] == ["opened"]
    assert one["dedupe_key"] == "quality:bars/missing_sessions"
    r = desk.api.post(f"{V1}/alerts/{inc['incident_id']}/ack")
    assert r.status_code == 200
    assert desk.one("SELECT acked_by FROM alerts WHERE alert_id = ?",
                    [inc["incident_id"]]) == "api (127.0.0.1)"
    before = utcnow()  # the snooze starts between these two instants, however slow the call
    r = desk.api.post(f"{V1}/alerts/run_failed/snooze", json={"for": "2h", "reason": "known"})
    after = utcnow()
    assert r.status_code == 200 and r.json()["target"] == "run_failed"
    until = desk.one("SELECT until FROM alert_snoozes WHERE target = 'run_failed'")
    assert before + dt.timedelta(hours=2) <= until <= after + dt.timedelta(hours=2)
    assert [s["target"] for s in desk.api.ok(f"{V1}/alerts")["snoozes"]] == ["run_failed"]
    assert desk.api.ok(f"{V1}/alerts", state="open", rule="run_failed")["items"][0][
        "snoozed_until"] is not None
    r = desk.api.post(f"{V1}/alerts/run_failed/snooze", json={"for": "forever"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "config"
    assert desk.api.post(f"{V1}/alerts/run_failed/unsnooze").status_code == 200
    r = desk.api.post(f"{V1}/alerts/run_failed/unsnooze")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_snoozed"
    r = desk.api.post(f"{V1}/alerts/nope/ack")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_alert"
    r = desk.api.post(f"{V1}/alerts/test")
    assert r.status_code == 200 and r.json()["delivery"] == "no_channel"
    assert desk.api.ok(f"{V1}/alerts", state="test")["total"] == 1
    assert desk.api.get(f"{V1}/alerts/nope").status_code == 404


# -- security ---------------------------------------------------------------------------------
def _post_routes(app) -> list[str]:
    paths = []
    for route in app.routes:
        if "POST" in getattr(route, "methods", ()):
            paths.append(route.path.replace("{run_id}", "r1").replace("{backfill_id}", "b1")
                         .replace("{alert_id}", "a1").replace("{target}", "stale"))
    return paths


def test_mutations_need_the_token_and_change_nothing_without_it(desk, template):
    tables = ["runs", "tasks", "alerts", "alert_snoozes", "backfills", "scheduler_state",
              "quality_log", "symbols"]

    def snapshot():
        return ({t: desk.sql(f"SELECT * FROM {t}").to_dicts() for t in tables},
                desk.catalog.data_version())

    before = snapshot()
    posts = _post_routes(desk.app)
    assert len(posts) == sum(1 for m, _ in ENDPOINTS if m == "POST")
    body = {"dataset": "bars", "symbols": ["AAPL"], "from": "2026-11-01", "to": "2026-11-05"}
    for path in posts:
        for headers in ({}, {"Authorization": "Bearer wrong-token-000000000"},
                        {"Authorization": TOKEN}):
            r = desk.api.post(path, json=body, headers=headers)
            assert r.status_code == 401, (path, headers, r.text)
            assert r.json()["error"]["code"] == "unauthorized"
    assert desk.svc.active_runs() == []
    assert snapshot() == before


def test_the_generated_token_file_is_0600_and_shown_by_the_cli(tmp_path):
    data = tmp_path / "data"
    settings = settings_for(data).with_(api_token=None)
    Store(data)  # a desk (`enrich api token` refuses a data dir that holds none)
    token, source = ensure_token(settings)
    path = data / "api_token"
    assert source == str(path) and len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_token(settings)[0] == token  # generated once
    os.chmod(path, 0o644)
    assert ensure_token(settings)[0] == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    p = subprocess.run([sys.executable, "-m", "enrich", "api", "token"],
                       env=subprocess_env(data), cwd=tmp_path, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == token


def test_a_token_rotated_in_its_file_takes_effect_in_the_running_api(template, tmp_path):
    """Deleting ``<data>/api_token`` (or replacing it) rotates the token: ``enrich api token``
    then shows a new one, which the running API takes at once, and the old one stops working
    (it kept working, and the new one was refused, until a restart)."""
    data = tmp_path / "data"
    shutil.copytree(template[0], data)
    settings = settings_for(data).with_(api_token=None)
    svc = Services(settings, alerts=False).start()
    try:
        remote = Api(create_app(settings, svc), client=("10.1.2.3", 40000))
        path = data / "api_token"
        first = path.read_text().strip()

        def status(token: str) -> int:
            return remote.get(f"{V1}/health",
                              headers={"Authorization": f"Bearer {token}"}).status_code

        assert status(first) == 200
        path.unlink()
        second = ensure_token(settings)[0]  # what `enrich api token` does next
        assert second != first
        assert (status(first), status(second)) == (401, 200)
        path.write_text("a-token-written-by-hand-0123456789\n")
        assert (status(second), status("a-token-written-by-hand-0123456789")) == (401, 200)
        path.unlink()  # gone and nobody asked yet: the API generates the next one itself
        assert status(second) == 401 and status(path.read_text().strip()) == 200
    finally:
        svc.stop()


def test_reads_from_other_hosts_need_the_token(reads):
    desk, _ = reads
    remote = Api(desk.app, client=("10.1.2.3", 40000))
    r = remote.get(f"{V1}/overview")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert remote.get(f"{V1}/overview", headers=AUTH).status_code == 200
    assert Api(desk.app, client=("::1", 40000)).get(f"{V1}/health").status_code == 200


@pytest.mark.parametrize("host", ["localhost:8765", "127.0.0.1", "[::1]:8765", "LOCALHOST"])
def test_reads_naming_this_machine_need_no_token(reads, host):
    desk, _ = reads
    r = desk.api.get(f"{V1}/health", headers={"Host": host})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("host", ["evil.example:8765", "desk", "10.0.0.5:8765", None])
def test_a_site_rebound_to_loopback_reads_nothing_without_the_token(reads, host):
    """DNS rebinding: a page on another site whose name now resolves to 127.0.0.1 reaches the
    API from a loopback client, but its requests carry the site's name as Host."""
    desk, _ = reads
    headers = {"Host": host} if host else {}

    async def go(extra: dict) -> httpx.Response:
        transport = httpx.ASGITransport(app=desk.app, client=("127.0.0.1", 50123))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            request = c.build_request("GET", f"{V1}/overview", headers={**headers, **extra})
            if host is None:
                del request.headers["Host"]
            return await c.send(request)

    r = anyio.run(go, {})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert anyio.run(go, AUTH).status_code == 200


def test_errors_are_json_with_stable_codes(reads):
    desk, _ = reads
    for method, path, status, code in (
            ("GET", "/api/v1/nothing-here", 404, "not_found"),
            ("DELETE", f"{V1}/runs", 405, "method_not_allowed"),
            ("GET", f"{V1}/runs?limit=abc", 422, "invalid_request"),
            ("GET", f"{V1}/coverage", 422, "invalid_request")):
        r = desk.api.request(method, path)
        assert r.status_code == status and r.headers["content-type"] == "application/json"
        assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_docs_and_openapi_list_every_endpoint(reads):
    desk, _ = reads
    spec = desk.api.ok("/openapi.json")
    listed = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    assert listed == set(ENDPOINTS)
    r = desk.api.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()


def test_every_endpoint_has_a_test(reads):
    desk, _ = reads
    routes = {(m, r.path.replace(":path}", "}")) for r in desk.app.routes  # as OpenAPI
              if r.path.startswith(V1) for m in r.methods}
    assert routes == set(ENDPOINTS)
    missing = [t for t in ENDPOINTS.values() if t not in globals()]
    assert not missing, missing


KEY = "ECHO-key-5f1e9c2b7a"


def test_short_tokens_of_alert_urls_do_not_mask_ids_in_responses(monkeypatch):
    """An unknown alert URL registers its 3-character tokens for the channels' own messages;
    the API's scrub leaves them (a run id containing "abc" came back with "****" in it, one
    run in a few hundred), and still takes out every secret of MIN_PIECE characters or more."""
    from enrich.api import common
    from enrich.channels import SCRUB

    monkeypatch.setattr(SCRUB, "secrets", {"abc", "tok3n"})
    monkeypatch.setattr(common, "_SECRETS", {KEY})
    body = json.dumps({"run_id": "823d23f7-3ae7-48f7-bde5-0e65b7babcdc",
                       "error": f"upstream said {KEY}", "note": "tok3n"}).encode()
    out = json.loads(common._scrub(body))
    assert out["run_id"] == "823d23f7-3ae7-48f7-bde5-0e65b7babcdc"
    assert out["error"] == "upstream said ****" and out["note"] == "tok3n"
    monkeypatch.setattr(SCRUB, "secrets", {"abc", "tok3n-XYZ"})
    assert json.loads(common._scrub(b'{"x": "a tok3n-XYZ b"}')) == {"x": "a **** b"}


def test_a_secret_in_stored_text_is_scrubbed_from_every_export_format(desk):
    """A provider's text that carries a secret (here the API token in a news title) leaves
    the API scrubbed as JSON, CSV and Parquet alike: the Parquet export is compressed, so it is
    scrubbed in the frame's text columns before it is encoded."""
    news = desk.store.lake.read("news", ["AAPL"])
    assert news.height
    leaked = news.head(1).with_columns(pl.lit(f"key {TOKEN} leaked").alias("title"))
    desk.store.lake.upsert("news", leaked)
    q = {"from": "2000-01-01"}
    j = desk.api.get(f"{V1}/symbols/AAPL/news", params=q)
    csv = desk.api.get(f"{V1}/symbols/AAPL/news", params={**q, "format": "csv"})
    parquet = desk.api.get(f"{V1}/symbols/AAPL/news", params={**q, "format": "parquet"})
    for r in (j, csv, parquet):
        assert r.status_code == 200 and TOKEN.encode() not in r.content
    titles = pl.read_parquet(io.BytesIO(parquet.content))["title"].to_list()
    assert "key **** leaked" in titles and len(titles) == news.height
    assert "key **** leaked" in csv.text and "key **** leaked" in j.text


def test_provider_key_never_in_a_response(template, tmp_path):
    """A provider that echoes the key into its error bodies, and an error message that
    carries it into the catalog: no response shows it."""
    from enrich.providers.massive.provider import MassiveProvider

    data = tmp_path / "data"
    shutil.copytree(template[0], data)

    def echo(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "")
        return httpx.Response(400, json={"status": "ERROR", "request_id": "r1",
                                         "error": f"bad request; you sent {auth}"})

    settings = settings_for(data, MASSIVE_API_KEY=KEY, ENRICH_PROVIDER="massive")
    provider = MassiveProvider(httpx.Client(transport=httpx.MockTransport(echo)), KEY,
                               settings.base_url)
    svc = Services(settings, provider=provider, alerts=False).start()
    try:
        run_id = svc.trigger(symbols=["NVDA"], datasets=["bars"])  # never fetched: asks
        assert svc.wait(run_id, timeout=TIMEOUT) == "failed"
        b = WriteBatch()  # as if a client had stored the echo
        b.execute("UPDATE symbol_status SET last_error_message = ?, last_error_at = ? "
                  "WHERE symbol = 'MSFT'", [f"upstream said: key {KEY} refused", utcnow()])
        b.execute("UPDATE fetch_log SET error_message = ? WHERE run_id = ?",
                  [f"echo {KEY}", run_id])
        svc.store.catalog.write(b)
        api = Api(create_app(settings, svc))
        paths = [f"{V1}/overview", f"{V1}/symbols?limit=1000", f"{V1}/symbols/MSFT",
                 f"{V1}/symbols/AAPL", f"{V1}/runs", f"{V1}/runs/{run_id}",
                 f"{V1}/metrics?hours=8760", f"{V1}/health?probe=true", f"{V1}/schedule",
                 f"{V1}/backfills", f"{V1}/alerts", f"{V1}/quality",
                 f"{V1}/quality?symbol=MSFT", f"{V1}/coverage?dataset=bars",
                 f"{V1}/settings", f"{V1}/symbols/AAPL/bars"]
        get_routes = {p for m, p in ENDPOINTS if m == "GET"}
        assert len(get_routes) == 16  # every read is in the list above (some via an id)
        seen = ""
        for path in paths:
            r = api.get(path, headers={"Accept": "text/csv"} if path.endswith("bars")
                        else {})
            assert r.status_code in (200, 503), (path, r.text)
            assert KEY not in r.text, path
            seen += r.text
        assert "refused" in seen and "****" in seen  # the echo was there, scrubbed
        assert api.ok(f"{V1}/settings")["settings"]["MASSIVE_API_KEY"] == "EC••••••7a"
    finally:
        svc.stop()
