"""Quality: coverage heatmap (symbols × sessions) with gap filling, and the failing checks.

Select cells in the heatmap (box select) to fill in the form below it, or pick symbols and
dates there directly; the fill starts a backfill for exactly the missing sessions (a first
run for symbols never fetched). Everything shown comes from ``enrich.backfill.heatmap`` and the
quality read models (``enrich.views.quality``).
"""

from __future__ import annotations

import datetime as dt
import time
from urllib.parse import quote

import numpy as np
import plotly.graph_objects as go
import polars as pl
import streamlit as st

from enrich import palette, ui
from enrich.backfill import heatmap as cov
from enrich.checks import quality
from enrich.errors import EnrichError
from enrich.views import quality as quality_view
from enrich.views import runs as runs_view
from pages import _common as c

SESSIONS = (20, 60, 130, 252, 520, 1260)
SESSION_LABEL = {20: "20 sessions", 60: "60 sessions (~3 months)", 130: "130 (~6 months)",
                 252: "252 (1 year, weekly)", 520: "520 (2 years, weekly)",
                 1260: "1,260 (5 years, monthly)"}
ROWS = 40  # symbols drawn at once
SETTLE_S = 15.0  # after a fill's runs end, keep redrawing while their data is re-checked
SHOW = ("with gaps or failures first", "only with gaps or failures", "all, by symbol")
LEGEND = (f"{palette.markdown(palette.OK, 'present')} · "
          f"{palette.markdown(palette.BAD, 'missing')} (expected, never fetched or not held) · "
          f"{palette.markdown(palette.WARN, 'failed')} (a quality check points at it) · "
          f"{palette.markdown(palette.IDLE, 'not expected')} (weekend, holiday, before the "
          "listing date, not entitled)")

c.page_header("Quality", "Coverage per dataset in exchange sessions, and the data-quality "
                         "checks that run after every fetch.")
now = c.now_minute()

# -- coverage heatmap --------------------------------------------------------------------------
st.subheader("Coverage")
f = st.columns([2, 2, 3, 2])
dataset = f[0].selectbox("Dataset", cov.DATASETS, key="cov_dataset", bind="query-params")
sessions = f[1].selectbox("Window", SESSIONS, index=1, key="cov_sessions",
                          format_func=lambda n: SESSION_LABEL[n])
show = f[2].selectbox("Symbols", SHOW, key="cov_show")
search = f[3].text_input("Search", key="cov_search", placeholder="e.g. AAPL")
hm: cov.Heatmap = c.read(quality_view.coverage_heatmap, dataset, now, sessions)

if hm.empty:
    st.info("No active symbol has this dataset yet. Add symbols under Settings, or start "
            "the first enrichment on the Overview page.")
    st.stop()

summary = hm.summary().with_columns(
    (pl.col("missing") + pl.col("failed")).alias("attention"))
totals = hm.totals()
c.tiles([
    ("Symbols", ui.fmt_int(len(hm.symbols))),
    ("Missing cells", ui.fmt_int(totals["missing"]),
     "Expected sessions without data in the window: gaps, and history never fetched"),
    ("Failed cells", ui.fmt_int(totals["failed"]), "Sessions a failing quality check points at"),
    ("Symbols with gaps", ui.fmt_int(int((summary["missing"] > 0).sum()))),
])

rows = summary
if search:
    rows = rows.filter(pl.col("symbol").str.to_lowercase()
                       .str.contains(search.strip().lower(), literal=True))
if show == SHOW[0]:
    rows = rows.sort(["attention", "symbol"], descending=[True, False])
elif show == SHOW[1]:
    rows = rows.filter(pl.col("attention") > 0).sort("symbol")
pages = max(1, -(-rows.height // ROWS))
page_no = st.number_input("Page", 1, pages, 1, key="cov_page") if pages > 1 else 1
shown = rows.slice((page_no - 1) * ROWS, ROWS)["symbol"].to_list()


def heatmap_figure(h: cov.Heatmap) -> go.Figure:
    """The cells as a heatmap, with an invisible marker per cell so a box can select them."""
    x = [d.isoformat() for d in h.bucket_start]
    ends = [d.isoformat() for d in h.bucket_end]
    n_sym, n_b = h.codes.shape
    states = np.vectorize(cov.CODES.get)(h.codes) if h.codes.size else h.codes
    custom = np.dstack([
        np.repeat(np.array(h.symbols, dtype=object)[:, None], n_b, axis=1),
        np.repeat(np.array(x, dtype=object)[None, :], n_sym, axis=0),
        np.repeat(np.array(ends, dtype=object)[None, :], n_sym, axis=0),
        states.astype(object),
        h.counts[cov.PRESENT], h.counts[cov.MISSING], h.counts[cov.FAILED],
    ]) if h.codes.size else None
    scale = []
    for k in (cov.NOT_EXPECTED, cov.PRESENT, cov.MISSING, cov.FAILED):
        scale += [[k / 4, cov.COLORS[k]], [(k + 1) / 4, cov.COLORS[k]]]
    fig = go.Figure()
    fig.add_heatmap(
        z=h.codes, x=x, y=h.symbols, zmin=-0.5, zmax=3.5, colorscale=scale, showscale=False,
        xgap=1, ygap=1, customdata=custom, name="coverage",
        hovertemplate=("%{customdata[0]} · %{customdata[1]} – %{customdata[2]}<br>"
                       "%{customdata[3]}: %{customdata[4]} present, %{customdata[5]} "
                       "missing, %{customdata[6]} failed<extra></extra>"))
    xs = np.repeat(np.array(x, dtype=object)[None, :], n_sym, axis=0).ravel()
    ys = np.repeat(np.array(h.symbols, dtype=object)[:, None], n_b, axis=1).ravel()
    pick = np.dstack([np.repeat(np.array(h.symbols, dtype=object)[:, None], n_b, axis=1),
                      np.repeat(np.array(x, dtype=object)[None, :], n_sym, axis=0),
                      np.repeat(np.array(ends, dtype=object)[None, :], n_sym, axis=0)]
                     ).reshape(-1, 3)
    fig.add_scatter(x=xs, y=ys, mode="markers", customdata=pick, hoverinfo="skip",
                    marker=dict(size=12, opacity=0), showlegend=False, name="cells")
    fig.update_layout(height=80 + 22 * n_sym, margin=dict(l=0, r=0, t=10, b=40),
                      dragmode="select", clickmode="event+select",
                      xaxis=dict(type="category", tickangle=-60, nticks=30),
                      yaxis=dict(type="category", autorange="reversed"))
    return fig


def _apply_selection(event) -> None:
    """A box (or click) in the heatmap fills the form below: its symbols and dates."""
    points = getattr(getattr(event, "selection", None), "points", None) or []
    picked = [p["customdata"] for p in points if p.get("customdata")]
    if not picked:
        return
    syms = sorted({p[0] for p in picked})
    lo = min(dt.date.fromisoformat(p[1]) for p in picked)
    hi = max(dt.date.fromisoformat(p[2]) for p in picked)
    sel = (tuple(syms), lo, hi)
    if st.session_state.get("_cov_selection") != sel:
        st.session_state["_cov_selection"] = sel
        st.session_state["fill_symbols"] = syms
        st.session_state["fill_range"] = (lo, hi)


if not shown:
    st.success("No symbol has a gap or a failed check in this window.")
else:
    view = hm.subset(shown)
    event = st.plotly_chart(heatmap_figure(view), key=f"coverage_{dataset}_{sessions}",
                            on_select="rerun", selection_mode=("box", "points"))
    _apply_selection(event)
    first, last = hm.days[0].item(), hm.days[-1].item()
    st.caption(f"{LEGEND}. {hm.granularity.capitalize()} columns, sessions "
               f"{ui.fmt_session(first)} – {ui.fmt_session(last)} ({ui.SESSION_DATES}; the "
               "last is the latest session whose data is expected now). Drag a box over cells to "
               "fill them below." + (f" Showing {len(shown)} of {rows.height} symbols."
                                     if rows.height > len(shown) else ""))
    if dataset == "options_iv":
        st.caption("Option history before the first stored snapshot is filled by an options "
                   "backfill, one request per contract: select a short window.")

# -- filling -----------------------------------------------------------------------------------
st.subheader("Fill gaps")
first_day, last_day = hm.days[0].item(), hm.days[-1].item()
if "fill_range" not in st.session_state:
    st.session_state["fill_range"] = (first_day, last_day)
else:  # keep a remembered range inside this window
    a, z = (list(st.session_state["fill_range"]) + [None, None])[:2]
    a = min(max(a or first_day, first_day), last_day)
    z = min(max(z or last_day, first_day), last_day)
    st.session_state["fill_range"] = (a, z)
g = st.columns([4, 3, 2])
picked = c.symbol_picker(g[0], "Symbols", hm.symbols, key="fill_symbols",
                         placeholder="select cells above, or pick symbols")
span = g[1].date_input("Sessions", min_value=first_day, max_value=last_day,
                       key="fill_range", format="YYYY-MM-DD")
refetch_failed = g[2].checkbox("Also re-fetch failed cells", key="fill_failed")
a, z = (tuple(span) + (None, None))[:2] if isinstance(span, tuple) else (span, span)
z = z or a
plan = cov.plan_fill(hm, picked, a, z, include_failed=refetch_failed,
                     history_years=c.settings().history_years) if picked and a else \
    cov.FillPlan(dataset)
st.caption(ui.literal(plan.describe()) if picked else "Pick the symbols and sessions to fill.")
if st.button(f"Fill {plan.cells:,} missing cells" if plan.cells else "Fill the gaps",
             type="primary", icon="🩹", disabled=plan.empty, key="fill_go"):
    svc = c.services()

    def trigger(**kw) -> str:
        if svc is None:
            raise EnrichError("the run service is not available in this installation")
        return svc.trigger(kind="manual", **kw)

    try:
        ids = cov.start_fill(plan, settings=c.settings(), store=c.store(), trigger=trigger)
    except (EnrichError, ValueError, RuntimeError) as exc:
        c.report_error("start the fill", exc)
    else:
        c.invalidate()
        st.session_state["fill_runs"] = ids
        st.session_state["fill_last"] = ids
        c.toast(f"Filling {plan.cells:,} cells: {len(ids)} run(s) started", icon="🩹")


@st.fragment(run_every=2)
def fill_progress() -> None:
    """Follow the fill's runs; while they work (and a little after, while what they filled
    is re-checked) redraw the page whenever the data changes, so the gap closes in view."""
    ids = st.session_state.get("fill_runs") or []
    settle = st.session_state.get("fill_settle_until")
    if not ids and settle is None:
        return
    live = [p for rid in ids if (p := c.read(runs_view.run_progress, rid)) is not None]
    active = [p for p in live if p["state"] in ("queued", "running")]
    for p in active:
        c.progress_block(p, key=f"fill-{p['run_id']}")
    for p in live:
        c.run_link(p["run_id"],
                   f"{ui.run_state_label(p['state'])} run {ui.literal(p['run_id'][:8])} →")
    if ids and not active and len(live) == len(ids):
        st.session_state["fill_done"] = st.session_state.pop("fill_runs")
        st.session_state["fill_settle_until"] = time.monotonic() + SETTLE_S
    elif settle is not None and time.monotonic() > settle:
        st.session_state.pop("fill_settle_until", None)
    version = c.version()
    if st.session_state.get("fill_seen_version") != version:
        st.session_state["fill_seen_version"] = version
        st.rerun()


fill_progress()
if st.session_state.get("fill_done"):
    st.caption(f"Last fill: {len(st.session_state['fill_done'])} run(s) finished; the "
               "heatmap above shows what they filled.")

# -- worst quality first, and the failing checks ---------------------------------------------
def symbol_url(symbol: str) -> str:
    return f"symbols?symbol={quote(symbol, safe='')}"


def with_links(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.col("symbol").map_elements(
        symbol_url, return_dtype=pl.String).alias("symbol"))


LINK = st.column_config.LinkColumn("symbol", display_text=r"symbol=(.*)$",
                                   help="Opens the symbol's page: its checks and evidence")
st.subheader("Worst quality first")
scope = st.segmented_control("Checks of", ["every dataset", dataset], default="every dataset",
                             key="worst_scope") or "every dataset"
worst = c.read(quality_view.worst_quality, None if scope == "every dataset" else dataset, 20)
if worst.is_empty():
    st.success("Every check passes on what is stored.")
else:
    st.caption("The symbols with failing checks, lowest quality score first (the share of "
               "checks passing, errors weighted 3×); the Symbols page sorts every symbol "
               "the same way (Sort: worst quality).")
    c.dataframe(with_links(c.quality_chips(worst, "score")), key="worst_quality",
                chips={"score": "quality"}, column_config={
                    "symbol": LINK, "score": "quality", "failed": "failing",
                    "failed_errors": "at error level",
                    "failing": st.column_config.TextColumn("failing checks", width="large")})
    st.page_link(c.PAGES["symbols"], label="Every symbol by quality →",
                 query_params={"sort": "worst quality"})

st.subheader(f"Failing {dataset} checks")
fails = c.read(quality_view.failing_checks, dataset)
if fails.is_empty():
    st.success(f"Every {dataset} check passes on what is stored.")
else:
    c.dataframe(with_links(c.quality_chips(fails, "score")),
                chips={"severity": "severity", "score": "quality"}, column_config={
        "symbol": LINK, "score": "quality",
        "check_name": "check", "observed": st.column_config.NumberColumn(format="%.4g"),
        "threshold": st.column_config.NumberColumn(format="%.4g"),
        "detail": st.column_config.TextColumn("evidence", width="large"),
        "checked_at": "checked (UTC)"})
with st.expander("The checks and their thresholds"):
    st.dataframe(pl.DataFrame({
        "dataset": [k.dataset for k in quality.CHECKS],
        "check": [k.name for k in quality.CHECKS],
        "severity": [k.severity for k in quality.CHECKS],
        "looks for": [k.title for k in quality.CHECKS]}), hide_index=True)
    st.caption(f"Thresholds: {quality.THRESHOLDS}. The quality score of a symbol × dataset "
               "is the share of its checks passing, errors weighted "
               f"{quality.SEVERITY_WEIGHT['error']:g}×, warnings "
               f"{quality.SEVERITY_WEIGHT['warning']:g}×.")

if st.button("Re-check stored data", icon="🔁", key="recheck",
             help="Run every check again on what the lake holds now, without fetching"):
    svc = c.services()
    if svc is None:
        st.error("The run service is not available in this installation, so nothing can be "
                 "re-checked from here; run `python -m enrich quality audit` instead.")
    elif svc.audit():
        c.toast("Re-checking every active symbol in the background", icon="🔁")
    else:
        st.info("A re-check is still running; its results appear here when it ends.",
                icon="⏳")
