"""``python -m enrich alerts …`` and ``python -m enrich api token``.

    alerts [list] [--state open|resolved|test] [--rule R] [--limit N] [--json]
    alerts show ID [--json]
    alerts ack ID [--by WHO]
    alerts snooze ID|RULE --for 2h [--reason TEXT] [--by WHO]
    alerts unsnooze ID|RULE
    alerts test                  send a test alert to every channel of ENRICH_ALERT_URLS
    alerts check                 evaluate the rules and send what is pending, now
    api token                    the bearer token the API's actions need

Imported by ``enrich.cli``. Exit codes: 0 done (a second ack changes nothing and says whose
the first was), 1 a test alert that reached no channel, 2 bad usage (unknown alert, a rule or
key no alert can have, bad period, an unsnooze of what is not snoozed) or an action the
incident's state refuses (an ack of a resolved incident or of a test alert).
"""

from __future__ import annotations

import argparse
import sys

import polars as pl

from enrich import ui
from enrich.alerts import lifecycle as alert_lifecycle
from enrich.alerts import rules as alert_rules
from enrich.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    MAX_LIMIT,
    UsageError,
    bounded_int,
    command,
    extend_parser,
    fmt_ts,
    print_json,
    print_table,
    who,
)
from enrich.config import Settings
from enrich.errors import ConfigError
from enrich.store.catalog import utcnow
from enrich.views import alerts as alerts_view

ACTIONS = ("list", "show", "ack", "snooze", "unsnooze", "test", "check")


def _catalog(settings: Settings):
    from enrich.store.store import Store

    return Store.from_settings(settings).catalog


def _channels(settings: Settings) -> alert_lifecycle.Channels:
    return alert_lifecycle.Channels(settings.alert_urls)


@command("alerts")
def cmd_alerts(args: argparse.Namespace, settings: Settings) -> int:
    action = args.alerts_cmd or "list"
    try:
        return _ALERT_ACTIONS[action](args, settings)
    except alert_lifecycle.UnknownAlertError as exc:
        raise UsageError(str(exc)) from None


def _list(args: argparse.Namespace, settings: Settings) -> int:
    now = utcnow()
    catalog = _catalog(settings)
    page, total = alerts_view.incidents(catalog, now, getattr(args, "state", None),
                                        getattr(args, "rule", None), getattr(args, "limit", 50))
    snoozes = alerts_view.active_snoozes(catalog, now)
    if getattr(args, "json", False):
        print_json({"total": total, "items": ui.json_rows(page, "deliveries"),
                    "snoozes": snoozes.to_dicts()})
        return EXIT_OK
    if page.is_empty():
        print("no alerts" + (" matching" if getattr(args, "state", None) else " yet"))
    else:
        print_table(page.with_columns(pl.col("title").str.slice(0, 60)),
                    ["incident_id", "state", "rule", "severity", "title", "opened_at",
                     "resolved_at", "delivery", "acked_by", "snoozed_until"])
        if total > page.height:
            print(f"\n{page.height} of {total}; --limit N for more")
    if not snoozes.is_empty():
        print("\nsnoozed:")
        print_table(snoozes)
    return EXIT_OK


def _show(args: argparse.Namespace, settings: Settings) -> int:
    if not args.target:
        raise UsageError("`alerts show` needs an alert id (see `alerts list`)")
    catalog = _catalog(settings)
    ev = alerts_view.events(catalog, args.target)
    if ev.is_empty():
        raise alert_lifecycle.UnknownAlertError(f"no alert {args.target}")
    inc = ui.json_rows(alerts_view.incidents(catalog, utcnow(), incident_id=args.target)[0],
                       "deliveries")
    if args.json:
        print_json({**(inc[0] if inc else {}), "events": ui.json_rows(ev, "deliveries")})
        return EXIT_OK
    if inc:
        i = inc[0]
        print(f"{i['incident_id']} {i['state']} · {i['rule']} · {i['severity']}"
              + (f" · acknowledged by {i['acked_by']} at {fmt_ts(i['acked_at'])}"
                 if i.get("acked_by") else "")
              + (f" · snoozed until {fmt_ts(i['snoozed_until'])}"
                 if i.get("snoozed_until") else ""))
        print(i["title"])
        print(i["detail"] or "")
    print()
    print_table(ev)
    return EXIT_OK


def _ack(args: argparse.Namespace, settings: Settings) -> int:
    if not args.target:
        raise UsageError("`alerts ack` needs an alert id (see `alerts list`)")
    out = alert_lifecycle.acknowledge(_catalog(settings), args.target, args.by or who(), utcnow())
    if getattr(args, "json", False):
        print_json(out)
    elif not out["changed"]:  # exit 0: it is acknowledged; the first one's record stands
        print(f"incident {out['incident_id']} already acknowledged by {out['acked_by']} at "
              f"{fmt_ts(out['acked_at'])}; nothing changed")
    else:
        print(f"incident {out['incident_id']} acknowledged by {out['acked_by']}")
    return EXIT_OK


def _snooze(args: argparse.Namespace, settings: Settings) -> int:
    if not args.target:
        raise UsageError("`alerts snooze` needs an alert id or a rule "
                         f"({', '.join(alert_rules.RULE_NAMES)})")
    try:
        period = alert_lifecycle.parse_period(args.period)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    now = utcnow()
    out = alert_lifecycle.snooze(_catalog(settings), args.target, now + period,
                                 args.by or who(), now, args.reason)
    before = out["replaced"]
    if before:
        print(f"note: this replaces the snooze by {before['snoozed_by']} until "
              f"{fmt_ts(before['until'])}", file=sys.stderr)
    if out["note"]:
        print(f"note: {out['note']}", file=sys.stderr)
    print(f"{out['target']} snoozed until {out['until']:%Y-%m-%d %H:%M} UTC: its alerts are "
          "recorded but not sent")
    return EXIT_OK


def _unsnooze(args: argparse.Namespace, settings: Settings) -> int:
    if not args.target:
        raise UsageError("`alerts unsnooze` needs an alert id or a rule")
    catalog = _catalog(settings)
    now = utcnow()
    if not alert_lifecycle.unsnooze(catalog, args.target, now):
        # Exit 2: a typo must not read as done while the real snooze stays.
        active = alerts_view.active_snoozes(catalog, now)
        shown = ", ".join(f"{t} (until {fmt_ts(u)})" for t, u in
                          active.select("target", "until").iter_rows())
        raise UsageError(f"{args.target} is not snoozed; "
                         + (f"snoozed now: {shown}" if shown else "nothing is snoozed"))
    print(f"{args.target}: snooze ended")
    return EXIT_OK


def _test(args: argparse.Namespace, settings: Settings) -> int:
    channels = _channels(settings)
    out = alert_lifecycle.send_test(_catalog(settings), channels, args.by or who())
    if getattr(args, "json", False):
        print_json(out)
    elif not out["channels"]:
        print("no channel: set ENRICH_ALERT_URLS (e.g. json://host/path, "
              "mailto://user:pass@host?to=…, ntfy://topic); the test was recorded",
              file=sys.stderr)
    else:
        for ch in out["channels"]:
            state = "sent" if ch["ok"] else f"FAILED after {ch['attempts']} attempts: " \
                                            f"{ch['error']}"
            print(f"{ch['channel']}: {state}")
    return EXIT_OK if out["delivery"] == "sent" else EXIT_FAILED


def _check(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _catalog(settings)
    channels = _channels(settings)
    result = alert_lifecycle.evaluate(catalog, settings.now(), channels=bool(channels))
    sent = alert_lifecycle.deliver_pending(catalog, channels) if channels else []
    if getattr(args, "json", False):
        print_json({"opened": result.opened, "resolved": result.resolved,
                    "escalated": result.escalated, "failed_rules": result.failed_rules,
                    "delivered": sent})
        return EXIT_OK
    for r in result.opened:
        print(f"opened   {r['incident_id']} {r['rule']}: {r['title']}")
    for r in result.resolved:
        print(f"resolved {r['incident_id']} {r['rule']}: {r['title']}")
    for r in result.escalated:
        print(f"worse    {r['incident_id']} {r['rule']}: now {r['severity']}: {r['title']}")
    for name, err in result.failed_rules.items():
        print(f"rule {name} could not be evaluated: {err}", file=sys.stderr)
    if not (result.opened or result.resolved or result.escalated):
        print("nothing changed")
    return EXIT_OK


_ALERT_ACTIONS = {"list": _list, "show": _show, "ack": _ack, "snooze": _snooze,
                  "unsnooze": _unsnooze, "test": _test, "check": _check}


@command("api")
def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.api_token import ensure_token

    if args.api_cmd != "token":
        raise UsageError("api needs a command: token")
    token, source = ensure_token(settings)
    print(token)
    print(f"(from {source}; send it as `Authorization: Bearer <token>`)", file=sys.stderr)
    return EXIT_OK


@extend_parser
def _parser(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("alerts", help="alert incidents: list, show, ack, snooze, unsnooze, "
                                      "test, check")
    a.add_argument("--json", action="store_true")
    asub = a.add_subparsers(dest="alerts_cmd", metavar="ACTION")
    ls = asub.add_parser("list", help="incidents, newest first (default)")
    ls.add_argument("--state", choices=["open", "resolved", "test"])
    ls.add_argument("--rule", choices=[*alert_rules.RULE_NAMES, "test"])
    ls.add_argument("--limit", type=bounded_int(1, MAX_LIMIT), default=50)
    ls.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    for name, text in (("show", "one incident and its events"),
                       ("ack", "acknowledge an incident"),
                       ("unsnooze", "end a snooze now")):
        x = asub.add_parser(name, help=text)
        x.add_argument("target", nargs="?", metavar="ID" if name != "unsnooze" else "ID|RULE")
        x.add_argument("--by", help="who (default: user@host)")
        x.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    sn = asub.add_parser("snooze", help="send nothing for an incident or a rule for a while")
    sn.add_argument("target", nargs="?", metavar="ID|RULE")
    sn.add_argument("--for", dest="period", default="1h", metavar="PERIOD",
                    help="30m, 2h, 1d, 1w (default 1h)")
    sn.add_argument("--reason")
    sn.add_argument("--by", help="who (default: user@host)")
    t = asub.add_parser("test", help="send a test alert to every channel now")
    t.add_argument("--by", help="who (default: user@host)")
    t.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    c = asub.add_parser("check", help="evaluate the rules and send what is pending, now")
    c.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    api = sub.add_parser("api", help="the JSON API of `serve`: token")
    apisub = api.add_subparsers(dest="api_cmd", metavar="ACTION")
    apisub.add_parser("token", help="print the bearer token the API's actions need")
