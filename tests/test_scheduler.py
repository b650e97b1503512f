"""The daily schedule: fire times in UTC across DST, missed fires, pause across restarts,
heartbeat liveness, one owner per data directory, retention."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from apscheduler.events import EVENT_JOB_MISSED, JobExecutionEvent

from enrich.health import health
from enrich.pipeline import scheduler as sched
from enrich.providers.sample.provider import SampleProvider
from enrich.service import Services
from enrich.store.catalog import WriteBatch, host_and_pid
from enrich.store.store import Store
from enrich.store.universe import add_symbols
from tests.conftest import FIXED_NOW

UTC = dt.UTC
AT = dt.time(1, 30)
TIMEOUT = 120  # seconds: a generous bound for a loaded 2-core machine, never a measure


class Clock:
    """A settable wall clock for the scheduler."""

    def __init__(self, now: dt.datetime):
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def sched_settings(settings):
    return settings.with_(scheduler=True, schedule_utc=AT, history_years=1,
                          now_override=FIXED_NOW)


@pytest.fixture
def services():
    made: list[Services] = []

    def make(settings, clock, **kw) -> Services:
        kw.setdefault("heartbeat_s", 0.2)
        svc = Services(settings, clock=clock,
                       provider=SampleProvider(clock=lambda: FIXED_NOW), **kw)
        made.append(svc)
        return svc.start()

    yield make
    for svc in made:
        svc.stop(timeout=1.0)


def t(s: str) -> dt.datetime:
    return dt.datetime.fromisoformat(s).replace(tzinfo=UTC)


# -- schedule arithmetic --------------------------------------------------------------------
@pytest.mark.parametrize(("now", "fire", "exchange"), [
    # Spring forward in New York on Sunday 2026-03-08: the fire stays 01:30 UTC.
    ("2026-03-07T12:00", "2026-03-08T01:30", "20:30 EST"),
    ("2026-03-08T12:00", "2026-03-09T01:30", "21:30 EDT"),
    # Fall back on Sunday 2026-11-01.
    ("2026-10-31T12:00", "2026-11-01T01:30", "21:30 EDT"),
    ("2026-11-01T12:00", "2026-11-02T01:30", "20:30 EST"),
    # Exactly at a fire time, the next one is a day later.
    ("2026-11-25T01:30", "2026-11-26T01:30", "20:30 EST"),
])
def test_next_fire_stays_utc_across_new_york_dst(now, fire, exchange):
    got = sched.next_fire_after(AT, t(now))
    assert got == t(fire) and got.utcoffset() == dt.timedelta(0)
    local = sched.in_exchange_time(got)
    assert f"{local:%H:%M} {local.tzname()}" == exchange
    assert exchange.split()[1] in sched.fire_label(got) and "UTC" in sched.fire_label(got)


def test_services_next_fire_time_follows_its_clock_and_is_none_when_off(
        sched_settings, services):
    clock = Clock(t("2026-03-07T12:00"))
    svc = services(sched_settings, clock)
    assert svc.next_fire_time() == t("2026-03-08T01:30")
    clock.now = t("2026-03-08T12:00")
    assert svc.next_fire_time() == t("2026-03-09T01:30")
    off = services(sched_settings.with_(scheduler=False), clock)
    assert off.next_fire_time() is None


def test_fires_between_and_last_fire():
    assert sched.last_fire_at_or_before(AT, t("2026-11-25T01:29")) == t("2026-11-24T01:30")
    assert sched.last_fire_at_or_before(AT, t("2026-11-25T01:30")) == t("2026-11-25T01:30")
    assert sched.fires_between(AT, t("2026-11-23T01:30"), t("2026-11-25T12:00")) == [
        t("2026-11-24T01:30"), t("2026-11-25T01:30")]
    assert sched.fires_between(AT, t("2026-11-25T01:30"), t("2026-11-25T12:00")) == []


# -- liveness -------------------------------------------------------------------------------
def test_liveness_running_paused_stopped_dead():
    beat = t("2026-11-25T10:00")
    other = sched.SchedulerState(pid=1234, host="elsewhere", heartbeat_at=beat,
                                 heartbeat_interval_s=1.0)
    assert other.liveness(beat + dt.timedelta(seconds=2.9)) == "running"
    assert other.liveness(beat + dt.timedelta(seconds=3.1)) == "dead"
    paused = sched.SchedulerState(**{**other.__dict__, "paused": True})
    assert paused.liveness(beat) == "paused"
    assert sched.SchedulerState(heartbeat_at=beat).liveness(beat) == "stopped"  # clean stop
    # Same host: a process that is gone is dead at once, whatever its last heartbeat.
    host, _ = host_and_pid()
    gone = sched.SchedulerState(pid=2 ** 22 + 12345, host=host, heartbeat_at=beat,
                                heartbeat_interval_s=60.0)
    assert gone.liveness(beat) == "dead"


# -- missed fires ---------------------------------------------------------------------------
def _scheduled_runs(store: Store):
    return store.catalog.query(
        "SELECT state, scheduled_for, message FROM runs WHERE kind = 'scheduled' "
        "ORDER BY scheduled_for")


def test_fires_missed_while_the_process_was_down_are_recorded(sched_settings, services):
    clock = Clock(t("2026-11-23T00:00"))  # Monday, before the 01:30 fire
    first = services(sched_settings, clock)
    assert _scheduled_runs(first.store).is_empty()  # the first scheduler ever: nothing missed
    first.stop()

    clock.now = t("2026-11-25T12:00")  # back on Wednesday: Mon, Tue and Wed fires were missed
    again = services(sched_settings, clock)
    runs = _scheduled_runs(again.store)
    assert runs["state"].to_list() == ["missed"] * 3
    assert runs["scheduled_for"].to_list() == [
        t("2026-11-23T01:30"), t("2026-11-24T01:30"), t("2026-11-25T01:30")]
    assert "no scheduler was running" in runs["message"][0]
    h = health(sched_settings, again.store, None, clock)
    assert h["last_scheduled_run"]["state"] == "missed"
    again.stop()

    # A restart accounts for each fire once.
    services(sched_settings, clock)
    assert _scheduled_runs(again.store).height == 3


def test_a_fire_within_the_grace_time_runs_late(sched_settings, services):
    clock = Clock(t("2026-11-23T00:00"))
    first = services(sched_settings, clock)
    add_symbols(first.store.catalog, [("AAPL", None, None)])
    first.stop()
    clock.now = t("2026-11-23T02:00")  # 30 min after the fire, within the 1 h grace
    svc = services(sched_settings, clock)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        runs = _scheduled_runs(svc.store)
        if runs.height and runs["state"][0] not in ("queued", "running"):
            break
        time.sleep(0.1)
    assert runs["state"].to_list() == ["succeeded"]
    assert runs["scheduled_for"].to_list() == [t("2026-11-23T01:30")]


def test_apscheduler_missed_event_is_recorded(sched_settings, services):
    svc = services(sched_settings, Clock(t("2026-11-23T00:00")))
    fire = t("2026-11-23T01:30")
    svc._on_job_event(JobExecutionEvent(EVENT_JOB_MISSED, sched.DAILY_JOB_ID, "default", fire))
    runs = _scheduled_runs(svc.store)
    assert runs["state"].to_list() == ["missed"] and runs["scheduled_for"][0] == fire


# -- pause ----------------------------------------------------------------------------------
def test_a_paused_schedule_stays_paused_across_a_restart(sched_settings, services):
    clock = Clock(t("2026-11-23T00:00"))
    svc = services(sched_settings, clock)
    assert svc.next_fire_time() == t("2026-11-23T01:30")
    svc.pause("alice", "exchange holiday week")
    assert svc.next_fire_time() is None
    assert svc._scheduler.get_job(sched.DAILY_JOB_ID).next_run_time is None
    svc.stop()

    clock.now = t("2026-11-25T12:00")  # days later, still paused: nothing counts as missed
    again = services(sched_settings, clock)
    assert again.next_fire_time() is None
    assert again._scheduler.get_job(sched.DAILY_JOB_ID).next_run_time is None
    h = again.health(probe=False)
    assert h["scheduler"]["state"] == "paused"
    assert (h["scheduler"]["paused_by"], h["scheduler"]["pause_reason"]) == (
        "alice", "exchange holiday week")
    assert h["schedule"]["next_fire_utc"] is None
    assert _scheduled_runs(again.store).is_empty()

    again.resume("bob")
    assert again.next_fire_time() == t("2026-11-26T01:30")
    assert again._scheduler.get_job(sched.DAILY_JOB_ID).next_run_time is not None
    state = sched.read_state(again.store.catalog)
    assert (state.paused, state.resumed_by) == (False, "bob")
    assert state.next_fire_at == t("2026-11-26T01:30")


def test_pause_from_another_process_reaches_the_running_scheduler(sched_settings, services):
    svc = services(sched_settings, Clock(t("2026-11-23T00:00")))
    store = Store.from_settings(sched_settings)  # e.g. `python -m enrich schedule pause`
    sched.set_paused(store.catalog, "cli", None, t("2026-11-23T00:00"))
    deadline = time.monotonic() + TIMEOUT
    while svc.next_fire_time() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.next_fire_time() is None
    assert svc._scheduler.get_job(sched.DAILY_JOB_ID).next_run_time is None


# -- one owner ------------------------------------------------------------------------------
def test_one_process_owns_the_schedule_and_takes_over_a_dead_owner(sched_settings, services):
    clock = Clock(t("2026-11-23T00:00"))
    store = Store.from_settings(sched_settings)
    b = WriteBatch()  # another machine's scheduler, beating every second
    b.execute("UPDATE scheduler_state SET pid = 4321, host = 'elsewhere', heartbeat_at = ?, "
              "heartbeat_interval_s = 1.0, started_at = ? WHERE id = 1", [clock.now, clock.now])
    store.catalog.write(b)
    svc = services(sched_settings, clock)
    assert not svc.owns_schedule and svc._scheduler.get_job(sched.DAILY_JOB_ID) is None
    assert sched.read_state(store.catalog).pid == 4321

    clock.now += dt.timedelta(seconds=3.5)  # the other one stopped beating: dead
    deadline = time.monotonic() + TIMEOUT
    while not svc.owns_schedule and time.monotonic() < deadline:
        time.sleep(0.05)
    assert svc.owns_schedule and svc._scheduler.get_job(sched.DAILY_JOB_ID) is not None
    assert sched.read_state(store.catalog).pid == host_and_pid()[1]


# -- retention ------------------------------------------------------------------------------
def test_prune_history_drops_old_runs_tasks_and_logs(settings):
    store = Store.from_settings(settings)
    now = t("2026-11-25T12:00")
    old, new = now - dt.timedelta(days=100), now - dt.timedelta(days=1)
    b = WriteBatch()
    for run_id, at, state in (("old", old, "succeeded"), ("new", new, "succeeded"),
                              ("old-running", old, "running")):
        b.insert("runs", {"run_id": run_id, "kind": "manual", "state": state,
                          "params": json.dumps({}), "requested_at": at, "finished_at": at})
        b.insert("tasks", {"run_id": run_id, "symbol": "AAPL", "state": "ok",
                           "started_at": at})
        for table in ("fetch_log", "compute_log"):
            b.insert(table, {"run_id": run_id, "symbol": "AAPL", "dataset": "bars",
                             "started_at": at, "status": "ok"})
    store.catalog.write(b)
    counts = sched.prune_history(store.catalog, 90, now)
    assert counts == {"tasks": 1, "fetch_log": 2, "compute_log": 2, "runs": 1,
                      "quality_log": 0, "restatements": 0}
    left = store.catalog.query("SELECT run_id FROM runs ORDER BY run_id")["run_id"].to_list()
    assert left == ["new", "old-running"]  # an unfinished run is never pruned
    assert store.catalog.scalar("SELECT count(*) FROM tasks") == 2
