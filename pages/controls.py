"""Controls: run now (symbols, datasets, asset class, timeframe, lookback); pause / resume."""

from __future__ import annotations

import polars as pl
import streamlit as st

from enrich import palette, ui
from enrich.errors import EnrichError
from enrich.schemas import FETCHED
from enrich.symbols import ASSET_CLASSES
from enrich.views import health as health_view
from enrich.views import runs as runs_view
from enrich.views import universe as universe_view
from pages import _common as c

ANY = "any"

c.page_header("Controls", "Start a run now, or pause the daily schedule.")
settings = c.settings()
svc = c.services()
if svc is None:
    st.error("The run service is not available in this installation.")

# -- run now -----------------------------------------------------------------------------------
st.subheader("Run now")
universe = c.read(universe_view.universe_table)
active = universe.filter(universe["active"])["symbol"].to_list() if universe.height else []
with st.form("run_now"):
    symbols = c.symbol_picker(st, "Symbols", active, key="run_symbols",
                              placeholder=f"all {len(active):,} active symbols",
                              help="Leave empty to enrich the whole active universe.")
    f = st.columns(4)
    datasets = f[0].multiselect("Datasets", list(FETCHED), key="run_datasets",
                                placeholder="all that apply",
                                help="Splits are always fetched with bars.")
    asset = f[1].selectbox("Asset class", [ANY, *ASSET_CLASSES], key="run_asset")
    timeframe = f[2].selectbox("Timeframe", ["1d", "1h", "5m"], key="run_timeframe")
    lookback = f[3].number_input(
        "Lookback for a first fetch (days)", min_value=0, max_value=365 * 30, value=0,
        step=30, key="run_lookback",
        help=f"0 = the default ({settings.history_years} years of history; news one year). "
             "Only symbols fetched for the first time use it; the others fetch what is "
             "missing since their last session.")
    b = st.columns([1, 1, 4])
    submitted = b[0].form_submit_button("Run now", type="primary", icon="▶️",
                                        disabled=svc is None or not active)
    estimate = b[1].form_submit_button("Estimate cost", icon="🧮",
                                       disabled=svc is None or not active,
                                       help="What the run would fetch, by which path, and "
                                            "the provider requests it would cost.")
if not active:
    st.info("The universe has no active symbol: add some under Settings, or start the first "
            "enrichment on the Overview.")
if estimate and svc is not None:
    try:
        plan = svc.plan(symbols=symbols or None, datasets=datasets or None,
                        asset_class=None if asset == ANY else asset, timeframe=timeframe,
                        lookback=int(lookback) or None)
    except EnrichError as exc:
        c.report_error("estimate the run", exc)
    else:
        st.markdown(f"**This run would make {ui.fmt_int(plan.requests)} requests** "
                    f"({ui.fmt_int(plan.per_symbol_requests)} by the per-symbol path)"
                    + (f", about {ui.fmt_duration(plan.eta_s())} at "
                       f"{settings.rate_limit_per_min:g} requests/min."
                       if plan.eta_s() is not None else "; the demo provider has no limit."))
        c.dataframe(pl.DataFrame(plan.rows()), column_config={
            "universe_requests": "universe-wide", "symbol_requests": "per symbol",
            "per_symbol_path": "per-symbol path alone", "minutes": "minutes at the rate",
            "up_to_date": "up to date"})
        st.caption("Universe-wide requests (grouped daily bars, market-wide dividends, splits, "
                   "income statements and news) serve every symbol whose missing window they "
                   "cover; first fetches, symbols far behind and option chains go per symbol.")
if submitted:
    run_id = c.start_run(symbols=symbols or None, datasets=datasets or None,
                         asset_class=None if asset == ANY else asset, timeframe=timeframe,
                         lookback=int(lookback) or None, kind="manual")
    if run_id:
        st.session_state["controls_run"] = run_id


@st.fragment(run_every=1.5)
def followed_run() -> None:
    run_id = st.session_state.get("controls_run")
    if not run_id:
        return
    p = c.read(runs_view.run_progress, run_id)
    if p is None:
        st.info(f"Run {ui.literal(run_id[:8])} queued…")
    elif p["state"] in runs_view.ACTIVE_RUN_STATES:
        c.progress_block(p, key=f"ctl-{run_id}")
    else:
        c.run_outcome(run_id, p["state"], p["message"])
    c.run_link(run_id)


followed_run()

# -- schedule ----------------------------------------------------------------------------------
st.subheader("Daily schedule")
state = c.read(health_view.scheduler_state)
nxt = svc.next_fire_time() if svc is not None else None
st.write(f"Runs daily at **{settings.schedule_utc:%H:%M} UTC**"
         + (f"; next {ui.fmt_both(nxt)}." if nxt else ".")
         + ("" if settings.scheduler else " The scheduler is off in this process "
            "(ENRICH_SCHEDULER=off); the pause flag is still kept for when it runs."))
def _schedule_action(action: str) -> None:
    """Pause or resume (a button's callback: it runs even when the click lands on a page
    that no longer shows the button, because someone else acted first) and say what
    happened, with who acted first when the call changed nothing."""
    if svc is None:
        return
    try:
        if action == "pause":
            reason = (st.session_state.get("pause_reason") or "").strip() or None
            changed = svc.pause(by=c.ACTOR, reason=reason)
        else:
            changed = svc.resume(by=c.ACTOR)
    except EnrichError as exc:
        st.session_state["schedule_said"] = (palette.BAD, f"Could not {action} the schedule: "
                                             f"{ui.literal(exc)}")
    else:
        c.invalidate()
        now_state = health_view.scheduler_state(c.store().catalog)
        st.session_state["schedule_said"] = (
            (palette.OK, f"Schedule {action}d.") if changed else
            (palette.WARN, ui.schedule_unchanged(action, now_state)))


if state.get("paused"):
    st.warning(f"{palette.markdown(palette.BAD, 'paused')} by "
               f"{ui.literal(state.get('paused_by') or '?')} at "
               f"{ui.fmt_utc(state.get('paused_at'))}"
               + (f": {ui.literal(state['pause_reason'])}" if state.get("pause_reason") else ""))
    st.button("Resume schedule", icon="▶️", key="resume", disabled=svc is None,
              on_click=_schedule_action, args=("resume",))
else:
    if settings.scheduler:
        st.success(f"{palette.markdown(palette.OK, 'not paused')} The daily run "
                   "will fire.")
    else:
        st.info("Not paused. The daily run fires wherever the scheduler runs "
                "(`python -m enrich serve`, or a dashboard with ENRICH_SCHEDULER=on).")
    st.text_input("Reason (optional, shown to everyone)", key="pause_reason",
                  placeholder="e.g. provider maintenance tonight")
    st.button("Pause schedule", icon="⏸️", key="pause", disabled=svc is None,
              on_click=_schedule_action, args=("pause",))
if said := st.session_state.pop("schedule_said", None):
    c.alert(*said)
st.caption("Pausing stops only the daily run; manual runs and retries keep working. "
           "The flag is stored in the catalog and survives restarts.")
