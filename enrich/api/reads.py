"""The API's read endpoints (GET): status, symbols, runs, metrics, health, backfills, quality,
coverage and alerts, each over the read model the pages use.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import Query, Request
from fastapi.responses import Response

from enrich import ui
from enrich.alerts import rules as alert_rules
from enrich.api.common import (
    MAX_OFFSET,
    MAX_PAGE,
    PARQUET,
    PARQUET_TYPES,
    ApiError,
    _Desk,
    _Json,
    _page,
    _Routes,
    _scrub,
    _scrub_frame,
    plain,
)
from enrich.backfill import heatmap as coverage
from enrich.backfill import jobs as backfill
from enrich.schemas import DATASETS as LAKE_DATASETS
from enrich.store import runs as runs_store
from enrich.store.quarantine import despite_bad_files
from enrich.symbols import ASSET_CLASSES, validate_symbol
from enrich.views import alerts as alerts_view
from enrich.views import health as health_view
from enrich.views import metrics as metrics_view
from enrich.views import quality as quality_view
from enrich.views import runs as runs_view
from enrich.views import status as status_view
from enrich.views import symbols as symbols_view

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
SET_ASIDE = "X-Enrich-Set-Aside"  # a CSV or Parquet answer's note of files set aside


Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def _symbol_info(desk: _Desk, raw: str) -> dict[str, Any]:
    """The universe's row of ``raw`` (``kimpl`` finds KIMpL when it is the only match)."""
    sym = validate_symbol(raw)
    info = symbols_view.symbol_info(desk.catalog, sym)
    if info is None:
        raise ApiError(404, "unknown_symbol", f"{sym} is not in the universe")
    return info


def _symbol(desk: _Desk, raw: str) -> str:
    """The held spelling of ``raw``."""
    return _symbol_info(desk, raw)["symbol"]


def _read_routes(r: _Routes, desk: _Desk) -> None:  # noqa: C901 - one route per endpoint
    @r.get("/overview", summary="Is everything OK: states, distribution, 24 h metrics, "
                                "active runs, open alerts")
    def overview() -> _Json:
        runs_store.close_dead_runs(desk.store)  # a killed run's process is gone: interrupted
        out = status_view.overview(desk.catalog, desk.now(), desk.wall())
        out["open_alerts"] = alerts_view.open_incidents(desk.catalog, desk.wall())
        return _Json(out)

    @r.get("/symbols", summary="The universe with its status, filtered and paged")
    def symbols(search: str | None = None,
                state: Literal[status_view.GRID_STATES] | None = None,  # type: ignore[valid-type]
                dataset: Literal[status_view.STATUS_DATASETS] | None = None,  # type: ignore[valid-type]
                asset_class: Literal[ASSET_CLASSES] | None = None,  # type: ignore[valid-type]
                sort: Literal[tuple(status_view.SYMBOL_SORTS)] = "needs attention",  # type: ignore[valid-type]
                limit: Limit = 100, offset: Offset = 0) -> _Json:
        rows, total = status_view.symbols_page(desk.catalog, desk.now(), search, state, dataset,
                                               asset_class, sort, limit, offset)
        return _Json(_page(rows, total, limit, offset))

    @r.get("/symbols/{symbol}", summary="One symbol: status per dataset, quality, last error")
    def symbol(symbol: str) -> _Json:
        info = _symbol_info(desk, symbol)
        sym = info["symbol"]
        grid = status_view.status_grid(desk.catalog, desk.now(), sym, active_only=False)
        errors = grid.filter(pl.col("last_error_at").is_not_null()).sort(
            "last_error_at", descending=True)
        last = errors.select("dataset", "last_error_class", "last_error_message",
                             "last_error_at").head(1).to_dicts()
        checks = quality_view.symbol_checks(desk.catalog, sym)
        return _Json({
            **info, "datasets": grid,
            "quality": quality_view.quality_scores(desk.catalog, sym),
            "failing_checks": checks.filter(~pl.col("passed")) if not checks.is_empty()
            else checks,
            "last_error": last[0] if last else None,
            "fetch": symbols_view.symbol_fetch_stats(desk.catalog, sym)})

    @r.get("/symbols/{symbol}/{dataset}",
           summary="A symbol's rows of one dataset for a date range: JSON, CSV or Parquet",
           description="Pick the format with `Accept` (application/json, text/csv, "
                       f"{PARQUET}) or `?format=`.")
    def rows(request: Request, symbol: str,
             dataset: Literal[tuple(LAKE_DATASETS)],  # type: ignore[valid-type]
             start: Annotated[dt.date | None, Query(alias="from")] = None,
             end: Annotated[dt.date | None, Query(alias="to")] = None,
             timeframe: Literal["1d", "1h", "5m"] = "1d",
             format: Literal["json", "csv", "parquet"] | None = None) -> Response:
        sym = _symbol(desk, symbol)
        if start and end and end < start:
            raise ApiError(400, "invalid_request", f"to ({end}) is before from ({start})")
        # A file found unreadable is set aside: the rows that remain, and a note naming it.
        frame, errors = despite_bad_files(lambda: symbols_view.dataset_rows(
            desk.store.lake, sym, dataset, timeframe, start, end))
        set_aside = [str(e) for e in errors]
        accept = request.headers.get("accept", "")
        fmt = format or ("csv" if "text/csv" in accept else
                         "parquet" if any(t in accept for t in PARQUET_TYPES) else "json")
        name = f"{sym.replace(':', '_')}_{dataset}"
        # A file body has no room for the note: it goes in a header (ASCII, as headers are).
        noted = {SET_ASIDE: "; ".join(set_aside).encode("ascii", "backslashreplace").decode()
                 } if set_aside else {}
        if fmt == "csv":
            return Response(_scrub(ui.to_csv_bytes(frame)), media_type="text/csv", headers={
                "content-disposition": f'attachment; filename="{name}.csv"', **noted})
        if fmt == "parquet":
            body = ui.to_parquet_bytes(_scrub_frame(frame))
            return Response(body, media_type=PARQUET, headers={
                "content-disposition": f'attachment; filename="{name}.parquet"', **noted})
        return _Json({"symbol": sym, "dataset": dataset, "from": start, "to": end,
                      "rows": frame.height, "items": frame, "set_aside": set_aside})

    @r.get("/runs", summary="Run history, newest first, filtered and paged")
    def runs(state: Literal[runs_view.RUN_STATES] | None = None,  # type: ignore[valid-type]
             kind: Literal[runs_view.RUN_KINDS] | None = None,  # type: ignore[valid-type]
             symbol: str | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: Limit = 20,
             offset: Offset = 0) -> _Json:
        since, until = _utc(since, "since"), _utc(until, "until")
        if since and until and until < since:
            raise ApiError(400, "invalid_request", f"until ({plain(until)}) is before since "
                           f"({plain(since)})")
        runs_store.close_dead_runs(desk.store)
        page, total = runs_view.runs_search(
            desk.catalog, limit, offset, state, validate_symbol(symbol) if symbol else None,
            kind, since, until)
        return _Json(_page(ui.json_rows(page, "params", "error_summary"), total, limit, offset))

    @r.get("/runs/{run_id}", summary="One run: progress, tasks, fetch summary, errors")
    def run(run_id: str) -> _Json:
        runs_store.close_dead_runs(desk.store)
        detail = runs_view.run_detail(desk.catalog, run_id)
        if detail is None:
            if run_id in desk.svc.active_runs():  # queued: its row is being written
                return _Json({"run_id": run_id, "state": "queued", "progress": None,
                              "tasks": [], "fetch": [], "errors": _page([], 0, 100, 0)})
            raise ApiError(404, "unknown_run", f"no run {run_id}")
        errors, n = runs_view.run_fetch_log(desk.catalog, run_id, errors_only=True)
        return _Json({**detail, "progress": runs_view.run_progress(desk.catalog, run_id),
                     "tasks": runs_view.run_tasks(desk.catalog, run_id),
                     "fetch": runs_view.run_fetch_summary(desk.catalog, run_id),
                     "errors": _page(errors, n, 100, 0)})

    @r.get("/metrics", summary="Pipeline metrics: window totals, per dataset, per hour, "
                               "all time")
    def metrics(hours: Annotated[int, Query(ge=1, le=24 * 365)] = 24) -> _Json:
        now = desk.wall()  # the logs' clock (ENRICH_NOW is the data's "as of")
        since = now - dt.timedelta(hours=hours)
        cat = desk.catalog
        return _Json({
            "since": since, "hours": hours, "pipeline": metrics_view.pipeline_metrics(cat, since),
            "fetch_by_dataset": metrics_view.fetch_by_dataset(cat, since),
            "compute_by_dataset": metrics_view.compute_by_dataset(cat, since),
            "errors_by_class": metrics_view.errors_by_class(cat, since),
            "failures_by_class": metrics_view.failures_by_class(cat, since),
            "hourly": metrics_view.hourly(cat, now, min(hours, 24 * 14)),
            "alltime": metrics_view.alltime_stats(cat),
            "overall": metrics_view.overall_success(cat),
            "rows_refused": metrics_view.quality(cat)})

    @r.get("/health", summary="200 when healthy; 503 with the reasons when the scheduler is "
                              "dead or the catalog unreachable",
           responses={503: {"description": "unhealthy"}})
    def health(probe: bool = False) -> _Json:
        h = desk.svc.health(probe=probe)
        reasons = []
        if not h["catalog"]["ok"]:
            reasons.append(f"catalog unreachable: {h['catalog']['error']}")
        sched = h.get("scheduler") or {}
        if sched.get("state") == "dead":
            reasons.append(f"scheduler dead: pid {sched['pid']} on {sched['host']} last beat "
                           f"at {plain(sched['heartbeat_at'])}")
        if probe and h["provider"]["ok"] is False:
            reasons.append(f"provider: {h['provider']['status']} {h['provider']['message']}")
        return _Json({**h, "ok": not reasons, "reasons": reasons},
                     status_code=200 if not reasons else 503)

    @r.get("/schedule", summary="The daily schedule: paused or not, owner, next fire")
    def schedule() -> _Json:
        from enrich.pipeline import scheduler as sched

        state = health_view.scheduler_state(desk.catalog)
        # running | paused | stopped | dead, as `schedule show --json` says it
        live = sched.read_state(desk.catalog).liveness(desk.wall())
        return _Json({**state, "state": live,
                      "schedule_utc": desk.settings.schedule_utc.strftime("%H:%M"),
                      "next_fire_utc": desk.svc.next_fire_time()})

    @r.get("/backfills", summary="Backfills, newest first, with progress and throughput")
    def backfills(limit: Limit = 50) -> _Json:
        rows = backfill.backfill_progress_summary(desk.catalog, now=desk.wall(), limit=limit)
        return _Json({"total": len(rows), "items": rows})

    @r.get("/backfills/{backfill_id}", summary="One backfill: progress, steps, failed chunks")
    def one_backfill(backfill_id: str) -> _Json:
        rows = backfill.backfill_progress_summary(desk.catalog, backfill_id, now=desk.wall())
        if not rows:
            raise ApiError(404, "unknown_backfill", f"no backfill {backfill_id}")
        return _Json({**rows[0], "steps": backfill.backfill_steps(desk.catalog, backfill_id),
                      "failed_chunks": backfill.backfill_chunks(desk.catalog, backfill_id,
                                                                state="failed", limit=100)})

    @r.get("/alerts", summary="Incidents (open, resolved) and tests, newest first; active "
                              "snoozes; the channels")
    def alert_list(state: Literal["open", "resolved", "test"] | None = None,
                   rule: Literal[(*alert_rules.RULE_NAMES, "test")] | None = None,  # type: ignore[valid-type]
                   limit: Limit = 50, offset: Offset = 0) -> _Json:
        page, total = alerts_view.incidents(desk.catalog, desk.wall(), state, rule, limit, offset)
        return _Json({**_page(ui.json_rows(page, "deliveries"), total, limit, offset),
                      "snoozes": alerts_view.active_snoozes(desk.catalog, desk.wall()),
                      "channels": desk.channels.labels})

    @r.get("/alerts/{incident_id}", summary="One incident and its events")
    def alert(incident_id: str) -> _Json:
        ev = alerts_view.events(desk.catalog, incident_id)
        if ev.is_empty():
            raise ApiError(404, "unknown_alert", f"no alert {incident_id}")
        inc, _ = alerts_view.incidents(desk.catalog, desk.wall(), incident_id=incident_id)
        return _Json({**(ui.json_rows(inc, "deliveries")[0] if inc.height else {}),
                      "events": ui.json_rows(ev, "deliveries")})

    @r.get("/quality", summary="Quality checks and scores (of a symbol; only failing ones)")
    def quality(symbol: str | None = None, failing: bool = False,
                dataset: Literal[coverage.DATASETS] | None = None) -> _Json:  # type: ignore[valid-type]
        sym = _symbol(desk, symbol) if symbol else None
        return _Json({"symbol": sym, "failing": failing,
                      **quality_view.quality_report(desk.catalog, sym, failing, dataset)})

    @r.get("/coverage", summary="The coverage heatmap's gaps as rows (missing and failed "
                                "sessions per symbol)")
    def gaps(dataset: Literal[coverage.DATASETS],  # type: ignore[valid-type]
             sessions: Annotated[int, Query(ge=1, le=5000)] = 60) -> _Json:
        return _Json(coverage.gaps_report(desk.catalog, dataset, desk.now(), sessions))

    @r.get("/settings", summary="The effective configuration (secrets masked) and alert "
                                "channels")
    def settings_() -> _Json:
        return _Json({"settings": desk.settings.public(),
                      "alert_channels": desk.channels.labels})


def _utc(ts: dt.datetime | None, name: str) -> dt.datetime | None:
    if ts is None:
        return None
    try:
        return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is in year 0 in UTC
        raise ApiError(400, "invalid_request", f"{name} ({ts.isoformat()}) is not an instant "
                       "of the years 1-9999 in UTC") from None
