"""The JSON API that ``python -m enrich serve`` serves: ``/api/v1/…``, docs at ``/docs``.

Every endpoint calls the read models (``enrich.views``, ``enrich.health``,
``enrich.backfill.jobs``, ``enrich.backfill.heatmap``, ``enrich.alerts``) and the actions
(``enrich.service.Services``, ``enrich.backfill.jobs``, ``enrich.alerts``) that the pages and the
CLI call: this module only translates HTTP to those calls and their results to JSON.

Security: mutations (POST) need ``Authorization: Bearer <token>`` (``enrich.api_token``);
reads are open to loopback clients and need the token from anywhere else. Errors are JSON,
``{"error": {"code": …, "message": …}}``, with a stable ``code``. No response ever holds
the provider's API key, the API token or an alert URL's credentials: every body is scrubbed
of them before it leaves (``_Json``).

FastAPI rather than bare Starlette (which the dashboard already ships): the OpenAPI schema
and ``/docs`` come from the same signatures that validate the requests. The price is
pydantic and ~0.6 s of imports, paid once by ``serve``; ``bench/api.py`` measures what a
request costs over the read model it calls.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import Body, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from enrich import alerts, ui
from enrich.api_token import ensure_token, matches
from enrich.backfill import heatmap as coverage
from enrich.backfill import jobs as backfill
from enrich.channels import SCRUB, Channels
from enrich.config import Settings
from enrich.errors import ConfigError, EnrichError
from enrich.pipeline.requests import UnknownRunError
from enrich.schemas import DATASETS as LAKE_DATASETS
from enrich.schemas import FETCHED
from enrich.service import Services
from enrich.store.universe import match_held
from enrich.symbols import ASSET_CLASSES, validate_symbol
from enrich.views import health as health_view
from enrich.views import metrics as metrics_view
from enrich.views import quality as quality_view
from enrich.views import runs as runs_view
from enrich.views import status as status_view
from enrich.views import symbols as symbols_view

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
MAX_PAGE = 1000
# Parameters typed ``Literal[<a tuple of the package>]``: FastAPI validates them and lists the
# choices in the OpenAPI schema from the one tuple; a type checker wants the values written
# out, hence each one's ``type: ignore[valid-type]``.
PARQUET = "application/vnd.apache.parquet"
PARQUET_TYPES = (PARQUET, "application/x-parquet", "application/parquet")


# -- errors -------------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


# EnrichError.error_class -> HTTP status; anything else is a conflict with the current state.
_STATUS = {"unknown_run": 404, "unknown_backfill": 404, "unknown_alert": 404,
           "unknown_symbol": 404, "config": 400, "invalid_symbol": 400, "usage": 400,
           "catalog_busy": 503, "no_scheduler": 503, "backfill_busy": 409}


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return _Json({"error": {"code": code, "message": message, **extra}}, status_code=status)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_req: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(EnrichError)
    async def enrich_error(_req: Request, exc: EnrichError) -> JSONResponse:
        code = exc.error_class
        status = _STATUS.get(code, 409)
        return _error(status, "conflict" if code == "error" else code, str(exc))

    @app.exception_handler(ValueError)
    async def value_error(_req: Request, exc: ValueError) -> JSONResponse:
        return _error(400, "invalid_request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"where": ".".join(str(x) for x in e.get("loc", ())),
                     "problem": e.get("msg", "")} for e in exc.errors()]
        return _error(422, "invalid_request", "the request does not fit the endpoint: "
                      + "; ".join(f"{p['where']}: {p['problem']}" for p in problems),
                      problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        return _error(500, "internal", "internal error; the service log has the details")


# -- JSON ---------------------------------------------------------------------------------------
def plain(v: Any) -> Any:
    """JSON-ready values: frames as lists of row objects, instants as ISO 8601 in UTC, session
    dates as ``YYYY-MM-DD``, NaN as null."""
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, pl.DataFrame):
        return [plain(r) for r in v.to_dicts()]
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=dt.UTC)
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if hasattr(v, "item"):  # numpy scalars
        return plain(v.item())
    return str(v)


# Filled by create_app: provider keys, API tokens and alert URLs of this process's apps.
_SECRETS: set[str] = set()


def _scrub(body: bytes) -> bytes:
    for secret in sorted(_SECRETS | SCRUB.secrets, key=len, reverse=True):
        if secret and secret.encode() in body:
            body = body.replace(secret.encode(), b"****")
    return body


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _scrub(json.dumps(plain(content), ensure_ascii=False, allow_nan=False,
                                 separators=(",", ":")).encode())


def _page(items: pl.DataFrame | list, total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"total": total, "limit": limit, "offset": offset, "items": items}


def _json_cols(frame: pl.DataFrame, *cols: str) -> list[dict[str, Any]]:
    rows = frame.to_dicts()
    for r in rows:
        for c in cols:
            if isinstance(r.get(c), str):
                with contextlib.suppress(ValueError):
                    r[c] = json.loads(r[c])
    return rows


# -- the app ------------------------------------------------------------------------------------
class _Desk:
    """What the endpoints act on: one process's settings, services and token."""

    def __init__(self, settings: Settings, services: Services, token: str):
        self.settings = settings
        self.svc = services
        self.store = services.store
        self.catalog = services.store.catalog
        self.token = token
        self.channels = (services.alerts.channels if services.alerts is not None
                         else Channels(settings.alert_urls))
        self._known: frozenset[str] = frozenset()

    def held(self, symbols: list[str]) -> tuple[list[str], list[str]]:
        """(the held spelling of each of ``symbols``, those not in the universe): a symbol
        matches itself, else the one held symbol equal to it but for case
        (``enrich.store.universe.match_held``). Remembers the universe, so starting a run costs
        no catalog access (``POST /runs`` answers at once); a symbol not remembered is looked
        up again before it is refused, and one removed since is refused by the run itself."""
        if symbols and all(s in self._known for s in symbols):
            return list(symbols), []
        self._known = frozenset(self.catalog.query("SELECT symbol FROM symbols")["symbol"])
        return match_held(self._known, symbols)

    def now(self) -> dt.datetime:
        """The data's instant (``ENRICH_NOW`` when set): freshness, coverage."""
        return self.settings.now()

    def wall(self) -> dt.datetime:
        return self.svc.clock()


_LOOPBACK_NAMES = ("localhost", "testclient")


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _who(request: Request) -> str:
    host = request.client.host if request.client else "?"
    return f"api ({host})"


def create_app(settings: Settings, services: Services, *, token: str | None = None) -> FastAPI:
    """The API over ``services`` (its store, scheduler and run workers)."""
    token = token or ensure_token(settings)[0]
    desk = _Desk(settings, services, token)
    _SECRETS.update(s for s in (settings.api_key, token, *settings.alert_urls) if s)

    def need_token(request: Request) -> None:
        if not matches(desk.token, _bearer(request)):
            raise ApiError(401, "unauthorized", "this needs `Authorization: Bearer <token>`; "
                           "`python -m enrich api token` shows the token")

    def may_read(request: Request) -> None:
        if not _is_loopback(request.client.host if request.client else None):
            need_token(request)

    app = FastAPI(
        title="enrich", version="1", default_response_class=_Json,
        description="The desk's JSON API: status, runs, metrics, health, backfills, quality, "
                    "coverage and alerts; runs, schedule, backfills, fills and alerts as "
                    "actions. POST needs `Authorization: Bearer <token>` "
                    "(`python -m enrich api token`). Instants are UTC (ISO 8601, `Z`); session "
                    "dates are exchange dates.")
    _install_errors(app)
    _read_routes(_Routes(app, may_read), desk)
    _action_routes(_Routes(app, need_token), desk)
    app.state.desk = desk
    return app


class _Routes:
    """Routes under ``PREFIX`` guarded by one dependency (registered on the app itself, so
    ``app.routes`` lists every endpoint)."""

    def __init__(self, app: FastAPI, guard: Any):
        self.app, self.deps = app, [Depends(guard)]

    def get(self, path: str, **kw: Any):
        return self.app.get(PREFIX + path, dependencies=self.deps, **kw)

    def post(self, path: str, **kw: Any):
        return self.app.post(PREFIX + path, dependencies=self.deps, **kw)


# -- reads --------------------------------------------------------------------------------------
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0)]


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
        out = status_view.overview(desk.catalog, desk.now())
        out["open_alerts"] = alerts.open_incidents(desk.catalog, desk.wall())
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
        frame = symbols_view.dataset_rows(desk.store.lake, sym, dataset, timeframe, start, end)
        accept = request.headers.get("accept", "")
        fmt = format or ("csv" if "text/csv" in accept else
                         "parquet" if any(t in accept for t in PARQUET_TYPES) else "json")
        name = f"{sym.replace(':', '_')}_{dataset}"
        if fmt == "csv":
            return Response(_scrub(ui.to_csv_bytes(frame)), media_type="text/csv",
                            headers={"content-disposition": f'attachment; filename="{name}.csv"'})
        if fmt == "parquet":
            return Response(ui.to_parquet_bytes(frame), media_type=PARQUET, headers={
                "content-disposition": f'attachment; filename="{name}.parquet"'})
        return _Json({"symbol": sym, "dataset": dataset, "from": start, "to": end,
                      "rows": frame.height, "items": frame})

    @r.get("/runs", summary="Run history, newest first, filtered and paged")
    def runs(state: Literal[runs_view.RUN_STATES] | None = None,  # type: ignore[valid-type]
             kind: Literal[runs_view.RUN_KINDS] | None = None,  # type: ignore[valid-type]
             symbol: str | None = None, since: dt.datetime | None = None,
             until: dt.datetime | None = None, limit: Limit = 20,
             offset: Offset = 0) -> _Json:
        page, total = runs_view.runs_search(
            desk.catalog, limit, offset, state, validate_symbol(symbol) if symbol else None,
            kind, _utc(since), _utc(until))
        return _Json(_page(_json_cols(page, "params", "error_summary"), total, limit, offset))

    @r.get("/runs/{run_id}", summary="One run: progress, tasks, fetch summary, errors")
    def run(run_id: str) -> _Json:
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
        now = desk.now()
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
        state = health_view.scheduler_state(desk.catalog)
        return _Json({**state, "schedule_utc": desk.settings.schedule_utc.strftime("%H:%M"),
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
                   rule: Literal[(*alerts.RULE_NAMES, "test")] | None = None,  # type: ignore[valid-type]
                   limit: Limit = 50, offset: Offset = 0) -> _Json:
        page, total = alerts.incidents(desk.catalog, desk.wall(), state, rule, limit, offset)
        return _Json({**_page(_json_cols(page, "deliveries"), total, limit, offset),
                      "snoozes": alerts.active_snoozes(desk.catalog, desk.wall()),
                      "channels": desk.channels.labels})

    @r.get("/alerts/{incident_id}", summary="One incident and its events")
    def alert(incident_id: str) -> _Json:
        ev = alerts.events(desk.catalog, incident_id)
        if ev.is_empty():
            raise ApiError(404, "unknown_alert", f"no alert {incident_id}")
        inc, _ = alerts.incidents(desk.catalog, desk.wall(), incident_id=incident_id)
        return _Json({**(_json_cols(inc, "deliveries")[0] if inc.height else {}),
                      "events": _json_cols(ev, "deliveries")})

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


def _utc(ts: dt.datetime | None) -> dt.datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


# -- actions ------------------------------------------------------------------------------------
class RunRequest(BaseModel):
    symbols: list[str] | None = Field(None, description="default: the active universe")
    datasets: list[Literal[FETCHED]] | None = None  # type: ignore[valid-type]
    asset_class: Literal[ASSET_CLASSES] | None = None  # type: ignore[valid-type]
    timeframe: Literal["1d", "1h", "5m"] = "1d"
    lookback: int | None = Field(None, ge=1, description="days of history for a first fetch")


class PauseRequest(BaseModel):
    reason: str | None = Field(None, max_length=500)


class BackfillStart(BaseModel):
    dataset: Literal[backfill.DATASETS]  # type: ignore[valid-type]
    symbols: list[str] = Field(default_factory=list, description="empty: the active universe")
    years: int | None = Field(None, ge=1)
    days: int | None = Field(None, ge=1)
    since: dt.date | None = None
    until: dt.date | None = None
    timeframe: Literal["1d", "1h", "5m"] = "1d"
    expirations: list[dt.date] = Field(default_factory=list)
    moneyness: tuple[float, float] | None = None
    monthly: int | None = Field(None, ge=1, le=12)
    chunk_days: int | None = Field(None, ge=1)
    dry_run: bool = Field(False, description="return the plan; start nothing")


class BackfillResume(BaseModel):
    retry_failed: bool = False


class FillRequest(BaseModel):
    dataset: Literal[coverage.DATASETS]  # type: ignore[valid-type]
    symbols: list[str] = Field(min_length=1)
    start: dt.date = Field(alias="from")
    end: dt.date = Field(alias="to")
    include_failed: bool = Field(False, description="also re-fetch cells a check failed on")


class AuditRequest(BaseModel):
    symbols: list[str] | None = None
    datasets: list[Literal[coverage.DATASETS]] | None = None  # type: ignore[valid-type]


class SnoozeRequest(BaseModel):
    period: str = Field(default="1h", alias="for", description="30m, 2h, 1d or 1w")
    reason: str | None = Field(default=None, max_length=500)


def _known(desk: _Desk, symbols: list[str] | None) -> list[str] | None:
    if not symbols:
        return None
    syms, unknown = desk.held([validate_symbol(s) for s in symbols])
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

    @r.post("/schedule/pause", summary="Pause the daily schedule (survives restarts)")
    def pause(request: Request, body: Annotated[PauseRequest | None, Body()] = None) -> _Json:
        desk.svc.pause(by=_who(request), reason=(body.reason if body else None) or None)
        return _Json(health_view.scheduler_state(desk.catalog))

    @r.post("/schedule/resume", summary="Resume the daily schedule")
    def resume(request: Request) -> _Json:
        desk.svc.resume(by=_who(request))
        return _Json({**health_view.scheduler_state(desk.catalog),
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
        run_id = backfill.start_in_background(desk.settings, request, store=desk.store)
        return _Json({"run_id": run_id, "backfill_id": _backfill_of(desk, run_id)},
                     status_code=202)

    def stop(request: Request, backfill_id: str, intent: str) -> _Json:
        run_id = backfill.stop_backfill(desk.catalog, backfill_id, intent, _who(request))
        return _Json({"backfill_id": backfill_id, "status": intent, "stopping_run": run_id},
                     status_code=202)

    @r.post("/backfills/{backfill_id}/pause", status_code=202,
            summary="Pause a backfill after its current chunk")
    def pause_backfill(request: Request, backfill_id: str) -> _Json:
        return stop(request, backfill_id, "paused")

    @r.post("/backfills/{backfill_id}/cancel", status_code=202,
            summary="Cancel a backfill after its current chunk (chunks done are kept)")
    def cancel_backfill(request: Request, backfill_id: str) -> _Json:
        return stop(request, backfill_id, "cancelled")

    @r.post("/backfills/{backfill_id}/resume", status_code=202,
            summary="Resume a backfill (only its failed chunks with retry_failed)")
    def resume_backfill(backfill_id: str,
                        body: Annotated[BackfillResume | None, Body()] = None) -> _Json:
        run_id = backfill.start_in_background(
            desk.settings, backfill_id=backfill_id, store=desk.store,
            retry_failed=bool(body and body.retry_failed))
        return _Json({"run_id": run_id, "backfill_id": backfill_id}, status_code=202)

    @r.post("/fills", status_code=202,
            summary="Fill exactly the missing sessions of symbols × a date range (what the "
                    "heatmap's drag-to-fill does)")
    def fill(body: FillRequest) -> _Json:
        syms = _known(desk, body.symbols) or []
        plan = coverage.plan_range(desk.catalog, body.dataset, syms, body.start, body.end,
                                   desk.now(), body.include_failed,
                                   history_years=desk.settings.history_years)
        if plan.empty:
            return _Json({"run_ids": [], "cells": 0, "plan": plan.describe()}, status_code=200)
        ids = coverage.start_fill(plan, settings=desk.settings, store=desk.store,
                                  trigger=lambda **kw: desk.svc.trigger(kind="api", **kw))
        return _Json({"run_ids": ids, "cells": plan.cells, "plan": plan.describe()},
                     status_code=202)

    @r.post("/quality/audit", status_code=202,
            summary="Re-check what is stored, without fetching (in the background)")
    def audit(body: Annotated[AuditRequest | None, Body()] = None) -> _Json:
        from enrich.checks import quality_run

        syms = _known(desk, body.symbols if body else None)
        datasets = body.datasets if body else None
        threading.Thread(target=quality_run.audit, args=(desk.store, syms, datasets),
                         name="quality-audit", daemon=True).start()
        return _Json({"started": True, "symbols": syms or "active universe",
                      "datasets": datasets or "all"}, status_code=202)

    @r.post("/alerts/test", summary="Send a test alert to every channel now")
    def test_alert(request: Request) -> _Json:
        return _Json(alerts.send_test(desk.catalog, desk.channels, _who(request), desk.wall))

    @r.post("/alerts/{alert_id}/ack", summary="Acknowledge an incident")
    def ack(request: Request, alert_id: str) -> _Json:
        return _Json(alerts.acknowledge(desk.catalog, alert_id, _who(request), desk.wall()))

    @r.post("/alerts/{target}/snooze",
            summary="Send nothing for an incident (its id) or a rule for a period")
    def snooze(request: Request, target: Annotated[str, Path(description="alert id or rule")],
               body: Annotated[SnoozeRequest | None, Body()] = None) -> _Json:
        body = body or SnoozeRequest()
        now = desk.wall()
        return _Json(alerts.snooze(desk.catalog, target, now + alerts.parse_period(body.period),
                                   _who(request), now, body.reason))

    @r.post("/alerts/{target}/unsnooze", summary="End a snooze now")
    def unsnooze(target: str) -> _Json:
        if not alerts.unsnooze(desk.catalog, target):
            raise ApiError(404, "not_snoozed", f"{target} is not snoozed")
        return _Json({"target": target, "snoozed": False})


def _backfill_of(desk: _Desk, run_id: str) -> str | None:
    return desk.catalog.scalar("SELECT backfill_id FROM backfills WHERE last_run_id = ?",
                               [run_id])


# -- serving ------------------------------------------------------------------------------------
class ApiServer:
    """uvicorn on a socket bound up front (so a taken port fails before anything starts),
    running on a daemon thread; ``stop`` ends it within a couple of seconds."""

    def __init__(self, host: str, port: int):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise ConfigError(f"ENRICH_API_ADDRESS {host}:{port}: {exc.strerror}; another "
                              "`serve` may hold it: pick another port, or "
                              "ENRICH_API_ADDRESS=off") from None
        self.sock.listen(128)
        self.host = host
        self.port = self.sock.getsockname()[1]
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, app: FastAPI, timeout: float = 15.0) -> ApiServer:
        import uvicorn

        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self.sock]}, name="enrich-api",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise EnrichError(f"the API did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 3.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        self.sock.close()


def serve(settings: Settings, services: Services,
          bound: ApiServer | None = None) -> tuple[ApiServer, str]:
    """Start the API for ``services`` on ``ENRICH_API_ADDRESS`` (or the ``bound`` socket);
    returns the server and where the token comes from."""
    token, source = ensure_token(settings)
    server = bound or ApiServer(settings.api_host or "127.0.0.1", settings.api_port)
    if not _is_loopback(server.host):
        log.warning("the API listens on %s: reads from other hosts need the token too",
                    server.url)
    app = create_app(settings, services, token=token)
    app.state.desk.held([])  # learn the universe before the first request
    return server.start(app), source


__all__ = ["ApiError", "ApiServer", "PREFIX", "create_app", "plain", "serve"]
