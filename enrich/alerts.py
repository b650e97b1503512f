"""Alerts: rules over the catalog, incidents that open and resolve once, and their delivery.

A *rule* looks at the catalog and returns the *conditions* that hold now, each with a dedupe
key (``RULES``)::

    stale       a dataset not fresh once its session's close plus the provider's lag passed
                (late or stale symbols, one incident per dataset)
    run_failed  a run that ended failed or partial after its retries (one per run), until
                every symbol that failed in it has succeeded since
    scheduler   the schedule owner's heartbeat lost (seen live, or on taking the schedule
                over from a dead owner)
    quota       the provider's quota exhausted (a step failed on 429 after its retries) or a
                429 storm (``STORM_RETRIES`` rate-limited attempts within ``QUOTA_WINDOW``)
    quality     a quality check at error level failing (one per dataset × check)
    backfill    a backfill that failed (one per backfill)

``evaluate`` compares the conditions with the open incidents: a new key opens an incident
(an ``opened`` row of ``alerts``), an open key whose condition is gone is resolved (a
``resolved`` row with the same ``incident_id``). Both run under the catalog's cross-process
lock, so two processes watching (the dashboard and ``serve``) never open a key twice. A rule
that fails to evaluate leaves its incidents as they are.

``deliver_pending`` sends each event once to every channel of ``ENRICH_ALERT_URLS``
(``enrich.channels``, through apprise): events are claimed in a transaction, sent outside the
catalog, and the outcome is recorded. A failing channel is retried with exponential backoff,
then its failure recorded; nothing here raises into the service. A channel is named by
apprise's privacy URL with every credential of its URL scrubbed, in the catalog, the UI and
the logs.

A *snooze* (a rule, or one incident's dedupe key, until an instant) keeps events from being
sent; they are still recorded. An incident opened while snoozed is sent when the snooze ends if
it is still open. *Acknowledging* an incident records who saw it.

``Watcher`` runs evaluation and delivery on a thread of ``enrich.service.Services``: every
``ALERT_EVERY_S`` seconds and whenever poked (after every run).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import polars as pl

from enrich.channels import Channels
from enrich.config import Settings
from enrich.errors import ConfigError, EnrichError
from enrich.pipeline.scheduler import SchedulerState, read_state
from enrich.store import runs
from enrich.store.catalog import Catalog, WriteBatch, frame, host_and_pid, transaction, utcnow
from enrich.store.store import Store
from enrich.views import status as status_view

log = logging.getLogger(__name__)

ALERT_EVERY_S = 60.0
QUOTA_WINDOW = dt.timedelta(minutes=15)
STORM_RETRIES = 20  # rate-limited attempts within QUOTA_WINDOW that make a 429 storm
NEW_RUN_WINDOW = dt.timedelta(hours=24)  # failed runs older than this open no incident
NEW_BACKFILL_WINDOW = dt.timedelta(days=7)
CLAIM_TIMEOUT = dt.timedelta(minutes=10)  # a sender that died: another may send after this
EXAMPLES = 5  # symbols named in an alert's text
RULE_NAMES = ("stale", "run_failed", "scheduler", "quota", "quality", "backfill")
EVENTS = ("opened", "resolved", "test")


class UnknownAlertError(EnrichError):
    error_class = "unknown_alert"


@dataclass(frozen=True)
class Condition:
    """Something that needs a person, as a rule sees it now."""

    key: str  # the dedupe key: at most one open incident per key
    rule: str
    severity: str  # error | warning
    title: str
    detail: str


@dataclass
class Context:
    """What the rules read: the catalog, the data's instant and the wall clock."""

    catalog: Catalog
    now: dt.datetime  # the data's "as of" instant (settings.now): freshness
    wall: dt.datetime  # the real instant: runs, logs and heartbeats are stamped with it
    open_keys: frozenset[str] = frozenset()
    # A dead schedule owner this process took over from (seen before its first heartbeat).
    takeover: SchedulerState | None = None


# -- rules --------------------------------------------------------------------------------------
def _names(symbols: Sequence[str]) -> str:
    shown = ", ".join(symbols[:EXAMPLES])
    return shown + (f" and {len(symbols) - EXAMPLES} more" if len(symbols) > EXAMPLES else "")


def rule_stale(ctx: Context) -> list[Condition]:
    grid = status_view.status_grid(ctx.catalog, ctx.now)
    late = grid.filter(pl.col("state").is_in(["late", "stale"])
                       | ((pl.col("state") == "failing") & (pl.col("sessions_behind") > 0)))
    if late.is_empty():
        return []
    lines = []
    for (dataset,), part in late.sort(["sessions_behind", "symbol"], descending=[True, False]) \
            .group_by("dataset", maintain_order=True):
        examples = [f"{s} ({b} behind)" for s, b in
                    part.select("symbol", "sessions_behind").iter_rows()]
        lines.append(f"{dataset}: {part.height} symbol(s), {_names(examples)}")
    worst = int(cast(int | None, late["sessions_behind"].max()) or 0)
    expected = cast(dt.date | None, late["expected_session"].max())
    datasets = sorted(set(late["dataset"].to_list()))
    symbols = late["symbol"].n_unique()
    # One incident for all datasets: a missed daily run makes every dataset late at once,
    # and that is one thing to fix, not six.
    return [Condition(
        key="stale", rule="stale", severity="error" if worst >= 3 else "warning",
        title=f"data not fresh: {', '.join(datasets)} ({symbols} symbol(s))",
        detail=("Sessions behind the latest expected session, whose close plus the "
                "provider's publication lag has passed (exchange dates: "
                f"{expected}). " + "; ".join(lines) + "."))]


def rule_run_failed(ctx: Context) -> list[Condition]:
    """A failed or partial run stays an incident until each symbol that failed in it has
    succeeded in a later run (or was deactivated); a run that failed before any symbol, until
    a later run succeeds."""
    open_runs = [k.split(":", 1)[1] for k in ctx.open_keys if k.startswith("run_failed:")]
    rows = runs.failed_runs(ctx.catalog, ctx.wall - NEW_RUN_WINDOW, open_runs)
    out = []
    for r in rows.iter_rows(named=True):
        still = list(r["still_failing"] or [])
        if (r["failed_tasks"] and not still) or (not r["failed_tasks"] and r["later_success"]):
            continue
        what = (f"{len(still)} symbol(s) still failing: {_names(still)}" if still
                else (r["message"] or "no symbol finished"))
        out.append(Condition(
            key=f"run_failed:{r['run_id']}", rule="run_failed",
            severity="error" if r["state"] == "failed" else "warning",
            title=f"{r['kind']} run {r['run_id'][:8]} {r['state']}",
            detail=(f"{what}. {r['symbols_failed'] or 0} of {r['symbols_total'] or 0} symbols "
                    f"failed after their retries; finished {_fmt(r['finished_at'])}.")))
    return out


def rule_scheduler(ctx: Context) -> list[Condition]:
    state = read_state(ctx.catalog)
    dead = state if state.liveness(ctx.wall) == "dead" else ctx.takeover
    if dead is None:
        return []
    how = ("no process owns the daily schedule now" if dead is state
           else f"pid {host_and_pid()[1]} has taken the schedule over")
    return [Condition(
        key="scheduler:dead", rule="scheduler", severity="error",
        title="scheduler heartbeat lost",
        detail=(f"pid {dead.pid} on {dead.host} last beat at {_fmt(dead.heartbeat_at)} and "
                f"did not stop cleanly; {how}."))]


def rule_quota(ctx: Context) -> list[Condition]:
    row = ctx.catalog.query(
        "SELECT count(*) FILTER (status = 'failed') AS failed, "
        "count(*) FILTER (status = 'retried') AS retried, "
        "list(DISTINCT dataset ORDER BY dataset) AS datasets "
        "FROM fetch_log WHERE error_class = 'rate_limited' AND started_at >= ?",
        [ctx.wall - QUOTA_WINDOW]).row(0, named=True)
    failed, retried = int(row["failed"] or 0), int(row["retried"] or 0)
    if not failed and retried < STORM_RETRIES:
        return []
    minutes = int(QUOTA_WINDOW.total_seconds() // 60)
    title = ("provider quota exhausted" if failed else "429 storm: the provider is "
             "rate-limiting requests")
    return [Condition(
        key="quota:rate_limited", rule="quota", severity="error" if failed else "warning",
        title=title,
        detail=(f"In the last {minutes} min: {failed} fetch step(s) failed on HTTP 429 after "
                f"their retries, {retried} attempt(s) were rate-limited "
                f"({', '.join(row['datasets'] or [])}). Lower ENRICH_RATE_LIMIT_PER_MIN or "
                "check the plan's limits."))]


def rule_quality(ctx: Context) -> list[Condition]:
    rows = ctx.catalog.query("""
        SELECT q.dataset, q.check_name, list(q.symbol ORDER BY q.symbol) AS symbols,
               arg_max(q.symbol || ': ' || coalesce(q.detail, ''), q.checked_at) AS example
        FROM quality_status q JOIN symbols s USING (symbol)
        WHERE NOT q.passed AND q.severity = 'error' AND s.active
        GROUP BY ALL ORDER BY q.dataset, q.check_name""")
    return [Condition(
        key=f"quality:{r['dataset']}/{r['check_name']}", rule="quality", severity="error",
        title=f"quality check {r['dataset']}/{r['check_name']} fails for "
              f"{len(r['symbols'])} symbol(s)",
        detail=f"{_names(r['symbols'])}. Latest evidence: {r['example'][:300]}")
        for r in rows.iter_rows(named=True)]


def rule_backfill(ctx: Context) -> list[Condition]:
    from enrich.backfill.jobs import backfill_progress_summary

    out = []
    for r in backfill_progress_summary(ctx.catalog, now=ctx.wall, limit=500):
        key = f"backfill:{r['backfill_id']}"
        if r["status"] != "failed":
            continue
        recent = r["updated_at"] is None or r["updated_at"] >= ctx.wall - NEW_BACKFILL_WINDOW
        if not recent and key not in ctx.open_keys:
            continue
        syms = r["symbols"] if isinstance(r["symbols"], list) else []
        out.append(Condition(
            key=key, rule="backfill", severity="error",
            title=f"backfill {r['backfill_id']} ({r['dataset']}) failed",
            detail=(f"{r['chunks_failed']} of {r['chunks_total']} chunks failed for "
                    f"{_names(syms)}; last error: {(r['last_error'] or '?')[:300]}. Resume "
                    f"with `python -m enrich backfill resume {r['backfill_id']} "
                    "--retry-failed`.")))
    return out


RULES: dict[str, Callable[[Context], list[Condition]]] = {
    "stale": rule_stale, "run_failed": rule_run_failed, "scheduler": rule_scheduler,
    "quota": rule_quota, "quality": rule_quality, "backfill": rule_backfill,
}


def _fmt(ts: dt.datetime | None) -> str:
    return "never" if ts is None else ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# -- incidents ----------------------------------------------------------------------------------
_OPEN_SQL = """
    SELECT o.alert_id, o.incident_id, o.rule, o.dedupe_key, o.delivery
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
                if o["delivery"] == "snoozed" and not {o["rule"], key} & snoozed:
                    # The snooze ended and the incident is still open: send it now.
                    b.execute("UPDATE alerts SET delivery = ? WHERE alert_id = ?",
                              [pending, o["alert_id"]])
                continue
            quiet = o["delivery"] == "snoozed" or bool({o["rule"], key} & snoozed)
            title = frame(con, "SELECT title, severity FROM alerts WHERE alert_id = ?",
                          [o["alert_id"]]).row(0, named=True)
            row = {"alert_id": _new_id(), "incident_id": o["incident_id"], "event": "resolved",
                   "rule": o["rule"], "dedupe_key": key, "severity": title["severity"],
                   "title": title["title"], "detail": "the condition cleared",
                   "event_at": wall, "delivery": "snoozed" if quiet else pending}
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


# -- acknowledge, snooze ------------------------------------------------------------------------
def _incident(con, alert_id: str) -> dict[str, Any]:
    rows = frame(con, "SELECT incident_id, rule, dedupe_key FROM alerts "
                      "WHERE alert_id = ? OR incident_id = ? LIMIT 1", [alert_id, alert_id])
    if rows.is_empty():
        raise UnknownAlertError(f"no alert {alert_id}; list them with "
                                "`python -m enrich alerts list`")
    return rows.row(0, named=True)


def acknowledge(catalog: Catalog, alert_id: str, by: str, now: dt.datetime) -> dict[str, Any]:
    """Mark an incident (by its id or any of its events' ids) as seen by ``by``."""
    with catalog.connect() as con:
        inc = _incident(con, alert_id)
        with transaction(con):
            con.execute("UPDATE alerts SET acked_by = ?, acked_at = ? "
                        "WHERE incident_id = ? AND event = 'opened'",
                        [by, now, inc["incident_id"]])
    return {"incident_id": inc["incident_id"], "acked_by": by, "acked_at": now}


def snooze_target(catalog: Catalog, target: str) -> str:
    """What a snooze applies to: a rule name as is, an alert id as its incident's key."""
    if target in RULE_NAMES or ":" in target:
        return target
    with catalog.connect() as con:
        return _incident(con, target)["dedupe_key"]


def snooze(catalog: Catalog, target: str, until: dt.datetime, by: str, now: dt.datetime,
           reason: str | None = None) -> dict[str, Any]:
    """Send nothing for ``target`` (a rule, an alert id, or a dedupe key) until ``until``."""
    if until <= now:
        raise ConfigError("a snooze must end in the future")
    key = snooze_target(catalog, target)
    b = WriteBatch()
    b.upsert("alert_snoozes", {"target": key, "until": until, "snoozed_by": by,
                               "snoozed_at": now, "reason": reason})
    catalog.write(b)
    return {"target": key, "until": until, "snoozed_by": by, "reason": reason}


def unsnooze(catalog: Catalog, target: str) -> bool:
    key = snooze_target(catalog, target)
    with catalog.connect() as con:
        n = con.execute("SELECT count(*) FROM alert_snoozes WHERE target = ?",
                        [key]).fetchall()[0][0]
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


# -- read models ----------------------------------------------------------------------------------
_INCIDENTS_SQL = """
    WITH o AS (SELECT * FROM alerts WHERE event IN ('opened', 'test')),
    r AS (SELECT incident_id, event_at, delivery FROM alerts WHERE event = 'resolved')
    SELECT o.incident_id, o.rule, o.dedupe_key, o.severity, o.title, o.detail,
           o.event_at AS opened_at, r.event_at AS resolved_at,
           CASE WHEN o.event = 'test' THEN 'test' WHEN r.event_at IS NULL THEN 'open'
                ELSE 'resolved' END AS state,
           o.delivery, o.attempts, o.deliveries, o.delivered_at,
           r.delivery AS resolution_delivery, o.acked_by, o.acked_at,
           (SELECT max(s.until) FROM alert_snoozes s
            WHERE s.target IN (o.rule, o.dedupe_key) AND s.until > ?) AS snoozed_until
    FROM o LEFT JOIN r USING (incident_id)
"""


def incidents(catalog: Catalog, now: dt.datetime, state: str | None = None,
              rule: str | None = None, limit: int = 50, offset: int = 0,
              incident_id: str | None = None) -> tuple[pl.DataFrame, int]:
    """A page of incidents (newest first) and the number matching: one row per incident
    (and per test), with its opening, resolution, delivery, acknowledgement and the snooze in
    force. ``state``: open | resolved | test. ``deliveries`` is JSON text."""
    where, params = ["true"], []
    if state:
        where.append("state = ?")
        params.append(state)
    if rule:
        where.append("rule = ?")
        params.append(rule)
    if incident_id:
        where.append("incident_id = ?")
        params.append(incident_id)
    sql = f"SELECT * FROM ({_INCIDENTS_SQL}) WHERE {' AND '.join(where)}"
    with catalog.connect() as con:
        page = frame(con, sql + " ORDER BY opened_at DESC, incident_id LIMIT ? OFFSET ?",
                     [now, *params, limit, offset])
        total = con.execute(f"SELECT count(*) FROM ({sql})", [now, *params]).fetchall()[0][0]
    return page, int(total)


def open_incidents(catalog: Catalog, now: dt.datetime) -> pl.DataFrame:
    """Incidents open now, errors first, newest first."""
    page, _ = incidents(catalog, now, state="open", limit=500)
    if page.is_empty():
        return page
    return page.sort(["severity", "opened_at"], descending=[False, True])


def events(catalog: Catalog, incident_id: str) -> pl.DataFrame:
    """Every event of one incident (opened, resolved) with its delivery."""
    return catalog.query("""
        SELECT alert_id, event, event_at, delivery, attempts, deliveries, delivered_at
        FROM alerts WHERE incident_id = ? ORDER BY event_at, event = 'resolved'""", [incident_id])


def active_snoozes(catalog: Catalog, now: dt.datetime) -> pl.DataFrame:
    return catalog.query("SELECT target, until, snoozed_by, snoozed_at, reason "
                         "FROM alert_snoozes WHERE until > ? ORDER BY until", [now])


# -- the watcher ----------------------------------------------------------------------------------
class Watcher:
    """Evaluates the rules and delivers events on its own thread: every ``every_s`` seconds,
    and when poked. Never raises into the service; ``stop`` interrupts a backoff wait.

    ``clock`` is the wall clock (events, runs, heartbeats); ``now`` the data's instant
    (freshness; ``settings.now`` by default).
    """

    def __init__(self, settings: Settings, store: Store, *,
                 clock: Callable[[], dt.datetime] | None = None,
                 now: Callable[[], dt.datetime] | None = None,
                 every_s: float = ALERT_EVERY_S, channels: Channels | None = None):
        self.settings = settings
        self.store = store
        self.clock = clock or utcnow
        self.now = now or settings.now
        self.every_s = float(every_s)
        self._halt = threading.Event()
        self._poke = threading.Event()
        self.channels = channels if channels is not None else Channels(
            settings.alert_urls, halt=self._halt)
        self.channels.halt = self._halt  # stopping the watcher cuts its retries short
        self._thread: threading.Thread | None = None
        self._takeover: SchedulerState | None = None
        self._lock = threading.Lock()
        self.evaluations = 0  # finished rounds (tests wait on it)
        self.last_error: str | None = None

    def start(self) -> Watcher:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="enrich-alerts",
                                                daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._halt.set()
        self._poke.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def poke(self) -> None:
        """Evaluate now (after a run ended, a schedule was taken over)."""
        self._poke.set()

    def note_takeover(self, previous: SchedulerState, now: dt.datetime) -> None:
        """This process takes the schedule over; if its owner had died, say so once."""
        if previous.pid is not None and previous.liveness(now) == "dead" \
                and (previous.host, previous.pid) != host_and_pid():
            with self._lock:
                self._takeover = previous
            self.poke()

    def run_once(self) -> Evaluation:
        """One round: evaluate, then deliver what is pending."""
        with self._lock:
            takeover = self._takeover
        result = evaluate(self.store.catalog, self.now(), self.clock(),
                          channels=bool(self.channels), takeover=takeover)
        if takeover is not None and "scheduler" not in result.failed_rules:
            with self._lock:
                if self._takeover is takeover:
                    self._takeover = None  # reported; the next round resolves it
                    self._poke.set()
        if self.channels:
            deliver_pending(self.store.catalog, self.channels, self.clock)
        return result

    def _loop(self) -> None:
        while not self._halt.is_set():
            self._poke.wait(self.every_s)
            self._poke.clear()
            if self._halt.is_set():
                return
            try:
                self.run_once()
                self.last_error = None
            except Exception as exc:  # a busy catalog: next round
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("alerts: %s", self.channels.scrub(self.last_error)
                            if self.channels else self.last_error)
            self.evaluations += 1
