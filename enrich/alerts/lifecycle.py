"""Incidents over time: ``evaluate`` opens and resolves them from the rules' conditions,
``deliver_pending`` sends each event once to every channel, and people acknowledge, snooze and
unsnooze them; old events are pruned.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enrich.alerts.rules import RULE_NAMES, RULES, Condition, Context, _fmt, key_problem
from enrich.channels import Channels
from enrich.errors import ConfigError, EnrichError, StateError
from enrich.pipeline.scheduler import SchedulerState
from enrich.store.catalog import Catalog, WriteBatch, frame, transaction, utcnow

log = logging.getLogger(__name__)


CLAIM_TIMEOUT = dt.timedelta(minutes=10)  # a sender that died: another may send after this
_RANK = {"info": 0, "warning": 1, "error": 2}  # an open incident's severity only rises


EVENTS = ("opened", "resolved", "test")


class UnknownAlertError(EnrichError):
    error_class = "unknown_alert"


class IncidentResolvedError(StateError):
    """An acknowledge of an incident whose condition has cleared."""

    error_class = "alert_resolved"


_OPEN_SQL = """
    SELECT o.alert_id, o.incident_id, o.rule, o.dedupe_key, o.delivery, o.severity
    FROM alerts o
    WHERE o.event = 'opened' AND NOT EXISTS (
        SELECT 1 FROM alerts r WHERE r.incident_id = o.incident_id AND r.event = 'resolved')
"""


def _new_id() -> str:
    return uuid.uuid4().hex[:12]


def _snoozed(con, now: dt.datetime) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT target FROM alert_snoozes WHERE until > ?", [now]).fetchall()}


@dataclass
class Evaluation:
    opened: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[dict[str, Any]] = field(default_factory=list)
    escalated: list[dict[str, Any]] = field(default_factory=list)  # open, now more severe
    failed_rules: dict[str, str] = field(default_factory=dict)


def evaluate(catalog: Catalog, now: dt.datetime, wall: dt.datetime | None = None, *,
             channels: bool = True, takeover: SchedulerState | None = None,
             rules: dict[str, Callable[[Context], list[Condition]]] | None = None
             ) -> Evaluation:
    """Run every rule and record what opened and what resolved (see the module docstring).

    ``channels``: whether any channel is configured (events get delivery ``pending``, else
    ``no_channel``).
    """
    wall = wall or utcnow()
    rules = RULES if rules is None else rules
    with catalog.connect() as con:
        open_keys = frozenset(r[3] for r in con.execute(_OPEN_SQL).fetchall())
    ctx = Context(catalog, now, wall, open_keys, takeover)
    found: dict[str, Condition] = {}
    evaluated: set[str] = set()
    result = Evaluation()
    for name, rule in rules.items():
        try:
            conds = rule(ctx)
        except Exception as exc:  # one broken rule never stops the others
            log.warning("alert rule %s could not be evaluated: %s", name, exc)
            result.failed_rules[name] = f"{type(exc).__name__}: {exc}"
            continue
        evaluated.add(name)
        found.update({c.key: c for c in conds})
    pending = "pending" if channels else "no_channel"
    b = WriteBatch()
    with catalog.connect() as con:
        current = {r["dedupe_key"]: r for r in frame(con, _OPEN_SQL).iter_rows(named=True)}
        snoozed = _snoozed(con, wall)
        for key, c in found.items():
            if key in current:
                continue
            alert_id = _new_id()
            row = {"alert_id": alert_id, "incident_id": alert_id, "event": "opened",
                   "rule": c.rule, "dedupe_key": key, "severity": c.severity,
                   "title": c.title, "detail": c.detail, "event_at": wall,
                   "delivery": "snoozed" if {c.rule, key} & snoozed else pending}
            b.insert("alerts", row)
            result.opened.append(row)
        for key, o in current.items():
            if o["rule"] not in evaluated:
                continue
            if key in found:
                c = found[key]
                if _RANK.get(c.severity, 0) > _RANK.get(o["severity"], 0):
                    # Worse now (late → stale: warning → error): the incident says so, and
                    # is sent again where it was sent (an escalation, not a new incident).
                    # Pending whatever this process's channels: a process that has them
                    # sends it (marked no_channel here, its resolution would go unsent).
                    b.execute("UPDATE alerts SET severity = ?, title = ?, detail = ?, "
                              "delivery = CASE WHEN delivery IN ('snoozed', 'no_channel') "
                              "THEN delivery ELSE 'pending' END WHERE alert_id = ?",
                              [c.severity, c.title, c.detail, o["alert_id"]])
                    result.escalated.append({**o, "severity": c.severity, "title": c.title,
                                             "detail": c.detail})
                if o["delivery"] == "snoozed" and not {o["rule"], key} & snoozed:
                    # The snooze ended and the incident is still open: send it now.
                    b.execute("UPDATE alerts SET delivery = ? WHERE alert_id = ?",
                              [pending, o["alert_id"]])
                elif o["delivery"] == "no_channel" and channels:
                    # Opened by a process without channels (a shell's `alerts check`, a
                    # dashboard started without ENRICH_ALERT_URLS): this one has them, and
                    # the incident is still open: send it now.
                    b.execute("UPDATE alerts SET delivery = 'pending' WHERE alert_id = ?",
                              [o["alert_id"]])
                continue
            # An incident never announced (snoozed, or no channel anywhere while it was
            # open) is not announced as resolved either: a "resolved" for something never
            # seen open.
            if o["delivery"] in ("snoozed", "no_channel"):
                delivery = o["delivery"]
            else:
                delivery = "snoozed" if {o["rule"], key} & snoozed else pending
            title = frame(con, "SELECT title, severity FROM alerts WHERE alert_id = ?",
                          [o["alert_id"]]).row(0, named=True)
            row = {"alert_id": _new_id(), "incident_id": o["incident_id"], "event": "resolved",
                   "rule": o["rule"], "dedupe_key": key, "severity": title["severity"],
                   "title": title["title"], "detail": "the condition cleared",
                   "event_at": wall, "delivery": delivery}
            b.insert("alerts", row)
            result.resolved.append(row)
        if not b.empty():
            with transaction(con):
                b.apply(con)
    return result


def _message(row: dict[str, Any]) -> tuple[str, str, str]:
    """Title, body and apprise notify type of an event."""
    event = row["event"]
    if event == "resolved":
        title = f"[enrich] resolved: {row['title']}"
        kind = "success"
    elif event == "test":
        title = f"[enrich] {row['title']}"
        kind = "info"
    else:
        title = f"[enrich] {row['title']}"
        kind = "failure" if row["severity"] == "error" else "warning"
    body = (f"{row['detail'] or ''}\n\n{event} at {_fmt(row['event_at'])} · rule {row['rule']} · "
            f"incident {row['incident_id']}")
    return title, body, kind


def deliver_pending(catalog: Catalog, channels: Channels,
                    clock: Callable[[], dt.datetime] = utcnow) -> list[dict[str, Any]]:
    """Send every event waiting for delivery, once; returns what was done per event.

    When ``channels.halt`` is set (the service stops), the events not sent yet go back to
    ``pending`` for the next process to send.
    """
    now = clock()
    with catalog.connect() as con, transaction(con, bump=False):
        rows = frame(con, """
                SELECT alert_id, incident_id, event, rule, severity, title, detail, event_at
                FROM alerts WHERE delivery = 'pending'
                   OR (delivery = 'sending' AND claimed_at < ?)
                ORDER BY event_at, event = 'resolved'""", [now - CLAIM_TIMEOUT]).to_dicts()
        if rows:
            ids = [r["alert_id"] for r in rows]
            con.execute(f"UPDATE alerts SET delivery = 'sending', claimed_at = ? "
                        f"WHERE alert_id IN ({','.join('?' * len(ids))})", [now, *ids])
    done = []
    for i, r in enumerate(rows):
        if channels.halt.is_set():
            left = [x["alert_id"] for x in rows[i:]]
            b = WriteBatch()
            b.execute(f"UPDATE alerts SET delivery = 'pending', claimed_at = NULL "
                      f"WHERE alert_id IN ({','.join('?' * len(left))})", left)
            catalog.write(b)
            break
        title, body, kind = _message(r)
        results = channels.send(title, body, kind) if channels else []
        ok = [x for x in results if x.ok]
        state = ("no_channel" if not results else "sent" if len(ok) == len(results)
                 else "partial" if ok else "failed")
        b = WriteBatch()
        b.execute("UPDATE alerts SET delivery = ?, attempts = ?, deliveries = ?, "
                  "delivered_at = ? WHERE alert_id = ?",
                  [state, sum(x.attempts for x in results),
                   json.dumps([x.to_json() for x in results]), clock() if ok else None,
                   r["alert_id"]])
        catalog.write(b)
        done.append({"alert_id": r["alert_id"], "event": r["event"], "delivery": state,
                     "channels": [x.to_json() for x in results]})
    return done


def send_test(catalog: Catalog, channels: Channels, by: str,
              clock: Callable[[], dt.datetime] = utcnow) -> dict[str, Any]:
    """Record a test event and send it now to every channel; returns the outcome."""
    alert_id = _new_id()
    now = clock()
    b = WriteBatch()
    b.insert("alerts", {
        "alert_id": alert_id, "incident_id": alert_id, "event": "test", "rule": "test",
        "dedupe_key": f"test:{alert_id}", "severity": "info", "title": "test alert",
        "detail": f"A test alert sent by {by}: if you read this, the channel works.",
        "event_at": now, "delivery": "pending" if channels else "no_channel"})
    catalog.write(b)
    done = deliver_pending(catalog, channels, clock) if channels else []
    mine = next((d for d in done if d["alert_id"] == alert_id), None)
    return mine or {"alert_id": alert_id, "event": "test", "delivery": "no_channel",
                    "channels": []}


def _incident(con, alert_id: str) -> dict[str, Any]:
    rows = frame(con, "SELECT incident_id, rule, dedupe_key FROM alerts "
                      "WHERE alert_id = ? OR incident_id = ? LIMIT 1", [alert_id, alert_id])
    if rows.is_empty():
        raise UnknownAlertError(f"no alert {alert_id}; list them with "
                                "`python -m enrich alerts list`")
    return rows.row(0, named=True)


def acknowledge(catalog: Catalog, alert_id: str, by: str, now: dt.datetime) -> dict[str, Any]:
    """Mark an open incident (by its id or any of its events' ids) as seen by ``by``.

    Once: an incident already acknowledged keeps who did it first and when (``changed``
    False). Refused for a resolved incident and a test alert (``StateError``).
    """
    with catalog.connect() as con:
        iid = _incident(con, alert_id)["incident_id"]
        opened = con.execute("SELECT acked_by, acked_at FROM alerts "
                             "WHERE incident_id = ? AND event = 'opened'", [iid]).fetchall()
        if not opened:
            raise StateError(f"alert {alert_id} is a test alert: there is no incident to "
                             "acknowledge")
        acked_by, acked_at = opened[0]
        if acked_by is not None:
            return {"incident_id": iid, "acked_by": acked_by, "acked_at": acked_at,
                    "changed": False}
        resolved = con.execute("SELECT min(event_at) FROM alerts WHERE incident_id = ? "
                               "AND event = 'resolved'", [iid]).fetchall()[0][0]
        if resolved is not None:
            raise IncidentResolvedError(
                f"incident {iid} was resolved at {_fmt(resolved)} (its condition cleared): "
                "there is nothing to acknowledge")
        with transaction(con):
            con.execute("UPDATE alerts SET acked_by = ?, acked_at = ? WHERE incident_id = ? "
                        "AND event = 'opened' AND acked_by IS NULL", [by, now, iid])
    return {"incident_id": iid, "acked_by": by, "acked_at": now, "changed": True}


def snooze_target(catalog: Catalog, target: str) -> str:
    """What a snooze applies to: a rule name as is, a dedupe key as is, an alert id as its
    incident's key. Refuses (``UnknownAlertError``) what no alert can be: a rule or key no
    rule makes (``rules.key_problem``), an id of no alert; and a test alert's id."""
    if target in RULE_NAMES:
        return target
    if ":" in target:
        problem = key_problem(catalog, target)
        if problem is not None:
            raise UnknownAlertError(f"nothing can alert as {target}: {problem}")
        return target
    with catalog.connect() as con:
        try:
            inc = _incident(con, target)
        except UnknownAlertError:
            raise UnknownAlertError(
                f"no alert or rule {target}; the rules are {', '.join(RULE_NAMES)}, and "
                "`python -m enrich alerts list` lists the alerts") from None
    if inc["rule"] == "test":
        raise StateError(f"alert {target} is a test alert: there is no incident to snooze")
    return inc["dedupe_key"]


def snooze(catalog: Catalog, target: str, until: dt.datetime, by: str, now: dt.datetime,
           reason: str | None = None) -> dict[str, Any]:
    """Send nothing for ``target`` (a rule, an alert id, or a dedupe key) until ``until``.

    A key no incident has had yet is accepted (a run still going may fail, a check that
    passes may fail tomorrow): ``seen`` is False and ``note`` says so. ``replaced`` is the
    snooze of the same target this one replaces (who, since when, until when, why), if any.
    """
    if until <= now:
        raise ConfigError("a snooze must end in the future")
    key = snooze_target(catalog, target)
    with catalog.connect() as con:
        seen = key in RULE_NAMES or bool(con.execute(
            "SELECT count(*) FROM alerts WHERE dedupe_key = ?", [key]).fetchall()[0][0])
        before = frame(con, "SELECT snoozed_by, snoozed_at, until, reason FROM alert_snoozes "
                            "WHERE target = ? AND until > ?", [key, now])
        b = WriteBatch()
        b.upsert("alert_snoozes", {"target": key, "until": until, "snoozed_by": by,
                                   "snoozed_at": now, "reason": reason})
        with transaction(con):
            b.apply(con)
    note = None if seen else (f"no incident has had the key {key} yet: the snooze applies "
                              "if one opens before it ends")
    return {"target": key, "until": until, "snoozed_by": by, "reason": reason, "seen": seen,
            "note": note, "replaced": before.row(0, named=True) if before.height else None}


def unsnooze(catalog: Catalog, target: str, now: dt.datetime | None = None) -> bool:
    """End the snooze of ``target`` (a rule, a dedupe key, or an alert id: its incident's
    key) now; False, and nothing changed, when it is not snoozed (a snooze that has ended is
    not snoozed)."""
    now = now or utcnow()
    with catalog.connect() as con:
        rows = con.execute("SELECT dedupe_key FROM alerts WHERE (alert_id = ? OR "
                           "incident_id = ?) AND rule <> 'test' LIMIT 1",
                           [target, target]).fetchall()
        key = rows[0][0] if rows and target not in RULE_NAMES else target
        n = con.execute("SELECT count(*) FROM alert_snoozes WHERE target = ? AND until > ?",
                        [key, now]).fetchall()[0][0]
        if n:
            with transaction(con):
                con.execute("DELETE FROM alert_snoozes WHERE target = ?", [key])
    return bool(n)


_PERIOD_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(m|min|h|d|w)\s*$", re.IGNORECASE)


_UNIT = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_period(raw: str) -> dt.timedelta:
    """``30m``, ``2h``, ``1d``, ``1w`` → a timedelta (at most 90 days)."""
    m = _PERIOD_RE.match(raw or "")
    if not m:
        raise ConfigError(f"{raw!r} is not a period; use e.g. 30m, 2h, 1d or 1w")
    seconds = float(m.group(1)) * _UNIT[m.group(2).lower()]
    if not 0 < seconds <= 90 * 86400:
        raise ConfigError(f"{raw!r}: a snooze lasts between a minute and 90 days")
    return dt.timedelta(seconds=seconds)


def prune(catalog: Catalog, retention_days: int, now: dt.datetime) -> int:
    """Delete resolved incidents and tests older than the retention, and ended snoozes."""
    cutoff = now - dt.timedelta(days=retention_days)
    old = ("SELECT incident_id FROM alerts WHERE event IN ('resolved', 'test') "
           "AND event_at < ?")
    with catalog.connect() as con:
        n = con.execute(f"SELECT count(*) FROM alerts WHERE incident_id IN ({old})",
                        [cutoff]).fetchall()[0][0]
        with transaction(con, bump=bool(n)):
            if n:
                con.execute(f"DELETE FROM alerts WHERE incident_id IN ({old})", [cutoff])
            con.execute("DELETE FROM alert_snoozes WHERE until < ?", [now])
    return int(n)
