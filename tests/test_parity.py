"""Every action a page offers has a command or an endpoint (most have both).

The pages are read with ``ast``: every ``button``, ``form_submit_button`` and
``download_button`` call is an action, named by its page and its ``key`` (the constant part
of an f-string key) or, without a key, its label. ``ACTIONS`` says what each one does from a
terminal (argv, parsed by the real parser and dispatched to a registered command) and over
HTTP (a route of the real app). A new button without an entry here fails
``test_every_page_action_is_listed``; an entry with neither a command nor an endpoint fails
``test_every_page_action_has_a_command_or_an_endpoint``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from enrich import cli

PAGES = Path(__file__).resolve().parent.parent / "pages"
NAVIGATION = None  # a button that only moves between views: no action to mirror

# page:key -> (argv of the command | None, "METHOD /route" | None) or NAVIGATION
ACTIONS: dict[str, tuple[list[str] | None, str | None] | None] = {
    "overview:first_run": (["run"], "POST /api/v1/runs"),
    "overview:run_stale": (["run", "--symbols", "AAPL,MSFT"], "POST /api/v1/runs"),
    "controls:Run now": (["run", "--symbols", "AAPL", "--datasets", "bars",
                          "--asset-class", "stocks", "--timeframe", "1d",
                          "--lookback-days", "30"], "POST /api/v1/runs"),
    "controls:Estimate cost": (["run", "--dry-run"], None),
    "health:recheck": (["entitlements", "recheck"], None),
    "controls:resume": (["schedule", "resume"], "POST /api/v1/schedule/resume"),
    "controls:pause": (["schedule", "pause", "--reason", "maintenance"],
                       "POST /api/v1/schedule/pause"),
    "symbols:enrich_now": (["run", "--symbols", "AAPL"], "POST /api/v1/runs"),
    "symbols:dl_csv_*": (None, "GET /api/v1/symbols/{symbol}/{dataset}"),
    "symbols:dl_pq_*": (None, "GET /api/v1/symbols/{symbol}/{dataset}"),
    "symbols:back": NAVIGATION,
    "runs:cancel_run": (["runs", "cancel", "RUN_ID"], "POST /api/v1/runs/{run_id}/cancel"),
    "runs:retry_failed": (["runs", "retry", "RUN_ID"],
                          "POST /api/v1/runs/{run_id}/retry-failed"),
    "runs:runs_back": NAVIGATION,
    "health:test_key": (["health"], "GET /api/v1/health"),
    "quality:fill_go": (["fill", "--dataset", "bars", "--symbols", "AAPL", "--from",
                         "2026-11-02", "--to", "2026-11-06"], "POST /api/v1/fills"),
    "quality:recheck": (["quality", "audit"], "POST /api/v1/quality/audit"),
    "backfill:Preview plan": (["backfill", "bars", "--symbol", "AAPL", "--dry-run"],
                              "POST /api/v1/backfills"),
    "backfill:Start backfill": (["backfill", "bars", "--symbol", "AAPL", "--years", "1"],
                                "POST /api/v1/backfills"),
    "backfill:pause_*": (["backfill", "pause", "BF_ID"],
                         "POST /api/v1/backfills/{backfill_id}/pause"),
    "backfill:cancel_*": (["backfill", "cancel", "BF_ID"],
                          "POST /api/v1/backfills/{backfill_id}/cancel"),
    "backfill:resume_*": (["backfill", "resume", "BF_ID"],
                          "POST /api/v1/backfills/{backfill_id}/resume"),
    "backfill:retry_*": (["backfill", "resume", "BF_ID", "--retry-failed"],
                         "POST /api/v1/backfills/{backfill_id}/resume"),
    "settings:Add": (["symbols", "add", "AAPL"], None),
    "settings:import": (["symbols", "import", "symbols.csv"], None),
    "settings:fetch_added": (["run", "--symbols", "NEWX"], "POST /api/v1/runs"),
    "settings:deactivate": (["symbols", "deactivate", "AAPL"], None),
    "settings:activate": (["symbols", "activate", "AAPL"], None),
    "settings:remove": (["symbols", "remove", "AAPL"], None),
    "settings:test_alert": (["alerts", "test"], "POST /api/v1/alerts/test"),
    "alerts:ack": (["alerts", "ack", "INCIDENT"], "POST /api/v1/alerts/{alert_id}/ack"),
    "alerts:snooze": (["alerts", "snooze", "stale", "--for", "2h"],
                      "POST /api/v1/alerts/{target}/snooze"),
    "alerts:unsnooze": (["alerts", "unsnooze", "stale"],
                        "POST /api/v1/alerts/{target}/unsnooze"),
}
BUTTONS = ("button", "form_submit_button", "download_button")


def page_actions() -> set[str]:
    """``page:key`` of every button in ``pages/`` (f-string keys end in ``*``)."""
    found = set()
    for path in sorted(PAGES.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in BUTTONS):
                continue
            key = next((k.value for k in node.keywords if k.arg == "key"), None)
            if key is None and node.args:
                key = node.args[0]
            if isinstance(key, ast.Constant):
                name = str(key.value)
            elif isinstance(key, ast.JoinedStr) and isinstance(key.values[0], ast.Constant):
                name = f"{key.values[0].value}*"
            else:
                pytest.fail(f"{path.name}:{node.lineno}: give the button a constant key "
                            "so its command and endpoint can be listed")
            found.add(f"{path.stem}:{name}")
    return found


def test_every_page_action_is_listed():
    found = page_actions()
    assert found, "no button found: the page reader is broken"
    assert found - set(ACTIONS) == set(), "list these actions in ACTIONS"
    assert set(ACTIONS) - found == set(), "these actions are gone from the pages"


@pytest.fixture(scope="module")
def parser():
    return cli.build_parser()


@pytest.fixture(scope="module")
def routes(tmp_path_factory):
    from enrich.api.app import create_app
    from enrich.config import load_settings
    from enrich.service import Services

    data = tmp_path_factory.mktemp("parity") / "data"
    settings = load_settings({"ENRICH_DATA_DIR": str(data), "ENRICH_SCHEDULER": "off",
                              "ENRICH_API_TOKEN": "parity-token-0123456789"},
                             dotenv_path=None)
    svc = Services(settings, alerts=False)  # never started: only its routes are read
    app = create_app(settings, svc)
    # A path converter ({target:path}: an alert key may hold a slash) named as OpenAPI names it.
    return {f"{m} {r.path.replace(':path}', '}')}" for r in app.routes
            for m in getattr(r, "methods", ())}


@pytest.mark.parametrize("action", sorted(a for a, v in ACTIONS.items() if v is not None))
def test_every_page_action_has_a_command_or_an_endpoint(action, parser, routes):
    argv, endpoint = ACTIONS[action]  # type: ignore[misc]
    assert argv or endpoint, f"{action}: neither a command nor an endpoint"
    if argv:
        args = parser.parse_args(argv)  # exits (fails) on an unknown command or option
        assert args.cmd in cli.COMMANDS, argv
        sub = getattr(args, f"{args.cmd}_cmd", None)
        if sub and sub != "list" and args.cmd == "runs":
            assert f"runs {sub}" in cli.COMMANDS
    if endpoint:
        assert endpoint in routes, f"{action}: no route {endpoint}"


def test_quality_page_has_both(routes, parser):
    """The issue's parity: the Quality page's views and actions, from both sides."""
    for argv in (["quality", "--symbol", "AAPL", "--failing", "--json"], ["quality", "audit"],
                 ["coverage", "--dataset", "bars", "--sessions", "20", "--json"]):
        assert parser.parse_args(argv).cmd in cli.COMMANDS
    assert {"GET /api/v1/quality", "GET /api/v1/coverage", "POST /api/v1/fills"} <= routes
