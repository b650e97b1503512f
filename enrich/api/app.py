"""The JSON API that ``python -m enrich serve`` serves: ``/api/v1/…``, docs at ``/docs``.

Every endpoint calls the read models (``enrich.views``, ``enrich.health``,
``enrich.backfill.jobs``, ``enrich.backfill.heatmap``, ``enrich.alerts``) and the actions
(``enrich.service.Services``, ``enrich.backfill.jobs``, ``enrich.alerts``) that the pages and the
CLI call: this package only translates HTTP to those calls and their results to JSON
(``reads``, ``actions``; ``common`` holds what they share, ``serving`` the server).

Security: mutations (POST) need ``Authorization: Bearer <token>`` (``enrich.api_token``);
reads are open to loopback clients and need the token from anywhere else. Errors are JSON,
``{"error": {"code": …, "message": …}}``, with a stable ``code``. No response ever holds
the provider's API key, the API token or an alert URL's credentials: every body is scrubbed
of them before it leaves (``common._Json``).

FastAPI rather than bare Starlette (which the dashboard already ships): the OpenAPI schema
and ``/docs`` come from the same signatures that validate the requests. The price is
pydantic and ~0.6 s of imports, paid once by ``serve``; ``bench/api.py`` measures what a
request costs over the read model it calls.
"""

from __future__ import annotations

from fastapi import FastAPI, Request

from enrich.api.actions import _action_routes
from enrich.api.common import (
    _SECRETS,
    ApiError,
    _bearer,
    _Desk,
    _install_errors,
    _is_loopback,
    _Json,
    _JsonBodies,
    _names_loopback,
    _Routes,
)
from enrich.api.reads import _read_routes
from enrich.api_token import TokenFile, matches
from enrich.config import Settings
from enrich.service import Services


def create_app(settings: Settings, services: Services) -> FastAPI:
    """The API over ``services`` (its store, scheduler and run workers)."""
    _SECRETS.update(s for s in (settings.api_key, *settings.alert_urls) if s)
    # The variable's token, or the file's as it is now (a rotated file: its new one).
    tokens = TokenFile(settings, on_new=_SECRETS.add)
    tokens.current()  # generated now if there is none yet
    desk = _Desk(settings, services)

    def need_token(request: Request) -> None:
        if not matches(tokens.current(), _bearer(request)):
            raise ApiError(401, "unauthorized", "this needs `Authorization: Bearer <token>`; "
                           "`python -m enrich api token` shows the token")

    def may_read(request: Request) -> None:
        # Open to this machine only: a loopback client that names it (not a site rebound to
        # 127.0.0.1, which sends its own name as Host).
        if not (_is_loopback(request.client.host if request.client else None)
                and _names_loopback(request.headers.get("host"))):
            need_token(request)

    app = FastAPI(
        title="enrich", version="1", default_response_class=_Json,
        description="The desk's JSON API: status, runs, metrics, health, backfills, quality, "
                    "coverage and alerts; runs, schedule, backfills, fills and alerts as "
                    "actions. POST needs `Authorization: Bearer <token>` "
                    "(`python -m enrich api token`). Instants are UTC (ISO 8601, `Z`); "
                    "session dates are dates in the instrument's calendar: the exchange date "
                    "for US listings, the UTC day for crypto and forex.")
    _install_errors(app)
    app.add_middleware(_JsonBodies)
    _read_routes(_Routes(app, may_read), desk)
    _action_routes(_Routes(app, need_token), desk)
    app.state.desk = desk
    return app
