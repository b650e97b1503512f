"""Runs: the history, one run's detail, progress, tasks and fetch log."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from typing import Any

import polars as pl

from enrich.store.catalog import Catalog, frame, utcnow
from enrich.views.common import _count, _one

RUN_STATES = ("queued", "running", "succeeded", "partial", "failed", "cancelled", "paused",
              "interrupted", "missed")


ACTIVE_RUN_STATES = ("queued", "running")


RUN_KINDS = ("manual", "scheduled", "retry", "backfill", "cli", "api")


# fetch_log rows that end a step (not the intermediate "retried" attempts).
_STEP_DONE = "status IN ('ok', 'up_to_date', 'failed')"


_STEP_OK = "status IN ('ok', 'up_to_date')"


def runs_table(catalog: Catalog, limit: int = 20, offset: int = 0, state: str | None = None,
               symbol: str | None = None, kind: str | None = None,
               since: dt.datetime | None = None, *,
               now: dt.datetime | None = None) -> pl.DataFrame:
    """Recent runs, newest first, filtered in SQL."""
    return runs_search(catalog, limit=limit, offset=offset, state=state, symbol=symbol,
                       kind=kind, since=since, now=now)[0]


def _runs_where(state, symbol, kind, since, until) -> tuple[str, list]:
    where, params = ["true"], []
    if state:
        where.append("r.state = ?")
        params.append(state)
    if kind:
        where.append("r.kind = ?")
        params.append(kind)
    if since:
        where.append("r.requested_at >= ?")
        params.append(since)
    if until:
        where.append("r.requested_at < ?")
        params.append(until)
    if symbol:
        # Any case: tickers are case-sensitive, but a filter typed in another case still finds
        # them (KIMpL and a KIMPL would both show).
        where.append("EXISTS (SELECT 1 FROM tasks t WHERE t.run_id = r.run_id "
                     "AND lower(t.symbol) = lower(?))")
        params.append(symbol)
    return " AND ".join(where), params


def runs_search(catalog: Catalog, limit: int = 20, offset: int = 0, state: str | None = None,
                symbol: str | None = None, kind: str | None = None,
                since: dt.datetime | None = None,
                until: dt.datetime | None = None, *,
                now: dt.datetime | None = None) -> tuple[pl.DataFrame, int]:
    """A page of runs (newest first) matching the filters, and the number of matches.

    ``since`` / ``until`` bound ``requested_at`` (UTC instants, ``until`` exclusive).
    ``duration_s`` of a run still going runs to ``now``, the clock that stamps runs
    (default the wall clock; never the database's), and is never negative: a run stamped by
    a host whose clock is ahead of this one has run for no time this clock can see.
    """
    where, params = _runs_where(state, symbol, kind, since, until)
    sql = f"""
        SELECT r.run_id, r.kind, r.state, r.requested_at, r.started_at, r.finished_at,
               r.symbols_total, r.symbols_ok, r.symbols_failed, r.symbols_skipped,
               r.records_written, r.requests, r.retries, r.error_summary, r.message, r.params,
               greatest(0, date_diff('millisecond', r.started_at,
                                     coalesce(r.finished_at, ?::TIMESTAMPTZ))) / 1000.0
                   AS duration_s
        FROM runs r WHERE {where}
        ORDER BY r.requested_at DESC LIMIT ? OFFSET ?
    """
    with catalog.connect() as con:
        page = frame(con, sql, [now or utcnow(), *params, limit, offset])
        total = _count(con, f"SELECT count(*) FROM runs r WHERE {where}", params)
    return page, int(total)


def finished_runs(catalog: Catalog) -> int:
    """How many runs have ended (any final state): it changes when one ends, whatever the
    clock says (a page compares it with what it rendered)."""
    return int(catalog.scalar(
        "SELECT count(*) FROM runs WHERE state NOT IN ('queued', 'running')") or 0)


def active_runs(catalog: Catalog, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Queued and running runs with live progress (see ``run_progress``)."""
    rows = catalog.query(
        "SELECT run_id FROM runs WHERE state IN ('queued', 'running') ORDER BY requested_at")
    return [p for rid in rows["run_id"].to_list()
            if (p := run_progress(catalog, rid, now)) is not None]


def run_progress(catalog: Catalog, run_id: str,
                 now: dt.datetime | None = None) -> dict[str, Any] | None:
    """A run's progress: done / total symbols, the symbols in flight, requests made against
    the plan's budget, ETA in seconds.

    On a rate-limited provider the requests bound the run, so ``eta_s`` is the planned
    requests still to make at the plan's rate; otherwise (no limit, or none of the planned
    requests left: none were planned, or retries used them up) it extrapolates the run's mean time
    per finished symbol (None until one finished).
    """
    with catalog.connect() as con:
        r = _one(con, """
            SELECT run_id, kind, state, requested_at, started_at, finished_at, heartbeat_at,
                   symbols_total, symbols_ok, symbols_failed, symbols_skipped,
                   records_written, requests, retries, message, requests_planned,
                   CAST(json_extract(plan, '$.rate_limit_per_min') AS DOUBLE) AS rate_per_min
            FROM runs WHERE run_id = ?""", [run_id])
        if r.get("run_id") is None:
            return None
        t = _one(con, """
            SELECT count(*) FILTER (state NOT IN ('running')) AS done,
                   count(*) FILTER (state = 'failed') AS failed,
                   list(symbol ORDER BY started_at) FILTER (state = 'running') AS current
            FROM tasks WHERE run_id = ?""", [run_id])
    now = now or utcnow()
    total = int(r["symbols_total"] or 0)
    done = max(int(t["done"] or 0),
               int((r["symbols_ok"] or 0) + (r["symbols_failed"] or 0)
                   + (r["symbols_skipped"] or 0)))
    done = min(done, total) if total else done
    elapsed = None
    if r["started_at"] is not None:
        elapsed = ((r["finished_at"] or now) - r["started_at"]).total_seconds()
    eta = None
    planned, made, rate = r["requests_planned"], int(r["requests"] or 0), r["rate_per_min"]
    fraction = (done / total) if total else (1.0 if r["finished_at"] else 0.0)
    work_left = r["state"] == "running" and planned is not None and int(planned) > made
    if work_left and rate:
        eta = (int(planned) - made) * 60.0 / rate
    elif work_left and elapsed and made:
        # Not rate-limited: the requests are still the work. Symbols found up to date end
        # at once, so counting symbols read "80 %, 3 s left" with 78 % of the requests to
        # make (a QA pass, 3,850 symbols of which 1,000 new).
        eta = elapsed / made * (int(planned) - made)
        fraction = min(fraction, made / int(planned))
    elif r["state"] == "running" and elapsed and done and total > done:
        eta = elapsed / done * (total - done)
    r.update(done=done, total=total, current=list(t["current"] or []),
             failed_so_far=int(t["failed"] or 0), elapsed_s=elapsed, eta_s=eta,
             fraction=fraction)
    return r


def run_detail(catalog: Catalog, run_id: str) -> dict[str, Any] | None:
    """Every column of a run, with ``params`` and ``error_summary`` parsed from JSON, and
    ``symbols_not_attempted``: of an ended run, the symbols it neither enriched, found up
    to date nor failed (a run that stopped itself left them as they were)."""
    with catalog.connect() as con:
        r = _one(con, "SELECT * FROM runs WHERE run_id = ?", [run_id])
    if r.get("run_id") is None:
        return None
    counted = sum(r.get(k) or 0 for k in ("symbols_ok", "symbols_failed", "symbols_skipped"))
    r["symbols_not_attempted"] = (max(0, (r.get("symbols_total") or 0) - counted)
                                  if r.get("finished_at") is not None else 0)
    for k in ("params", "error_summary"):
        if isinstance(r.get(k), str):
            with contextlib.suppress(ValueError):
                r[k] = json.loads(r[k])
    return r


def run_tasks(catalog: Catalog, run_id: str) -> pl.DataFrame:
    """The run's symbol tasks (timeline rows), with duration in seconds."""
    return catalog.query("""
        SELECT symbol, state, started_at, finished_at,
               date_diff('millisecond', started_at, finished_at) / 1000.0 AS duration_s,
               records, requests, retries, error_class, error_message
        FROM tasks WHERE run_id = ? ORDER BY started_at NULLS LAST, symbol""", [run_id])


def match_symbol(symbols: list[str], typed: str | None) -> str | None:
    """The symbol of ``symbols`` that ``typed`` names: as written, else in any case (tickers
    are case-sensitive, a filter typed in another case still finds them); ``typed`` itself
    when none does (it matches no row), None when nothing was typed."""
    typed = (typed or "").strip()
    if not typed:
        return None
    if typed in symbols:
        return typed
    return next((s for s in symbols if s.lower() == typed.lower()), typed)


def failed_symbols(catalog: Catalog, run_id: str) -> list[str]:
    rows = catalog.query(
        "SELECT symbol FROM tasks WHERE run_id = ? AND state = 'failed' ORDER BY symbol",
        [run_id])
    return rows["symbol"].to_list()


def run_fetch_summary(catalog: Catalog, run_id: str) -> pl.DataFrame:
    """Per dataset within a run: steps, failures, rows, requests, p50/p95 response time."""
    return catalog.query(f"""
        SELECT dataset, count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failed,
               count(*) FILTER (status = 'retried') AS retries,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               quantile_cont(duration_ms, 0.5) FILTER (status IN ('ok', 'failed')) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log WHERE run_id = ? GROUP BY dataset ORDER BY dataset""", [run_id])


def run_fetch_log(catalog: Catalog, run_id: str, symbol: str | None = None,
                  errors_only: bool = False, limit: int = 100,
                  offset: int = 0) -> tuple[pl.DataFrame, int]:
    """A page of a run's fetch-log rows (response times and records), and the match count."""
    where, params = ["run_id = ?"], [run_id]
    if symbol:
        where.append("symbol = ?")
        params.append(symbol)
    if errors_only:
        where.append("status IN ('failed', 'retried')")
    w = " AND ".join(where)
    with catalog.connect() as con:
        page = frame(con, f"""
            SELECT symbol, dataset, status, started_at, duration_ms, records, received,
                   rejected, requests, attempt, error_class, error_message,
                   window_start, window_end
            FROM fetch_log WHERE {w}
            ORDER BY started_at, symbol, dataset LIMIT ? OFFSET ?""", [*params, limit, offset])
        total = _count(con, f"SELECT count(*) FROM fetch_log WHERE {w}", params)
    return page, int(total)
