"""Alerts: incidents the desk opened and resolved, their delivery; acknowledge and snooze.

Rules, incidents and delivery live in ``enrich.alerts``; the service evaluates them every
minute and after every run. Text from rules (symbols, provider messages) is shown in tables
and plain text, never as markup.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import streamlit as st

from enrich import palette, ui
from enrich.alerts import lifecycle as alert_lifecycle
from enrich.errors import EnrichError
from enrich.views import alerts as alerts_view
from pages import _common as c

PAGE_SIZE = 50
STATES = {"open": "Open", "resolved": "Resolved", "test": "Tests", "all": "All"}
PERIODS = {"30 minutes": "30m", "1 hour": "1h", "2 hours": "2h", "4 hours": "4h",
           "1 day": "1d", "1 week": "1w"}

c.page_header("Alerts", "Incidents open once per condition, are sent once to the channels of "
                        "ENRICH_ALERT_URLS and resolve once when the condition clears. "
                        "Rules run every minute and after every run.")
channels = c.alert_channels()
if channels:
    st.text("Channels: " + " · ".join(channels.labels))  # configuration text, not markup
else:
    st.caption("No channel configured: incidents are recorded here but not sent. Set "
               "ENRICH_ALERT_URLS (json://…, mailto://…, ntfy://…, slack://…) and restart; "
               "Settings has “Send a test alert”.")


def _acknowledge(incident_id: str) -> None:
    """Acknowledge (a button's callback: it runs even when the click lands on a page that no
    longer offers it, because someone else acknowledged or the incident resolved meanwhile)
    and say what happened, with who acknowledged first when the call changed nothing."""
    try:
        out = alert_lifecycle.acknowledge(c.store().catalog, incident_id, c.ACTOR,
                                          dt.datetime.now(dt.UTC))
    except EnrichError as exc:
        st.session_state["alert_said"] = (palette.BAD, "Could not acknowledge incident "
                                          f"{ui.literal(incident_id)}: {ui.literal(exc)}")
        return
    c.invalidate()
    st.session_state["alert_said"] = (
        (palette.OK, f"Incident {ui.literal(incident_id)} acknowledged.") if out["changed"] else
        (palette.WARN, f"Incident {ui.literal(incident_id)} was already acknowledged by "
                       f"{ui.literal(out['acked_by'])} at {ui.fmt_utc(out['acked_at'])}."))


def _snooze(incident_id: str, rule: str) -> None:
    """Snooze this incident or its rule for the period picked (a callback: it runs even when
    the incident resolved meanwhile and left the list) and say until when, and whose snooze
    it replaced when someone else's was in force."""
    now = dt.datetime.now(dt.UTC)
    target = incident_id if st.session_state.get("snooze_scope") == "this incident" else rule
    try:
        until = now + alert_lifecycle.parse_period(
            PERIODS[st.session_state.get("snooze_period") or next(iter(PERIODS))])
        out = alert_lifecycle.snooze(c.store().catalog, target, until, c.ACTOR, now)
    except EnrichError as exc:
        st.session_state["alert_said"] = (palette.BAD, f"Could not snooze "
                                          f"{ui.literal(target)}: {ui.literal(exc)}")
        return
    c.invalidate()
    text = f"{ui.literal(out['target'])} snoozed until {ui.fmt_utc(out['until'])}."
    before = out["replaced"]
    if before and before["snoozed_by"] != c.ACTOR:
        text += (f" It replaces the snooze {ui.literal(before['snoozed_by'])} set at "
                 f"{ui.fmt_utc(before['snoozed_at'])}, until {ui.fmt_utc(before['until'])}.")
    st.session_state["alert_said"] = (palette.WARN if before else palette.OK, text)


def _unsnooze(target: str | None) -> None:
    """End the snooze picked (a callback: it runs even when the snooze ended meanwhile and
    left the list) and say whose snooze it ended, or that there was none any more."""
    if not target:
        return
    catalog = c.store().catalog
    now = dt.datetime.now(dt.UTC)
    held = alerts_view.active_snoozes(catalog, now).filter(pl.col("target") == target)
    ended = alert_lifecycle.unsnooze(catalog, target, now)
    c.invalidate()
    if not ended:
        st.session_state["alert_said"] = (
            palette.WARN, f"{ui.literal(target)} was no longer snoozed: its snooze ended "
                          "or someone else ended it. Nothing changed.")
        return
    who = (f" (set by {ui.literal(held['snoozed_by'][0])}, until "
           f"{ui.fmt_utc(held['until'][0])})") if held.height else ""
    st.session_state["alert_said"] = (palette.OK,
                                      f"{ui.literal(target)}: snooze ended{who}.")


def _table(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select(
        "incident_id", "severity", "state", "rule", "title", "opened_at", "resolved_at", "delivery",
        "resolution_delivery", "acked_by", "snoozed_until")


if said := st.session_state.pop("alert_said", None):
    c.alert(*said)

# -- list --------------------------------------------------------------------------------------
state = st.segmented_control("Show", list(STATES), default="open", key="alert_state",
                             format_func=STATES.get) or "open"
page_no = int(st.session_state.get("alert_page", 1) or 1)
page, total = c.alerts_read(alerts_view.incidents, None if state == "all" else state,
                            limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE)
if page.is_empty():
    st.success("No open incident: nothing needs you." if state == "open"
               else "Nothing here yet.")
else:
    c.dataframe(_table(page), chips={"severity": "severity"}, column_config={
        "incident_id": "id", "opened_at": "opened (UTC)", "resolved_at": "resolved (UTC)",
        "resolution_delivery": "resolution delivery", "acked_by": "acknowledged by",
        "snoozed_until": "snoozed until (UTC)",
        "title": st.column_config.TextColumn("what", width="large")})
    pages = max(1, -(-total // PAGE_SIZE))
    if pages > 1:
        st.pagination(pages, key="alert_page")

# -- one incident ------------------------------------------------------------------------------
if not page.is_empty():
    st.subheader("Incident")
    ids = page["incident_id"].to_list()
    titles = dict(zip(ids, page["title"].to_list(), strict=True))
    pick = st.selectbox("Incident", ids, key="alert_pick",
                        format_func=lambda i: f"{i} · {titles[i][:80]}")
    row = page.filter(pl.col("incident_id") == pick).row(0, named=True)
    st.text(f"{row['severity']} · rule {row['rule']} · "
            f"{row['state']} · opened {ui.fmt_utc(row['opened_at'])}"
            + (f" · resolved {ui.fmt_utc(row['resolved_at'])}" if row["resolved_at"] else ""))
    st.text(row["title"])
    st.text(row["detail"] or "")
    if row["acked_by"]:
        st.text(f"Acknowledged by {row['acked_by']} at {ui.fmt_utc(row['acked_at'])}")
    events = alerts_view.events(c.store().catalog, pick)
    if not events.is_empty():
        c.dataframe(events, column_config={"event_at": "at (UTC)",
                                           "delivered_at": "delivered (UTC)"})
    if row["state"] != "test":
        a = st.columns([1, 2, 2, 1])
        a[0].button("Acknowledge", icon="👀", key="ack", disabled=bool(row["acked_by"]),
                    on_click=_acknowledge, args=(pick,))
        a[1].selectbox("Snooze for", list(PERIODS), key="snooze_period")
        a[2].radio("Snooze", ["this incident", f"every {row['rule']} alert"],
                           key="snooze_scope", horizontal=True)
        a[3].button("Snooze", icon="😴", key="snooze", on_click=_snooze,
                    args=(pick, row["rule"]))

# -- snoozes -----------------------------------------------------------------------------------
snoozes = c.alerts_read(alerts_view.active_snoozes)
if not snoozes.is_empty():
    st.subheader("Snoozed")
    st.caption("Alerts of these rules or incidents are recorded but not sent until then; an "
               "incident still open when its snooze ends is sent then.")
    c.dataframe(snoozes, column_config={"until": "until (UTC)", "snoozed_at": "since (UTC)"})
    end = st.selectbox("End a snooze", snoozes["target"].to_list(), key="unsnooze_pick")
    st.button("End snooze", icon="🔔", key="unsnooze", on_click=_unsnooze, args=(end,))

st.caption("Same from a terminal: `python -m enrich alerts list|ack ID|snooze ID --for 2h`; "
           "over HTTP: `GET /api/v1/alerts`, `POST /api/v1/alerts/{id}/ack|snooze`.")
