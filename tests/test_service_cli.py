"""`python -m enrich serve` and friends, in real child processes sharing one data directory.

Every child is killed in a ``finally``; none outlives its test.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enrich.pipeline import scheduler as sched
from enrich.pipeline.requests import request_cancel
from enrich.store.catalog import Catalog, utcnow
from enrich.store.store import Store
from enrich.store.universe import ensure_demo_universe
from enrich.symbols import DEMO_UNIVERSE
from enrich.views.runs import run_detail
from tests.conftest import REPO, subprocess_env

NOW = "2026-11-25T22:00:00Z"
# Never fire during a test: the schedule is half a day away from the real clock.
FAR = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)).strftime("%H:%M")
ENV = dict(ENRICH_NOW=NOW, ENRICH_HISTORY_YEARS="1", ENRICH_SCHEDULE_UTC=FAR,
           ENRICH_MAX_CONCURRENT_SYMBOLS="1")
# Serve's runs are slowed by injected transient failures: each one waits out a real backoff
# before its retry, so a run over the demo universe is still under way when the test acts.
SLOW = dict(ENRICH_SAMPLE_FAILURE_RATE="0.3", ENRICH_MAX_RETRIES="12")


def cli(data: Path, *args: str, timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enrich", *args], cwd=REPO,
                          env=subprocess_env(data, **{**ENV, **env}), capture_output=True,
                          text=True, timeout=timeout)


def start_serve(data: Path, log: Path, heartbeat_s: float = sched.HEARTBEAT_S,
                **env) -> subprocess.Popen:
    """serve on ``data``. Its heartbeat is serve's default unless a test needs a short one:
    a beat of 0.5 s (dead after 1.5 s without one) was measured 1.49 s late on a loaded
    machine, busy with serve's runs and a foreground run, and `run --background` would then
    have been refused for want of a live serve."""
    with log.open("w") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "enrich", "serve", "--heartbeat-s", str(heartbeat_s)],
            cwd=REPO, env=subprocess_env(data, ENRICH_SCHEDULER="on", **{**ENV, **env}),
            stdout=subprocess.DEVNULL, stderr=err)


def stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)


def wait_for(pred, timeout: float = 180.0, what: str = "condition", log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"timed out waiting for {what}\n{detail}")
        time.sleep(0.1)


def seeded(data: Path) -> Catalog:
    store = Store(data)  # migrate and seed before any child starts
    ensure_demo_universe(store.catalog)
    return store.catalog


def liveness(cat: Catalog) -> str:
    return sched.read_state(cat).liveness(utcnow())


def run_state(cat: Catalog, run_id: str) -> str | None:
    return cat.scalar("SELECT state FROM runs WHERE run_id = ?", [run_id])


def tasks_done(cat: Catalog, run_id: str) -> int:
    return cat.scalar("SELECT count(*) FROM tasks WHERE run_id = ? AND state = 'ok'", [run_id])


def queued_id(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("run ") and "queued for serve" in proc.stdout, proc.stdout
    return proc.stdout.split()[1]


def test_serve_with_cli_runs_alongside_then_cancel_and_sigterm(tmp_path):
    data, log = tmp_path / "data", tmp_path / "serve.log"
    cat = seeded(data)
    serve = start_serve(data, log, **SLOW)
    try:
        wait_for(lambda: liveness(cat) == "running", what="serve's heartbeat", log=log)

        # A run handed to serve and a foreground run in another process, at the same time,
        # on the same data directory.
        fg = subprocess.Popen(
            [sys.executable, "-m", "enrich", "run", "--symbols", "AAPL", "--lookback-days",
             "30", "--json"], cwd=REPO, env=subprocess_env(data, **ENV),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            handed = queued_id(cli(data, "run", "--background", "--symbols", "MSFT,KO",
                                   "--lookback-days", "30"))
            out, err = fg.communicate(timeout=120)
        finally:
            stop_child(fg)
        assert fg.returncode == 0, err
        assert json.loads(out)["state"] == "succeeded"
        wait_for(lambda: run_state(cat, handed) in ("succeeded", "partial", "failed"),
                 what="the handed-off run", log=log)
        assert cat.scalar("SELECT count(*) FROM tasks WHERE run_id = ?", [handed]) == 2

        # `runs cancel` from another process stops serve's run between symbols.
        long = queued_id(cli(data, "run", "--background"))
        wait_for(lambda: tasks_done(cat, long) >= 1, what="a symbol of the long run", log=log)
        # The symbol in flight finishes first, through its injected failures' backoffs.
        cancel = cli(data, "runs", "cancel", long, "--wait", "150", timeout=240)
        assert cancel.returncode == 0, cancel.stderr
        assert run_state(cat, long) == "cancelled"
        row = cat.query("SELECT symbols_total, symbols_ok, symbols_skipped, symbols_failed "
                        "FROM runs WHERE run_id = ?", [long]).row(0, named=True)
        counted = row["symbols_ok"] + row["symbols_failed"] + row["symbols_skipped"]
        # The symbols the cancel left unrun are not attempted, never "up to date".
        assert counted + run_detail(cat, long)["symbols_not_attempted"] \
            == row["symbols_total"] > 2
        done = cat.query("SELECT symbol FROM tasks WHERE run_id = ? AND state = 'ok'",
                         [long])["symbol"].to_list()
        assert 1 <= len(done) < row["symbols_total"]
        held = set(cat.query("SELECT DISTINCT symbol FROM bars")["symbol"].to_list())
        assert set(done) <= held  # finished symbols keep their data

        # SIGTERM with a run in progress: serve exits cleanly without finishing the run (which
        # has minutes of backoffs left), and the run is closed. How fast is not timed here: a
        # stopwatch on a loaded machine measures the machine (serve's grace is SERVE_STOP_S).
        last = queued_id(cli(data, "run", "--background"))
        wait_for(lambda: run_state(cat, last) == "running" and tasks_done(cat, last) >= 1,
                 what="the last run to be under way", log=log)
        serve.send_signal(signal.SIGTERM)
        code = serve.wait(timeout=120)
    finally:
        stop_child(serve)
    assert code == 0, log.read_text()
    assert run_state(cat, last) in ("interrupted", "cancelled")
    total = cat.scalar("SELECT symbols_total FROM runs WHERE run_id = ?", [last])
    assert tasks_done(cat, last) < (total or len(DEMO_UNIVERSE)), "serve finished the run first"
    assert cat.scalar("SELECT count(*) FROM runs WHERE state IN ('queued', 'running')") == 0
    assert liveness(cat) == "stopped"  # a clean stop, not a dead scheduler


def test_health_says_dead_after_sigkill_and_background_runs_are_refused(tmp_path):
    data, log = tmp_path / "data", tmp_path / "serve.log"
    cat = seeded(data)
    beat = 0.5
    serve = start_serve(data, log, heartbeat_s=beat)
    try:
        wait_for(lambda: liveness(cat) == "running", what="serve's heartbeat", log=log)
        serve.send_signal(signal.SIGKILL)
        killed = utcnow()
        # Not reaped yet, so the pid still exists: only the heartbeat's age can tell.
        wait_for(lambda: liveness(cat) == "dead", what="dead")
        # Dead within DEAD_AFTER_BEATS beats of the kill (+ 0.5 s), by the heartbeat serve
        # left: judged on the catalog's own instants, not on how long this test took to look.
        state = sched.read_state(cat)
        assert state.heartbeat_at <= killed and state.heartbeat_interval_s == beat
        assert state.liveness(killed + dt.timedelta(
            seconds=sched.DEAD_AFTER_BEATS * beat + 0.5)) == "dead"
    finally:
        stop_child(serve)

    after = cli(data, "health", "--json")
    assert after.returncode == 1
    report = json.loads(after.stdout)
    assert report["scheduler"]["state"] == "dead" and report["ok"] is False
    refused = cli(data, "run", "--background", "--symbols", "AAPL")
    assert refused.returncode == 2 and "no live `python -m enrich serve`" in refused.stderr
    assert "scheduler dead" in refused.stderr


def test_schedule_pause_resume_and_runs_retry_cancel_commands(tmp_path):
    data = tmp_path / "data"
    seeded(data)
    paused = cli(data, "schedule", "pause", "--reason", "exchange holiday")
    assert paused.returncode == 0, paused.stderr
    show = json.loads(cli(data, "schedule", "show", "--json").stdout)
    assert show["paused"] is True and show["pause_reason"] == "exchange holiday"
    assert show["next_fire_utc"] is None and show["state"] == "stopped"
    assert cli(data, "schedule", "resume").returncode == 0
    cat = Catalog(data / "enrich.duckdb")
    state = sched.read_state(cat)
    assert state.paused is False and state.resumed_by.endswith("(cli)")

    flaky = cli(data, "run", "--symbols", "AAPL,MSFT,NVDA,KO", "--lookback-days", "30",
                "--datasets", "bars", "--json", ENRICH_SAMPLE_FAILURE_RATE="0.5",
                ENRICH_MAX_RETRIES="0")
    assert flaky.returncode == 1, flaky.stderr
    first = json.loads(flaky.stdout)
    assert first["failed_symbols"]

    retry = cli(data, "runs", "retry", first["run_id"], "--json")
    assert retry.returncode == 0, retry.stderr
    second = json.loads(retry.stdout)
    assert second["parent_run_id"] == first["run_id"]
    assert second["total"] == len(first["failed_symbols"]) and second["failed"] == 0
    retried = cat.query("SELECT symbol FROM tasks WHERE run_id = ? ORDER BY symbol",
                        [second["run_id"]])["symbol"].to_list()
    assert retried == sorted(first["failed_symbols"])

    assert request_cancel(cat, second["run_id"], "test", utcnow()) == "succeeded"  # ended
    unknown = cli(data, "runs", "cancel", "no-such-run")
    assert unknown.returncode == 2 and "no run" in unknown.stderr
