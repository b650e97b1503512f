"""Metrics: all-time statistics, fetch and compute pipelines per dataset and per day, quality."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from enrich import ui
from enrich.views import metrics as metrics_view
from pages import _charts as charts
from pages import _common as c

MS = {"p50_ms": st.column_config.NumberColumn("p50 ms", format="%.0f"),
      "p95_ms": st.column_config.NumberColumn("p95 ms", format="%.0f"),
      "success_rate": st.column_config.NumberColumn("success", format="percent")}
DAILY = {"rows": ("Rows per day", "rows written"), "requests": ("Requests per day", "requests"),
         "p95_ms": ("p95 response per day", "p95 ms")}

c.page_header("Metrics", "Days are UTC days; durations are per fetch step (one dataset of one "
                         "symbol, or its ticker reference) that called the provider.")
now = c.clock().replace(second=0)  # the logs are stamped by the wall clock, not ENRICH_NOW
days = st.segmented_control("Window for the daily charts", [7, 30, 90, 365], default=30,
                            format_func=lambda d: f"{d} days", key="metric_days") or 30

# -- all time ----------------------------------------------------------------------------------
tot = c.read(metrics_view.metrics_totals)
win = c.read(metrics_view.metrics_window, now, days)
s = tot["alltime"]
by_ds = tot["fetch_by_dataset"]  # its per-dataset requests add up to the all-time total
st.subheader("All time")
c.tiles([
    ("Runs", ui.fmt_int(s["runs"])),
    ("Symbols", ui.fmt_int(s["symbols"])),
    ("Active symbols", ui.fmt_int(s["active_symbols"])),
    ("Symbol tasks", ui.fmt_int(s["symbol_tasks"])),
    ("Rows written", ui.fmt_int(s["rows_written"])),
    ("Provider requests", ui.fmt_int(int(by_ds["requests"].sum()))),
    ("Median run", ui.fmt_duration(s["median_run_s"])),
])
if s["runs"]:
    st.markdown(f"First run {ui.fmt_utc(s['first_run_at'])} · latest "
                f"{ui.fmt_utc(s['last_run_at'])} · by state: "
                + ", ".join(f"{ui.run_badge(k)} {v:,}" for k, v in
                            s["runs_by_state"].items()))

# -- last 24 hours -----------------------------------------------------------------------------
st.subheader("Last 24 hours")
m24 = win["last_24h"]
c.tiles([
    ("Fetch steps", ui.fmt_int(m24["fetch"]["steps"])),
    ("Requests", ui.fmt_int(m24["fetch"]["requests"])),
    ("Rows", ui.fmt_int(m24["fetch"]["rows"])),
    ("Success", ui.fmt_pct(m24["fetch"]["success_rate"]),
     f"of {m24['fetch']['steps']:,} fetch steps"),
    ("p50", ui.fmt_ms(m24["fetch"]["p50_ms"])),
    ("p95", ui.fmt_ms(m24["fetch"]["p95_ms"])),
])
hourly = win["hourly"]
if not hourly.is_empty():
    fig = charts.series(hourly, "hour", "steps", hover=["failed", "requests", "rows", "p95_ms"],
                        labels={"hour": "hour (UTC)", "steps": "fetch steps"}, height=240)
    fig.update_traces(width=3_600_000 * 0.9)  # one bar per UTC hour, in milliseconds
    fig.update_xaxes(range=[now - dt.timedelta(hours=24), now + dt.timedelta(hours=1)])
    c.compact_axis(fig)
    st.plotly_chart(fig, key="hourly")

# -- fetch pipeline ----------------------------------------------------------------------------
st.subheader("Fetch pipeline per dataset")
if by_ds.is_empty():
    st.info("No fetches yet.")
else:
    c.dataframe(by_ds, column_config={**MS, "rejected": "rows refused"})
    daily = win["fetch_daily"]
    if not daily.is_empty():
        # one chart and a choice of measure: three tabs would draw three charts
        col = st.segmented_control("Per day", list(DAILY), default="rows",
                                   format_func=lambda k: DAILY[k][0],
                                   key="daily_measure") or "rows"
        label = DAILY[col][1]
        fig = charts.series(daily, "day", col, "dataset", kind="line" if col == "p95_ms" else "bar",
                            labels={"day": "day (UTC)", col: label}, height=300)
        c.day_axis(fig, daily["day"].to_list())
        c.compact_axis(fig)
        st.plotly_chart(fig, key=f"daily_{col}")
    errs = tot["errors_by_class"]
    st.markdown("**Errors by class**")
    if errs.is_empty():
        st.caption("No failed or retried fetch step.")
    else:
        c.dataframe(errs, column_config={"failures": "failed steps",
                                         "retried": "retried attempts"})

# -- compute pipeline --------------------------------------------------------------------------
st.subheader("Compute pipeline (features)")
comp = tot["compute_by_dataset"]
if comp.is_empty():
    st.info("No feature computation yet.")
else:
    c.dataframe(comp, column_config=MS)
    cd = win["compute_daily"]
    if not cd.is_empty():
        fig = charts.series(cd, "day", "rows", "dataset", hover=["steps", "p95_ms"],
                            labels={"day": "day (UTC)", "rows": "feature rows"})
        c.day_axis(fig, cd["day"].to_list())
        c.compact_axis(fig)
        st.plotly_chart(fig, key="compute_daily")

# -- data quality ------------------------------------------------------------------------------
st.subheader("Data quality")
qual = tot["quality"]
if qual.is_empty():
    st.caption("Nothing received yet.")
else:
    c.dataframe(qual, column_config={
        "rejected": "rows refused",
        "rejected_share": st.column_config.NumberColumn("refused share", format="percent"),
        "steps_with_rejections": "fetches with refusals",
        "payloads_refused": "payloads refused whole",
        "last_rejection_at": "last refusal (UTC)"})
    rej = tot["recent_rejections"]
    if not rej.is_empty():
        st.markdown("**Latest refusals**")
        c.dataframe(rej, column_config={"started_at": "at (UTC)", "rejected": "refused"})

# -- data-quality checks -------------------------------------------------------------------------
st.subheader("Data-quality checks")
qd = tot["quality_by_dataset"]
if qd.is_empty():
    st.caption("No check has run yet: they run after every fetch.")
else:
    st.caption("Latest result of every check per symbol × dataset; the score is the share "
               "of checks passing, errors weighted 3×. Details per symbol on the Quality "
               "page and in each symbol's drilldown.")
    c.dataframe(c.quality_chips(c.quality_chips(qd, "mean_score"), "worst_score"),
                key="quality_by_dataset",
                chips={"mean_score": "quality", "worst_score": "quality"}, column_config={
        "mean_score": "mean score", "worst_score": "worst",
        "symbols_failing": "symbols failing", "failed_checks": "failing checks"})
    qt = win["quality_daily"]
    if not qt.is_empty():
        fig = charts.series(qt, "day", "pass_rate", "dataset", kind="line", markers=True,
                            hover=["checks", "failed"],
                            labels={"day": "day (UTC)", "pass_rate": "checks passing (weighted)"})
        fig.update_yaxes(tickformat=".0%")
        c.day_axis(fig, qt["day"].to_list())
        st.plotly_chart(fig, key="quality_daily")
    c.dataframe(tot["quality_by_check"], key="quality_by_check", column_config={
        "check_name": "check", "symbols": "symbols checked",
        "worst_observed": st.column_config.NumberColumn("worst observed", format="%.4g"),
        "last_failure": st.column_config.TextColumn("newest failure", width="large")})
