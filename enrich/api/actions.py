"""The API's actions (POST, token required): runs, the schedule, backfills, fills, audits and
alerts, each the same call the pages and the CLI make.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import Body, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from enrich.alerts import lifecycle as alert_lifecycle
from enrich.api.common import PREFIX, ApiError, _Desk, _Json, _Routes, _who, plain
from enrich.backfill import heatmap as coverage
from enrich.backfill import jobs as backfill
from enrich.config import MAX_BACKFILL_DAYS, MAX_BACKFILL_YEARS
from enrich.pipeline.requests import UnknownRunError
from enrich.schemas import FETCHED
from enrich.symbols import ASSET_CLASSES, validate_symbol
from enrich.views import health as health_view
from enrich.views import runs as runs_view


class _Body(BaseModel):
    """A request body: a field it does not know is refused (a typo such as ``symbol`` for
    ``symbols`` would otherwise be dropped, and the request run without it)."""

    model_config = ConfigDict(extra="forbid")


class RunRequest(_Body):
    # An empty list is refused, not read as "everything": omit the field for that.
    symbols: list[str] | None = Field(None, min_length=1,
                                      description="omitted: the active universe")
    datasets: list[Literal[FETCHED]] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, description="omitted: every dataset")
    asset_class: Literal[ASSET_CLASSES] | None = None  # type: ignore[valid-type]
    timeframe: Literal["1d", "1h", "5m"] = "1d"
    lookback: int | None = Field(None, ge=1, description="days of history for a first fetch")


class PauseRequest(_Body):
    reason: str | None = Field(None, max_length=500)


class BackfillStart(_Body):
    dataset: Literal[backfill.DATASETS]  # type: ignore[valid-type]
    symbols: list[str] = Field(default_factory=list, description="empty: the active universe")
    years: int | None = Field(None, ge=1, le=MAX_BACKFILL_YEARS)
    days: int | None = Field(None, ge=1, le=MAX_BACKFILL_DAYS)
    since: dt.date | None = None
    until: dt.date | None = None
    timeframe: Literal["1d", "1h", "5m"] = "1d"
    expirations: list[dt.date] = Field(default_factory=list)
    moneyness: tuple[float, float] | None = None
    monthly: int | None = Field(None, ge=1, le=12)
    chunk_days: int | None = Field(None, ge=1, le=MAX_BACKFILL_DAYS)
    dry_run: bool = Field(False, description="return the plan; start nothing")


class BackfillResume(_Body):
    retry_failed: bool = False


class FillRequest(_Body):
    dataset: Literal[coverage.DATASETS]  # type: ignore[valid-type]
    symbols: list[str] = Field(min_length=1)
    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")
    include_failed: bool = Field(False, description="also re-fetch cells a check failed on")


class AuditRequest(_Body):
    symbols: list[str] | None = None
    datasets: list[Literal[coverage.DATASETS]] | None = None  # type: ignore[valid-type]


class SnoozeRequest(_Body):
    period: str = Field(default="1h", alias="for", description="30m, 2h, 1d or 1w")
    reason: str | None = Field(default=None, max_length=500)


SHOWN_UNKNOWN = 10


def _known(desk: _Desk, symbols: list[str] | None) -> list[str] | None:
    if not symbols:
        return None
    syms, unknown = desk.held([validate_symbol(s) for s in symbols])
    if len(unknown) > SHOWN_UNKNOWN:  # named, not all echoed back (a list of 200,000: 3 MB)
        raise ApiError(400, "unknown_symbol", f"{len(unknown)} symbols are not in the "
                       f"universe, among them {', '.join(unknown[:SHOWN_UNKNOWN])}; add them "
                       "with `python -m enrich symbols add …`")
    if unknown:
        raise ApiError(400, "unknown_symbol", f"{', '.join(unknown)} not in the universe; add "
                       f"with `python -m enrich symbols add {' '.join(unknown)}`")
    return syms


def _action_routes(r: _Routes, desk: _Desk) -> None:  # noqa: C901 - one route per endpoint
    @r.post("/runs", status_code=202, summary="Start a run now; 202 with its id at once")
    def start_run(body: RunRequest) -> _Json:
        run_id = desk.svc.trigger(symbols=_known(desk, body.symbols), datasets=body.datasets,
                                  asset_class=body.asset_class, timeframe=body.timeframe,
                                  lookback=body.lookback, kind="api")
        return _Json({"run_id": run_id, "state": "queued", "url": f"{PREFIX}/runs/{run_id}"},
                     status_code=202)

    @r.post("/runs/{run_id}/cancel", status_code=202,
            summary="Stop a run between symbols (409 if it already ended)")
    def cancel(request: Request, run_id: str) -> _Json:
        if not desk.svc.cancel(run_id, by=_who(request)):
            state = runs_view.run_detail(desk.catalog, run_id) or {}
            raise ApiError(409, "run_finished", f"run {run_id} already ended: "
                           f"{state.get('state')}", state=state.get("state"))
        return _Json({"run_id": run_id, "cancel_requested": True}, status_code=202)

    @r.post("/runs/{run_id}/retry-failed", status_code=202,
            summary="Run again only the symbols that failed in a run")
    def retry(run_id: str) -> _Json:
        try:
            new = desk.svc.retry_failed(run_id)
        except UnknownRunError as exc:
            raise ApiError(404, "unknown_run", str(exc)) from None
        return _Json({"run_id": new, "parent_run_id": run_id, "state": "queued",
                      "url": f"{PREFIX}/runs/{new}"}, status_code=202)

    @r.post("/schedule/pause", summary="Pause the daily schedule (survives restarts); "
                                       "already paused: 200 with changed false and the "
                                       "first pause's who, when and why")
    def pause(request: Request, body: Annotated[PauseRequest | None, Body()] = None) -> _Json:
        changed = desk.svc.pause(by=_who(request), reason=(body.reason if body else None) or None)
        state = health_view.scheduler_state(desk.catalog)
        message = "paused" if changed else (
            f"already paused by {state.get('paused_by')} at {plain(state.get('paused_at'))}; "
            "nothing changed")
        return _Json({**state, "changed": changed, "message": message})

    @r.post("/schedule/resume", summary="Resume the daily schedule (not paused: 200 with "
                                        "changed false)")
    def resume(request: Request) -> _Json:
        changed = desk.svc.resume(by=_who(request))
        return _Json({**health_view.scheduler_state(desk.catalog), "changed": changed,
                      "message": "resumed" if changed else "not paused; nothing changed",
                      "next_fire_utc": desk.svc.next_fire_time()})

    @r.post("/backfills", status_code=202,
            summary="Start a backfill (202 with its run), or plan one with dry_run (200)")
    def start_backfill(body: BackfillStart) -> _Json:
        from enrich.quant.options_history import DEFAULT_MONEYNESS, DEFAULT_MONTHLY

        request = backfill.BackfillRequest(
            dataset=body.dataset, symbols=tuple(_known(desk, body.symbols) or ()),
            years=body.years, days=body.days, since=body.since, until=body.until,
            timeframe=body.timeframe, expirations=tuple(body.expirations),
            moneyness=body.moneyness or DEFAULT_MONEYNESS,
            monthly=body.monthly or DEFAULT_MONTHLY, chunk_days=body.chunk_days).validated()
        if body.dry_run:
            from enrich.providers import make_provider

            plan = backfill.plan_backfill(desk.store, desk.settings, request,
                                          make_provider(desk.settings))
            return _Json(plan.to_json(), status_code=200)
        try:
            run_id = backfill.start_in_background(desk.settings, request, store=desk.store)
        except backfill.NothingToDoError as exc:
            return _nothing_to_do(exc)
        return _Json({"run_id": run_id, "backfill_id": _backfill_of(desk, run_id)},
                     status_code=202)

    def stop(request: Request, backfill_id: str, intent: str) -> _Json:
        try:
            out = backfill.request_stop(desk.catalog, backfill_id, intent, _who(request))
        except backfill.BackfillStateError as exc:
            raise ApiError(409, exc.error_class, str(exc), status=exc.status) from None
        paused = {"paused_by": out.paused_by, "paused_at": out.paused_at} \
            if intent == "paused" else {}
        return _Json({"backfill_id": backfill_id, "status": intent, "stopping_run": out.run_id,
                      "changed": out.changed, **paused},
                     status_code=202 if out.changed else 200)

    @r.post("/backfills/{backfill_id}/pause", status_code=202,
            summary="Pause a backfill after its current chunk (409 if it is complete or "
                    "cancelled; already paused: 200, changed false)")
    def pause_backfill(request: Request, backfill_id: str) -> _Json:
        return stop(request, backfill_id, "paused")

    @r.post("/backfills/{backfill_id}/cancel", status_code=202,
            summary="Cancel a backfill after its current chunk (chunks done are kept; 409 if "
                    "it is complete or cancelled)")
    def cancel_backfill(request: Request, backfill_id: str) -> _Json:
        return stop(request, backfill_id, "cancelled")

    @r.post("/backfills/{backfill_id}/resume", status_code=202,
            summary="Resume a backfill (only its failed chunks with retry_failed; nothing "
                    "left to run: 200 with run_id null and its status)")
    def resume_backfill(backfill_id: str,
                        body: Annotated[BackfillResume | None, Body()] = None) -> _Json:
        try:
            run_id = backfill.start_in_background(
                desk.settings, backfill_id=backfill_id, store=desk.store,
                retry_failed=bool(body and body.retry_failed))
        except backfill.NothingToDoError as exc:
            return _nothing_to_do(exc)
        return _Json({"run_id": run_id, "backfill_id": backfill_id}, status_code=202)

    @r.post("/fills", status_code=202,
            summary="Fill exactly the missing sessions of symbols × a date range (what the "
                    "heatmap's drag-to-fill does)")
    def fill(body: FillRequest) -> _Json:
        # As `enrich fill` refuses them (exit 2): a 400 saying what to fix, not "nothing to fill".
        if body.end < body.start:
            raise ApiError(400, "invalid_request", f"to ({body.end}) is before from "
                                                   f"({body.start})")
        today = desk.now().date()  # UTC: never before the exchange's date
        if body.start > today:
            raise ApiError(400, "invalid_request", f"from ({body.start}) is in the future "
                           f"(today is {today} UTC): no session there can be filled yet")
        syms = _known(desk, body.symbols) or []
        plan = coverage.plan_range(desk.catalog, body.dataset, syms, body.start, body.end,
                                   desk.now(), body.include_failed,
                                   history_years=desk.settings.history_years)
        if plan.empty:
            return _Json({"run_ids": [], "cells": 0, "plan": plan.describe()}, status_code=200)
        ids = coverage.start_fill(plan, settings=desk.settings, store=desk.store,
                                  trigger=lambda **kw: desk.svc.trigger(kind="api", **kw))
        return _Json({"run_ids": ids, "cells": plan.cells, "plan": plan.describe()},
                     status_code=202 if ids else 200)  # none: its backfills were complete

    @r.post("/quality/audit", status_code=202,
            summary="Re-check what is stored, without fetching (in the background)")
    def audit(body: Annotated[AuditRequest | None, Body()] = None) -> _Json:
        syms = _known(desk, body.symbols if body else None)
        datasets = body.datasets if body else None
        if not desk.svc.audit(syms, datasets):
            raise ApiError(409, "audit_running", "a re-check of stored data is still running "
                                                 "in this process; ask again when it has ended")
        return _Json({"started": True, "symbols": syms or "active universe",
                      "datasets": datasets or "all"}, status_code=202)

    @r.post("/alerts/test", summary="Send a test alert to every channel now")
    def test_alert(request: Request) -> _Json:
        return _Json(alert_lifecycle.send_test(desk.catalog, desk.channels, _who(request),
                     desk.wall))

    @r.post("/alerts/{alert_id}/ack",
            summary="Acknowledge an open incident (409 if resolved; already acknowledged: "
                    "200 with changed false and the first acknowledgement)")
    def ack(request: Request, alert_id: str) -> _Json:
        return _Json(alert_lifecycle.acknowledge(desk.catalog, alert_id, _who(request),
                     desk.wall()))

    # ``:path``: a quality check's key has a slash (``quality:bars/ohlc``), raw or as %2F.
    @r.post("/alerts/{target:path}/snooze",
            summary="Send nothing for an incident (its id or dedupe key) or a rule for a "
                    "period (404 for what no alert can be)")
    def snooze(request: Request, target: Annotated[str, Path(
            description="alert id, dedupe key (quality:bars/ohlc) or rule")],
               body: Annotated[SnoozeRequest | None, Body()] = None) -> _Json:
        body = body or SnoozeRequest()
        now = desk.wall()
        until = now + alert_lifecycle.parse_period(body.period)
        return _Json(alert_lifecycle.snooze(desk.catalog, target, until, _who(request), now,
                     body.reason))

    @r.post("/alerts/{target:path}/unsnooze", summary="End a snooze now")
    def unsnooze(target: str) -> _Json:
        if not alert_lifecycle.unsnooze(desk.catalog, target, desk.wall()):
            raise ApiError(404, "not_snoozed", f"{target} is not snoozed")
        return _Json({"target": target, "snoozed": False})


def _nothing_to_do(exc: backfill.NothingToDoError) -> _Json:
    """A start or resume with no chunk left to run: 200 (as the CLI's exit 0; a second pause
    is 200 too), no run, and the backfill's status; a run started is 202 with its id."""
    return _Json({"run_id": None, "backfill_id": exc.backfill_id, "status": exc.status,
                  "changed": False, "message": str(exc)}, status_code=200)


def _backfill_of(desk: _Desk, run_id: str) -> str | None:
    return desk.catalog.scalar("SELECT backfill_id FROM backfills WHERE last_run_id = ?",
                               [run_id])
