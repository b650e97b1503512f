"""Alerts: each rule opens an incident once and resolves it once; delivery through apprise to
a loopback JSON webhook and a loopback SMTP server (``tests/fakes/alert_sinks.py``); snoozes,
retries, credentials; the service's watcher; the CLI and the Alerts page.

Waits are on conditions (the sinks' arrivals, the watcher's evaluation count, catalog rows),
never on wall-clock sleeps.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from enrich.alerts import lifecycle as alert_lifecycle
from enrich.alerts import rules as alert_rules
from enrich.alerts import watcher as alert_watcher
from enrich.backfill.jobs import BackfillRequest, start_in_background, wait_for
from enrich.channels import Channels
from enrich.config import load_settings
from enrich.errors import TransientError
from enrich.pipeline import scheduler as sched
from enrich.providers.sample.provider import SampleProvider
from enrich.service import Services, reset_services
from enrich.store.catalog import WriteBatch, host_and_pid, utcnow
from enrich.store.store import Store
from enrich.views import alerts as alerts_view
from tests.conftest import FIXED_NOW, subprocess_env
from tests.fakes.alert_sinks import Smtp, Webhook
from tests.test_quality import enrich
from tests.test_queries import populate

APP = str(Path(__file__).resolve().parent.parent / "app.py")
SYMS = ["AAPL", "MSFT"]
LATER = FIXED_NOW + dt.timedelta(days=7)  # four sessions later (Thanksgiving in between)
TIMEOUT = 60.0


def settings_for(data: Path, **env: str):
    base = {"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off", **env}
    return load_settings(base, dotenv_path=None).with_(history_years=1, max_retries=0)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """AAPL and MSFT enriched at FIXED_NOW (fresh then); the rest of the demo universe off."""
    data = tmp_path_factory.mktemp("alerts") / "data"
    store, summary = enrich(settings_for(data), symbols=SYMS, lookback_days=30)
    assert summary.state == "succeeded"
    store.catalog.query("UPDATE symbols SET active = symbol IN ('AAPL', 'MSFT')")
    return data


@pytest.fixture
def data(template, tmp_path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(template, dst)
    return dst


@pytest.fixture
def sinks():
    hook, smtp = Webhook(), Smtp()
    yield hook, smtp
    hook.close()
    smtp.close()


def rows(store: Store) -> list[dict]:
    return store.catalog.query("SELECT * FROM alerts ORDER BY event_at, event").to_dicts()


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def rounds(watcher: alert_watcher.Watcher, n: int = 3) -> None:
    """Wait until the watcher has finished ``n`` more evaluations."""
    start = watcher.evaluations
    wait_until(lambda: watcher.evaluations >= start + n, what=f"{n} evaluations")


class Desk:
    """A service whose watcher runs every 0.1 s on a data clock the test moves."""

    def __init__(self, data: Path, urls: tuple[str, ...], backoff_s: float = 0.01):
        self.data_now = FIXED_NOW
        self.settings = settings_for(data).with_(alert_urls=urls, now_override=LATER)
        self.store = Store(data)
        self.channels = Channels(urls, backoff_s=backoff_s)
        self.watcher = alert_watcher.Watcher(self.settings, self.store, now=lambda: self.data_now,
                                             every_s=0.1, channels=self.channels)
        self.svc = Services(self.settings, store=self.store, alerts=self.watcher,
                            provider=SampleProvider(clock=lambda: LATER)).start()

    def refresh(self) -> str:
        """A run through the service, as of LATER: the data is fresh again."""
        run_id = self.svc.trigger(symbols=SYMS)
        assert self.svc.wait(run_id, timeout=120) == "succeeded"
        return run_id

    def stop(self) -> None:
        self.svc.stop()


# -- delivery end to end -----------------------------------------------------------------------
def test_stale_data_sends_one_alert_and_one_resolution_to_webhook_and_email(data, sinks,
                                                                              caplog):
    caplog.set_level(logging.DEBUG)
    hook, smtp = sinks
    hook_url = hook.url("hookuser:hook-Secret-9")
    desk = Desk(data, (hook_url, smtp.url()))
    try:
        rounds(desk.watcher)
        assert hook.items == [] and smtp.items == []  # fresh at FIXED_NOW: nothing to say
        desk.data_now = LATER  # four sessions pass without a run
        [opened] = hook.wait_for(1)
        smtp.wait_for(1)
        rounds(desk.watcher)
        assert len(hook.items) == 1 and len(smtp.items) == 1, "sent once, not every minute"
        assert opened["title"].startswith("[enrich] data not fresh")
        assert opened["type"] == "failure"  # 4 sessions behind: an error
        assert "AAPL (4 behind)" in opened["message"]

        desk.refresh()  # the run ends, the watcher is poked, the condition clears
        resolved = hook.wait_for(2)[1]
        mails = smtp.wait_for(2)
        rounds(desk.watcher)
        assert len(hook.items) == 2 and len(smtp.items) == 2, "resolved once"
        assert resolved["title"].startswith("[enrich] resolved: data not fresh")
        assert resolved["type"] == "success"
        assert [m["Subject"] for m in mails] == [opened["title"], resolved["title"]]
        assert "AAPL (4 behind)" in Smtp.text(mails[0])
    finally:
        desk.stop()
    events = rows(desk.store)
    assert [(e["event"], e["rule"], e["delivery"], e["attempts"]) for e in events] == [
        ("opened", "stale", "sent", 2), ("resolved", "stale", "sent", 2)]
    assert events[0]["incident_id"] == events[1]["incident_id"]
    # Credentials reached the receivers, and nowhere else.
    assert hook.auth[0] == "Basic aG9va3VzZXI6aG9vay1TZWNyZXQtOQ=="  # hookuser:hook-Secret-9
    assert smtp.logins[0] == (b"desk", b"s3cret-Mail-PW")
    stored = json.dumps(events, default=str)
    assert "hook-Secret-9" not in stored and "s3cret-Mail-PW" not in stored
    assert "127.0.0.1" in stored  # the channels are named, without their secrets
    assert "hook-Secret-9" not in caplog.text and "s3cret-Mail-PW" not in caplog.text
    assert any("apprise" in r.name for r in caplog.records)  # apprise did log, scrubbed


def test_a_snoozed_rule_sends_nothing_but_is_recorded(data, sinks):
    hook, smtp = sinks
    desk = Desk(data, (hook.url(), smtp.url()))
    try:
        out = alert_lifecycle.snooze(desk.store.catalog, "stale", utcnow() + dt.timedelta(hours=2),
                                     "test", utcnow(), "maintenance")
        assert out["target"] == "stale"
        desk.data_now = LATER
        wait_until(lambda: [e for e in rows(desk.store) if e["event"] == "opened"],
                   what="the snoozed incident")
        rounds(desk.watcher)
        desk.refresh()
        wait_until(lambda: [e for e in rows(desk.store) if e["event"] == "resolved"],
                   what="its resolution")
        rounds(desk.watcher)
    finally:
        desk.stop()
    assert hook.attempts == 0 and smtp.items == [] and smtp.logins == []
    assert [(e["event"], e["delivery"]) for e in rows(desk.store)] == [
        ("opened", "snoozed"), ("resolved", "snoozed")]
    page, _ = alerts_view.incidents(desk.store.catalog, utcnow())
    assert page["snoozed_until"][0] is not None and page["state"][0] == "resolved"


def test_an_incident_opened_while_snoozed_is_sent_when_the_snooze_ends(data, sinks):
    hook, _ = sinks
    desk = Desk(data, (hook.url(),))
    try:
        alert_lifecycle.snooze(desk.store.catalog, "stale", utcnow() + dt.timedelta(hours=1), "t",
                               utcnow())
        desk.data_now = LATER
        wait_until(lambda: rows(desk.store), what="the incident")
        rounds(desk.watcher)
        assert hook.attempts == 0
        assert alert_lifecycle.unsnooze(desk.store.catalog, "stale")
        [sent] = hook.wait_for(1)
        rounds(desk.watcher)
        assert len(hook.items) == 1 and sent["title"].startswith("[enrich] data not fresh")
    finally:
        desk.stop()


def test_a_failing_receiver_is_retried_then_recorded_and_the_service_keeps_running(data,
                                                                                    sinks):
    hook, smtp = sinks
    hook.status = 500
    desk = Desk(data, (hook.url(), smtp.url()))
    try:
        desk.data_now = LATER
        smtp.wait_for(1)
        opened = wait_until(lambda: [e for e in rows(desk.store)
                                     if e["event"] == "opened" and e["delivery"] != "sending"
                                     and e["delivery"] != "pending"], what="the outcome")[0]
        assert hook.attempts == 3  # SEND_ATTEMPTS, with backoff in between
        assert opened["delivery"] == "partial"  # the e-mail went, the webhook did not
        by_channel = {d["channel"].split(":")[0]: d for d in json.loads(opened["deliveries"])}
        assert by_channel["json"]["ok"] is False and by_channel["json"]["attempts"] == 3
        assert "500" in by_channel["json"]["error"]
        assert by_channel["mailto"]["ok"] is True and by_channel["mailto"]["attempts"] == 1
        # The service is unharmed: rules keep running and runs still work.
        assert desk.watcher._thread.is_alive() and not desk.svc.stopped
        hook.status = 200
        desk.refresh()
        [resolved] = hook.wait_for(1)
        assert resolved["title"].startswith("[enrich] resolved:")
        rounds(desk.watcher)
        assert hook.attempts == 4  # the opening was not sent again
    finally:
        desk.stop()


def test_an_unknown_channel_is_recorded_not_raised(data):
    store = Store(data)
    channels = Channels(("nosuchscheme://tok3n-XYZ/abc",), backoff_s=0)
    assert channels.labels == ["channel 1 (not a URL apprise supports)"]
    out = alert_lifecycle.send_test(store.catalog, channels, "test")
    assert out["delivery"] == "failed"
    assert "apprise supports" in out["channels"][0]["error"]
    assert "tok3n-XYZ" not in json.dumps(rows(store), default=str)


# -- rules ------------------------------------------------------------------------------------
def test_each_incident_opens_once_even_from_two_processes(data):
    """Two `alerts check` processes at once (the dashboard and serve, say): one incident."""
    env = subprocess_env(data, ENRICH_NOW=LATER.isoformat())
    procs = [subprocess.Popen([sys.executable, "-m", "enrich", "alerts", "check", "--json"],
                              env=env, cwd=data.parent, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    opened = [r for out, _ in outs for r in json.loads(out)["opened"]]
    assert [r["dedupe_key"] for r in opened] == ["stale"]
    assert [e["event"] for e in rows(Store(data))] == ["opened"]


def test_failed_run_opens_until_its_symbols_succeed(tmp_path):
    settings = settings_for(tmp_path / "data")
    # SPY's news fails: a partial run (MSFT's options the plan refuses: not a failure)
    summary = populate(settings)
    store = Store(settings.data_dir)
    assert summary.state == "partial" and summary.failed_symbols == ["SPY"]
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False)
    [inc] = [r for r in ev.opened if r["rule"] == "run_failed"]
    assert inc["dedupe_key"] == f"run_failed:{summary.run_id}"
    assert "1 symbol(s) still failing: SPY" in inc["detail"] and inc["severity"] == "warning"
    assert not alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False).opened
    # Neither an unrelated symbol's success nor one whose only refusal is the plan's clears
    # it; the failing symbol's does.
    for symbol in ("AAPL", "MSFT"):
        enrich(settings, symbols=[symbol], lookback_days=5)
        assert not alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False).resolved
    enrich(settings, symbols=["SPY"], lookback_days=5)
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False)
    assert [r["dedupe_key"] for r in ev.resolved] == [inc["dedupe_key"]]


def test_scheduler_heartbeat_lost_opens_and_resolves(data):
    store = Store(data)
    now = utcnow()
    b = WriteBatch()
    b.execute("UPDATE scheduler_state SET pid = 4242, host = 'elsewhere', heartbeat_at = ?, "
              "heartbeat_interval_s = 5, stopped_at = NULL WHERE id = 1",
              [now - dt.timedelta(minutes=5)])
    store.catalog.write(b)
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=False)
    [inc] = ev.opened
    assert inc["dedupe_key"] == "scheduler:dead" and "pid 4242 on elsewhere" in inc["detail"]
    b = WriteBatch()
    b.execute("UPDATE scheduler_state SET heartbeat_at = ? WHERE id = 1", [now])
    store.catalog.write(b)
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=False)
    assert [r["dedupe_key"] for r in ev.resolved] == ["scheduler:dead"]


def test_an_incident_opened_without_channels_is_sent_by_a_process_with_them(data):
    """Found by a QA pass: a shell's `alerts check` (no ENRICH_ALERT_URLS) opened a failed
    run's incident as `no_channel` for good: `serve`, with channels, never sent it; and an
    incident that came and went unseen was later announced only as "resolved"."""
    store = Store(data)
    now = utcnow()

    def owner(beat: dt.datetime) -> None:
        b = WriteBatch()
        b.execute("UPDATE scheduler_state SET pid = 4242, host = 'elsewhere', heartbeat_at = ?, "
                  "heartbeat_interval_s = 5, stopped_at = NULL WHERE id = 1", [beat])
        store.catalog.write(b)

    def delivery() -> list[tuple[str, str]]:
        return [(r["event"], r["delivery"]) for r in rows(store)]

    owner(now - dt.timedelta(minutes=5))  # dead
    [inc] = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=False).opened
    assert delivery() == [("opened", "no_channel")]
    # A process with channels sees it still open: it sends it.
    assert not alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=True).opened
    assert delivery() == [("opened", "pending")]
    owner(now)
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=True)
    assert [r["delivery"] for r in ev.resolved] == ["pending"]  # it was announced: its end too
    # Opened and resolved while no channel saw it: no "resolved" out of the blue.
    owner(now - dt.timedelta(minutes=5))
    alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=False)
    owner(now)
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=True)
    assert [r["delivery"] for r in ev.resolved] == ["no_channel"]


def test_an_open_stale_incident_grows_worse_and_is_sent_again(data):
    """Found by a QA pass: a stale incident opened at one session behind (a warning) stayed
    a warning saying "1 behind" when every symbol was 4 sessions behind (an error)."""
    store = Store(data)
    wall = utcnow()
    one_behind = FIXED_NOW + dt.timedelta(days=1)  # Thursday is Thanksgiving: Wednesday's
    [inc] = alert_lifecycle.evaluate(store.catalog, one_behind + dt.timedelta(days=1), wall,
                                     channels=True).opened
    assert (inc["rule"], inc["severity"]) == ("stale", "warning") and "(1 behind)" in inc["detail"]
    b = WriteBatch()
    b.execute("UPDATE alerts SET delivery = 'sent' WHERE alert_id = ?", [inc["alert_id"]])
    store.catalog.write(b)
    ev = alert_lifecycle.evaluate(store.catalog, LATER, wall, channels=True)
    assert not ev.opened and not ev.resolved
    [worse] = ev.escalated
    assert worse["incident_id"] == inc["incident_id"] and worse["severity"] == "error"
    [row] = [r for r in rows(store) if r["alert_id"] == inc["alert_id"]]
    assert (row["severity"], row["delivery"]) == ("error", "pending")
    assert "(4 behind)" in row["detail"]
    # Not worse again: nothing more.
    assert not alert_lifecycle.evaluate(store.catalog, LATER, wall, channels=True).escalated
    # Found by a review: a process without channels that sees it grow worse leaves it for
    # one that has them (marked no_channel, its resolution would never be sent).
    b = WriteBatch()
    b.execute("UPDATE alerts SET delivery = 'sent', severity = 'warning' WHERE alert_id = ?",
              [inc["alert_id"]])
    store.catalog.write(b)
    assert alert_lifecycle.evaluate(store.catalog, LATER, wall, channels=False).escalated
    [row] = [r for r in rows(store) if r["alert_id"] == inc["alert_id"]]
    assert row["delivery"] == "pending"


def ticking_clock() -> Callable[[], dt.datetime]:
    """A wall clock that moves one microsecond a reading: no heartbeat can age past the dead
    threshold however slowly a loaded machine schedules the threads (liveness compares a
    heartbeat's age with the wall clock of whoever reads it)."""
    start, ticks = utcnow(), itertools.count()
    return lambda: start + dt.timedelta(microseconds=next(ticks))


def take_over_from_a_dead_owner(data: Path) -> tuple[list[dict], str]:
    """The previous owner died (same host, its pid gone); a service with the scheduler on
    starts. Returns the alert events once the takeover was reported and resolved, and the
    dead pid."""
    store = Store(data)
    host, _ = host_and_pid()
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
    clock = ticking_clock()
    b = WriteBatch()
    b.execute("UPDATE scheduler_state SET pid = ?, host = ?, heartbeat_at = ?, "
              "heartbeat_interval_s = 5, stopped_at = NULL WHERE id = 1",
              [int(dead_pid), host, clock() - dt.timedelta(seconds=30)])
    store.catalog.write(b)
    settings = settings_for(data).with_(scheduler=True, now_override=FIXED_NOW)
    watcher = alert_watcher.Watcher(settings, store, clock=clock, every_s=0.1,
                                    channels=Channels(()))
    svc = Services(settings, clock=clock, store=store, alerts=watcher, heartbeat_s=0.2)
    svc.start()
    try:
        wait_until(lambda: len(rows(store)) >= 2, what="opened and resolved")
        rounds(watcher)
    finally:
        svc.stop()
    return rows(store), dead_pid


def test_serve_taking_over_from_a_dead_owner_reports_it_once(data):
    """The new owner names the dead one and says it took over, once; then the incident
    resolves because a scheduler beats again."""
    host, pid = host_and_pid()
    events, dead_pid = take_over_from_a_dead_owner(data)
    assert [(e["event"], e["dedupe_key"]) for e in events] == [
        ("opened", "scheduler:dead"), ("resolved", "scheduler:dead")]
    assert f"pid {dead_pid} on {host}" in events[0]["detail"]
    assert f"pid {pid} has taken the schedule over" in events[0]["detail"]


def test_the_watcher_of_a_taking_over_service_first_looks_after_the_claim(data, monkeypatch):
    """The watcher starts only after the service's first heartbeat write: a round that read
    the dead owner's row before it would say "no process owns the daily schedule now" while
    this very process takes it over (the race a loaded machine showed)."""
    seen: list[str] = []
    beat, run_once = sched.beat, alert_watcher.Watcher.run_once

    def recording_beat(*args, **kwargs):
        got = beat(*args, **kwargs)
        seen.append("claimed" if got.owner else "standing by")
        return got

    def recording_round(self):
        seen.append("round")
        return run_once(self)

    monkeypatch.setattr(sched, "beat", recording_beat)
    monkeypatch.setattr(alert_watcher.Watcher, "run_once", recording_round)
    events, _ = take_over_from_a_dead_owner(data)
    assert seen[0] == "claimed", seen[:5]
    assert "has taken the schedule over" in events[0]["detail"]


def test_quota_exhausted_and_429_storm(data):
    store = Store(data)
    now = utcnow()
    b = WriteBatch()
    for i in range(alert_rules.STORM_RETRIES):
        b.insert("fetch_log", {"symbol": "AAPL", "dataset": "bars", "status": "retried",
                               "error_class": "rate_limited",
                               "started_at": now - dt.timedelta(seconds=i)})
    store.catalog.write(b)
    [storm] = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=False).opened
    assert storm["title"].startswith("429 storm") and storm["severity"] == "warning"
    b = WriteBatch()
    b.insert("fetch_log", {"symbol": "AAPL", "dataset": "bars", "status": "failed",
                           "error_class": "rate_limited", "started_at": now})
    store.catalog.write(b)
    assert not alert_lifecycle.evaluate(store.catalog, FIXED_NOW, now, channels=False).opened
    later = now + alert_rules.QUOTA_WINDOW + dt.timedelta(minutes=1)
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, later, channels=False)
    assert [r["dedupe_key"] for r in ev.resolved] == ["quota:rate_limited"]


def test_quality_error_opens_until_a_fill_closes_the_gap(data):
    from tests.test_coverage import drop_sessions

    store = Store(data)
    gone = store.lake.read("bars", ["AAPL"], level="1d")["session"].to_list()[-10:-8]
    drop_sessions(store, "AAPL", gone)  # re-checks: missing_sessions fails (error level)
    [inc] = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False).opened
    assert inc["dedupe_key"] == "quality:bars/missing_sessions"
    assert inc["detail"].startswith("AAPL.")
    env = subprocess_env(data, ENRICH_NOW=FIXED_NOW.isoformat(), ENRICH_HISTORY_YEARS=1)
    p = subprocess.run([sys.executable, "-m", "enrich", "fill", "--dataset", "bars",
                        "--symbols", "AAPL,MSFT", "--from", gone[0].isoformat(),
                        "--to", gone[-1].isoformat(), "--json"],
                       env=env, cwd=data.parent, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["cells"] == 2 and list(out["states"].values()) == ["succeeded"]
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False)
    assert [r["dedupe_key"] for r in ev.resolved] == [inc["dedupe_key"]]


class _FailingBars:
    """The sample provider whose bars always fail (a provider outage)."""

    def __init__(self) -> None:
        self.inner = SampleProvider(clock=lambda: FIXED_NOW)
        self.name, self.is_demo, self.rate_limited = "sample", True, False

    def __getattr__(self, item):
        return getattr(self.inner, item)

    def with_priority(self, priority):  # the inner provider would return itself
        return self

    def bars(self, *a, **k):
        raise TransientError("upstream down", provider="test", endpoint="bars", status=503)


def test_failed_backfill_opens_until_it_is_resumed(data):
    settings = settings_for(data).with_(now_override=FIXED_NOW)
    store = Store(data)
    request = BackfillRequest(dataset="bars", symbols=("AAPL",), days=20)
    start_in_background(settings, request, store=store, provider=_FailingBars())
    bid = store.catalog.scalar("SELECT backfill_id FROM backfills")
    assert wait_for(bid, TIMEOUT)
    [inc] = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False).opened
    assert inc["dedupe_key"] == f"backfill:{bid}" and "upstream down" in inc["detail"]
    start_in_background(settings, backfill_id=bid, retry_failed=True, store=store,
                        provider=SampleProvider(clock=lambda: FIXED_NOW))
    assert wait_for(bid, TIMEOUT)
    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False)
    assert [r["dedupe_key"] for r in ev.resolved] == [f"backfill:{bid}"]


def test_a_broken_rule_leaves_its_incidents_alone(data):
    store = Store(data)
    ev = alert_lifecycle.evaluate(store.catalog, LATER, channels=False)
    assert [r["rule"] for r in ev.opened] == ["stale"]

    def broken(ctx):
        raise RuntimeError("bug")

    ev = alert_lifecycle.evaluate(store.catalog, FIXED_NOW, channels=False,
                                  rules={**alert_rules.RULES, "stale": broken})
    assert not ev.resolved and "stale" in ev.failed_rules


def test_ack_snooze_and_periods(data):
    store = Store(data)
    [inc] = alert_lifecycle.evaluate(store.catalog, LATER, channels=False).opened
    now = utcnow()
    out = alert_lifecycle.acknowledge(store.catalog, inc["incident_id"], "ana", now)
    assert out["acked_by"] == "ana"
    page, total = alerts_view.incidents(store.catalog, now, state="open")
    assert total == 1 and page["acked_by"][0] == "ana"
    s = alert_lifecycle.snooze(store.catalog, inc["incident_id"],
                               now + alert_lifecycle.parse_period("2h"), "ana", now)
    assert s["target"] == "stale"  # an incident is snoozed by its dedupe key
    assert alerts_view.active_snoozes(store.catalog, now)["target"].to_list() == ["stale"]
    with pytest.raises(alert_lifecycle.UnknownAlertError):
        alert_lifecycle.acknowledge(store.catalog, "nope", "ana", now)
    assert alert_lifecycle.parse_period("30m") == dt.timedelta(minutes=30)
    assert alert_lifecycle.parse_period("1w") == dt.timedelta(days=7)
    for bad in ("", "soon", "0m", "100d"):
        with pytest.raises(alert_lifecycle.ConfigError):
            alert_lifecycle.parse_period(bad)


# -- CLI ----------------------------------------------------------------------------------------
def run_cli(data: Path, *args: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enrich", *args],
                          env=subprocess_env(data, **env), cwd=data.parent,
                          capture_output=True, text=True, timeout=180)


def test_alerts_cli_list_ack_snooze_and_test(data, sinks):
    hook, _ = sinks
    store = Store(data)
    [inc] = alert_lifecycle.evaluate(store.catalog, LATER, channels=False).opened
    iid = inc["incident_id"]
    p = run_cli(data, "alerts", "list", "--json")
    assert p.returncode == 0, p.stderr
    listed = json.loads(p.stdout)
    assert listed["total"] == 1 and listed["items"][0]["incident_id"] == iid
    p = run_cli(data, "alerts", "show", iid, "--json")
    assert p.returncode == 0 and [e["event"] for e in json.loads(p.stdout)["events"]] == [
        "opened"]
    assert run_cli(data, "alerts", "ack", iid, "--by", "ana").returncode == 0
    assert store.catalog.scalar("SELECT acked_by FROM alerts WHERE alert_id = ?", [iid]) \
        == "ana"
    p = run_cli(data, "alerts", "snooze", "quality", "--for", "2h")
    assert p.returncode == 0 and "quality snoozed until" in p.stdout
    assert run_cli(data, "alerts", "snooze", "quality", "--for", "soon").returncode == 2
    assert run_cli(data, "alerts", "ack", "nope").returncode == 2
    assert run_cli(data, "alerts", "unsnooze", "quality").returncode == 0
    assert store.catalog.scalar("SELECT count(*) FROM alert_snoozes") == 0
    p = run_cli(data, "alerts", "test", ENRICH_ALERT_URLS=hook.url("u:pw-Secret-77"))
    assert p.returncode == 0, p.stderr
    assert hook.wait_for(1)[0]["title"] == "[enrich] test alert"
    assert "pw-Secret-77" not in p.stdout + p.stderr and "127.0.0.1" in p.stdout
    assert run_cli(data, "alerts", "test").returncode == 1  # no channel: reached nobody


# -- the dashboard ------------------------------------------------------------------------------
@pytest.fixture
def app_env(monkeypatch, data):
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    monkeypatch.setenv("ENRICH_SCHEDULER", "off")
    monkeypatch.setenv("ENRICH_NOW", LATER.isoformat())
    monkeypatch.chdir(data.parent)
    yield Store(data)
    reset_services()


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_overview_lists_open_alerts_and_the_alerts_page_acks_and_snoozes(app_env):
    store = app_env
    alert_lifecycle.evaluate(store.catalog, LATER, channels=False)  # or the page's own watcher did
    [inc] = alerts_view.open_incidents(store.catalog, utcnow()).to_dicts()
    assert inc["rule"] == "stale"
    at = open_page("pages/overview.py")
    assert any(s.value.startswith("Open alerts: 1") for s in at.subheader)
    table = at.dataframe[0].value
    assert list(table["incident_id"]) == [inc["incident_id"]]
    at = open_page("pages/alerts.py")
    assert list(at.dataframe[0].value["incident_id"]) == [inc["incident_id"]]
    at.button(key="ack").click().run()
    assert not at.exception
    assert store.catalog.scalar("SELECT acked_by FROM alerts WHERE alert_id = ?",
                                [inc["incident_id"]]) == "dashboard"
    at.selectbox(key="snooze_period").set_value("2 hours")
    at.radio(key="snooze_scope").set_value("every stale alert")
    before = utcnow()  # the snooze starts between these two instants, however slow the run
    at.button(key="snooze").click().run()
    after = utcnow()
    assert not at.exception
    until = store.catalog.scalar("SELECT until FROM alert_snoozes WHERE target = 'stale'")
    assert before + dt.timedelta(hours=2) <= until <= after + dt.timedelta(hours=2)
    at.button(key="unsnooze").click().run()
    assert store.catalog.scalar("SELECT count(*) FROM alert_snoozes") == 0


def test_settings_sends_a_test_alert_without_showing_credentials(sinks, app_env,
                                                                  monkeypatch):
    hook, smtp = sinks
    monkeypatch.setenv("ENRICH_ALERT_URLS", f"{hook.url('me:pw-Hook-42')},{smtp.url()}")
    monkeypatch.setenv("ENRICH_NOW", FIXED_NOW.isoformat())  # fresh: only the test is sent
    at = open_page("pages/settings.py")
    shown = json.dumps([str(d.value.to_dict()) for d in at.dataframe]) + str(
        [m.value for m in at.markdown])
    assert "127.0.0.1" in shown
    assert "pw-Hook-42" not in shown and "s3cret-Mail-PW" not in shown
    at.button(key="test_alert").click().run()
    assert not at.exception
    assert hook.wait_for(1)[0]["title"] == "[enrich] test alert"
    assert smtp.wait_for(1)[0]["Subject"] == "[enrich] test alert"
    assert any("sent to every channel" in s.value for s in at.success)
    [outcome] = [d.value for d in at.dataframe if "ok" in d.value.columns]
    assert list(outcome["ok"]) == [True, True]
    assert "pw-Hook-42" not in outcome.to_string() and "s3cret" not in outcome.to_string()


