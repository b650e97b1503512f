"""A crash between a lake write and the catalog flush that records it loses no restatement.

A re-dated dividend inside the refresh's look-back is removed from the lake and recorded as a
restatement row (tests/test_dropped_events.py). Once the lake no longer holds it, no later run
can find the removal again, so the row is journaled before the lake write
(``enrich.store.journal``), and the next catalog write of any process records what a process
that died left if its lake write happened (and drops it if not). Each crash here is a child
process that stops with ``os._exit`` (no flush, no clean-up) at the moment the test names.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys

import duckdb
import polars as pl
import pytest

from enrich.config import load_settings
from enrich.pipeline.engine import Engine
from enrich.pipeline.run_model import LogBuffer, SymbolResult
from enrich.store import journal
from enrich.store.catalog import Catalog, WriteBatch
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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(30)
    return child.pid


def _as_dead_writer(path, pid: int | None = None):
    """``path`` renamed as the file of a writer that is gone (a dead pid, same host)."""
    _, _, host, rest = path.name.split("-", 3)
    return path.rename(path.with_name(f"{pid or _dead_pid()}-1-{host}-{rest}"))


def test_a_crash_after_the_lake_write_still_records_the_removal(tmp_path):
    store, settings = _friday(tmp_path)
    _crash_in_child(store, "flush")

    assert X not in store.lake.read("dividends", [SYM])["ex_date"].to_list()  # written
    assert _recorded(store) == []  # never flushed
    (left,) = _journal_files(store)
    entry = journal.read(store.catalog.journal_dir / left)
    assert [r["old_value"] for r in entry.inserts["restatements"]] == [AMOUNT]
    assert entry.lake_file == "dividends/symbol=AAPL/data.parquet"

    # The next catalog write of any process records it and deletes the file.
    LogBuffer(store).flush()
    assert _recorded(store) == [REMOVED]
    assert _journal_files(store) == []

    # A later refresh of the same window finds nothing more to record.
    _monday_dividends(store, settings).flush()
    assert _recorded(store) == [REMOVED]


def test_a_crash_before_the_lake_write_drops_the_rows_and_the_next_run_finds_them(tmp_path):
    store, settings = _friday(tmp_path)
    _crash_in_child(store, "write")
    assert X in store.lake.read("dividends", [SYM])["ex_date"].to_list()  # not written
    assert len(_journal_files(store)) == 1

    LogBuffer(store).flush()  # the file: its lake write did not happen, nothing recorded
    assert _recorded(store) == [] and _journal_files(store) == []
    _monday_dividends(store, settings).flush()  # found again, and written this time
    assert X not in store.lake.read("dividends", [SYM])["ex_date"].to_list()
    assert _recorded(store) == [REMOVED]


def test_a_lake_write_that_fails_records_nothing_and_leaves_no_file(tmp_path, monkeypatch):
    store, settings = _friday(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store.lake, "_write_file", full_disk)
    engine = Engine(store, _Listing(lambda: MONDAY, Listed(X + dt.timedelta(days=1))),
                    settings, clock=lambda: MONDAY)
    log = LogBuffer(store)
    step = engine.fetch_window(SYM, "stocks", "dividends", "1d", WINDOW, None, log,
                               SymbolResult(SYM, "ok"))
    log.flush()
    assert step.status == "failed"
    assert _recorded(store) == [] and _journal_files(store) == []


def test_a_journal_applied_twice_records_once_and_a_change_back_and_forth_is_kept(tmp_path):
    store, _ = _friday(tmp_path)
    _crash_in_child(store, "flush")
    (left,) = _journal_files(store)
    text = (store.catalog.journal_dir / left).read_text()
    LogBuffer(store).flush()
    # As if the writer had been killed after the commit, before deleting its file.
    (store.catalog.journal_dir / left).write_text(text)
    LogBuffer(store).flush()
    assert _recorded(store) == [REMOVED]

    # A value removed, listed again, and removed again is recorded each time it goes.
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


def test_files_of_live_writers_and_other_hosts_are_left_alone_bad_ones_set_aside(tmp_path):
    store, settings = _friday(tmp_path)
    directory = store.catalog.journal_dir
    mine = journal.write(directory, journal.Entry({"restatements": []}))  # in flight
    dead = _dead_pid()
    elsewhere = directory / f"{dead}-1-0000beef-x.json"  # another host's: unknowable here
    elsewhere.write_text("{}")
    (directory / f"{dead}-1-{journal.HOST}-garbage.json").write_text("{not json")
    (directory / f"{dead}-1-{journal.HOST}-wrong.json").write_text(json.dumps(
        {"inserts": {"restatements": [{"no_such_column": 1}]}}))

    _monday_dividends(store, settings).flush()  # the write goes through

    assert _recorded(store) == [REMOVED]
    assert _journal_files(store) == sorted([
        mine.name, elsewhere.name, f"{dead}-1-{journal.HOST}-garbage.json.unreadable",
        f"{dead}-1-{journal.HOST}-wrong.json.unreadable"])


def test_a_file_that_fails_for_another_reason_stays_for_the_next_write(tmp_path, monkeypatch):
    """A disk or memory error is not the file's fault: it is not set aside (Health would
    tell the operator to delete rows that are fine), and the next write records it."""
    store, _ = _friday(tmp_path)
    _crash_in_child(store, "flush")
    (left,) = _journal_files(store)
    apply = WriteBatch.apply
    failing = [True]

    def flaky(self, con):
        if failing and "restatements" in self.inserts:
            failing.clear()
            raise duckdb.IOException("IO Error: could not write")
        return apply(self, con)

    monkeypatch.setattr(WriteBatch, "apply", flaky)
    LogBuffer(store).flush()
    assert _journal_files(store) == [left] and _recorded(store) == []
    LogBuffer(store).flush()
    assert _journal_files(store) == [] and _recorded(store) == [REMOVED]


def test_a_batch_with_its_own_journal_files_applies_them_once(tmp_path):
    """A run's last batch holds its workers' journal files; the workers have exited when it
    is written, so the files look left by dead writers: they are the batch's own, applied
    once (with it), not a second time."""
    catalog = Catalog(tmp_path / "enrich.duckdb")
    catalog.migrate()
    row = {"run_id": "r", "symbol": SYM, "dataset": "bars", "timeframe": "1d",
           "started_at": dt.datetime.now(dt.UTC), "duration_ms": 0.0, "records": 3,
           "status": "rebased", "error_message": "re-fetched bars on a newer split basis"}
    batch = WriteBatch()
    batch.insert("compute_log", row)
    path = journal.write(catalog.journal_dir, journal.Entry(batch.inserts))
    batch.journals.append(_as_dead_writer(path))
    catalog.write(batch)
    assert catalog.scalar("SELECT count(*) FROM compute_log WHERE run_id = 'r'") == 1
    assert not list(catalog.journal_dir.iterdir())


def test_a_file_of_an_earlier_process_with_a_reused_pid_is_applied(tmp_path):
    """A container restarted gives its new process the pid its old one had: a file whose pid
    is alive but names another start time is a dead writer's."""
    store, _ = _friday(tmp_path)
    row = {"run_id": None, "symbol": SYM, "dataset": "dividends", "session": X,
           "column_name": "cash_amount", "old_value": AMOUNT, "new_value": None,
           "change": None, "detected_at": dt.datetime.now(dt.UTC)}
    written = journal.write(store.catalog.journal_dir,
                            journal.Entry({"restatements": [row]}))
    pid, started, _ = written.name.split("-", 2)
    assert int(pid) == os.getpid() and started.isdigit()  # Linux: the start time is known
    LogBuffer(store).flush()
    assert _recorded(store) == []  # this process's own file: in flight
    _as_dead_writer(written, pid=os.getpid())  # same pid, another start time
    LogBuffer(store).flush()
    assert _recorded(store) == [REMOVED]
    assert _journal_files(store) == []


@pytest.mark.parametrize("rows", [
    {"restatements": [{"session": dt.date(2026, 11, 10), "old_value": 1.5, "new_value": None,
                       "detected_at": dt.datetime(2026, 11, 23, 23, 0, 0, 123456,
                                                  tzinfo=dt.UTC), "symbol": "BRK.B"}]},
    {}])
def test_rows_keep_their_types_through_a_journal_file(tmp_path, rows):
    entry = journal.Entry(rows, "bars/timeframe=1d/symbol=BRK.B/data.parquet", [1, 2, 3])
    path = journal.write(tmp_path, entry)
    assert journal.read(path) == entry
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_journal_rows_are_what_the_step_flushes(tmp_path):
    """The journaled rows are the step's restatement rows, nothing else, about the file the
    step replaced as it was before."""
    store, settings = _friday(tmp_path)
    before = store.lake.file_state("dividends", SYM)
    log = _monday_dividends(store, settings)
    (left,) = _journal_files(store)
    entry = journal.read(store.catalog.journal_dir / left)
    assert (entry.lake_file, entry.before) == before
    assert store.lake.file_state("dividends", SYM) != before  # replaced
    assert list(entry.inserts) == ["restatements"]
    assert pl.DataFrame(entry.inserts["restatements"]).select(
        "dataset", "session", "column_name", "old_value", "new_value").rows() == [REMOVED]
    log.flush()
    assert _journal_files(store) == []
