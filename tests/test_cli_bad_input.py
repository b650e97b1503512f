"""An operator's mistypes at the command line (the CLI review): each bad argument is one
``error:`` line and exit 2, never an internal error; the forms the README shows are accepted;
a symbol typed in another case finds the held one; Ctrl-C leaves no run ``running``.

In-process through ``enrich.cli.main`` (an escaping exception fails the test), offline (the
sample provider), in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import duckdb
import pytest

from enrich import cli
from enrich.store.store import Store
from enrich.store.universe import add_symbols


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A catalog holding AAPL and MSFT, AAPL's bars fetched once (so it has a status)."""
    data = tmp_path_factory.mktemp("hunt") / "data"
    add_symbols(Store(data).catalog, [("AAPL", "stocks", None), ("MSFT", "stocks", None)])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(data.parent)
        for name in [n for n in os.environ if n.startswith(("ENRICH_", "MASSIVE_", "POLYGON_"))]:
            mp.delenv(name)  # the autouse clean_environ runs after module fixtures
        mp.setenv("ENRICH_DATA_DIR", str(data))
        mp.setenv("ENRICH_PROVIDER", "sample")
        mp.setenv("ENRICH_SCHEDULER", "off")
        mp.setenv("ENRICH_HISTORY_YEARS", "1")
        assert cli.main(["run", "--symbols", "AAPL", "--datasets", "bars", "--json"]) == 0
    return data


@pytest.fixture
def data(template, tmp_path, monkeypatch) -> Path:
    d = tmp_path / "data"
    shutil.copytree(template, d)
    monkeypatch.chdir(tmp_path)  # no developer .env
    monkeypatch.setenv("ENRICH_DATA_DIR", str(d))
    monkeypatch.setenv("ENRICH_PROVIDER", "sample")
    monkeypatch.setenv("ENRICH_HISTORY_YEARS", "1")
    monkeypatch.setenv("MASSIVE_API_KEY", "sk-test-SECRET-123456")
    return d


def _main(argv: list[str]) -> int:
    try:
        return cli.main(argv)
    except SystemExit as done:  # argparse refuses a value by exiting
        return int(done.code or 0)


def _refused(argv: list[str], says: str, capsys) -> None:
    code = _main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, (argv, out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert says in lines[0], (argv, lines[0])
    assert "internal error" not in err and "Traceback" not in out + err
    assert "SECRET" not in out + err


def _query(data: Path, sql: str) -> list[tuple]:
    con = duckdb.connect(str(data / "enrich.duckdb"), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


# -- runs -------------------------------------------------------------------------------------
def test_runs_state_that_is_not_a_state_is_refused(data, capsys):
    """`runs --state faild` listed nothing and exited 0, as if no run had failed."""
    _refused(["runs", "--state", "faild"], "invalid choice: 'faild'", capsys)


def test_runs_list_takes_the_options_the_readme_shows(data, capsys):
    """README: `runs [list] [--limit 20] [--state failed] … [--json]`; with `list` spelled
    out, the options after it were refused as unrecognized."""
    assert _main(["runs", "list", "--limit", "1", "--state", "succeeded", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["state"] == "succeeded"
    _refused(["runs", "list", "--limit", "0"], "--limit: 0 is out of range", capsys)


def test_entitlements_list_takes_json(data, capsys):
    """README: `entitlements [list|recheck] [--json]`."""
    assert _main(["entitlements", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"not_entitled": [], "plan_limits": []}


# -- status -----------------------------------------------------------------------------------
def test_status_of_a_symbol_typed_in_another_case(data, capsys):
    """README: a name typed in another case finds the one held symbol (CLI alike)."""
    assert _main(["status", "--symbol", "aapl", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {r["symbol"] for r in rows} == {"AAPL"}


def test_status_text_names_an_error_only_until_a_success_answers_it(data, capsys):
    """Found by a QA pass: `status` printed AAPL's bars "fresh" beside last error "transient"
    from a failure a later run had repaired; `--json` keeps the history."""
    import datetime as dt

    with duckdb.connect(str(data / "enrich.duckdb")) as con:
        ok = con.execute("SELECT last_success_at FROM symbol_status WHERE symbol = 'AAPL' "
                         "AND dataset = 'bars'").fetchall()[0][0]
        con.execute("UPDATE symbol_status SET last_error_class = 'transient', "
                    "last_error_at = ? WHERE symbol = 'AAPL' AND dataset = 'bars'",
                    [ok - dt.timedelta(days=1)])
    assert _main(["status", "--symbol", "AAPL"]) == 0
    bars = next(ln for ln in capsys.readouterr().out.splitlines() if " bars " in ln)
    assert "fresh" in bars and "transient" not in bars
    assert _main(["status", "--symbol", "AAPL", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert next(r for r in rows if r["dataset"] == "bars")["last_error_class"] == "transient"
    with duckdb.connect(str(data / "enrich.duckdb")) as con:  # failing since the success
        con.execute("UPDATE symbol_status SET last_error_at = ? WHERE symbol = 'AAPL' AND "
                    "dataset = 'bars'", [ok + dt.timedelta(minutes=1)])
    assert _main(["status", "--symbol", "AAPL"]) == 0
    bars = next(ln for ln in capsys.readouterr().out.splitlines() if " bars " in ln)
    assert "transient" in bars


def test_symbols_actions_take_a_comma_list_as_run_does(data, capsys):
    """Found by a QA pass: `symbols deactivate S2900,S2901` was refused ("invalid symbol
    'S2900,S2901'"), while `run --symbols` and `backfill --symbols` take commas."""
    assert _main(["symbols", "deactivate", "aapl,MSFT"]) == 0
    assert capsys.readouterr().out.strip() == "deactivated AAPL, MSFT"
    assert _main(["symbols", "activate", "AAPL,", "msft"]) == 0
    assert capsys.readouterr().out.strip() == "activated AAPL, MSFT"
    _refused(["symbols", "remove", ","], "no symbol given", capsys)


def test_activate_says_the_symbol_as_held_and_symbols_help_lists_every_action(data, capsys):
    # Found by a QA pass: `symbols activate aapl` printed "activated aapl", and `symbols
    # --help` listed only `import` (the other actions had no help text).
    assert _main(["symbols", "deactivate", "aapl"]) == 0
    assert capsys.readouterr().out.strip() == "deactivated AAPL"
    assert _main(["symbols", "activate", "aapl"]) == 0
    assert capsys.readouterr().out.strip() == "activated AAPL"
    assert _main(["symbols", "--help"]) == 0
    listed = capsys.readouterr().out
    for action in ("list", "add", "remove", "activate", "deactivate", "import"):
        assert f"\n    {action} " in listed or f"\n    {action}\n" in listed, action


def test_status_of_a_symbol_not_in_the_universe_is_refused(data, capsys):
    """It said "no status yet: run …" and exited 0."""
    _refused(["status", "--symbol", "NOPE"], "NOPE not in the universe", capsys)


def test_status_of_an_empty_symbol_is_refused(data, capsys):
    """`--symbol ''` showed every symbol: an empty filter must never mean everything."""
    _refused(["status", "--symbol", ""], "--symbol is empty", capsys)


# -- symbols import ---------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"symbol,asset_class,name\n", b"\n\n# a comment\n"])
def test_importing_a_file_without_symbols_is_refused(data, tmp_path, content, capsys):
    """An empty (or header-only) file said "added 0 symbol(s)" and exited 0: most likely the
    wrong file. The Settings page refuses it too ("Choose a file or paste some lines")."""
    (tmp_path / "empty.csv").write_bytes(content)
    before = _query(data, "SELECT count(*) FROM symbols")
    _refused(["symbols", "import", str(tmp_path / "empty.csv")], "holds no symbol", capsys)
    assert _query(data, "SELECT count(*) FROM symbols") == before


# -- backfill ---------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, says", [
    (["--years", "2026"], "--years: 2026 is out of range"),
    (["--days", "99999999"], "--days: 99999999 is out of range"),
    (["--days", "999999999999999999999"], "is out of range"),
    (["--days", "5", "--chunk-days", "99999999999"], "--chunk-days: 99999999999 is out of"),
])
def test_backfill_absurd_spans_are_refused(data, argv, says, capsys):
    """They were internal errors (year 0 is out of range, date value out of range)."""
    _refused(["backfill", "bars", "--symbol", "AAPL", "--dry-run", *argv], says, capsys)


def test_backfill_monthly_is_bounded_as_in_the_api(data, capsys):
    """`POST /api/v1/backfills` takes 1..12 monthly expirations; the CLI took 100000."""
    _refused(["backfill", "options", "--symbol", "AAPL", "--monthly", "100000", "--dry-run"],
             "--monthly: 100000 is out of range", capsys)


def test_backfill_of_a_symbol_typed_in_another_case(data, capsys):
    """It said "aapl not in the universe"; the API and the other commands find AAPL."""
    assert _main(["backfill", "bars", "--symbol", "aapl", "--days", "5", "--dry-run",
                  "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["symbols"] == ["AAPL"] and {s["symbol"] for s in plan["by_step"]} == {"AAPL"}


# -- coverage, alerts -------------------------------------------------------------------------
@pytest.mark.parametrize("n", ["99999999", "999999999999999999999"])
def test_coverage_absurd_sessions_are_refused(data, n, capsys):
    """Internal errors (OverflowError) before; the API takes 1..5000."""
    _refused(["coverage", "--dataset", "bars", "--sessions", n], f"--sessions: {n} is out",
             capsys)


@pytest.mark.parametrize("n", ["-1", "0", "99999999999999999999"])
def test_alerts_list_limit_out_of_range_is_refused(data, n, capsys):
    """`--limit -1` was an internal error (DuckDB: LIMIT cannot be negative)."""
    _refused(["alerts", "list", "--limit", n], f"--limit: {n} is out of range", capsys)


# -- run --------------------------------------------------------------------------------------
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_dry_run_of_a_symbol_not_in_the_universe_exits_2(data, json_flag, capsys):
    """`run --symbols NOPE` exits 2; with --dry-run it exited 1 (the planner's error)."""
    _refused(["run", "--dry-run", "--symbols", "NOPE", *json_flag], "NOPE not in the universe",
             capsys)


def test_an_empty_data_dir_option_is_refused(data, capsys):
    """`--data-dir "$DIR"` with DIR unset used ENRICH_DATA_DIR (or ./data) instead: the wrong
    desk, silently."""
    _refused(["--data-dir", "", "status"], "--data-dir is empty", capsys)


# -- Ctrl-C -----------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["run", "--symbols", "MSFT"], "retry"])
def test_ctrl_c_during_a_run_leaves_no_run_running(data, argv, monkeypatch, capsys):
    """Ctrl-C stopped the process (exit 130) but left its run `running` (and its task) until
    some later run noticed the dead pid: `runs`, `health` and the Runs page showed it going.
    The interrupt is raised where Python raises it, in the main thread: here as a symbol ends.
    """
    from enrich.cli import progress

    if argv == "retry":  # a failed run of MSFT to retry
        failed_id = "00000000-0000-4000-8000-000000000001"
        with Store(data).catalog.connect() as con:
            con.execute("INSERT INTO runs (run_id, kind, state, params, requested_at) "
                        "VALUES (?, 'cli', 'failed', '{\"datasets\": [\"bars\"]}', now())",
                        [failed_id])
            con.execute("INSERT INTO tasks (run_id, symbol, state) "
                        "VALUES (?, 'MSFT', 'failed')", [failed_id])
        argv = ["runs", "retry", failed_id]

    def interrupt(self, done, total, res):
        raise KeyboardInterrupt

    monkeypatch.setattr(progress.TerminalProgress, "symbol_done", interrupt)
    assert _main(argv) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert _query(data, "SELECT count(*) FROM runs WHERE state IN ('queued', 'running')") \
        == [(0,)]
    assert _query(data, "SELECT count(*) FROM tasks WHERE state = 'running'") == [(0,)]
    last = _query(data, "SELECT state, message FROM runs ORDER BY requested_at DESC LIMIT 1")
    assert last[0][0] == "interrupted" and "Ctrl-C" in last[0][1]


def test_a_symbol_done_before_ctrl_c_is_in_the_catalog_at_once(data, monkeypatch, capsys):
    """Found by a QA pass: after Ctrl-C, the symbols already reported ok (their data in the
    lake) had no task and no status row until the next run: `status` said `never`."""
    from enrich.cli import progress

    done: list[str] = []

    def interrupt(self, n, total, res):
        done.append(res.symbol)
        raise KeyboardInterrupt

    monkeypatch.setattr(progress.TerminalProgress, "symbol_done", interrupt)
    assert _main(["run", "--symbols", "MSFT", "--datasets", "bars"]) == 130
    [sym] = done
    last = "(SELECT run_id FROM runs ORDER BY requested_at DESC LIMIT 1)"
    assert _query(data, f"SELECT symbol, state FROM tasks WHERE run_id = {last}") == \
        [(sym, "ok")]
    assert _query(data, f"SELECT symbols_ok, state FROM runs WHERE run_id = {last}") == \
        [(1, "interrupted")]
    assert _query(data, "SELECT count(*) FROM symbol_status WHERE symbol = 'MSFT' AND "
                        "dataset = 'bars' AND last_success_at >= (SELECT requested_at FROM "
                        f"runs WHERE run_id = {last})") == [(1,)]


def test_sigterm_during_a_run_closes_it_as_ctrl_c_does(data, monkeypatch, capsys):
    """Found by a QA pass: `kill <pid>` of a run exited 143 but left the run `running` (and,
    with worker processes, its workers alive); now it is handled as Ctrl-C is."""
    import os
    import signal

    from enrich.cli import progress

    def terminate(self, done, total, res):
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(progress.TerminalProgress, "symbol_done", terminate)
    assert _main(["run", "--symbols", "MSFT,AAPL"]) == 143
    assert capsys.readouterr().err.strip().endswith("terminated")
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is the run's alone
    assert _query(data, "SELECT count(*) FROM runs WHERE state IN ('queued', 'running')") \
        == [(0,)]
    last = _query(data, "SELECT state, message FROM runs ORDER BY requested_at DESC LIMIT 1")
    assert last[0][0] == "interrupted" and "SIGTERM" in last[0][1]


def test_runs_and_health_show_a_killed_run_interrupted_but_never_their_own(data, capsys):
    """Found by a QA pass: a run whose process was killed read `running` (its duration
    growing) to `runs`, `health` and the API until the next run or `serve` started."""
    import datetime as dt
    import subprocess
    import sys

    from enrich.store import runs
    from enrich.store.catalog import host_and_pid

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is no process now
    host, me = host_and_pid()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with Store(data).catalog.connect() as con:
        for run_id, pid in (("00000000-0000-4000-8000-00000000000a", gone.pid),
                            ("00000000-0000-4000-8000-00000000000b", me)):
            con.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, pid, "
                        "host, heartbeat_at) VALUES (?, 'cli', 'running', '{}', ?, ?, ?, ?)",
                        [run_id, old, pid, host, old])
    assert _main(["runs", "--json"]) == 0
    shown = {r["run_id"][-1]: r["state"] for r in json.loads(capsys.readouterr().out)}
    assert shown["a"] == "interrupted"
    assert shown["b"] == "running"  # this process's own: a reader never closes it
    runs.close_dead_runs(Store(data))
    assert _query(data, "SELECT state FROM runs WHERE run_id LIKE '%b'") == [("running",)]


def test_a_run_that_ends_while_checked_is_not_marked_interrupted(data, monkeypatch):
    """Found by a review: a reader saw a run running, its process then finished it and
    exited, and the reader wrote `interrupted` over `succeeded`."""
    import datetime as dt

    from enrich.store import runs

    run_id = "00000000-0000-4000-8000-00000000000c"
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with Store(data).catalog.connect() as con:
        con.execute("INSERT INTO runs (run_id, kind, state, params, requested_at, pid, host, "
                    "heartbeat_at) VALUES (?, 'cli', 'running', '{}', ?, 999999, ?, ?)",
                    [run_id, old, runs.host_and_pid()[0], old])

    def ends_then_gone(pid: int) -> bool:  # the run's process finishes it, then exits
        with Store(data).catalog.connect() as con:
            con.execute("UPDATE runs SET state = 'succeeded' WHERE run_id = ?", [run_id])
        return False

    monkeypatch.setattr(runs, "pid_alive", ends_then_gone)
    runs.close_dead_runs(Store(data))
    assert _query(data, f"SELECT state FROM runs WHERE run_id = '{run_id}'") == \
        [("succeeded",)]


def test_schedule_show_says_the_running_owners_fire_not_this_shells(data, capsys):
    """Found by a QA pass: with `serve` firing at 07:46, `schedule show` in a shell without
    ENRICH_SCHEDULE_UTC said "daily at 01:30 UTC … next fire … 01:30"."""
    import datetime as dt

    from enrich.pipeline import scheduler as sched
    from enrich.store.catalog import utcnow

    now = utcnow()
    fire = (now + dt.timedelta(days=1)).replace(hour=7, minute=46, second=0, microsecond=0)
    assert sched.beat(Store(data).catalog, now, 30.0, now, fire).owner
    assert _main(["schedule", "show"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("daily at 07:46 UTC") and "01:30 UTC" not in out.splitlines()[1]
    assert "this shell's ENRICH_SCHEDULE_UTC says 01:30" in out
    assert f"next fire {sched.fire_label(fire)}" in out
    assert _main(["schedule", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["schedule_utc"] == "07:46" and shown["next_fire_utc"].startswith(
        fire.strftime("%Y-%m-%dT07:46"))


def test_json_output_nests_json_columns_as_the_api_does(data, capsys):
    """Found by a QA pass: `runs --json` gave a run's params, and `alerts list --json` an
    incident's deliveries, as JSON text inside a string (the API nests them)."""
    import datetime as dt

    from enrich.store.catalog import WriteBatch

    assert _main(["runs", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert runs and all(isinstance(r["params"], dict) for r in runs)
    b = WriteBatch()
    b.insert("alerts", {"alert_id": "a1", "incident_id": "a1", "event": "opened",
                        "rule": "stale", "dedupe_key": "stale", "severity": "warning",
                        "title": "data not fresh", "detail": "x", "delivery": "sent",
                        "event_at": dt.datetime.now(dt.UTC),
                        "deliveries": json.dumps([{"channel": "json://host/hook", "ok": True}])})
    Store(data).catalog.write(b)
    assert _main(["alerts", "list", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)["items"]
    assert item["deliveries"] == [{"channel": "json://host/hook", "ok": True}]
    assert _main(["alerts", "show", "a1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["events"][0]["deliveries"][0]["ok"] is True
    # Its text form says who acknowledged it (found by the same pass: it never did).
    assert _main(["alerts", "ack", "a1", "--by", "ops"]) == 0
    capsys.readouterr()
    assert _main(["alerts", "show", "a1"]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert head.startswith("a1 open · stale · warning · acknowledged by ops at ") and \
        head.endswith(" UTC")


def test_sigterm_stops_handing_out_symbols_and_the_counts_agree(data, monkeypatch, capsys):
    """Found by a review: SIGTERM (or Ctrl-C) in a threaded run let every queued symbol run
    before the process ended (a service manager's stop took a whole run), and the run said
    1 enriched beside 6 task rows `ok`. Now the symbols in hand finish, the rest end
    cancelled, and the run's counts are its tasks'."""
    import os
    import signal

    from enrich.cli import progress

    monkeypatch.setenv("ENRICH_MAX_CONCURRENT_SYMBOLS", "1")
    sent: list[str] = []

    def terminate_once(self, done, total, res):
        if not sent:
            sent.append(res.symbol)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(progress.TerminalProgress, "symbol_done", terminate_once)
    syms = ["MSFT", "AAPL", "SPY", "KO", "NVDA", "X:BTCUSD"]
    add_symbols(Store(data).catalog, [(s, None, None) for s in syms[2:]])
    assert _main(["run", "--symbols", ",".join(syms), "--datasets", "bars"]) == 143
    last = "(SELECT run_id FROM runs ORDER BY requested_at DESC LIMIT 1)"
    tasks = dict(_query(data, f"SELECT state, count(*) FROM tasks WHERE run_id = {last} "
                              "GROUP BY state"))
    [(ok, state)] = _query(data, f"SELECT symbols_ok, state FROM runs WHERE run_id = {last}")
    assert state == "interrupted" and tasks.get("ok", 0) == ok
    assert 1 <= ok <= 2  # the first, and at most the one then in hand
    # AAPL is up to date (skipped at once): the rest but the one in hand never started
    assert sum(tasks.values()) <= 4


def test_ctrl_c_while_a_run_plans_is_no_failure(data, monkeypatch, capsys):
    """Ctrl-C before the first fetch (the plan, the reference reads) recorded the run
    `failed` with an empty message (str() of a KeyboardInterrupt)."""
    from enrich.pipeline.engine import Engine

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "plan", interrupt)
    assert _main(["run", "--symbols", "MSFT"]) == 130
    capsys.readouterr()
    last = _query(data, "SELECT state, message FROM runs ORDER BY requested_at DESC LIMIT 1")
    assert last[0][0] == "interrupted" and "Ctrl-C" in last[0][1]


# -- seconds ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["-5", "nan", "inf"])
def test_runs_cancel_wait_must_be_a_sensible_number_of_seconds(data, value, capsys):
    """`--wait -5` (or nan) did not wait at all and reported the run still running (exit 1);
    inf waited forever."""
    _refused(["runs", "cancel", "00000000-0000-4000-8000-000000000001", "--wait", value],
             "argument --wait", capsys)


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_serve_heartbeat_must_be_a_sensible_number_of_seconds(data, value, monkeypatch,
                                                              capsys):
    """`--heartbeat-s nan` passed the `<= 0` check: a scheduler that never beats."""
    monkeypatch.setenv("ENRICH_SCHEDULER", "on")
    monkeypatch.setenv("ENRICH_API_ADDRESS", "off")
    _refused(["serve", "--heartbeat-s", value], "--heartbeat-s", capsys)


# -- fill -------------------------------------------------------------------------------------
def test_fill_of_future_dates_is_refused(data, capsys):
    """`--from 2036-11-01` (for 2026) said "nothing to fill: the selection has no missing
    cell" and exited 0, as if those sessions were held."""
    _refused(["fill", "--dataset", "bars", "--symbols", "AAPL", "--from", "2036-11-01",
              "--to", "2036-11-05"], "--from 2036-11-01 is in the future", capsys)


def test_runs_filtered_to_nothing_does_not_say_there_are_no_runs(data, capsys):
    """`runs --symbol MSFT` (never run) said "no runs yet: start one", with a run recorded."""
    assert _main(["runs", "--symbol", "MSFT"]) == 0
    out = capsys.readouterr().out
    assert "no runs yet" not in out and "no run matches" in out


def test_runs_of_a_symbol_nobody_holds_is_refused_and_any_case_finds_the_held_one(data, capsys):
    """Found by a QA pass: `runs --symbol NOPE` answered "no run matches" with exit 0, as for
    a held symbol never run, and `runs --symbol aapl` missed AAPL's runs."""
    _refused(["runs", "--symbol", "NOPE"], "--symbol NOPE: no run ever enriched it and it is "
             "not in the universe", capsys)
    assert _main(["runs", "--symbol", "aapl", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1  # the template's AAPL run
    assert _main(["symbols", "remove", "AAPL"]) == 0
    capsys.readouterr()
    assert _main(["runs", "--symbol", "AAPL", "--json"]) == 0  # removed: its runs remain
    assert len(json.loads(capsys.readouterr().out)) == 1


# -- text from users and providers ------------------------------------------------------------
def test_control_characters_in_stored_text_do_not_reach_the_terminal(data, tmp_path, capsys):
    """A name imported from a CSV or a pause reason holding ESC sequences was printed raw:
    `symbols list` / `schedule` could recolour or clear the operator's terminal, or set its
    title. They are shown as escapes (`\\x1b`), as text."""
    (tmp_path / "esc.csv").write_bytes(b"IBM,stocks,\x1b[31mRED\x1b[0m\x07\n")
    assert _main(["symbols", "import", str(tmp_path / "esc.csv")]) == 0
    assert _main(["schedule", "pause", "--reason", "\x1b]0;pwned\x07\x1b[2J"]) == 0
    assert _main(["symbols", "list"]) == 0
    assert _main(["schedule", "show"]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert "\\x1b[31mRED\\x1b[0m\\x07" in out and "\\x1b]0;pwned\\x07" in out
    assert _main(["symbols", "list", "--json"]) == 0  # JSON escapes them itself, unchanged
    names = {r["symbol"]: r["name"] for r in json.loads(capsys.readouterr().out)}
    assert names["IBM"] == "\x1b[31mRED\x1b[0m\x07"


def test_backfill_of_an_expiration_before_the_window_is_refused(data, capsys):
    """`--expiration 2020-01-17` with the default 30 days planned a listing request a session
    for contracts that had expired years before the window (none trade there): rate-limited
    requests spent on nothing."""
    _refused(["backfill", "options", "--symbol", "AAPL", "--expiration", "2020-01-17",
              "--dry-run"], "--expiration 2020-01-17 is before the window", capsys)


@pytest.mark.parametrize("argv, says", [
    (["runs", "--symbol", ""], "--symbol is empty"),
    (["runs", "--since", " "], "--since is empty"),
    (["quality", "--symbol", ""], "--symbol is empty"),
    (["quality", "audit", "--symbol", ""], "--symbol is empty"),
])
def test_an_empty_filter_never_means_everything(data, argv, says, capsys):
    """`--symbol "$SYM"` with SYM unset listed (or re-checked) every symbol, as `status` did;
    the README's rule for `run --symbols ''`."""
    _refused(argv, says, capsys)


def test_an_internal_error_line_never_shows_the_api_key(data, monkeypatch, capsys):
    """errors.log was redacted, but the one line on the terminal quoted the exception as is:
    an unexpected error whose text held the key (a URL, a header) showed it."""
    import enrich.views.status

    def broken(*a, **k):
        raise RuntimeError("GET https://api.example/v2/x?apiKey=sk-test-SECRET-123456 failed")

    monkeypatch.setattr(enrich.views.status, "status_grid", broken)
    assert _main(["status"]) == 1
    err = capsys.readouterr().err
    assert "internal error (RuntimeError" in err and "SECRET" not in err


@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_run_whose_asset_class_keeps_none_of_its_symbols_is_refused(data, dry, capsys):
    """`run --symbols AAPL --asset-class crypto` recorded a succeeded run of no symbol, saying
    "no symbols to enrich: add some with `symbols add`" (dry run: "every symbol is up to
    date")."""
    before = _query(data, "SELECT count(*) FROM runs")
    _refused(["run", "--symbols", "AAPL", "--asset-class", "crypto", *dry],
             "AAPL is stocks, not crypto", capsys)
    assert _query(data, "SELECT count(*) FROM runs") == before


def test_background_run_of_a_symbol_typed_in_another_case(data, capsys):
    """`run --background --symbols aapl` said "aapl not in the universe" (an exact match),
    where the foreground run finds AAPL. Without a live `serve` it is refused for that."""
    _refused(["run", "--background", "--symbols", "aapl"], "no live `python -m enrich serve`",
             capsys)


def test_health_counts_the_daily_runs_missed_as_the_overview_does(data, monkeypatch, capsys):
    """Found by a QA pass: the Overview said "Daily runs missed 3" while `health --json` and
    the API's /health had no word of it, so a script watching health never learned that no
    scheduler had run for days."""
    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    first = dt.datetime.combine(today - dt.timedelta(days=3), dt.time(10), tzinfo=dt.UTC)
    with duckdb.connect(str(data / "enrich.duckdb")) as con:  # the only run, 3 days ago
        con.execute("UPDATE runs SET requested_at = ?, started_at = ?, finished_at = ?",
                    [first, first, first])
    monkeypatch.setenv("ENRICH_SCHEDULE_UTC", "01:30")
    assert _main(["health", "--no-probe", "--json"]) == 0
    h = json.loads(capsys.readouterr().out)
    checked = dt.datetime.fromisoformat(h["checked_at"])
    fires = [dt.datetime.combine(today - dt.timedelta(days=n), dt.time(1, 30), tzinfo=dt.UTC)
             for n in (2, 1, 0)]  # each day's 01:30 after the run, up to the check
    want = [f.isoformat() for f in fires if f <= checked]
    assert h["schedule"]["missed_fires"] == want and len(want) >= 2
    assert _main(["health", "--no-probe"]) == 0
    out = capsys.readouterr().out
    assert f"missed       {len(want)} daily runs in 30 days" in out
    assert f"last {want[-1][:10]} 01:30:00 UTC" in out
