"""The ``runs`` and ``tasks`` tables: the statements the engine, the services, backfills, the
scheduler and the CLI make on them, in one place.

A run is one row in ``runs`` (a manual, scheduled, retry, CLI, API or backfill run), a task
one row per symbol of a run in ``tasks``. Writes are added to a ``WriteBatch`` (``add_*``), so
the caller decides which transaction they join (a run's progress rides along with its log
rows); reads take a catalog or an open connection. The run read models the pages show live in
``enrich.views.runs``; this module is what the processes that run and stop runs need.

Run states: ``queued`` → ``running`` → ``succeeded | partial | failed | cancelled |
interrupted`` (``paused`` for a backfill, ``missed`` for a scheduled fire no process took).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Sequence
from typing import Any

import duckdb
import polars as pl

from enrich.store.catalog import Catalog, WriteBatch, frame, host_and_pid, pid_alive, utcnow
from enrich.store.store import Store


# -- reads ------------------------------------------------------------------------------------
def state_of(catalog: Catalog, run_id: str) -> str | None:
    """The run's state; None for an unknown run."""
    return catalog.scalar(*state_query(run_id))


def state_query(run_id: str) -> tuple[str, list[Any]]:
    """The query behind ``state_of``, to read along with a flush."""
    return "SELECT state FROM runs WHERE run_id = ?", [run_id]


def state_in(con: duckdb.DuckDBPyConnection, run_id: str) -> str | None:
    """The run's state, read on an open connection (to act on it in the same transaction)."""
    rows = con.execute("SELECT state FROM runs WHERE run_id = ?", [run_id]).fetchall()
    return rows[0][0] if rows else None


def is_active(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether the run is ``queued`` or ``running``."""
    return bool(con.execute("SELECT state FROM runs WHERE run_id = ? AND state IN "
                            "('queued', 'running')", [run_id]).fetchall())


def params_and_failed(catalog: Catalog, run_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The run's ``params, state`` (no row: unknown run) and its failed symbols, in order."""
    with catalog.connect() as con:
        run = frame(con, "SELECT params, state FROM runs WHERE run_id = ?", [run_id])
        failed = frame(con, "SELECT symbol FROM tasks WHERE run_id = ? AND state = 'failed' "
                            "ORDER BY symbol", [run_id])
    return run, failed


def active_retry_of(catalog: Catalog, run_id: str) -> str | None:
    """A retry of ``run_id`` still queued or running, if any."""
    return catalog.scalar("SELECT run_id FROM runs WHERE parent_run_id = ? AND state IN "
                          "('queued', 'running') ORDER BY requested_at LIMIT 1", [run_id])


def cancel_requested(store: Store, run_id: str) -> bool:
    """Whether someone asked, through the catalog, for the run to stop between symbols."""
    return bool(store.catalog.scalar(*cancel_query(run_id)))


def cancel_query(run_id: str) -> tuple[str, list[Any]]:
    """The query behind ``cancel_requested``, to read along with a flush."""
    return "SELECT cancel_requested_at IS NOT NULL FROM runs WHERE run_id = ?", [run_id]


def handoffs(catalog: Catalog, pid: int, host: str) -> pl.DataFrame:
    """Runs the command line queued for the process ``pid`` on ``host`` (``run --background``)
    and nobody cancelled yet, oldest first: ``run_id, kind, params``."""
    return catalog.query(
        "SELECT run_id, kind, params FROM runs WHERE handoff AND state = 'queued' "
        "AND pid = ? AND host = ? AND cancel_requested_at IS NULL ORDER BY requested_at",
        [pid, host])


def last_scheduled_for(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    """The newest fire a scheduled (or missed) run was recorded for."""
    return con.execute("SELECT max(scheduled_for) FROM runs WHERE kind = 'scheduled'"
                       ).fetchall()[0][0]



def count_in(con: duckdb.DuckDBPyConnection) -> int:
    """How many runs the catalog holds (health's probe of the catalog)."""
    return con.execute("SELECT count(*) FROM runs").fetchall()[0][0]


_LAST_RUN_SQL = """
    SELECT run_id, kind, state, requested_at, started_at, finished_at, symbols_total,
           symbols_ok, symbols_failed, message
    FROM runs WHERE {where} ORDER BY requested_at DESC LIMIT 1
"""


def last_run(con: duckdb.DuckDBPyConnection, scheduled: bool = False) -> pl.DataFrame:
    """The newest run (of the schedule only, with ``scheduled``), as a frame of 0 or 1 row."""
    return frame(con, _LAST_RUN_SQL.format(where="kind = 'scheduled'" if scheduled else "true"))


def last_provider(con: duckdb.DuckDBPyConnection) -> str | None:
    """The provider of the newest run that names one."""
    prov = con.execute("SELECT provider FROM runs WHERE provider IS NOT NULL "
                       "ORDER BY requested_at DESC LIMIT 1").fetchall()
    return prov[0][0] if prov else None


_FAILED_RUNS_SQL = """
    WITH cand AS (
        SELECT run_id, kind, state, finished_at, symbols_total, symbols_failed, message
        FROM runs
        WHERE state IN ('failed', 'partial') AND kind <> 'backfill'
          AND (finished_at >= ? OR run_id IN (SELECT unnest(?::VARCHAR[]))))
    SELECT c.*,
           (SELECT count(*) FROM tasks t WHERE t.run_id = c.run_id AND t.state = 'failed')
               AS failed_tasks,
           (SELECT list(t.symbol ORDER BY t.symbol) FROM tasks t
            WHERE t.run_id = c.run_id AND t.state = 'failed'
              AND EXISTS (SELECT 1 FROM symbols s WHERE s.symbol = t.symbol AND s.active)
              AND NOT EXISTS (SELECT 1 FROM tasks t2
                              WHERE t2.symbol = t.symbol AND t2.state IN ('ok', 'skipped')
                                AND t2.run_id <> c.run_id
                                AND t2.finished_at >= c.finished_at)) AS still_failing,
           EXISTS (SELECT 1 FROM runs r2 WHERE r2.state = 'succeeded' AND r2.kind <> 'backfill'
                   AND r2.run_id <> c.run_id AND r2.finished_at >= c.finished_at)
               AS later_success
    FROM cand c ORDER BY c.finished_at
"""


def failed_runs(catalog: Catalog, since: dt.datetime, run_ids: Sequence[str]) -> pl.DataFrame:
    """Failed or partial runs (not backfills) finished since ``since``, or named in
    ``run_ids``, oldest first, with ``failed_tasks``, ``still_failing`` (the active symbols
    that failed in the run and have not succeeded in a later one) and ``later_success`` (a
    later run succeeded)."""
    return catalog.query(_FAILED_RUNS_SQL, [since, list(run_ids)])


def _row(con: duckdb.DuckDBPyConnection, sql: str,
         params: list | None = None) -> dict[str, Any] | None:
    cur = con.execute(sql, params or [])
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None


def schedule_history(con: duckdb.DuckDBPyConnection, since: dt.datetime) -> dict[str, Any]:
    """What the runs say about the schedule: ``last`` (the newest run that is not a missed
    fire), ``last_scheduled`` (the newest scheduled run that ran, with its ``fire``),
    ``first_requested`` (the first run ever), ``missed`` (fires recorded as missed after the
    last scheduled run that ran, or after ``since`` when none did, and not before ``since``)
    and ``newest_fire`` (the newest fire a scheduled or missed run was recorded for)."""
    last = _row(con, "SELECT run_id, kind, state, requested_at, finished_at, message "
                     "FROM runs WHERE state <> 'missed' "
                     "ORDER BY requested_at DESC LIMIT 1")
    last_sched = _row(con, "SELECT run_id, state, requested_at, finished_at, "
                           "coalesce(scheduled_for, requested_at) AS fire FROM runs "
                           "WHERE kind = 'scheduled' AND state <> 'missed' "
                           "ORDER BY requested_at DESC LIMIT 1")
    first_run = con.execute("SELECT min(requested_at) FROM runs").fetchall()[0][0]
    anchor_missed = last_sched["fire"] if last_sched else since
    missed = con.execute(
        "SELECT coalesce(scheduled_for, requested_at) FROM runs "
        "WHERE kind = 'scheduled' AND state = 'missed' AND requested_at > ? "
        "AND requested_at >= ? ORDER BY 1", [anchor_missed, since]).fetchall()
    newest_sched = con.execute("SELECT max(coalesce(scheduled_for, requested_at)) "
                               "FROM runs WHERE kind = 'scheduled'").fetchall()[0][0]
    return {"last": last, "last_scheduled": last_sched, "first_requested": first_run,
            "missed": missed, "newest_fire": newest_sched}

def mark_interrupted_runs(store: Store, stale_after_s: float = 600.0,
                          live_run_ids: Sequence[str] = (), others_only: bool = False
                          ) -> list[str]:
    """Runs left ``running``/``queued`` by a dead process become ``interrupted``
    (``others_only``: never this process's own, whatever their heartbeat: a reader's check)."""
    host, me = host_and_pid()
    rows = store.catalog.query(
        "SELECT run_id, pid, host, heartbeat_at FROM runs WHERE state IN ('running', 'queued')"
    )
    now = utcnow()
    dead = []
    for run_id, pid, rhost, hb in rows.iter_rows():
        if run_id in live_run_ids or (others_only and rhost == host and pid == me):
            continue
        if rhost == host:
            gone = pid is None or (pid != me and not pid_alive(pid))
            stale_here = (pid == me and not live_run_ids and hb is not None
                          and (now - hb).total_seconds() > stale_after_s)
            if gone or stale_here:
                dead.append(run_id)
        elif hb is None or (now - hb).total_seconds() > stale_after_s:
            dead.append(run_id)
    if dead:
        ph = ",".join("?" * len(dead))
        b = WriteBatch()
        b.execute(
            f"UPDATE runs SET state = 'interrupted', finished_at = coalesce(finished_at, ?), "
            f"message = coalesce(message, 'the process running it stopped') "
            f"WHERE run_id IN ({ph}) AND state IN ('running', 'queued')", [now, *dead])
        b.execute(
            f"UPDATE tasks SET state = 'interrupted', finished_at = coalesce(finished_at, ?) "
            f"WHERE run_id IN ({ph}) AND state = 'running'", [now, *dead])
        store.catalog.write(b)
    return dead


def close_dead_runs(store: Store) -> None:
    """What a reader does before it shows runs: runs of processes that are gone (killed)
    become ``interrupted`` (``mark_interrupted_runs``), not ``running`` with a growing
    duration. Best effort: a busy or read-only catalog shows them as they are."""
    with contextlib.suppress(Exception):
        mark_interrupted_runs(store, others_only=True)


# -- writes -----------------------------------------------------------------------------------
def add_run(b: WriteBatch, row: dict[str, Any]) -> None:
    """A new run's row (``run_id``, ``kind``, ``state``, ``params``, ... as columns)."""
    b.insert("runs", row)


def add_started(b: WriteBatch, run_id: str, started: dt.datetime, symbols_total: int,
                requests_planned: int, plan: str) -> None:
    """The run is ``running``: its symbols and its plan (JSON) are known. Only a ``queued``
    run starts: one cancelled meanwhile (from any process) stays as it is; read its state
    after the write (``state_query``) to know whether it started."""
    b.execute(
        "UPDATE runs SET state = 'running', started_at = ?, symbols_total = ?, "
        "heartbeat_at = ?, requests_planned = ?, plan = ? WHERE run_id = ? AND state = 'queued'",
        [started, symbols_total, started, requests_planned, plan, run_id])


def add_progress(b: WriteBatch, run_id: str, *, ok: int, failed: int, skipped: int,
                 records: int, requests: int, retries: int) -> None:
    """A run's counts so far, and its heartbeat."""
    b.execute(
        "UPDATE runs SET symbols_ok = ?, symbols_failed = ?, symbols_skipped = ?, "
        "records_written = ?, requests = ?, retries = ?, heartbeat_at = ? WHERE run_id = ?",
        [ok, failed, skipped, records, requests, retries, utcnow(), run_id])


def add_backfill_progress(b: WriteBatch, run_id: str, *, requests: int, records: int,
                          retries: int, ok: int, failed: int, message: str) -> None:
    """A backfill run's counts so far, its progress text and its heartbeat."""
    b.execute(
        "UPDATE runs SET requests = ?, records_written = ?, retries = ?, heartbeat_at = ?, "
        "symbols_ok = ?, symbols_failed = ?, message = ? WHERE run_id = ?",
        [requests, records, retries, utcnow(), ok, failed, message, run_id])


def add_finished(b: WriteBatch, run_id: str, state: str, finished: dt.datetime,
                 error_summary: str, message: str | None, started: dt.datetime,
                 only_active: bool = False) -> None:
    """A run's end (the engine's runs): final state, message, errors by class (JSON).
    ``only_active``: only if the run is still queued or running (a run that ends before it
    started must not overwrite a cancel written meanwhile, by any process)."""
    b.execute(
        "UPDATE runs SET state = ?, finished_at = ?, error_summary = ?, message = ?, "
        "started_at = coalesce(started_at, ?) WHERE run_id = ?"
        + (" AND state IN ('queued', 'running')" if only_active else ""),
        [state, finished, error_summary, message, started, run_id])


def add_backfill_finished(b: WriteBatch, run_id: str, state: str, finished: dt.datetime,
                          message: str, error_summary: str) -> None:
    """A backfill run's end: final state, message, errors by class (JSON)."""
    b.execute("UPDATE runs SET state = ?, finished_at = ?, message = ?, "
              "error_summary = ? WHERE run_id = ?",
              [state, finished, message, error_summary, run_id])


def add_tasks_cancelled(b: WriteBatch, run_id: str, finished: dt.datetime) -> None:
    """The run's tasks still ``running`` are ``cancelled``."""
    b.execute("UPDATE tasks SET state = 'cancelled', finished_at = ? "
              "WHERE run_id = ? AND state = 'running'", [finished, run_id])


def add_finish(b: WriteBatch, run_ids: Sequence[str], state: str, message: str,
               now: dt.datetime) -> None:
    """Close runs still ``queued``/``running``, and their running tasks (never touches a
    finished run)."""
    if not run_ids:
        return
    ph = ",".join("?" * len(run_ids))
    b.execute(f"UPDATE runs SET state = ?, finished_at = ?, message = coalesce(message, ?) "
              f"WHERE run_id IN ({ph}) AND state IN ('queued', 'running')",
              [state, now, message, *run_ids])
    b.execute(f"UPDATE tasks SET state = ?, finished_at = ? "
              f"WHERE run_id IN ({ph}) AND state = 'running'", [state, now, *run_ids])


def finish_runs(catalog: Catalog, run_ids: Sequence[str], state: str, message: str,
                now: dt.datetime) -> None:
    """Close runs still ``queued``/``running`` (never touches a finished run)."""
    b = WriteBatch()
    add_finish(b, run_ids, state, message, now)
    catalog.write(b)


def add_handoffs_interrupted(b: WriteBatch, now: dt.datetime, pid: int, host: str) -> None:
    """Runs handed to the process ``pid`` on ``host`` that it never picked up (it stops)."""
    b.execute("UPDATE runs SET state = 'interrupted', finished_at = ?, "
              "message = 'the service stopped before picking it up' "
              "WHERE handoff AND state = 'queued' AND pid = ? AND host = ?",
              [now, pid, host])


def request_cancel_in(con: duckdb.DuckDBPyConnection, run_id: str, now: dt.datetime,
                      by: str) -> None:
    """Ask the run to stop (its owner polls ``cancel_requested``); inside the caller's
    transaction."""
    con.execute("UPDATE runs SET cancel_requested_at = ?, cancel_requested_by = ? "
                "WHERE run_id = ?", [now, by, run_id])


def cancel_queued_in(con: duckdb.DuckDBPyConnection, run_id: str, now: dt.datetime,
                     message: str) -> None:
    """A ``queued`` run is ``cancelled`` outright; inside the caller's transaction."""
    con.execute("UPDATE runs SET state = 'cancelled', finished_at = ?, "
                "message = ? WHERE run_id = ?", [now, message, run_id])


def add_task(b: WriteBatch, row: dict[str, Any]) -> None:
    """A task's row (``run_id``, ``symbol``, ``state``, ...), inserted or updated."""
    b.upsert("tasks", row)
