"""Pipeline metrics: success rates, requests, rows, errors, by dataset and over time."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from enrich.store.catalog import Catalog
from enrich.views.common import _one, _ratio
from enrich.views.quality import quality_by_check, quality_by_dataset, quality_daily
from enrich.views.runs import _STEP_DONE, _STEP_OK


def _log_metrics_sql(table: str) -> str:
    if table == "fetch_log":
        extra = """, CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
                   CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
                   CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
                   count(*) FILTER (status = 'retried') AS retries"""
        done, ok = _STEP_DONE, _STEP_OK
        timed = "status IN ('ok', 'failed')"
    else:
        extra = ""
        done, ok, timed = "status IN ('ok', 'failed')", "status = 'ok'", "true"
    return f"""
        SELECT count(*) FILTER ({done}) AS steps,
               count(*) FILTER ({ok}) AS ok,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows
               {extra},
               quantile_cont(duration_ms, 0.5) FILTER ({timed}) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER ({timed}) AS p95_ms
        FROM {table}
    """


def pipeline_metrics(catalog: Catalog, since: dt.datetime | None = None) -> dict[str, dict]:
    """Fetch and compute pipeline totals since ``since`` (all time when None).

    fetch: steps (finished fetch steps), ok, failed, success_rate, rows (rows written to the
    lake), requests (provider calls), received, rejected, retries, p50_ms / p95_ms (duration
    of steps that called the provider). compute: steps, ok, failed, success_rate, rows,
    p50_ms, p95_ms.
    """
    where = " WHERE started_at >= ?" if since else ""
    params = [since] if since else []
    with catalog.connect() as con:
        fetch = _one(con, _log_metrics_sql("fetch_log") + where, params)
        compute = _one(con, _log_metrics_sql("compute_log") + where, params)
    for m in (fetch, compute):
        m["success_rate"] = _ratio(m["ok"], m["steps"])
        for k, v in list(m.items()):
            if k not in ("p50_ms", "p95_ms", "success_rate") and v is not None:
                m[k] = int(v)
    return {"fetch": fetch, "compute": compute}


def overall_success(catalog: Catalog) -> dict[str, Any]:
    """All-time success rates: runs, symbol tasks, fetch steps, each with its denominator
    (``runs_finished``, ``tasks_finished``, ``fetch_steps_finished``).

    A run counts when it ran to its end (succeeded, partial, failed, interrupted, missed):
    a run someone paused or cancelled stopped on request, which says nothing of the desk.
    A symbol task is one symbol in one run, so a symbol counts once per run.
    """
    with catalog.connect() as con:
        runs = _one(con, """
            SELECT count(*) FILTER (state IN ('succeeded','partial','failed',
                                              'interrupted','missed')) AS finished,
                   count(*) FILTER (state = 'succeeded') AS succeeded,
                   count(*) FILTER (state = 'partial') AS partial,
                   count(*) FILTER (state = 'failed') AS failed
            FROM runs""")
        tasks = _one(con, """
            SELECT count(*) FILTER (state IN ('ok', 'skipped', 'failed')) AS finished,
                   count(*) FILTER (state IN ('ok', 'skipped')) AS ok
            FROM tasks""")
        steps = _one(con, f"""
            SELECT count(*) FILTER ({_STEP_DONE}) AS finished,
                   count(*) FILTER ({_STEP_OK}) AS ok FROM fetch_log""")
    return {
        "runs_finished": int(runs["finished"] or 0),
        "run_success_rate": _ratio(runs["succeeded"], runs["finished"]),
        "tasks_finished": int(tasks["finished"] or 0),
        "task_success_rate": _ratio(tasks["ok"], tasks["finished"]),
        "fetch_steps_finished": int(steps["finished"] or 0),
        "fetch_success_rate": _ratio(steps["ok"], steps["finished"]),
    }


def latest_enrichment(catalog: Catalog) -> dict[str, Any]:
    """Newest successful dataset update and the newest finished run."""
    with catalog.connect() as con:
        st = _one(con, "SELECT max(last_success_at) AS last_success_at FROM symbol_status")
        run = _one(con, """
            SELECT run_id, kind, state, finished_at, message FROM runs
            WHERE finished_at IS NOT NULL ORDER BY finished_at DESC LIMIT 1""")
    return {"last_success_at": st["last_success_at"], "last_run": run
            if run.get("run_id") else None}


def alltime_stats(catalog: Catalog) -> dict[str, Any]:
    """Counts since the catalog was created."""
    with catalog.connect() as con:
        runs = _one(con, """
            SELECT count(*) AS runs, min(requested_at) AS first_run_at,
                   max(requested_at) AS last_run_at,
                   CAST(coalesce(sum(records_written), 0) AS BIGINT) AS rows_written,
                   median(date_diff('millisecond', started_at, finished_at)) / 1000.0
                       AS median_run_s
            FROM runs""")
        by_state = dict(con.execute(
            "SELECT state, count(*) FROM runs GROUP BY state ORDER BY state").fetchall())
        syms = _one(con, """
            SELECT count(*) AS symbols, count(*) FILTER (active) AS active_symbols
            FROM symbols""")
        tasks = _one(con, "SELECT count(*) AS symbol_tasks FROM tasks")
    out = {**runs, **syms, **tasks, "runs_by_state": by_state}
    for k in ("runs", "rows_written", "symbols", "active_symbols", "symbol_tasks"):
        out[k] = int(out[k] or 0)
    return out


def fetch_by_dataset(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    """Per dataset: steps, success rate, requests, rows, received, rejected, p50/p95 ms."""
    where = "WHERE started_at >= ?" if since else ""
    return catalog.query(f"""
        SELECT dataset, count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER ({_STEP_OK}) / nullif(count(*) FILTER ({_STEP_DONE}), 0)
                   AS success_rate,
               count(*) FILTER (status = 'failed') AS failed,
               count(*) FILTER (status = 'retried') AS retries,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               quantile_cont(duration_ms, 0.5) FILTER (status IN ('ok', 'failed')) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log {where} GROUP BY dataset ORDER BY dataset""",
        [since] if since else [])


def compute_by_dataset(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    where = "WHERE started_at >= ?" if since else ""
    return catalog.query(f"""
        SELECT dataset, count(*) AS steps,
               count(*) FILTER (status = 'ok') / nullif(count(*), 0) AS success_rate,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               quantile_cont(duration_ms, 0.5) AS p50_ms,
               quantile_cont(duration_ms, 0.95) AS p95_ms
        FROM compute_log {where} GROUP BY dataset ORDER BY dataset""",
        [since] if since else [])


def errors_by_class(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    """Failed fetch steps and retried attempts per dataset × error class."""
    where = "AND started_at >= ?" if since else ""
    return catalog.query(f"""
        SELECT dataset, coalesce(error_class, 'unknown') AS error_class,
               count(*) FILTER (status = 'failed') AS failures,
               count(*) FILTER (status = 'retried') AS retried
        FROM fetch_log WHERE status IN ('failed', 'retried') {where}
        GROUP BY ALL ORDER BY failures DESC, retried DESC, dataset""",
        [since] if since else [])


def failures_by_class(catalog: Catalog, since: dt.datetime | None = None) -> pl.DataFrame:
    """Failed fetch steps and failed computations per error class (newest first)."""
    where = "AND started_at >= ?" if since else ""
    p = [since, since] if since else []
    return catalog.query(f"""
        SELECT error_class, count(*) AS failures, count(DISTINCT symbol) AS symbols,
               max(started_at) AS last_at, arg_max(error_message, started_at) AS last_message
        FROM (SELECT coalesce(error_class, 'unknown') AS error_class, symbol, started_at,
                     error_message
              FROM fetch_log WHERE status = 'failed' {where}
              UNION ALL
              SELECT coalesce(error_class, 'unknown'), symbol, started_at, error_message
              FROM compute_log WHERE status = 'failed' {where})
        GROUP BY error_class ORDER BY failures DESC""", p)


def fetch_daily(catalog: Catalog, now: dt.datetime, days: int = 30) -> pl.DataFrame:
    """Per UTC day × dataset over the last ``days`` days: steps, failures, requests, rows,
    rejected, p50/p95 ms."""
    return catalog.query(f"""
        SELECT CAST(date_trunc('day', started_at) AS DATE) AS day, dataset,
               count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               quantile_cont(duration_ms, 0.5) FILTER (status IN ('ok', 'failed')) AS p50_ms,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log WHERE started_at >= ?
        GROUP BY ALL ORDER BY day, dataset""", [now - dt.timedelta(days=days)])


def compute_daily(catalog: Catalog, now: dt.datetime, days: int = 30) -> pl.DataFrame:
    return catalog.query("""
        SELECT CAST(date_trunc('day', started_at) AS DATE) AS day, dataset,
               count(*) AS steps, count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               quantile_cont(duration_ms, 0.5) AS p50_ms,
               quantile_cont(duration_ms, 0.95) AS p95_ms
        FROM compute_log WHERE started_at >= ?
        GROUP BY ALL ORDER BY day, dataset""", [now - dt.timedelta(days=days)])


def hourly(catalog: Catalog, now: dt.datetime, hours: int = 24) -> pl.DataFrame:
    """Per UTC hour over the last ``hours``: fetch steps, failures, requests, rows, p95 ms."""
    return catalog.query(f"""
        SELECT date_trunc('hour', started_at) AS hour,
               count(*) FILTER ({_STEP_DONE}) AS steps,
               count(*) FILTER (status = 'failed') AS failed,
               CAST(coalesce(sum(requests), 0) AS BIGINT) AS requests,
               CAST(coalesce(sum(records), 0) AS BIGINT) AS rows,
               quantile_cont(duration_ms, 0.95) FILTER (status IN ('ok', 'failed')) AS p95_ms
        FROM fetch_log WHERE started_at >= ?
        GROUP BY ALL ORDER BY hour""", [now - dt.timedelta(hours=hours)])


def quality(catalog: Catalog) -> pl.DataFrame:
    """Data quality per dataset: rows received, refused by validation, and the share refused."""
    return catalog.query("""
        SELECT dataset, CAST(coalesce(sum(received), 0) AS BIGINT) AS received,
               CAST(coalesce(sum(rejected), 0) AS BIGINT) AS rejected,
               -- A step's received rows include those refused alone; a refused payload
               -- logs none received, its refused rows are all it had.
               CAST(coalesce(sum(rejected), 0) AS BIGINT)
                   / nullif(sum(CASE WHEN received = 0 THEN rejected ELSE received END), 0)
                   AS rejected_share,
               count(*) FILTER (rejected > 0) AS steps_with_rejections,
               count(*) FILTER (error_class = 'validation') AS payloads_refused,
               max(started_at) FILTER (rejected > 0) AS last_rejection_at
        FROM fetch_log GROUP BY dataset ORDER BY dataset""")


def recent_rejections(catalog: Catalog, limit: int = 20) -> pl.DataFrame:
    """The newest fetch steps that refused rows, with the causes noted."""
    return catalog.query("""
        SELECT started_at, symbol, dataset, received, rejected, error_message AS causes
        FROM fetch_log WHERE rejected > 0
        ORDER BY started_at DESC LIMIT ?""", [limit])


def metrics_totals(catalog: Catalog) -> dict[str, Any]:
    """What the Metrics page shows for all time, read on one attach of the catalog (its
    reads scan the same logs, so one attach saves the file's reopening and re-reading):
    ``alltime`` (``alltime_stats``), ``fetch_by_dataset``, ``errors_by_class``,
    ``compute_by_dataset``, ``quality``, ``recent_rejections`` (20), ``quality_by_dataset``,
    ``quality_by_check``."""
    with catalog.connect():
        return {"alltime": alltime_stats(catalog),
                "fetch_by_dataset": fetch_by_dataset(catalog),
                "errors_by_class": errors_by_class(catalog),
                "compute_by_dataset": compute_by_dataset(catalog),
                "quality": quality(catalog),
                "recent_rejections": recent_rejections(catalog, 20),
                "quality_by_dataset": quality_by_dataset(catalog),
                "quality_by_check": quality_by_check(catalog)}


def metrics_window(catalog: Catalog, now: dt.datetime, days: int = 30) -> dict[str, Any]:
    """What the Metrics page shows for recent time, on one attach: ``last_24h``
    (``pipeline_metrics`` since ``now`` - 24 h), ``hourly``, and the last ``days`` days of
    ``fetch_daily``, ``compute_daily`` and ``quality_daily``."""
    with catalog.connect():
        return {"last_24h": pipeline_metrics(catalog, now - dt.timedelta(hours=24)),
                "hourly": hourly(catalog, now),
                "fetch_daily": fetch_daily(catalog, now, days),
                "compute_daily": compute_daily(catalog, now, days),
                "quality_daily": quality_daily(catalog, now, days)}
