"""A crash between a lake write and the catalog flush that records it loses no restatement.

A re-dated dividend inside the refresh's look-back is removed from the lake and recorded as a
restatement row (tests/test_dropped_events.py). Once the lake no longer holds it, no later run
can find the removal again, so the row is journaled before the lake write
(``enrich.store.journal``) and the next catalog write of any process applies what a process
that died left. Each crash here is a forked child that stops with ``os._exit`` (no flush, no
clean-up) at the moment the test names: a separate process, as a killed run would be.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import polars as pl

from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import LogBuffer, SymbolResult
from enrich.store import journal
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store
from tests.conftest import REPO, subprocess_env
from tests.test_dropped_events import AMOUNT, FRIDAY, MONDAY, SYM, Listed, X, _Listing, _store

WINDOW = (X - dt.timedelta(days=20), X + dt.timedelta(days=20))
REMOVED = ("dividends", X, "cash_amount", AMOUNT, None)


def _friday(tmp_path):
    store, settings = _store(tmp_path, "desk")
    Engine(store, _Listing(lambda: FRIDAY, Listed(X)), settings, clock=lambda: FRIDAY).run()
    return store, settings


def _monday_dividends(store: Store, settings) -> LogBuffer:
    """The dividends step of Monday's refresh, the dividend re-dated by a day; not flushed."""
    engine = Engine(store, _Listing(lambda: MONDAY, Listed(X + dt.timedelta(days=1))),
                    settings, clock=lambda: MONDAY)
    log = LogBuffer(store)
    step = engine.fetch_window(SYM, "stocks", "dividends", "1d", WINDOW, None, log,
                               SymbolResult(SYM, "ok"))
    assert step.status == "ok", step.error
    return log


def _crash_in_child(store: Store, at: str) -> None:
    """Monday's dividends step in a new process (``python -c``) that dies with ``os._exit``
    ``at`` "flush" (after the lake write, before the catalog flush) or "write" (at the lake
    write, after the journal), without any clean-up."""
    code = (f"from tests.test_journal import _child; _child({str(store.data_dir)!r}, {at!r})")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env=subprocess_env(store.data_dir))
    assert done.returncode == 0, done.stderr[-3000:]


def _child(data_dir: str, at: str) -> None:
    settings = load_settings({"ENRICH_DATA_DIR": data_dir}, dotenv_path=None)
    settings = settings.with_(history_years=1, options_symbols=(SYM,))
    store = Store.from_settings(settings)
    if at == "write":
        store.lake._write_file = lambda *args, **kwargs: os._exit(0)
    _monday_dividends(store, settings)
    os._exit(0)  # before the flush


def _recorded(store: Store) -> list[tuple]:
    return store.catalog.query(
        "SELECT dataset, session, column_name, old_value, new_value FROM restatements "
        "WHERE dataset = 'dividends' ORDER BY detected_at").rows()


def _journal_files(store: Store) -> list[str]:
    directory = store.catalog.journal_dir
    return sorted(os.listdir(directory)) if directory.is_dir() else []


def test_a_crash_after_the_lake_write_still_records_the_removal(tmp_path):
    store, settings = _friday(tmp_path)
    _crash_in_child(store, "flush")

    assert X not in store.lake.read("dividends", [SYM])["ex_date"].to_list()  # written
    assert _recorded(store) == []  # never flushed
    (left,) = _journal_files(store)
    rows = json.loads((store.catalog.journal_dir / left).read_text())["inserts"]
    assert [r["old_value"] for r in rows["restatements"]] == [AMOUNT]

    # The next catalog write of any process records it and deletes the file.
    LogBuffer(store).flush()
    assert _recorded(store) == [REMOVED]
    assert _journal_files(store) == []

    # A later refresh of the same window finds nothing more to record.
    _monday_dividends(store, settings).flush()
    assert _recorded(store) == [REMOVED]


def test_a_crash_before_the_lake_write_records_the_change_once(tmp_path):
    store, settings = _friday(tmp_path)

    _crash_in_child(store, "write")
    assert X in store.lake.read("dividends", [SYM])["ex_date"].to_list()  # not written
    assert len(_journal_files(store)) == 1

    # The next run applies the journal and finds the same removal again: one row.
    _monday_dividends(store, settings).flush()
    assert X not in store.lake.read("dividends", [SYM])["ex_date"].to_list()
    assert _recorded(store) == [REMOVED]
    assert _journal_files(store) == []


def test_a_journal_applied_twice_records_once_and_a_real_change_back_is_kept(tmp_path):
    store, settings = _friday(tmp_path)
    _crash_in_child(store, "flush")
    (left,) = _journal_files(store)
    text = (store.catalog.journal_dir / left).read_text()
    LogBuffer(store).flush()
    # As if the writer had been killed after the commit, before deleting its file.
    (store.catalog.journal_dir / left).write_text(text)
    LogBuffer(store).flush()
    assert _recorded(store) == [REMOVED]

    # A value that really changes back and then again is recorded each time.
    row = {"run_id": None, "symbol": SYM, "dataset": "dividends", "session": X,
           "column_name": "cash_amount", "change": None}
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    for i, (old, new) in enumerate([(None, AMOUNT), (AMOUNT, None)]):
        batch = WriteBatch()
        batch.insert("restatements", {**row, "old_value": old, "new_value": new,
                                      "detected_at": later + dt.timedelta(hours=i)})
        store.catalog.write(batch)
    assert [r[3:] for r in _recorded(store)] == [(AMOUNT, None), (None, AMOUNT),
                                                 (AMOUNT, None)]


def test_a_live_writers_journal_is_left_alone_and_an_unreadable_one_is_set_aside(tmp_path):
    store, settings = _friday(tmp_path)
    directory = store.catalog.journal_dir
    mine = journal.write(directory, {"restatements": []})  # this process: alive, in flight
    dead = _dead_pid()
    (directory / f"{dead}-garbage.json").write_text("{not json")
    (directory / f"{dead}-wrong.json").write_text(json.dumps(
        {"inserts": {"restatements": [{"no_such_column": 1}]}}))

    _monday_dividends(store, settings).flush()  # the write goes through

    assert _recorded(store) == [REMOVED]
    assert _journal_files(store) == sorted([
        mine.name, f"{dead}-garbage.json.unreadable", f"{dead}-wrong.json.unreadable"])


def test_rows_keep_their_types_through_a_journal_file(tmp_path):
    at = dt.datetime(2026, 11, 23, 23, 0, 0, 123456, tzinfo=dt.UTC)
    rows = {"restatements": [{"session": dt.date(2026, 11, 10), "detected_at": at,
                              "old_value": 1.5, "new_value": None, "symbol": "BRK.B"}]}
    path = journal.write(tmp_path, rows)
    assert journal.read(path) == rows
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def test_journal_rows_are_what_the_step_flushes(tmp_path):
    """The journaled rows are the step's restatement rows, nothing else."""
    store, settings = _friday(tmp_path)
    log = _monday_dividends(store, settings)
    (left,) = _journal_files(store)
    inserts = journal.read(store.catalog.journal_dir / left)
    assert list(inserts) == ["restatements"]
    assert pl.DataFrame(inserts["restatements"]).select(
        "dataset", "session", "column_name", "old_value", "new_value").rows() == [REMOVED]
    log.flush()
    assert _journal_files(store) == []


def test_a_file_of_an_earlier_process_with_a_reused_pid_is_applied(tmp_path):
    """A container restarted gives its new process the pid its old one had: a file whose pid
    is alive but names another start time is a dead writer's."""
    store, _ = _friday(tmp_path)
    row = {"run_id": None, "symbol": SYM, "dataset": "dividends", "session": X,
           "column_name": "cash_amount", "old_value": AMOUNT, "new_value": None,
           "change": None, "detected_at": dt.datetime.now(dt.UTC)}
    written = journal.write(store.catalog.journal_dir, {"restatements": [row]})
    pid, started, rest = written.name.split("-", 2)
    assert int(pid) == os.getpid() and started.isdigit()  # Linux: the start time is known
    LogBuffer(store).flush()
    assert _recorded(store) == []  # this process's own file: in flight
    written.rename(written.with_name(f"{pid}-{int(started) - 1}-{rest}"))
    LogBuffer(store).flush()
    assert _recorded(store) == [REMOVED]
    assert _journal_files(store) == []
