"""What a script author gets wrong against the JSON API: bodies with unknown fields or sent
without a JSON content type, empty lists, huge numbers, the wrong method. Each answer is a
clear 4xx saying what to fix, and nothing starts (or the request works as documented).

The desk is an empty store (no run needs data here) on the sample provider, with a provider
key set (every error is checked for it and for the token), served through httpx's ASGI
transport with app exceptions turned into responses, so a 500 is seen as a client sees it.
"""

from __future__ import annotations

import json
import threading

import anyio
import httpx
import pytest

from enrich.pipeline.run_model import RunParams
from enrich.store.catalog import WriteBatch, utcnow
from enrich.store.universe import ensure_demo_universe
from tests.test_api import AUTH, BASE, TIMEOUT, TOKEN, V1, Api, Desk

KEY = "sk-test-SECRET-123456"


class RawApi(Api):
    """As a client sees the app: a crash is a 500 response, not an exception in the test."""

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=self.client,
                                            raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url=BASE) as c:
                return await c.request(method, path, **kw)

        return anyio.run(go)


@pytest.fixture
def desk(tmp_path):
    d = Desk(tmp_path / "data", MASSIVE_API_KEY=KEY, ENRICH_PROVIDER="sample")
    d.api = RawApi(d.app)
    yield d
    d.svc.stop()


def runs_in(desk: Desk) -> int:
    return desk.one("SELECT count(*) FROM runs")


def clean(r: httpx.Response) -> dict:
    """The error of a 4xx response, checked for what no response may hold."""
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/json"
    assert TOKEN not in r.text and KEY not in r.text and "Traceback" not in r.text
    return r.json()["error"]


def test_unknown_fields_in_a_body_are_refused_and_start_nothing(desk):
    """A typo (``symbol`` for ``symbols``) was ignored: the run started over the whole
    universe; ``dry_run`` on ``/runs`` started a real run."""
    for path, body, field in (
            ("/runs", {"symbol": "AAPL"}, "symbol"),
            ("/runs", {"symbols": ["AAPL"], "dry_run": True}, "dry_run"),
            ("/runs", {"symbols": ["AAPL"], "lookback_days": 5}, "lookback_days"),
            ("/backfills", {"dataset": "bars", "symbol": ["AAPL"], "dry_run": True}, "symbol"),
            ("/fills", {"dataset": "bars", "symbols": ["AAPL"], "from": "2026-11-02",
                        "to": "2026-11-05", "dry_run": True}, "dry_run"),
            ("/quality/audit", {"symbol": "AAPL"}, "symbol"),
            ("/schedule/pause", {"reason": "maintenance", "until": "tomorrow"}, "until"),
            ("/alerts/stale/snooze", {"for": "2h", "resaon": "noisy"}, "resaon")):
        err = clean(desk.api.post(V1 + path, json=body))
        assert err["code"] == "invalid_request", (path, err)
        assert f"body.{field}" in err["message"], (path, err)
    assert desk.svc.active_runs() == [] and runs_in(desk) == 0
    assert desk.one("SELECT count(*) FROM alert_snoozes") == 0
    assert not desk.one("SELECT coalesce(bool_or(paused), false) FROM scheduler_state")


def test_an_empty_symbol_or_dataset_list_is_refused_not_read_as_everything(desk):
    """``{"symbols": []}`` (a script's filter that matched nothing) started a run of the
    whole universe; omitting the field is how to ask for it."""
    for body in ({"symbols": []}, {"datasets": []}):
        err = clean(desk.api.post(f"{V1}/runs", json=body))
        assert err["code"] == "invalid_request" and "at least 1" in err["message"], err
    assert desk.svc.active_runs() == [] and runs_in(desk) == 0


def test_a_json_body_without_a_json_content_type_is_read_as_json(desk):
    """The README's ``curl -d '{…}'`` sends ``application/x-www-form-urlencoded``;
    ``requests.post(data=json.dumps(…))`` sends no type: both were refused with "Input should
    be a valid dictionary". Every body the API takes is JSON."""
    for headers in ({"content-type": "application/x-www-form-urlencoded"},
                    {"content-type": "text/plain"}, {}):
        r = desk.api.post(f"{V1}/schedule/pause", content=b'{"reason": "maintenance"}',
                          headers={**AUTH, **headers})
        assert r.status_code == 200, (headers, r.text)
        assert desk.one("SELECT pause_reason FROM scheduler_state") == "maintenance"
        assert desk.api.post(f"{V1}/schedule/resume").status_code == 200
    r = desk.api.post(f"{V1}/runs", content=b'{"symbols": ["ZZZZ"]}',
                      headers={**AUTH, "content-type": "application/x-www-form-urlencoded"})
    assert clean(r)["code"] == "unknown_symbol"  # the body was read: its symbol is judged


def test_a_body_that_is_not_json_says_so(desk):
    r = desk.api.post(f"{V1}/runs", content=b"{symbols: [AAPL]}",
                      headers={**AUTH, "content-type": "application/json"})
    err = clean(r)
    assert err["code"] == "invalid_request"
    assert "not valid JSON" in err["message"] and "property name" in err["message"], err
    err = clean(desk.api.post(f"{V1}/runs"))  # no body at all
    assert err["code"] == "invalid_request" and "JSON object is required" in err["message"]
    assert runs_in(desk) == 0


@pytest.mark.parametrize("path", ["/symbols", "/runs", "/alerts"])
def test_a_huge_offset_is_a_4xx_not_a_500(desk, path):
    """``offset=10**20`` overflowed a C long in the page's slice: 500 "internal"."""
    err = clean(desk.api.get(f"{V1}{path}", params={"offset": 10**20}))
    assert err["code"] == "invalid_request" and "query.offset" in err["message"], err
    r = desk.api.get(f"{V1}{path}", params={"offset": 10**6})  # past the end: an empty page
    assert r.status_code == 200 and r.json()["items"] == [], r.text


@pytest.mark.parametrize("field,value", [("days", 99_999_999_999), ("chunk_days", 99_999_999_999),
                                         ("years", 1_000_000)])
def test_a_huge_backfill_span_is_a_4xx_naming_the_field(desk, field, value):
    """``days``/``chunk_days`` past a C int crashed the plan (500); a million ``years``
    answered "year -997974 is out of range"."""
    r = desk.api.post(f"{V1}/backfills", json={"dataset": "bars", "symbols": [],
                                               field: value, "dry_run": True})
    err = clean(r)
    assert err["code"] == "invalid_request" and f"body.{field}" in err["message"], err
    assert desk.one("SELECT count(*) FROM backfills") == 0


def test_a_fill_of_the_future_or_backwards_is_refused_as_the_cli_refuses_it(desk):
    """Found by a QA pass: `enrich fill --from <future>` exits 2, while POST /fills answered
    200 "nothing to fill" — a script could not tell a typo from a whole desk."""
    for start, end, says in (("2036-11-01", "2036-11-05", "is in the future"),
                             ("2026-11-05", "2026-11-02", "is before from")):
        err = clean(desk.api.post(f"{V1}/fills", json={"dataset": "bars", "symbols": ["AAPL"],
                                                       "from": start, "to": end}))
        assert err["code"] == "invalid_request" and says in err["message"], err
    assert desk.svc.active_runs() == [] and runs_in(desk) == 0


def test_the_wrong_method_says_which_one_to_use(desk):
    r = desk.api.get(f"{V1}/schedule/resume")
    err = clean(r)
    assert r.status_code == 405 and err["code"] == "method_not_allowed"
    assert "POST" in err["message"] and r.headers.get("allow") == "POST", (err, r.headers)
    r = desk.api.request("DELETE", f"{V1}/runs")  # a path with a GET and a POST
    assert clean(r)["message"].endswith("use GET, POST") and r.headers["allow"] == "GET, POST"


def test_a_run_is_retried_once_at_a_time(desk):
    """Two retries of one run at once (a double click, a script's second try) both started:
    two runs fetching the same failed symbols. While one is queued or running, the next is a
    409 naming it; once it has ended, the run can be retried again."""
    ensure_demo_universe(desk.catalog)
    b = WriteBatch()
    b.execute("INSERT INTO runs (run_id, kind, state, params, requested_at) "
              "VALUES ('r-partial', 'manual', 'partial', ?, ?)",
              [json.dumps(RunParams(symbols=["AAPL"], datasets=["bars"]).to_json()), utcnow()])
    b.execute("INSERT INTO tasks (run_id, symbol, state) VALUES ('r-partial', 'AAPL', 'failed')")
    desk.catalog.write(b)
    lock = desk.store.lake.symbol_lock("AAPL")  # the retry waits for it: it stays active
    lock.acquire()
    try:
        out: list[httpx.Response] = []
        posts = [threading.Thread(target=lambda: out.append(
            desk.api.post(f"{V1}/runs/r-partial/retry-failed"))) for _ in range(2)]
        for t in posts:
            t.start()
        for t in posts:
            t.join(TIMEOUT)
        assert sorted(r.status_code for r in out) == [202, 409], [r.text for r in out]
        first = next(r for r in out if r.status_code == 202).json()["run_id"]
        err = clean(next(r for r in out if r.status_code == 409))
        assert err["code"] == "conflict" and first in err["message"], err
        r = desk.api.post(f"{V1}/runs/r-partial/retry-failed")  # its row is written by now
        assert r.status_code == 409 and first in r.json()["error"]["message"], r.text
    finally:
        lock.release()
    assert desk.svc.wait(first, timeout=TIMEOUT) in ("succeeded", "partial", "failed")
    assert desk.one("SELECT count(*) FROM runs WHERE parent_run_id = 'r-partial'") == 1
    r = desk.api.post(f"{V1}/runs/r-partial/retry-failed")  # ended: may be retried again
    assert r.status_code == 202, r.text
    desk.svc.wait(r.json()["run_id"], timeout=TIMEOUT)


def test_a_symbol_named_twice_is_enriched_once_and_counted_once(desk):
    """``["AAPL", "aapl", "AAPL"]`` ran AAPL once but counted three symbols, none of them ok:
    "succeeded" with 0 of 3 (and 100,000 copies kept a run busy for minutes)."""
    ensure_demo_universe(desk.catalog)
    r = desk.api.post(f"{V1}/runs", json={"symbols": ["AAPL", "aapl", "AAPL"],
                                          "datasets": ["bars"], "lookback": 10})
    assert r.status_code == 202, r.text
    run_id = r.json()["run_id"]
    assert desk.svc.wait(run_id, timeout=TIMEOUT) == "succeeded"
    j = desk.api.ok(f"{V1}/runs/{run_id}")
    assert (j["symbols_total"], j["symbols_ok"]) == (1, 1), j
    assert [t["symbol"] for t in j["tasks"]] == ["AAPL"]


def test_many_unknown_symbols_are_counted_not_all_echoed(desk):
    """200,000 unknown symbols came back as a 3.4 MB message listing each (twice)."""
    syms = [f"Z{i:05d}" for i in range(50_000)]
    err = clean(desk.api.post(f"{V1}/runs", json={"symbols": syms}))
    assert err["code"] == "unknown_symbol" and len(err["message"]) < 1000, len(err["message"])
    assert "50000 symbols" in err["message"] and "Z00000" in err["message"], err["message"]
    err = clean(desk.api.post(f"{V1}/runs", json={"symbols": ["ZZZZ", "YYYY"]}))
    assert err["message"] == ("ZZZZ, YYYY not in the universe; add with "
                              "`python -m enrich symbols add ZZZZ YYYY`")
    assert runs_in(desk) == 0


@pytest.mark.parametrize("query", ["since=0001-01-01T00:00:00+01:00",
                                   "until=9999-12-31T23:59:59-01:00"])
def test_an_instant_that_leaves_the_calendar_in_utc_is_a_4xx(desk, query):
    """Converting these to UTC overflowed (500 "internal")."""
    name = query.split("=")[0]
    err = clean(desk.api.get(f"{V1}/runs", params=dict([query.split("=", 1)])))
    assert err["code"] == "invalid_request" and name in err["message"], err


def test_runs_until_before_since_is_a_4xx_like_rows_to_before_from(desk):
    """A reversed window answered an empty page, as if no run had happened."""
    err = clean(desk.api.get(f"{V1}/runs", params={"since": "2026-11-20",
                                                    "until": "2026-11-01T12:00:00Z"}))
    assert err["code"] == "invalid_request" and "before since" in err["message"], err
    assert desk.api.get(f"{V1}/runs", params={"since": "2026-11-01",
                                              "until": "2026-11-01"}).status_code == 200


def test_retrying_a_run_whose_row_is_not_written_yet_is_a_409_not_a_404(desk, monkeypatch):
    """``POST /runs`` answers before the run's row is written; a retry-failed of it in that
    moment answered 404 "no run", while ``GET /runs/{id}`` said it was queued."""
    ensure_demo_universe(desk.catalog)
    create_run, go = desk.svc.engine.create_run, threading.Event()

    def held_create_run(*args, **kw):  # the intake writes the row once the test lets it
        assert go.wait(TIMEOUT)
        return create_run(*args, **kw)

    monkeypatch.setattr(desk.svc.engine, "create_run", held_create_run)
    try:
        r = desk.api.post(f"{V1}/runs", json={"symbols": ["AAPL"], "datasets": ["bars"]})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        assert desk.api.ok(f"{V1}/runs/{run_id}")["state"] == "queued"
        err = clean(desk.api.post(f"{V1}/runs/{run_id}/retry-failed"))
        assert err["code"] == "conflict" and "still queued" in err["message"], err
        assert desk.api.post(f"{V1}/runs/{run_id}/cancel").status_code == 202
    finally:
        go.set()
    assert desk.svc.wait(run_id, timeout=TIMEOUT) == "cancelled"
