"""Overview: is everything OK? What needs attention comes first."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from enrich import diagnosis, palette, ui
from enrich.store.universe import ensure_demo_universe
from enrich.symbols import DEMO_UNIVERSE
from enrich.views import alerts as alerts_view
from enrich.views import metrics as metrics_view
from enrich.views import runs as runs_view
from enrich.views import status as status_view
from pages import _common as c

TILE_LABELS = {
    "failing": "Failing", "stale": "Stale", "never": "Never fetched", "late": "Late",
    "due": "Due", "fresh": "Fresh", "not_expected": "Not expected",
    "not_entitled": "Not entitled",
}

c.page_header("Overview", "Is everything OK? Symbols that need attention come first.")

# Runs ended as of the numbers below: a run that ends after them reruns the page, even one
# that started and ended between two polls of the live progress (a fast run on a loaded
# machine left the page on its numbers from before).
st.session_state["overview_finished"] = c.read(runs_view.finished_runs)
summary = c.summary()
counts = status_view.symbol_state_counts(summary)
runs_total = c.read(metrics_view.alltime_stats)["runs"]


# -- live progress (polls the catalog; a finished run refreshes the whole page) ----------------
def _pending_run() -> str | None:
    """A run this session started whose row the service has not written yet."""
    rid = st.session_state.get("last_run_id")
    return rid if rid and c.read(runs_view.run_progress, rid) is None else None


@st.fragment(run_every=2)
def live_progress() -> None:
    active = c.read(runs_view.active_runs)
    pending = _pending_run()
    ids = [p["run_id"] for p in active] + ([pending] if pending else [])
    before = st.session_state.get("overview_active_ids")
    st.session_state["overview_active_ids"] = ids
    if before is not None and before != ids and not (pending and before == []):
        st.rerun()  # a run started or finished: every number on the page may change
    if c.read(runs_view.finished_runs) != st.session_state.get("overview_finished"):
        st.rerun()  # one ended since the page's numbers were read
    if not ids:
        return
    st.subheader("Running now")
    if pending:
        st.progress(0.0, text=f"Run {ui.literal(pending[:8])}: queued, starting…")
    for p in active:
        c.progress_block(p, key=f"ov-{p['run_id']}")
        c.run_link(p["run_id"])


def _demo_classes() -> str:
    """What the demo universe holds, by class: "18 US stocks, 7 ETFs, 2 crypto pairs, …"."""
    words = {"stocks": ("US stock", "US stocks"), "etfs": ("ETF", "ETFs"),
             "crypto": ("crypto pair", "crypto pairs"), "fx": ("currency pair", "currency pairs"),
             "indices": ("index", "indices")}
    counts = Counter(s.asset_class for s in DEMO_UNIVERSE)
    return ", ".join(f"{n} {words.get(cls, (cls, cls))[n > 1]}" for cls, n in counts.items())


def first_launch() -> None:
    """An empty store: one obvious button that starts the first enrichment."""
    with st.container(border=True):
        st.subheader("No data yet")
        if summary.is_empty():
            n = len(DEMO_UNIVERSE)
            what = (f"the demo universe ({n} symbols: {_demo_classes()})" if c.is_demo()
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

# Nothing has run yet — or only runs of an empty universe (a daily fire before the first
# enrichment: it "succeeded" with 0 symbols, and the button was gone for good).
nothing_yet = runs_total == 0 or (summary.is_empty() and not c.store().catalog.scalar(
    "SELECT count(*) FROM symbols"))
if nothing_yet and not c.read(runs_view.active_runs) and not _pending_run():
    first_launch()
    st.stop()  # the button is the one thing to do


# -- why: the causes before the symptoms (enrich.diagnosis) ------------------------------------
def _since(fires: list, schedule: dict) -> str:
    last = schedule["last_scheduled"]
    if last:
        return f"since the last scheduled run ({ui.fmt_utc(last['requested_at'])})"
    return f"since {ui.fmt_utc(fires[0])}" if fires else ""


def cause_text(cause: dict, schedule: dict, behind: dict, quality: dict) -> str:
    """One cause as a sentence (Markdown; text users wrote is quoted with ``ui.literal``)."""
    kind = cause["kind"]
    fires = schedule["unrun_fires"]
    if kind == "paused":
        who = ui.literal(schedule["paused_by"] or "?")
        why = f": {ui.literal(schedule['pause_reason'], limit=200)}" \
            if schedule["pause_reason"] else ""
        skipped = (f" {ui.plural(cause['skipped'], 'daily run')} did not run "
                   f"{_since(fires, schedule)}." if cause["skipped"] else "")
        return (f"**The daily schedule is paused** — by {who} since "
                f"{ui.fmt_utc(schedule['paused_at'])}{why}.{skipped} Resume it on Controls.")
    if kind == "no_scheduler":
        how = ("its process stopped without a clean stop" if cause["dead"]
               else "no dashboard or `python -m enrich serve` runs the schedule"
               + ("" if schedule["scheduler_here"] else " (ENRICH_SCHEDULER=off here)"))
        skipped = (f": {ui.plural(cause['skipped'], 'daily run')} did not happen "
                   f"{_since(fires, schedule)}" if cause["skipped"] else "")
        return (f"**No scheduler is running** — {how}{skipped}. Nothing refreshes the data "
                "until one runs; start `python -m enrich serve` (or a dashboard with "
                "ENRICH_SCHEDULER=on), or run now.")
    if kind == "missed":
        return (f"**{ui.plural(cause['skipped'], 'daily run')} missed** — no scheduler was "
                "running at their time; the Runs page lists them as *missed*.")
    if kind == "last_run":
        lr = schedule["last_run"]
        return (f"**The last run {ui.run_badge(lr['state'])}** "
                f"({ui.literal(lr['kind'])}, {ui.fmt_utc(lr['requested_at'])}): "
                f"{ui.literal(lr['message'] or '', limit=200)}")
    if kind == "behind":
        held = (f"the oldest holds {ui.fmt_session(behind['oldest_held'])}, "
                if behind["oldest_held"] else "")
        return (f"**{ui.plural(behind['behind'], 'symbol')} behind** — up to "
                f"{ui.plural(behind['max_behind'], 'session')}: {held}the latest expected "
                f"session is {ui.fmt_sessions(behind['expected'])}.")
    if kind == "failing":
        classes = ", ".join(f"{ui.literal(c)} ×{n}" for c, n in behind["error_classes"][:4])
        # Symbols counted as symbols; their failing datasets (symbol × dataset) beside them.
        whose = "its" if behind["failing_symbols"] == 1 else "their"
        return (f"**{ui.plural(behind['failing_symbols'], 'symbol')} failing** "
                f"({behind['failing']:,} of {whose} datasets): the last attempt ended in "
                f"{classes}. Each symbol's page leads with its error.")
    if kind == "never":
        return (f"**{ui.plural(behind['never'], 'symbol')} never fetched** — in the universe, "
                "nothing held yet: a run fetches their history (the daily one, or now).")
    if kind == "alerts":
        errs = f", {cause['errors']} at error level" if cause["errors"] else ""
        return f"**{ui.plural(cause['open'], 'open alert')}**{errs} (listed below)."
    if kind == "quality":
        errs = f", {quality['errors']} at error level" if quality.get("errors") else ""
        return (f"**{ui.plural(quality['checks'], 'quality check')} failing** on "
                f"{ui.plural(quality['symbols'], 'symbol')}{errs}.")
    return kind


open_alerts = c.alerts_read(alerts_view.open_incidents)
schedule = c.schedule_facts()
behind = diagnosis.behind_facts(summary, c.grid())
quality_now = c.quality_facts()
alert_errors = int((open_alerts["severity"] == "error").sum()) if open_alerts.height else 0
causes = diagnosis.overview_causes(schedule, behind, quality_now, open_alerts.height,
                                   alert_errors)

st.subheader("Why")
facts = st.columns(4)
sched_word = {"running": ("running", palette.OK), "paused": ("paused", palette.BAD),
              "stopped": ("not running", palette.BAD), "dead": ("dead", palette.BAD)}
word, level = sched_word.get(schedule["state"], (schedule["state"], palette.IDLE))
if schedule["paused"]:
    word, level = "paused", palette.BAD
elif schedule["state"] == "stopped" and schedule["next_fire"] is not None:
    word, level = "starts with this dashboard", palette.OK
c.fact(facts[0], "Scheduler", palette.markdown(level, word))
lr = schedule["last_run"]
c.fact(facts[1], "Last run",
       f"{ui.run_badge(lr['state'])} {ui.fmt_ago(lr['requested_at'], c.clock())}" if lr
       else "none yet", ui.fmt_utc(lr["requested_at"]) if lr else None)
c.fact(facts[2], "Next daily run", ui.fmt_both(schedule["next_fire"]) if schedule["next_fire"]
       else palette.markdown(palette.BAD, "none scheduled"))
n_skipped = len(schedule["unrun_fires"]) + len(schedule["missed_runs"])
c.fact(facts[3], "Daily runs missed", palette.markdown(
    palette.BAD if n_skipped else palette.OK, f"{n_skipped} in {diagnosis.MISSED_SHOWN} days"),
    "Daily fire times since the last scheduled run with no run (paused, or no scheduler "
    "running), and fires recorded as missed.")
if not causes:
    st.success("Nothing needs you: every dataset holds the latest expected session, the "
               "schedule runs, and no check or alert is failing.")
for cause in causes:
    c.alert(cause["level"], cause_text(cause, schedule, behind, quality_now))
acts = st.columns([2, 2, 3])
if behind["runnable"]:
    n = len(behind["runnable"])
    if acts[0].button(f"Run the {n:,} not fresh now", type="primary", icon="⚡",
                      key="run_stale",
                      help="Enrich now every symbol late, stale, failing or never fetched: "
                           + ui.literal(", ".join(behind["runnable"][:20])
                                        + (" …" if n > 20 else ""))):
        c.start_run(symbols=behind["runnable"], kind="manual")
        st.rerun()
if schedule["paused"] or schedule["state"] in ("stopped", "dead"):
    with acts[1]:
        st.page_link(c.PAGES["controls"], label="Schedule on Controls →", icon="⏸️")
if quality_now.get("checks"):
    with acts[2]:
        st.page_link(c.PAGES["quality"], label="Worst quality first →", icon="🧪")

# -- open alerts (enrich.alerts): what the desk has told, or would tell, someone ---------------
if not open_alerts.is_empty():
    st.subheader(f"Open alerts: {open_alerts.height}")
    c.dataframe(open_alerts.head(10).select(
        "severity", "title", "opened_at", "acked_by", "incident_id"),
        chips={"severity": "severity"}, column_config={
        "title": st.column_config.TextColumn("what", width="large"),
        "opened_at": "since (UTC)", "acked_by": "acknowledged by", "incident_id": "id"})
    st.page_link(c.PAGES["alerts"], label="Alerts: acknowledge, snooze, history →")

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
shown = [s for s in status_view.GRID_STATES
         if s not in ("not_entitled", "due", "not_expected") or counts[s]]
cols = st.columns(len(shown))
for col, state in zip(cols, shown, strict=True):
    with col:
        st.metric(ui.state_badge(state, TILE_LABELS[state]), ui.fmt_int(counts[state]),
                  border=True, help=ui.STATE_HELP.get(state))
        if counts[state]:
            st.page_link(c.PAGES["symbols"], label=f"Show {counts[state]:,} →",
                         query_params={"state": state})

top, n_attention = status_view.needs_attention(summary)
if n_attention:
    with st.expander(f"Needs attention: {n_attention:,} symbol{'s' if n_attention != 1 else ''}",
                     expanded=True):
        table = top.select(
            "symbol", "name",
            pl.struct("state", "sessions_behind").map_elements(
                lambda r: ui.chip(r["state"], r["sessions_behind"]),
                return_dtype=pl.String).alias("status"),
            "last_error_class", "last_success_at")
        c.dataframe(table, chips={"status": "state"}, column_config={
            "last_success_at": "last success (UTC)", "last_error_class": "last error"})
        st.page_link(c.PAGES["symbols"], label="All symbols, most urgent first →",
                     query_params={"sort": "needs attention"})

# -- status distribution per dataset -----------------------------------------------------------
dist = status_view.state_distribution(c.grid())
if not dist.is_empty():
    st.subheader("Status per dataset")
    fig = go.Figure()
    for state in status_view.GRID_STATES:
        part = dist.filter(pl.col("state") == state)
        if part["symbols"].sum() == 0:
            continue
        fig.add_bar(
            y=part["dataset"].to_list(), x=part["symbols"].to_list(), orientation="h",
            name=ui.STATE_CHIP.get(state, state),
            marker_color=ui.STATE_COLOR.get(state, palette.HEX[palette.IDLE]),
            customdata=[[d, state] for d in part["dataset"].to_list()],
            hovertemplate="%{y}: %{x:,} symbols " + ui.STATE_CHIP.get(state, state)
            + "<extra></extra>")
    fig.update_layout(barmode="stack", height=300, margin=dict(l=0, r=0, t=10, b=0),
                      legend=dict(orientation="h", y=-0.2), xaxis_title="symbols",
                      xaxis=dict(exponentformat="B", separatethousands=True),
                      yaxis=dict(categoryorder="array",
                                 categoryarray=list(reversed(status_view.STATUS_DATASETS))))
    event = st.plotly_chart(fig, key="distribution", on_select="rerun",
                            selection_mode="points")
    st.caption("Click a bar to list its symbols.")
    points = getattr(getattr(event, "selection", None), "points", None) or []
    if points and points[0].get("customdata"):
        ds, state = points[0]["customdata"][:2]
        st.switch_page(c.PAGES["symbols"], query_params={"state": state, "dataset": ds})

# -- pipeline metrics, last 24 hours -----------------------------------------------------------
since = c.clock().replace(second=0) - dt.timedelta(hours=24)  # logs: the wall clock's
m = c.read(metrics_view.pipeline_metrics, since)
f, cp = m["fetch"], m["compute"]
st.subheader("Last 24 hours")
c.tiles([
    ("Fetch steps", ui.fmt_int(f["steps"])),
    ("Provider requests", ui.fmt_int(f["requests"])),
    ("Rows written", ui.fmt_int(f["rows"])),
    ("Rows refused", ui.fmt_int(f["rejected"]),
     "Rows the provider returned that failed validation and were not stored."),
    ("Fetch success", ui.fmt_pct(f["success_rate"]), f"of {f['steps']:,} fetch steps"),
    ("Fetch p50 / p95", f"{ui.fmt_ms(f['p50_ms'])} / {ui.fmt_ms(f['p95_ms'])}"),
    ("Feature computations", ui.fmt_int(cp["steps"])),
    ("Feature rows", ui.fmt_int(cp["rows"])),
    ("Compute success", ui.fmt_pct(cp["success_rate"]), f"of {cp['steps']:,} feature "
     "computations"),
    ("Compute p50 / p95", f"{ui.fmt_ms(cp['p50_ms'])} / {ui.fmt_ms(cp['p95_ms'])}"),
])

# -- overall -----------------------------------------------------------------------------------
st.subheader("All time")
o = c.read(metrics_view.overall_success)
latest = c.read(metrics_view.latest_enrichment)
c.tiles([
    ("Runs succeeded", ui.fmt_pct(o["run_success_rate"]),
     f"of {o['runs_finished']:,} runs that ran to their end (paused and cancelled runs are "
     "left out)"),
    ("Symbol tasks without error", ui.fmt_pct(o["task_success_rate"]),
     f"of {o['tasks_finished']:,} symbol tasks that ended (a task is one symbol in one run, "
     "so a symbol counts once per run)"),
    ("Fetch steps succeeded", ui.fmt_pct(o["fetch_success_rate"]),
     f"of {o['fetch_steps_finished']:,} fetch steps (one dataset of one symbol, or its "
     "ticker reference)"),
    ("Latest enrichment", ui.fmt_ago(latest["last_success_at"], c.clock()),
     "newest successful dataset update"),
])
if latest["last_success_at"] is not None:
    st.caption(f"Latest enrichment: {ui.fmt_utc(latest['last_success_at'], seconds=True)} "
               f"· {ui.fmt_exchange(latest['last_success_at'])}")
if latest["last_run"]:
    lr = latest["last_run"]
    st.caption(f"Last run {ui.run_badge(lr['state'])} ({ui.literal(lr['kind'])}) "
               f"finished {ui.fmt_utc(lr['finished_at'])}: {ui.literal(lr['message'] or '')}")
    c.run_link(lr["run_id"], "Open the last run →")
