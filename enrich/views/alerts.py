"""Alert read models: incidents with their state, the open ones, one incident's events, the
active snoozes."""

from __future__ import annotations

import datetime as dt

import polars as pl

from enrich.store.catalog import Catalog, frame

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
