"""Health: scheduler, catalog, lake, provider and key, symbol health, recent failures."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from enrich import palette, ui
from enrich.views import health as health_view
from enrich.views import status as status_view
from pages import _common as c

SCHEDULER_WORDS = {
    "running": (palette.markdown(palette.OK, "running"),
                "The scheduler is alive and will fire at the next run time."),
    "paused": (palette.markdown(palette.BAD, "paused"),
               "The daily run is paused; manual runs still work."),
    "stopped": (palette.markdown(palette.BAD, "stopped"),
                "No process runs the schedule right now (the dashboard and "
                "`python -m enrich serve` run it when ENRICH_SCHEDULER=on)."),
    "dead": (palette.markdown(palette.BAD, "dead"),
             "The process that owned the schedule stopped beating without a clean "
             "stop. Restart the dashboard or `python -m enrich serve`."),
}
PROBE_WORDS = {
    "valid": ("success", "The key is valid: the provider accepted it."),
    "invalid key": ("error", "The key is invalid: the provider refused it. Check "
                             "MASSIVE_API_KEY (or POLYGON_API_KEY) in the environment or .env."),
    "not entitled": ("warning", "The key works, but the plan is not entitled to this data. "
                                "Upgrade the plan or leave those datasets out."),
    "unreachable": ("error", "The provider could not be reached. Check the network and "
                             "MASSIVE_BASE_URL."),
    "rate limited": ("warning", "The provider answered but refuses more requests for now "
                                "(HTTP 429): the plan's requests per minute are used up. Try "
                                "again in a minute; if runs meet it too, set "
                                "ENRICH_RATE_LIMIT_PER_MIN to the plan's rate."),
    "provider error": ("error", "The provider answered with an error: the network and "
                                "MASSIVE_BASE_URL are fine. Try again later."),
    "demo": ("info", "The sample provider needs no key: it generates offline demo data."),
}

c.page_header("Health", "What to check first when something looks wrong.")
h = c.health()
settings = c.settings()

# -- scheduler ---------------------------------------------------------------------------------
st.subheader("Scheduler")
sch = h.get("scheduler") or {}
schedule = h.get("schedule") or {}
state = sch.get("state") or "stopped"
if not settings.scheduler:
    label = palette.markdown(palette.IDLE, "off")
    words = "ENRICH_SCHEDULER=off: no daily run in this process; manual runs work."
else:
    label, words = SCHEDULER_WORDS.get(state, (state, ""))
cols = st.columns(4)
c.fact(cols[0], "State", label)
nxt = schedule.get("next_fire_utc")
c.fact(cols[1], "Next run (UTC)", ui.fmt_utc(nxt) if nxt else "—")
c.fact(cols[2], "Next run (exchange time)", ui.fmt_exchange(nxt) if nxt else "—")
last = h.get("last_run")
c.fact(cols[3], "Last run", (f"{ui.run_badge(last['state'])} · "
                             f"{ui.fmt_utc(last['requested_at'])}") if last else "—")
st.caption(words)
st.caption(f"Daily at {schedule.get('time_utc', '?')} UTC = {schedule.get('time_exchange', '?')}"
           f" in {schedule.get('exchange_tz', 'America/New_York')} today.")
if sch.get("paused"):
    st.warning(f"Paused by {ui.literal(sch.get('paused_by') or '?')} at "
               f"{ui.fmt_utc(sch.get('paused_at'))}"
               + (f": {ui.literal(sch['pause_reason'])}" if sch.get("pause_reason") else ""))
if sch.get("heartbeat_at"):
    st.caption(f"Heartbeat {ui.fmt_utc(sch['heartbeat_at'], seconds=True)} "
               f"({ui.fmt_ago(sch['heartbeat_at'], c.clock())}) from pid {sch.get('pid')} on "
               f"{ui.literal(sch.get('host') or '?')}")
if last:
    c.run_link(last["run_id"], f"Last run {ui.literal(last['run_id'][:8])}: "
                               f"{ui.literal(last.get('message') or '', limit=120)} →")

# -- storage -----------------------------------------------------------------------------------
st.subheader("Storage")
cat = h.get("catalog") or {}
lake = h.get("lake") or {}
s = st.columns(3)
c.fact(s[0], "Catalog", palette.markdown(palette.OK, "reachable") if cat.get("ok")
       else palette.markdown(palette.BAD, "unreachable"))
s[1].metric("Catalog query time", f"{cat['query_ms']:.1f} ms"
            if cat.get("query_ms") is not None else "—",
            help="open the catalog, take its lock, run one count query")
s[2].metric("Lake size", ui.fmt_bytes(lake.get("bytes")))
if cat.get("error"):
    st.error(ui.literal(cat["error"]))
st.caption(f"Catalog {ui.literal(cat.get('path', ''))} · lake {ui.literal(lake.get('path', ''))}")
c.repairs()
jr = h.get("journal") or {}
for name in jr.get("set_aside", []):
    st.warning(f"Journal file {ui.literal(jr['path'] + '/' + name)} could not be recorded: "
               "the restatements a stopped process found before it are not in the catalog "
               "(the log says why). Delete the file once you have looked at it.")
if jr.get("pending"):
    st.caption(f"{len(jr['pending'])} journal file(s) of restatements not recorded yet in "
               f"{ui.literal(jr['path'])}: the next catalog write records those a stopped "
               "process left.")

# -- provider ----------------------------------------------------------------------------------
st.subheader("Provider")
prov = h.get("provider") or {}
p = st.columns(4)
c.fact(p[0], "Provider", f"{settings.provider}" + (" (demo data)" if c.is_demo() else ""))
c.fact(p[1], "API key", h.get("api_key") or settings.key_masked,
       "Masked: only the first and last two characters are shown.")
c.fact(p[2], "Base URL host", ui.literal(settings.base_host) if not c.is_demo() else "— (offline)",
       "Only the host: user-info in MASSIVE_BASE_URL is never shown.")
probe = st.session_state.get("probe_result")
p[3].metric("Probe latency", f"{probe['latency_ms']:.0f} ms"
            if probe and probe.get("latency_ms") is not None else "—")
if st.button("Test key", icon="🔑", key="test_key",
             help="Calls the provider once (one request on the Massive plan); an answer "
                  "less than a minute old is shown again instead."):
    with st.spinner("Asking the provider…"):
        st.session_state["probe_result"] = c.probe()
    st.rerun()
if probe:
    kind, words = PROBE_WORDS.get(probe.get("status"), ("error", "The probe failed."))
    getattr(st, kind)(f"**{ui.literal(probe.get('status'))}** — {words}"
                      + (f" ({ui.literal(probe['message'])})" if probe.get("message") else ""))
    st.caption(f"Tested {ui.fmt_utc(probe.get('checked_at'), seconds=True)}")

# -- the plan's limits -------------------------------------------------------------------------
refused = c.read(health_view.not_entitled_summary)
limits = c.read(health_view.plan_limit_rows)
st.subheader("Plan")
if not refused and not limits:
    st.caption("The plan has served every dataset asked for so far.")
if refused:
    st.warning("The plan refused these datasets; runs skip them and ask again a week after "
               "the first refusal (or now, with Re-check).")
    c.dataframe(pl.DataFrame(refused).select("dataset", "symbols", "last_refused_at",
                                             "recheck_at"),
                column_config={"last_refused_at": "last refused (UTC)",
                               "recheck_at": "asked again (UTC)"})
if limits:
    rows = [{"limit": r["limit_key"], "what the plan serves":
             (f"the last {r['history_days']} days" if r["history_days"] is not None
              else "a session after its New York day ends" if r["value"] == "next_day"
              else r["value"]),
             "found (UTC)": r["found_at"], "how": r["detail"]} for r in limits]
    c.dataframe(pl.DataFrame(rows))
    st.caption("Limits are facts the provider stated: history is stored from the plan's "
               "window, and a session it serves only after midnight New York time is due "
               "until then (a follow-up refresh runs at 00:30 New York time).")
if (refused or limits) and st.button("Re-check entitlements", icon="🔁", key="recheck",
                                     help="Forget the refusals and limits: the next run "
                                          "asks the provider again."):
    from enrich.store.plan_limits import recheck

    n = recheck(c.store().catalog, settings.provider)
    c.invalidate()
    c.toast(f"Cleared {n} refusal(s); the next run asks again", icon="🔁")
    st.rerun()

# -- symbols and failures ----------------------------------------------------------------------
left, right = st.columns(2)
with left:
    st.subheader("Symbol health")
    counts = status_view.symbol_state_counts(c.summary())
    if sum(counts.values()):
        fig = go.Figure(go.Bar(
            x=[ui.STATE_CHIP.get(k, k) for k in counts],
            y=list(counts.values()), text=[f"{v:,}" for v in counts.values()],
            textposition="outside",
            marker_color=[ui.STATE_COLOR.get(k, palette.HEX[palette.IDLE]) for k in counts]))
        fig.update_layout(height=280, margin=dict(l=0, r=0, t=10, b=0),
                          yaxis_title="symbols (by most urgent dataset)")
        c.compact_axis(fig)
        st.plotly_chart(fig, key="symbol_health")
    else:
        st.caption("No symbols in the universe.")
with right:
    st.subheader("Failures, last 24 hours")
    failures = h.get("failures_24h") or {}
    if failures:
        c.dataframe(pl.DataFrame({"error class": list(failures),
                                  "failed fetch steps": list(failures.values())}))
    else:
        st.success("No failed fetch in the last 24 hours.")
    retries = h.get("retries_24h")
    if retries:
        st.caption(f"{retries} attempts were retried.")
    st.page_link(c.PAGES["metrics"], label="Errors by dataset and class →")
st.caption(f"Checked {ui.fmt_utc(h.get('checked_at'), seconds=True)}.")
