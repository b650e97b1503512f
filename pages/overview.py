"""Overview: is everything OK? What needs attention comes first."""

from __future__ import annotations

import datetime as dt

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from enrich import queries as q
from enrich import ui
from enrich.symbols import DEMO_UNIVERSE
from enrich.universe import ensure_demo_universe
from pages import _common as c

TILE_LABELS = {
    "failing": "Failing", "stale": "Stale (3+ sessions)", "never": "Never fetched",
    "late": "Late (1–2 sessions)", "due": "Due (publishing)", "fresh": "Fresh",
    "not_expected": "Not expected", "not_entitled": "Not entitled",
}

c.page_header("Overview", "Is everything OK? Symbols that need attention come first.")

summary = c.summary()
counts = q.symbol_state_counts(summary)
runs_total = c.read("alltime_stats")["runs"]


# -- live progress (polls the catalog; a finished run refreshes the whole page) ----------------
def _pending_run() -> str | None:
    """A run this session started whose row the service has not written yet."""
    rid = st.session_state.get("last_run_id")
    return rid if rid and c.read("run_progress", rid) is None else None


@st.fragment(run_every=2)
def live_progress() -> None:
    active = c.read("active_runs")
    pending = _pending_run()
    ids = [p["run_id"] for p in active] + ([pending] if pending else [])
    before = st.session_state.get("overview_active_ids")
    st.session_state["overview_active_ids"] = ids
    if before is not None and before != ids and not (pending and before == []):
        st.rerun()  # a run started or finished: every number on the page may change
    if not ids:
        return
    st.subheader("Running now")
    if pending:
        st.progress(0.0, text=f"Run {ui.literal(pending[:8])}: queued, starting…")
    for p in active:
        c.progress_block(p, key=f"ov-{p['run_id']}")
        c.run_link(p["run_id"])


def first_launch() -> None:
    """An empty store: one obvious button that starts the first enrichment."""
    with st.container(border=True):
        st.subheader("No data yet")
        if summary.is_empty():
            n = len(DEMO_UNIVERSE)
            what = (f"the demo universe ({n} US stocks, ETFs and bitcoin)" if c.is_demo()
                    else f"the demo universe of {n} symbols (or add your own under Settings)")
        else:
            what = f"the {summary.height} symbols of your universe"
        source = "offline demo data from the sample provider" if c.is_demo() \
            else f"data from {c.settings().provider}"
        st.write(f"Start the first enrichment: it fetches {what} — daily bars, dividends, "
                 f"splits, earnings, news and option IV — using {source}, and shows its "
                 "progress here.")
        if st.button("Start the first enrichment", type="primary", icon="🚀",
                     key="first_run"):
            if summary.is_empty():
                ensure_demo_universe(c.store().catalog)
            c.start_run(kind="manual")
            st.rerun()


live_progress()
c.repairs()  # a catalog rebuilt, lake files quarantined: before anything says "fresh"

# -- open alerts (enrich.alerts): what the desk has told, or would tell, someone ---------------
open_alerts = c.alerts_read("open_incidents")
if not open_alerts.is_empty():
    st.subheader(f"🚨 Open alerts: {open_alerts.height}")
    c.dataframe(open_alerts.head(10).select(
        "severity", "title", "opened_at", "acked_by", "incident_id"), column_config={
        "title": st.column_config.TextColumn("what", width="large"),
        "opened_at": "since (UTC)", "acked_by": "acknowledged by", "incident_id": "id"})
    st.page_link(c.PAGES["alerts"], label="Alerts: acknowledge, snooze, history →")

if runs_total == 0 and not c.read("active_runs") and not _pending_run():
    first_launch()
    st.stop()  # nothing has run yet: the button is the one thing to do

nxt = c.next_refresh()
if nxt is not None and nxt["requests"]:
    when = f"at {ui.fmt_both(nxt['fire'])}" if nxt["fire"] else "if it ran now"
    st.caption(f"Next daily refresh {when}: {nxt['text']}.")
if nxt is not None and nxt.get("next_day"):
    follow = f" A follow-up refresh runs at {ui.fmt_both(nxt['follow_up'])}." \
        if nxt.get("follow_up") else ""
    st.info("Your provider plan serves a session's data only after its New York day ends: "
            "the latest session shows as *due* until 00:15 New York time." + follow)

# -- attention tiles ---------------------------------------------------------------------------
st.subheader("Symbols by their most urgent dataset")
shown = [s for s in q.GRID_STATES
         if s not in ("not_entitled", "due", "not_expected") or counts[s]]
cols = st.columns(len(shown))
for col, state in zip(cols, shown, strict=True):
    with col:
        st.metric(f"{ui.STATE_CHIP[state].split(' ')[0] if state in ui.STATE_CHIP else '🔒'} "
                  f"{TILE_LABELS[state]}", ui.fmt_int(counts[state]), border=True,
                  help=ui.STATE_HELP.get(state))
        if counts[state]:
            st.page_link(c.PAGES["symbols"], label=f"Show {counts[state]} →",
                         query_params={"state": state})

attention = summary.filter(pl.col("state").is_in(["failing", "stale", "never", "late",
                                                   "not_entitled"]))
if attention.height:
    with st.expander(f"Needs attention: {attention.height} symbols", expanded=True):
        top, _ = q.filter_symbols(summary.filter(pl.col("state") != "fresh"), limit=10)
        table = top.select(
            "symbol", "name",
            pl.struct("state", "sessions_behind").map_elements(
                lambda r: ui.chip(r["state"], r["sessions_behind"]),
                return_dtype=pl.String).alias("status"),
            "last_error_class", "last_success_at")
        c.dataframe(table, column_config={
            "last_success_at": "last success (UTC)", "last_error_class": "last error"})
        st.page_link(c.PAGES["symbols"], label="All symbols, most urgent first →",
                     query_params={"sort": "needs attention"})
elif not summary.is_empty():
    st.success("Everything is fresh: every dataset holds the latest expected session.")

# -- status distribution per dataset -----------------------------------------------------------
dist = q.state_distribution(c.grid())
if not dist.is_empty():
    st.subheader("Status per dataset")
    fig = go.Figure()
    for state in q.GRID_STATES:
        part = dist.filter(pl.col("state") == state)
        if part["symbols"].sum() == 0:
            continue
        fig.add_bar(
            y=part["dataset"].to_list(), x=part["symbols"].to_list(), orientation="h",
            name=ui.STATE_CHIP.get(state, "🔒 not entitled"),
            marker_color=ui.STATE_COLOR.get(state, "#607d8b"),
            customdata=[[d, state] for d in part["dataset"].to_list()],
            hovertemplate="%{y}: %{x} symbols " + state + "<extra></extra>")
    fig.update_layout(barmode="stack", height=300, margin=dict(l=0, r=0, t=10, b=0),
                      legend=dict(orientation="h", y=-0.2), xaxis_title="symbols",
                      yaxis=dict(categoryorder="array",
                                 categoryarray=list(reversed(q.STATUS_DATASETS))))
    event = st.plotly_chart(fig, key="distribution", on_select="rerun",
                            selection_mode="points")
    st.caption("Click a bar to list its symbols.")
    points = getattr(getattr(event, "selection", None), "points", None) or []
    if points and points[0].get("customdata"):
        ds, state = points[0]["customdata"][:2]
        st.switch_page(c.PAGES["symbols"], query_params={"state": state, "dataset": ds})

# -- pipeline metrics, last 24 hours -----------------------------------------------------------
since = c.now_minute() - dt.timedelta(hours=24)
m = c.read("pipeline_metrics", since)
f, cp = m["fetch"], m["compute"]
st.subheader("Last 24 hours")
r1 = st.columns(6)
r1[0].metric("Fetch steps", ui.fmt_int(f["steps"]))
r1[1].metric("Provider requests", ui.fmt_int(f["requests"]))
r1[2].metric("Rows written", ui.fmt_int(f["rows"]))
r1[3].metric("Fetch success", ui.fmt_pct(f["success_rate"]))
r1[4].metric("Fetch p50", ui.fmt_ms(f["p50_ms"]))
r1[5].metric("Fetch p95", ui.fmt_ms(f["p95_ms"]))
r2 = st.columns(6)
r2[0].metric("Feature computations", ui.fmt_int(cp["steps"]))
r2[1].metric("Feature rows", ui.fmt_int(cp["rows"]))
r2[2].metric("Compute success", ui.fmt_pct(cp["success_rate"]))
r2[3].metric("Compute p50", ui.fmt_ms(cp["p50_ms"]))
r2[4].metric("Compute p95", ui.fmt_ms(cp["p95_ms"]))
r2[5].metric("Rows refused", ui.fmt_int(f["rejected"]),
             help="Rows the provider returned that failed validation and were not stored.")

# -- overall -----------------------------------------------------------------------------------
st.subheader("All time")
o = c.read("overall_success")
latest = c.read("latest_enrichment")
a = st.columns(4)
a[0].metric("Runs succeeded", ui.fmt_pct(o["run_success_rate"]),
            help=f"of {o['runs_finished']} finished runs")
a[1].metric("Symbols enriched without error", ui.fmt_pct(o["task_success_rate"]))
a[2].metric("Fetch steps succeeded", ui.fmt_pct(o["fetch_success_rate"]))
a[3].metric("Latest enrichment", ui.fmt_ago(latest["last_success_at"], c.now()),
            help="newest successful dataset update")
if latest["last_success_at"] is not None:
    st.caption(f"Latest enrichment: {ui.fmt_utc(latest['last_success_at'], seconds=True)} "
               f"· {ui.fmt_exchange(latest['last_success_at'])}")
if latest["last_run"]:
    lr = latest["last_run"]
    st.caption(f"Last run {ui.run_state_label(lr['state'])} ({ui.literal(lr['kind'])}) "
               f"finished {ui.fmt_utc(lr['finished_at'])}: {ui.literal(lr['message'] or '')}")
    c.run_link(lr["run_id"], "Open the last run →")
