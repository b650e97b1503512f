"""The operator's commands check the state they act on: an action that makes no sense there
is refused, naming the state (CLI exit 2, HTTP 404/409), and records nothing; an action whose
result already holds (a second acknowledge, a second pause) keeps the first one's record and
says whose it is.

Alerts are opened by rules given to ``evaluate`` (a plain store, no enrichment); the CLI runs
in this process (``enrich.cli.main``); the API through ``tests.test_api.Api``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest

from enrich.alerts import lifecycle as alert_lifecycle
from enrich.alerts.rules import Condition
from enrich.api.app import create_app
from enrich.backfill import jobs as backfill
from enrich.cli import main
from enrich.config import load_settings
from enrich.errors import StateError
from enrich.pipeline import scheduler as sched
from enrich.pipeline.engine import Engine
from enrich.pipeline.requests import request_cancel
from enrich.pipeline.run_model import RunParams
from enrich.providers.sample.provider import SampleProvider
from enrich.service import Services
from enrich.store import runs
from enrich.store.catalog import WriteBatch, utcnow
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe
from tests.conftest import FIXED_NOW
from tests.test_api import TOKEN, V1, Api

UTC = dt.UTC
KEY = "quality:bars/ohlc"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """The CLI's environment: a data directory with the demo universe, ENRICH_NOW fixed."""
    data = tmp_path / "data"
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())
    monkeypatch.chdir(tmp_path)
    store = Store(data)
    ensure_demo_universe(store.catalog)
    return store


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def open_incident(store: Store, key: str = KEY, rule: str = "quality",
                  now: dt.datetime = FIXED_NOW) -> str:
    """Open one incident of ``rule`` with ``key``; returns its id."""
    cond = Condition(key, rule, "error", f"{key} fails", "detail")
    [row] = alert_lifecycle.evaluate(store.catalog, now, now, channels=False,
                                     rules={rule: lambda ctx: [cond]}).opened
    return row["incident_id"]


def resolve(store: Store, rule: str = "quality", now: dt.datetime = FIXED_NOW) -> None:
    [_] = alert_lifecycle.evaluate(store.catalog, now, now, channels=False,
                                   rules={rule: lambda ctx: []}).resolved


def snoozes(store: Store) -> list[tuple]:
    return store.catalog.query("SELECT target, snoozed_by FROM alert_snoozes "
                               "ORDER BY target").rows()


# -- snooze: the target must be one an alert can have ------------------------------------------
@pytest.mark.parametrize("target", [
    "stael",  # a rule misspelt
    "stael:bars",  # a key of no rule
    "stale:bars",  # stale has one incident, keyed `stale`
    "scheduler:died", "quota:exhausted",  # the one key of these rules, misspelt
    "quality:bars/ohcl",  # no such check
    "quality:bars/jump",  # a warning: never an incident
    "run_failed:no-such-run", "backfill:bf-nope",
])
def test_snoozing_what_no_alert_can_be_is_refused_and_records_nothing(env, capsys, target):
    with pytest.raises(alert_lifecycle.UnknownAlertError) as err:
        alert_lifecycle.snooze(env.catalog, target, utcnow() + dt.timedelta(hours=1), "ana",
                               utcnow())
    assert target.partition(":")[0] in str(err.value)
    code, _, stderr = cli(capsys, "alerts", "snooze", target, "--for", "2h")
    assert code == 2 and target in stderr, stderr
    assert snoozes(env) == []


def test_an_unknown_rule_is_answered_with_the_rules(env):
    with pytest.raises(alert_lifecycle.UnknownAlertError) as err:
        alert_lifecycle.snooze(env.catalog, "stael", utcnow() + dt.timedelta(hours=1), "ana",
                               utcnow())
    assert "stale, run_failed, scheduler, quota, quality, backfill" in str(err.value)


def test_a_known_rules_key_no_incident_had_yet_is_snoozed_with_a_note(env, capsys):
    """Pre-snoozing the key of an incident that may open later (a check that has not failed,
    a run still going) is a plausible use: accepted, with a note that nothing has had it."""
    now = utcnow()
    out = alert_lifecycle.snooze(env.catalog, KEY, now + dt.timedelta(hours=1), "ana", now)
    assert out["target"] == KEY and out["seen"] is False and "no incident" in out["note"]
    code, stdout, stderr = cli(capsys, "alerts", "snooze", "quality:bars/missing_sessions",
                               "--for", "2h")
    assert code == 0 and "snoozed until" in stdout and "no incident" in stderr
    open_incident(env)
    out = alert_lifecycle.snooze(env.catalog, KEY, now + dt.timedelta(hours=2), "bob", now)
    assert out["seen"] is True and out["note"] is None
    b = WriteBatch()  # a run that may still fail: its key can be snoozed ahead
    b.insert("runs", {"run_id": "r-going", "kind": "manual", "state": "running",
                      "params": "{}", "requested_at": now})
    env.catalog.write(b)
    assert alert_lifecycle.snooze(env.catalog, "run_failed:r-going",
                                  now + dt.timedelta(hours=1), "ana", now)["seen"] is False
    assert [t for t, _ in snoozes(env)] == ["quality:bars/missing_sessions", KEY,
                                            "run_failed:r-going"]


def test_a_test_alert_can_be_neither_snoozed_nor_acknowledged(env, capsys):
    """Its id resolved to the key `test:<id>`, which no rule makes; an ack of it updated no
    row and answered "acknowledged"."""
    test_id = alert_lifecycle.send_test(env.catalog, alert_lifecycle.Channels(()), "ana")[
        "alert_id"]
    with pytest.raises(StateError, match="test alert"):
        alert_lifecycle.snooze(env.catalog, test_id, utcnow() + dt.timedelta(hours=1), "ana",
                               utcnow())
    with pytest.raises(StateError, match="test alert"):
        alert_lifecycle.acknowledge(env.catalog, test_id, "ana", utcnow())
    code, _, stderr = cli(capsys, "alerts", "ack", test_id)
    assert code == 2 and "test alert" in stderr
    assert snoozes(env) == []


# -- unsnooze: only what is snoozed ------------------------------------------------------------
def test_unsnoozing_what_is_not_snoozed_exits_2_and_names_the_snoozes(env, capsys):
    """A typo (`stael`) answered "was not snoozed", exit 0, while `stale` stayed snoozed."""
    now = utcnow()
    alert_lifecycle.snooze(env.catalog, "stale", now + dt.timedelta(hours=1), "ana", now)
    code, _, stderr = cli(capsys, "alerts", "unsnooze", "stael")
    assert code == 2 and "stael is not snoozed" in stderr and "stale" in stderr, stderr
    assert snoozes(env) == [("stale", "ana")]
    code, stdout, _ = cli(capsys, "alerts", "unsnooze", "stale")
    assert code == 0 and "snooze ended" in stdout
    code, _, stderr = cli(capsys, "alerts", "unsnooze", "stale")
    assert code == 2 and "nothing is snoozed" in stderr


def test_a_snooze_that_ended_is_not_ended_again(env):
    now = utcnow()
    alert_lifecycle.snooze(env.catalog, "stale", now + dt.timedelta(minutes=5), "ana", now)
    assert not alert_lifecycle.unsnooze(env.catalog, "stale", now + dt.timedelta(minutes=6))
    assert alert_lifecycle.unsnooze(env.catalog, "stale", now)


def test_a_second_snooze_says_whose_snooze_it_replaces(env):
    now = utcnow()
    first = alert_lifecycle.snooze(env.catalog, "stale", now + dt.timedelta(hours=1), "ana",
                                   now, "deploy")
    assert first["replaced"] is None
    second = alert_lifecycle.snooze(env.catalog, "stale", now + dt.timedelta(hours=3), "bob",
                                    now)
    assert second["replaced"]["snoozed_by"] == "ana"
    assert second["replaced"]["until"] == now + dt.timedelta(hours=1)


# -- acknowledge: once, and only an open incident ----------------------------------------------
def test_a_second_acknowledge_keeps_the_first_and_says_whose_it_is(env, capsys):
    iid = open_incident(env)
    t1, t2 = FIXED_NOW, FIXED_NOW + dt.timedelta(minutes=5)
    first = alert_lifecycle.acknowledge(env.catalog, iid, "ana", t1)
    assert (first["acked_by"], first["acked_at"], first["changed"]) == ("ana", t1, True)
    second = alert_lifecycle.acknowledge(env.catalog, iid, "bob", t2)
    assert (second["acked_by"], second["acked_at"], second["changed"]) == ("ana", t1, False)
    assert env.catalog.query("SELECT acked_by, acked_at FROM alerts WHERE alert_id = ?",
                             [iid]).row(0) == ("ana", t1)
    code, stdout, _ = cli(capsys, "alerts", "ack", iid, "--by", "carl")
    assert code == 0 and f"incident {iid} already acknowledged by ana at 2026-11-25 22:00" \
        in stdout, stdout
    code, stdout, _ = cli(capsys, "alerts", "ack", iid, "--by", "carl", "--json")
    assert code == 0 and json.loads(stdout)["acked_by"] == "ana"
    assert json.loads(stdout)["changed"] is False
    assert env.catalog.scalar("SELECT acked_by FROM alerts WHERE alert_id = ?", [iid]) == "ana"


def test_acknowledging_a_resolved_incident_is_refused(env, capsys):
    iid = open_incident(env)
    resolve(env)
    with pytest.raises(StateError, match="resolved at 2026-11-25 22:00:00 UTC"):
        alert_lifecycle.acknowledge(env.catalog, iid, "ana", utcnow())
    code, _, stderr = cli(capsys, "alerts", "ack", iid)
    assert code == 2 and "resolved" in stderr
    assert env.catalog.scalar("SELECT count(*) FROM alerts WHERE acked_by IS NOT NULL") == 0


# -- the schedule: pause and resume --------------------------------------------------------------
def test_a_second_pause_keeps_who_paused_first_and_why(env, capsys):
    t1, t2 = FIXED_NOW, FIXED_NOW + dt.timedelta(hours=1)
    changed, state = sched.set_paused(env.catalog, "alice", "holiday", t1)
    assert changed and (state.paused_by, state.paused_at, state.pause_reason) == (
        "alice", t1, "holiday")
    changed, state = sched.set_paused(env.catalog, "bob", "other", t2)
    assert not changed and (state.paused_by, state.paused_at, state.pause_reason) == (
        "alice", t1, "holiday")
    code, stdout, _ = cli(capsys, "schedule", "pause", "--by", "carl", "--reason", "x")
    assert code == 0 and "already paused by alice at 2026-11-25 22:00:00 UTC (holiday)" \
        in stdout, stdout
    state = sched.read_state(env.catalog)
    assert (state.paused_by, state.paused_at, state.pause_reason) == ("alice", t1, "holiday")


def test_resuming_a_schedule_that_is_not_paused_changes_nothing(env, capsys):
    """It moved `resumed_at`, which the missed-fire accounting counts from: the fires missed
    before it were never recorded."""
    b = WriteBatch()  # a scheduler first ran on Monday, then nothing ran
    b.execute("UPDATE scheduler_state SET schedule_since = ? WHERE id = 1",
              [dt.datetime(2026, 11, 23, 0, 0, tzinfo=UTC)])
    env.catalog.write(b)
    changed, state = sched.set_resumed(env.catalog, "bob",
                                       dt.datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    assert not changed and state.resumed_by is None and state.resumed_at is None
    code, stdout, _ = cli(capsys, "schedule", "resume")
    assert code == 0 and "not paused" in stdout
    assert sched.read_state(env.catalog).resumed_at is None
    sched.record_missed_fires(env.catalog, dt.time(1, 30), FIXED_NOW, 3600, "sample")
    missed = env.catalog.query("SELECT scheduled_for FROM runs WHERE state = 'missed' "
                               "ORDER BY 1")["scheduled_for"].to_list()
    assert [m.day for m in missed] == [23, 24, 25]


def test_a_resume_keeps_who_paused_and_a_pause_after_it_is_new(env):
    sched.set_paused(env.catalog, "alice", "holiday", FIXED_NOW)
    changed, state = sched.set_resumed(env.catalog, "bob", FIXED_NOW + dt.timedelta(hours=1))
    assert changed and not state.paused and state.resumed_by == "bob"
    changed, state = sched.set_paused(env.catalog, "carl", None,
                                      FIXED_NOW + dt.timedelta(hours=2))
    assert changed and (state.paused_by, state.pause_reason) == ("carl", None)


# -- backfills: pause and cancel -----------------------------------------------------------------
def _backfiller(store: Store, settings) -> backfill.Backfiller:
    clock = lambda: FIXED_NOW  # noqa: E731
    return backfill.Backfiller(store, SampleProvider(clock=clock), settings, clock=clock)


@pytest.fixture
def bf_settings(env):
    return load_settings(dotenv_path=None)


def complete_backfill(store: Store, settings) -> str:
    bf = _backfiller(store, settings)
    summary = bf.run(bf.plan(backfill.BackfillRequest("dividends", ("KO",), years=2)))
    assert summary.state == "succeeded"
    return summary.backfill_id


def interrupted_backfill(store: Store, settings) -> str:
    """A backfill whose run stopped with chunks left (it is neither running nor done)."""
    bf = _backfiller(store, settings)
    plan = bf.plan(backfill.BackfillRequest("dividends", ("KO", "PG"), years=2))
    run_id = bf.prepare(plan)
    runs.finish_runs(store.catalog, [run_id], "interrupted", "the process stopped", utcnow())
    [row] = backfill.backfill_progress_summary(store.catalog, plan.backfill_id)
    assert row["status"] == "interrupted"
    return plan.backfill_id


def intent(store: Store, bid: str) -> str:
    return store.catalog.scalar("SELECT status FROM backfills WHERE backfill_id = ?", [bid])


@pytest.mark.parametrize("action", ["pause", "cancel"])
def test_pausing_or_cancelling_a_complete_backfill_is_refused(env, bf_settings, capsys,
                                                               action):
    bid = complete_backfill(env, bf_settings)
    with pytest.raises(backfill.BackfillStateError, match="complete") as err:
        backfill.request_stop(env.catalog, bid, "paused" if action == "pause" else "cancelled",
                              "ana")
    assert err.value.status == "complete"
    code, _, stderr = cli(capsys, "backfill", action, bid)
    assert code == 2 and f"backfill {bid} is complete" in stderr, stderr
    assert intent(env, bid) == "active"


def test_a_cancelled_backfill_is_neither_paused_nor_cancelled_again(env, bf_settings, capsys):
    bid = interrupted_backfill(env, bf_settings)
    out = backfill.request_stop(env.catalog, bid, "cancelled", "ana")
    assert out.changed and out.run_id is None and intent(env, bid) == "cancelled"
    for action in ("pause", "cancel"):
        code, _, stderr = cli(capsys, "backfill", action, bid)
        assert code == 2 and f"backfill {bid} is cancelled" in stderr, stderr
    assert intent(env, bid) == "cancelled"


def test_a_second_pause_of_a_backfill_says_it_already_is(env, bf_settings, capsys):
    bid = interrupted_backfill(env, bf_settings)
    assert backfill.request_stop(env.catalog, bid, "paused", "ana").changed
    again = backfill.request_stop(env.catalog, bid, "paused", "bob")
    assert not again.changed and again.status == "paused"
    code, stdout, _ = cli(capsys, "backfill", "pause", bid)
    assert code == 0 and "already paused" in stdout
    assert backfill.request_stop(env.catalog, bid, "cancelled", "bob").changed  # paused → cancel
    assert intent(env, bid) == "cancelled"


# -- runs: the queued → running step is conditional ----------------------------------------------
class Counting(SampleProvider):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls: list[str] = []
        self._calls_lock = threading.Lock()

    def request(self, method, what, fault=None):
        with self._calls_lock:
            self.calls.append(f"{method} {what}")
        return super().request(method, what, fault)


def test_a_queued_run_cancelled_before_it_starts_never_runs(env, bf_settings):
    """The engine marked it `running` without looking: a cancel at the instant it started
    was read only at its first flush, after it had fetched."""
    provider = Counting(clock=lambda: FIXED_NOW)
    engine = Engine(env, provider, bf_settings, clock=lambda: FIXED_NOW)
    params = RunParams(symbols=["AAPL", "MSFT"], lookback_days=10)
    run_id = engine.create_run(params, "manual")
    assert request_cancel(env.catalog, run_id, "ana", utcnow()) == "queued"
    summary = engine.run(params, run_id=run_id)
    assert summary.state == "cancelled" and summary.total == 0
    assert provider.calls == []
    row = env.catalog.query("SELECT state, started_at, message, cancel_requested_by FROM runs "
                            "WHERE run_id = ?", [run_id]).row(0, named=True)
    assert row["state"] == "cancelled" and row["started_at"] is None
    assert row["message"] == "cancelled by ana before it started"
    assert row["cancel_requested_by"] == "ana"
    assert env.catalog.scalar("SELECT count(*) FROM fetch_log WHERE run_id = ?", [run_id]) == 0
    assert env.catalog.scalar("SELECT count(*) FROM tasks WHERE run_id = ?", [run_id]) == 0
    assert env.lake.read("bars", ["AAPL"]).is_empty()


def test_cancelling_or_retrying_an_ended_run_exits_2_naming_its_state(env, capsys):
    b = WriteBatch()
    b.insert("runs", {"run_id": "r-done", "kind": "manual", "state": "succeeded",
                      "params": "{}", "requested_at": utcnow(), "finished_at": utcnow()})
    env.catalog.write(b)
    code, _, stderr = cli(capsys, "runs", "cancel", "r-done")
    assert code == 2 and "run r-done already ended: succeeded" in stderr, stderr
    assert env.catalog.scalar("SELECT cancel_requested_at FROM runs WHERE run_id = 'r-done'") \
        is None
    code, _, stderr = cli(capsys, "runs", "retry", "r-done")
    assert code == 2 and "no failed symbols" in stderr, stderr
    assert env.catalog.scalar("SELECT count(*) FROM runs") == 1


# -- the API -------------------------------------------------------------------------------------
@pytest.fixture
def api(env):
    settings = load_settings({"ENRICH_DATA_DIR": str(env.catalog.path.parent),
                              "ENRICH_SCHEDULER": "off", "ENRICH_API_TOKEN": TOKEN},
                             dotenv_path=None)
    svc = Services(settings, store=env, alerts=False,
                   provider=SampleProvider(clock=lambda: FIXED_NOW)).start()
    yield Api(create_app(settings, svc))
    svc.stop()


def error(r) -> dict:
    return r.json()["error"]


def test_api_refuses_what_no_alert_can_be_and_keeps_the_first_ack(env, api):
    r = api.post(f"{V1}/alerts/stael:bars/snooze", json={"for": "1h"})
    assert r.status_code == 404 and error(r)["code"] == "unknown_alert", r.text
    r = api.post(f"{V1}/alerts/scheduler:dead/snooze", json={"for": "1h"})
    assert r.status_code == 200 and r.json()["seen"] is False and r.json()["note"]
    iid = open_incident(env)
    first = api.post(f"{V1}/alerts/{iid}/ack").json()
    r = api.post(f"{V1}/alerts/{iid}/ack")
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is False and r.json()["acked_by"] == first["acked_by"]
    assert r.json()["acked_at"] == first["acked_at"]
    resolve(env)
    other = open_incident(env, "quality:bars/ticker_reuse")
    resolve(env)
    r = api.post(f"{V1}/alerts/{other}/ack")
    assert r.status_code == 409 and error(r)["code"] == "alert_resolved", r.text


def test_api_second_pause_keeps_the_first_and_resume_of_nothing_changes_nothing(env, api):
    r = api.post(f"{V1}/schedule/resume")
    assert r.status_code == 200 and r.json()["changed"] is False
    assert r.json()["resumed_at"] is None
    r = api.post(f"{V1}/schedule/pause", json={"reason": "first"})
    assert r.status_code == 200 and r.json()["changed"] is True
    paused_at = r.json()["paused_at"]
    r = api.post(f"{V1}/schedule/pause", json={"reason": "second"})
    assert r.status_code == 200 and r.json()["changed"] is False
    assert (r.json()["pause_reason"], r.json()["paused_at"]) == ("first", paused_at)
    assert "already paused" in r.json()["message"]


def test_api_refuses_to_pause_a_complete_backfill(env, api, bf_settings):
    bid = complete_backfill(env, bf_settings)
    for action in ("pause", "cancel"):
        r = api.post(f"{V1}/backfills/{bid}/{action}")
        assert r.status_code == 409, r.text
        assert error(r)["code"] == "backfill_finished" and error(r)["status"] == "complete"
    assert intent(env, bid) == "active"



# -- leftovers: a complete backfill is not started again -----------------------------------------
def run_count(store: Store) -> int:
    return store.catalog.scalar("SELECT count(*) FROM runs")


def test_resuming_or_restarting_a_complete_backfill_records_no_run(env, bf_settings):
    """Through ``start_in_background`` (the API, the Backfill page, a heatmap fill) it recorded
    an empty `succeeded` run; the CLI says "nothing left to do" and records nothing."""
    bid = complete_backfill(env, bf_settings)
    before = run_count(env)
    with pytest.raises(backfill.NothingToDoError, match="nothing left to do") as err:
        backfill.start_in_background(bf_settings, backfill_id=bid, store=env,
                                     provider=SampleProvider(clock=lambda: FIXED_NOW))
    assert (err.value.backfill_id, err.value.status) == (bid, "complete")
    with pytest.raises(backfill.NothingToDoError, match="no failed chunks to retry"):
        backfill.start_in_background(bf_settings, backfill_id=bid, retry_failed=True,
                                     store=env, provider=SampleProvider(clock=lambda: FIXED_NOW))
    assert run_count(env) == before and backfill.live_backfills() == {}


def test_api_resume_or_restart_of_a_complete_backfill_is_200_nothing_to_do(env, api,
                                                                           bf_settings):
    bid = complete_backfill(env, bf_settings)
    before = run_count(env)
    r = api.post(f"{V1}/backfills/{bid}/resume")
    assert r.status_code == 200, r.text
    assert r.json()["run_id"] is None and r.json()["changed"] is False
    assert r.json()["status"] == "complete" and "nothing left to do" in r.json()["message"]
    assert run_count(env) == before
    body = {"dataset": "dividends", "symbols": ["PG"], "years": 2}
    r = api.post(f"{V1}/backfills", json=body)
    assert r.status_code == 202, r.text
    started = r.json()["backfill_id"]
    assert backfill.wait_for(started, 120)
    assert backfill.backfill_progress_summary(env.catalog, started)[0]["status"] == "complete"
    before = run_count(env)
    r = api.post(f"{V1}/backfills", json=body)  # the same request again: nothing left
    assert r.status_code == 200, r.text
    assert (r.json()["backfill_id"], r.json()["run_id"], r.json()["status"]) == (
        started, None, "complete")
    assert run_count(env) == before


def test_a_heatmap_fill_whose_backfill_is_complete_starts_nothing(env, bf_settings):
    """A fill planned before its gaps were filled (the same fill, run meanwhile)."""
    from enrich.backfill import heatmap as coverage

    a, z = dt.date(2025, 1, 2), dt.date(2025, 12, 31)
    plan = coverage.FillPlan("dividends", backfills=[(("KO",), a, z)], cells=1)
    done = threading.Event()
    [run_id] = coverage.start_fill(plan, settings=bf_settings, store=env,
                                   on_done=lambda info: done.set())
    assert done.wait(120)
    assert env.catalog.scalar("SELECT state FROM runs WHERE run_id = ?", [run_id]) == \
        "succeeded"
    before = run_count(env)
    assert coverage.start_fill(plan, settings=bf_settings, store=env) == []
    assert run_count(env) == before


def test_the_backfill_page_says_a_complete_backfill_has_nothing_to_do(env, bf_settings,
                                                                      monkeypatch):
    from streamlit.testing.v1 import AppTest

    from enrich.service import reset_services
    from tests.conftest import REPO

    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    complete_backfill(env, bf_settings)
    before = run_count(env)
    try:
        at = AppTest.from_file(f"{REPO}/app.py", default_timeout=60).run()
        at.switch_page("pages/backfill.py").run()
        at.selectbox(key="bf_dataset").set_value("dividends")
        at.multiselect(key="bf_symbols").set_value(["KO"])
        at.selectbox(key="bf_span").set_value("years")
        at.number_input(key="bf_amount").set_value(2)
        [start] = [b for b in at.button if b.label == "Start backfill"]
        start.click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, [e.value for e in at.error]
        assert any("nothing left to do" in i.value for i in at.info), [i.value for i in at.info]
    finally:
        reset_services()
    assert run_count(env) == before


# -- leftovers: a quality key (with a slash) is snoozed through the API's URL --------------------
def test_api_snoozes_and_unsnoozes_a_quality_key_with_a_slash(env, api):
    open_incident(env)
    r = api.post(f"{V1}/alerts/{KEY}/snooze", json={"for": "1h"})
    assert r.status_code == 200, r.text
    assert r.json()["target"] == KEY and r.json()["seen"] is True
    assert snoozes(env) == [(KEY, r.json()["snoozed_by"])]
    r = api.post(f"{V1}/alerts/quality%3Abars%2Fohlc/unsnooze")  # percent-encoded: the same
    assert r.status_code == 200 and r.json()["target"] == KEY, r.text
    assert snoozes(env) == []
    r = api.post(f"{V1}/alerts/quality:bars/ohcl/snooze", json={"for": "1h"})
    assert r.status_code == 404 and error(r)["code"] == "unknown_alert", r.text


# -- leftovers: a cancelled queued run stays cancelled when its planning fails -----------------
@pytest.mark.parametrize("fault", [StateError("the universe could not be read"),
                                   KeyboardInterrupt()], ids=["fails", "ctrl-c"])
def test_a_cancelled_queued_run_whose_planning_fails_stays_cancelled(env, bf_settings,
                                                                     monkeypatch, fault):
    engine = Engine(env, SampleProvider(clock=lambda: FIXED_NOW), bf_settings,
                    clock=lambda: FIXED_NOW)
    params = RunParams(symbols=["AAPL"], lookback_days=10)
    run_id = engine.create_run(params, "manual")
    assert request_cancel(env.catalog, run_id, "ana", utcnow()) == "queued"

    def broken(_params):
        raise fault

    monkeypatch.setattr(engine, "resolve_symbols", broken)
    with pytest.raises(type(fault)):
        engine.run(params, run_id=run_id)
    row = env.catalog.query("SELECT state, message FROM runs WHERE run_id = ?",
                            [run_id]).row(0)
    assert row == ("cancelled", "cancelled by ana before it started")


# -- leftovers: the catalog deleted under a running serve ----------------------------------------
def test_api_answers_503_when_the_catalog_was_deleted_under_it(env, api):
    assert api.get(f"{V1}/runs").status_code == 200
    for p in env.catalog.path.parent.glob("enrich.duckdb*"):
        p.unlink()
    r = api.get(f"{V1}/runs")
    assert r.status_code == 503, r.text
    assert error(r)["code"] == "catalog_missing" and "does not exist" in error(r)["message"]


# -- leftovers: who paused a backfill --------------------------------------------------------------
def test_a_second_pause_of_a_backfill_says_who_paused_it_and_when(env, bf_settings, capsys,
                                                                  api):
    bid = interrupted_backfill(env, bf_settings)
    first = backfill.request_stop(env.catalog, bid, "paused", "ana")
    assert first.changed and first.paused_by == "ana"
    paused_at = first.paused_at
    again = backfill.request_stop(env.catalog, bid, "paused", "bob")
    assert not again.changed and (again.paused_by, again.paused_at) == ("ana", paused_at)
    assert env.catalog.query("SELECT paused_by, paused_at FROM backfills WHERE backfill_id = ?",
                             [bid]).row(0) == ("ana", paused_at)
    code, stdout, _ = cli(capsys, "backfill", "pause", bid)
    when = paused_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert code == 0 and f"already paused by ana at {when}" in stdout, stdout
    r = api.post(f"{V1}/backfills/{bid}/pause")
    assert r.status_code == 200 and r.json()["changed"] is False, r.text
    assert r.json()["paused_by"] == "ana" and r.json()["paused_at"] is not None
    [row] = backfill.backfill_progress_summary(env.catalog, bid)
    assert (row["paused_by"], row["paused_at"]) == ("ana", paused_at)
