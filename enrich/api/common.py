"""What every route of the API shares: its errors (JSON, with a stable ``code``), JSON
responses scrubbed of every secret, paging, the desk the routes work on, and who may call.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import math
from typing import Any

import polars as pl
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from enrich.channels import SCRUB, Channels
from enrich.config import Settings
from enrich.errors import EnrichError
from enrich.redact import MIN_PIECE
from enrich.service import Services
from enrich.store.universe import match_held

log = logging.getLogger(__name__)


PREFIX = "/api/v1"


MAX_PAGE = 1000


MAX_OFFSET = 1_000_000_000  # past any table here; larger ones overflowed a slice (a 500)


# Parameters typed ``Literal[<a tuple of the package>]``: FastAPI validates them and lists the
# choices in the OpenAPI schema from the one tuple; a type checker wants the values written
# out, hence each one's ``type: ignore[valid-type]``.
PARQUET = "application/vnd.apache.parquet"


PARQUET_TYPES = (PARQUET, "application/x-parquet", "application/parquet")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, /, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


# EnrichError.error_class -> HTTP status; anything else is a conflict with the current state.
_STATUS = {"unknown_run": 404, "unknown_backfill": 404, "unknown_alert": 404,
           "unknown_symbol": 404, "config": 400, "invalid_symbol": 400, "usage": 400,
           "catalog_busy": 503, "catalog_missing": 503, "no_scheduler": 503,
           "backfill_busy": 409}


def _error(status: int, code: str, message: str, /, **extra: Any) -> JSONResponse:
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
        problems = [_problem(e) for e in exc.errors()]
        return _error(422, "invalid_request", "the request does not fit the endpoint: "
                      + "; ".join(f"{p['where']}: {p['problem']}" for p in problems),
                      problems=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        allow = (exc.headers or {}).get("Allow")
        if exc.status_code == 405:  # Starlette names only the first route of the path
            allow = ", ".join(sorted(
                {m for r in req.app.routes for m in getattr(r, "methods", None) or ()
                 if m != "HEAD" and r.matches(req.scope)[0] != Match.NONE})) or allow
        message = (f"{req.method} {req.url.path} is not allowed; use {allow}" if allow
                   else str(exc.detail))
        response = _error(exc.status_code, code, message)
        if allow:
            response.headers["Allow"] = allow
        return response

    @app.exception_handler(Exception)
    async def internal(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed")
        return _error(500, "internal", "internal error; the service log has the details")


def _problem(e: Any) -> dict[str, str]:
    """One validation error as ``where`` and ``problem``; a body that is not JSON says why
    and where (FastAPI's own is "body.1: JSON decode error"), a missing one that it is."""
    if e.get("type") == "json_invalid":
        loc = e.get("loc", ())
        at = f" at character {loc[-1]}" if len(loc) > 1 else ""
        why = (e.get("ctx") or {}).get("error", "")
        return {"where": "body", "problem": f"not valid JSON ({why}{at})" if why
                else f"not valid JSON{at}"}
    if tuple(e.get("loc", ())) == ("body",) and e.get("type") == "missing":
        return {"where": "body", "problem": "a JSON object is required; none was sent"}
    return {"where": ".".join(str(x) for x in e.get("loc", ())), "problem": e.get("msg", "")}


class _JsonBodies:
    """Every body this API takes is JSON: a POST that declares another type, or none, is
    read as JSON all the same (``curl -d`` sends ``application/x-www-form-urlencoded``,
    ``requests.post(data=…)`` no type; FastAPI refused both with "Input should be a valid
    dictionary"). Reading them as JSON gives cross-site forms nothing: every POST needs the
    bearer token, which a browser sends cross-site only after a CORS preflight this API never
    grants."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"].startswith(PREFIX)):
            headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-type"]
            scope = {**scope, "headers": [*headers, (b"content-type", b"application/json")]}
        await self.app(scope, receive, send)


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
    """``body`` without any secret this process knows of ``MIN_PIECE`` characters or more.

    Shorter ones are left (``enrich.redact``'s rule): the alert channels register every
    3-character token of an unknown URL for their own messages, and masking "abc" in every
    response corrupted ids that contain it (a run id ``…b7babcdc`` came back ``…b7b****dc``).
    """
    for secret in _scrubbed():
        if secret.encode() in body:
            body = body.replace(secret.encode(), b"****")
    return body


def _scrubbed() -> list[str]:
    """The secrets ``_scrub`` and ``_scrub_frame`` take out, longest first."""
    return sorted((s for s in _SECRETS | SCRUB.secrets if len(s) >= MIN_PIECE), key=len,
                  reverse=True)


def _scrub_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """``frame`` with every secret ``_scrub`` takes out of a body taken out of its text
    columns: what a binary export (Parquet, compressed) carries cannot be scrubbed as bytes."""
    secrets = _scrubbed()
    texts = [c for c, t in frame.schema.items() if t == pl.String]
    if not secrets or not texts:
        return frame
    exprs = []
    for c in texts:
        expr = pl.col(c)
        for secret in secrets:
            expr = expr.str.replace_all(secret, "****", literal=True)
        exprs.append(expr)
    return frame.with_columns(exprs)


class _Json(JSONResponse):
    def render(self, content: Any) -> bytes:
        return _scrub(json.dumps(plain(content), ensure_ascii=False, allow_nan=False,
                                 separators=(",", ":")).encode())


def _page(items: pl.DataFrame | list, total: int, limit: int, offset: int) -> dict[str, Any]:
    return {"total": total, "limit": limit, "offset": offset, "items": items}


class _Desk:
    """What the endpoints act on: one process's settings and services."""

    def __init__(self, settings: Settings, services: Services):
        self.settings = settings
        self.svc = services
        self.store = services.store
        self.catalog = services.store.catalog
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


_LOOPBACK_NAMES = ("localhost",)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _names_loopback(host_header: str | None) -> bool:
    """Whether a request's ``Host`` names this machine (``localhost``, ``127.0.0.1``,
    ``[::1]``, any port). A page on another site whose name it has pointed at 127.0.0.1 (DNS
    rebinding) reaches the API from a loopback client too, but under its own name."""
    if not host_header:
        return False
    name = host_header.strip().lower()
    if name.startswith("["):  # [::1]:8765
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return _is_loopback(name)  # "localhost" among the names it knows


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _who(request: Request) -> str:
    host = request.client.host if request.client else "?"
    return f"api ({host})"


class _Routes:
    """Routes under ``PREFIX`` guarded by one dependency (registered on the app itself, so
    ``app.routes`` lists every endpoint)."""

    def __init__(self, app: FastAPI, guard: Any):
        self.app, self.deps = app, [Depends(guard)]

    def get(self, path: str, **kw: Any):
        return self.app.get(PREFIX + path, dependencies=self.deps, **kw)

    def post(self, path: str, **kw: Any):
        return self.app.post(PREFIX + path, dependencies=self.deps, **kw)
