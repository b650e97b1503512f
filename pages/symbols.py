"""Symbols: the universe with a status chip per dataset; ``?symbol=AAPL`` opens a drilldown."""

from __future__ import annotations

import html

import plotly.graph_objects as go
import polars as pl
import streamlit as st
from plotly.subplots import make_subplots

from enrich import diagnosis, palette, ui
from enrich.quant.snapshots import METHOD_NOTE, describe_inputs
from enrich.symbols import ASSET_CLASSES, calendar_for
from enrich.views import quality as quality_view
from enrich.views import runs as runs_view
from enrich.views import status as status_view
from enrich.views import symbols as symbols_view
from pages import _charts as charts
from pages import _common as c

PAGE_SIZE = 100
ALL = "all"
SENTIMENT = {"positive": "positive", "neutral": "neutral", "negative": "negative"}
QUALITY_HELP = (f"Share of the data-quality checks passing (errors weigh 3×): green when "
                f"every check passes, amber from {palette.QUALITY_WARN:.0%}, red below")
RANGES = ("1M", "6M", "YTD", "1Y", "5Y", "Max")


def _open(symbol: str) -> None:
    st.query_params["symbol"] = symbol


def _on_select() -> None:
    """Row picked in the table: open its drilldown and start the next table unselected."""
    sel = st.session_state.get(f"sym_table_{st.session_state.get('sym_nonce', 0)}")
    rows = (sel or {}).get("selection", {}).get("rows", [])
    page = st.session_state.get("sym_page_symbols", [])
    if rows and rows[0] < len(page):
        _open(page[rows[0]])
        st.session_state["sym_nonce"] = st.session_state.get("sym_nonce", 0) + 1


def _reset_page() -> None:
    st.session_state["page"] = 1


# -- the list ----------------------------------------------------------------------------------
def symbol_list() -> None:
    c.page_header("Symbols", "Search, filter and sort the universe; pick a row for its detail.")
    summary = c.symbols_table()
    if summary.is_empty():
        st.info("The universe is empty. Add symbols under Settings, or start the first "
                "enrichment on the Overview page (it seeds the demo universe).")
        st.page_link(c.PAGES["overview"], label="Overview →")
        return
    f = st.columns([3, 2, 2, 2, 2])
    search = f[0].text_input("Search symbol or name", key="q", bind="query-params",
                             on_change=_reset_page, placeholder="e.g. AAPL or apple")
    # Bound widgets match URL values against option labels: keep labels = values.
    state = f[1].selectbox("State", [ALL, *status_view.GRID_STATES], key="state",
                           bind="query-params", on_change=_reset_page)
    dataset = f[2].selectbox("Dataset", [ALL, *status_view.STATUS_DATASETS], key="dataset",
                             bind="query-params", on_change=_reset_page,
                             help="With a state: filter on that dataset's state.")
    asset = f[3].selectbox("Asset class", [ALL, *ASSET_CLASSES], key="asset",
                           bind="query-params", on_change=_reset_page)
    sort = f[4].selectbox("Sort", list(status_view.SYMBOL_SORTS), key="sort", bind="query-params",
                          on_change=_reset_page)
    _, total = status_view.filter_symbols(summary, search=search or None,
                                          state=None if state == ALL else state,
                                          dataset=None if dataset == ALL else dataset,
                                          asset_class=None if asset == ALL else asset, limit=0)
    pages = max(1, -(-total // PAGE_SIZE))
    page_no = min(int(st.session_state.get("page", 1) or 1), pages)
    rows, total = status_view.filter_symbols(summary, search=search or None,
                                             state=None if state == ALL else state,
                                             dataset=None if dataset == ALL else dataset,
                                             asset_class=None if asset == ALL else asset, sort=sort,
                                             limit=PAGE_SIZE, offset=(page_no - 1) * PAGE_SIZE)
    expected = status_view.expected_by_calendar(c.grid())
    st.caption(f"{total:,} of {summary.height:,} symbols match"
               + (f" · page {page_no} of {pages}" if pages > 1 else "")
               + (f" · latest expected session {ui.fmt_sessions(expected)}" if expected
                  else ""))
    with st.expander("What the states and the quality score mean"):
        st.markdown(ui.freshness_legend())
        st.caption("Quality: the share of the data-quality checks passing on what is stored "
                   "for the symbol (errors weigh three times a warning); the failing checks "
                   "are listed in its drilldown and on the Quality page.")
    if rows.is_empty():
        st.info("No symbol matches these filters.")
        return
    chips = [pl.struct("state", "sessions_behind").map_elements(
        lambda r: ui.chip(r["state"], r["sessions_behind"]), return_dtype=pl.String)
        .alias("status")]
    for d in status_view.STATUS_DATASETS:
        chips.append(pl.struct(pl.col(d).alias("s"), pl.col(f"{d}_behind").alias("b"))
                     .map_elements(lambda r: ui.chip(r["s"], r["b"]), return_dtype=pl.String,
                                   skip_nulls=False)
                     .alias(d))
    table = c.quality_chips(rows.select(
        "symbol", "name", "asset_class", *chips, "quality", "sessions_behind",
        "last_error_class", "last_success_at", "failing_checks"))
    st.session_state["sym_page_symbols"] = rows["symbol"].to_list()
    nonce = st.session_state.get("sym_nonce", 0)
    c.dataframe(table, key=f"sym_table_{nonce}", on_select=_on_select,
                selection_mode="single-row", height=min(38 + 35 * table.height, 720),
                chips={"status": "state", **dict.fromkeys(status_view.STATUS_DATASETS, "state"),
                       "quality": "quality"},
                column_config={
                    "sessions_behind": st.column_config.NumberColumn(
                        "sessions behind", help="Most sessions behind over its datasets",
                        format="localized"),
                    "quality": {"label": "quality", "help": QUALITY_HELP},
                    "failing_checks": "failing checks",
                    "last_error_class": "last error",
                    "last_success_at": "last success (UTC)",
                    "asset_class": "class",
                })
    if pages > 1:
        st.pagination(pages, key="page", bind="query-params")
    pick = st.selectbox("Open a symbol", rows["symbol"].to_list(), index=None,
                        placeholder="…or pick one here", key=f"sym_pick_{nonce}")
    if pick:
        _open(pick)
        st.session_state["sym_nonce"] = nonce + 1
        st.rerun()


# -- the drilldown -----------------------------------------------------------------------------
def _rangebreaks(sessions: pl.Series) -> list[dict]:
    """Hide weekends and holidays on a daily axis (none for 7-day markets like crypto)."""
    if sessions.is_empty() or sessions.dt.weekday().max() > 5:
        return []
    days = pl.date_range(sessions.min(), sessions.max(), eager=True)
    weekdays = days.filter(days.dt.weekday() <= 5)
    holidays = weekdays.filter(~weekdays.is_in(sessions.implode()))
    return [dict(bounds=["sat", "mon"]), dict(values=holidays.cast(pl.String).to_list())]


def in_range(ph: pl.DataFrame, span: str) -> pl.DataFrame:
    """The sessions of ``ph`` a range preset shows, counted back from its newest session
    (the moving averages were computed on the whole history, so they are right from the
    first day shown)."""
    last = ph["session"].max()
    if span == "Max" or last is None:
        return ph
    if span == "YTD":
        start = last.replace(month=1, day=1)
    else:
        months = {"1M": 1, "6M": 6, "1Y": 12, "5Y": 60}[span]
        y, m = divmod(last.year * 12 + last.month - 1 - months, 12)
        start = last.replace(year=y, month=m + 1, day=min(last.day, 28))
    return ph.filter(pl.col("session") > start)


def price_figure(ph: pl.DataFrame, actions: pl.DataFrame, show_ma200: bool,
                 show_bb: bool) -> go.Figure:
    no_volume = ph["volume"].null_count() == ph.height  # an index: none is traded
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.03,
                        row_heights=[0.52, 0.16, 0.16, 0.16],
                        subplot_titles=("Price (split-adjusted)",
                                        "Volume: none (an index is not traded)" if no_volume
                                        else "Volume",
                                        "Volatility (20 sessions, annualised)", "RSI (14)"))
    x = ph["session"].to_list()
    fig.add_trace(go.Candlestick(x=x, open=ph["open"], high=ph["high"], low=ph["low"],
                                 close=ph["close"], name="price"), row=1, col=1)
    lines = [("ma20", "MA20", "#1e88e5"), ("ma50", "MA50", "#8e24aa")]
    if show_ma200:
        lines.append(("ma200", "MA200", "#6d4c41"))
    for col, name, color in lines:
        fig.add_trace(go.Scatter(x=x, y=ph[col], name=name, line=dict(width=1.2, color=color)),
                      row=1, col=1)
    if show_bb:
        fig.add_trace(go.Scatter(x=x, y=ph["bb_upper"], name="Bollinger upper",
                                 line=dict(width=0.8, color="#90a4ae", dash="dot")),
                      row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=ph["bb_lower"], name="Bollinger lower",
                                 line=dict(width=0.8, color="#90a4ae", dash="dot"),
                                 fill="tonexty", fillcolor="rgba(144,164,174,0.08)"),
                      row=1, col=1)
    if not actions.is_empty():
        highs = ph.select(pl.col("session").alias("date"), pl.col("high"))
        ev = actions.join(highs, on="date", how="inner")
        marks = {"dividend": ("triangle-up", "#2e7d32", 1.03),
                 "split": ("diamond", "#d81b60", 1.06),
                 "earnings": ("star", "#f9a825", 1.09)}
        for kind, (symbol, color, lift) in marks.items():
            part = ev.filter(pl.col("kind") == kind)
            if part.is_empty():
                continue
            fig.add_trace(go.Scatter(
                x=part["date"].to_list(), y=(part["high"] * lift).to_list(), mode="markers",
                name=kind, marker=dict(symbol=symbol, size=10, color=color),
                # plotly reads tags (<a href=…>) in hover text: show provider text as text
                text=[html.escape(t or "") for t in part["detail"].to_list()],
                hovertemplate="%{x}<br>%{text}<extra>" + kind + "</extra>"), row=1, col=1)
    if not no_volume:
        fig.add_trace(go.Bar(x=x, y=ph["volume"], name="volume", marker_color="#90a4ae",
                             showlegend=False, hovertemplate="%{y:,.0f}"), row=2, col=1)
    fig.add_trace(go.Scatter(x=x, y=ph["volatility_20d"], name="volatility",
                             line=dict(color="#ef6c00"), showlegend=False), row=3, col=1)
    fig.add_trace(go.Scatter(x=x, y=ph["rsi14"], name="RSI", line=dict(color="#5e35b1"),
                             showlegend=False), row=4, col=1)
    for level in (30, 70):
        fig.add_hline(y=level, line=dict(width=0.8, dash="dash", color="#9e9e9e"),
                      row=4, col=1)
    # The legend sits under the chart, where plotly's toolbar (top right) cannot cover it;
    # dragging zooms in time only (y axes fixed), as a price chart should.
    fig.update_layout(height=840, margin=dict(l=0, r=0, t=30, b=0),
                      xaxis_rangeslider_visible=False, dragmode="zoom",
                      legend=dict(orientation="h", yanchor="top", y=-0.04, x=0),
                      hovermode="x unified", separators=".,")
    fig.update_xaxes(rangebreaks=_rangebreaks(ph["session"]))
    if ph.height < 7:
        c.day_axis(fig, ph["session"].to_list(), rangebreaks=[])
    fig.update_yaxes(fixedrange=True)
    fig.update_yaxes(tickformat=",.2f", row=1, col=1)
    c.compact_axis(fig, row=2, col=1)
    fig.update_yaxes(tickformat=".0%", row=3, col=1)
    fig.update_yaxes(range=[0, 100], row=4, col=1)
    return fig


@st.fragment(run_every=1.5)
def symbol_run_progress(symbol: str) -> None:
    run_id = st.session_state.get(f"enrich_run_{symbol}")
    if not run_id:
        return
    p = c.read(runs_view.run_progress, run_id)
    if p is None:
        return
    if p["state"] in runs_view.ACTIVE_RUN_STATES:
        c.progress_block(p, key=f"sym-{run_id}")
        c.run_link(run_id)
        return
    st.session_state.pop(f"enrich_run_{symbol}", None)
    c.rerun_with_toast(f"{ui.literal(symbol)}: run {ui.run_state_label(p['state'])} — "
                       f"{ui.literal(p['message'] or '', limit=200)}")


ACTION_WORDS = {
    "enrich": "**Enrich now** (above) fetches it again",
    "resume": "the daily schedule is paused: resume it on Controls, or **Enrich now**",
    "recheck": "the provider plan refused it: Health → *Re-check entitlements* asks again",
    "wait": "nothing to do: the provider publishes it after its lag",
    "activate": "the symbol is deactivated: activate it under Settings",
    "delisted": "nothing to do: the symbol is delisted; its history up to its last trading "
                "day is kept, and nothing more is fetched",
}


def cause_text(cause: dict) -> str:
    """One dataset's cause as a sentence: what, since when, the error, the action."""
    ds, state = ui.literal(cause["dataset"]), cause["state"]
    head = f"**{ds}** {ui.state_badge(state, ui.chip(state, cause['sessions_behind']))}"
    if state == "failing":
        since = (f" since {ui.fmt_utc(cause['failing_since'])}" if cause["failing_since"]
                 else " since its first attempt")
        n = cause["failures"]
        err = ui.literal(f"{cause['error_class'] or 'error'}: {cause['error_message'] or ''}",
                         limit=300)
        body = (f"{head}{since} ({n} failed attempt{'s' if n != 1 else ''} in a row; the "
                f"last {ui.fmt_utc(cause['error_at'])}): {err}")
    elif state in ("late", "stale"):
        body = (f"{head}: holds {ui.fmt_session(cause['latest_session'])}, the latest "
                "expected session is "
                + ui.fmt_sessions({cause["calendar"]: cause["expected_session"]}))
    elif state == "due":
        body = (f"{head}: its newest session is expected by "
                f"{ui.fmt_exchange(cause['due_at'])}")
    elif state == "never":
        body = f"{head}: nothing stored yet"
    else:
        body = head
    return f"{body}. → {ACTION_WORDS[cause['action']]}."


def causes_block(symbol: str, grid: pl.DataFrame, delisted=None) -> None:
    """What is wrong with this symbol and why, before any table: one line per dataset that
    is not fresh, worst first, in its state's colour."""
    causes = diagnosis.dataset_causes(grid, c.schedule_facts(), delisted)
    if not causes:
        st.success(f"Every dataset of {ui.literal(symbol)} holds the latest expected "
                   "session.")
        return
    for cause in causes[:6]:
        c.alert(cause["level"], cause_text(cause))
    if len(causes) > 6:
        st.caption(f"…and {len(causes) - 6} more below.")


def status_table(symbol: str, asset_class: str, g: pl.DataFrame) -> None:
    stats = c.read(symbols_view.symbol_fetch_stats, symbol)
    qual = c.lake_read(symbols_view.symbol_lake_quality, symbol, asset_class)
    scores = c.read(quality_view.quality_scores, symbol).select(
        "dataset", pl.col("score").alias("quality"))
    table = (g.join(qual.rename({"rows": "rows_held", "first": "first_held",
                                 "last": "last_held"}), on="dataset", how="left")
             .join(stats.select("dataset", "rejected", "retries", "last_duration_ms"),
                   on="dataset", how="left")
             .join(scores, on="dataset", how="left")
             .select("dataset",
                     pl.struct("state", "sessions_behind").map_elements(
                         lambda r: ui.chip(r["state"], r["sessions_behind"]),
                         return_dtype=pl.String).alias("status"),
                     pl.when(pl.col("last_error_class").is_not_null())
                     .then(pl.format("{}: {}", "last_error_class",
                                     pl.col("last_error_message").fill_null("")))
                     .alias("last_error"),
                     "last_error_at", "consecutive_failures",
                     "quality", "sessions_behind", "latest_session", "expected_session",
                     pl.struct("due_session", "due_at").map_elements(
                         lambda r: (f"{ui.fmt_session(r['due_session'])}, expected by "
                                    f"{ui.fmt_exchange(r['due_at'])}")
                         if r["due_session"] else None, return_dtype=pl.String).alias("due"),
                     "last_success_at",
                     "rows_held", "first_held", "last_held", "missing_sessions", "rejected",
                     "retries", "last_duration_ms"))
    c.dataframe(c.quality_chips(table), chips={"status": "state", "quality": "quality"},
                column_config={
        "last_error": st.column_config.TextColumn(
            "last error", width="large", help="The error of the last failed attempt"),
        "last_error_at": "error time (UTC)",
        "consecutive_failures": "failures in a row",
        "sessions_behind": "sessions behind",
        "latest_session": "latest session",
        "expected_session": st.column_config.DateColumn(
            "expected session", help="The latest session whose data is expected now (in "
                                     "the symbol's calendar: the exchange date for US "
                                     "listings, the UTC day for crypto and forex)"),
        "due": st.column_config.TextColumn(
            "due", help="A closed session still within the provider's publication lag, and "
                        "when its data is expected (exchange time)"),
        "quality": {"label": "quality", "help": QUALITY_HELP},
        "last_success_at": "last enrichment (UTC)",
        "rows_held": "rows held", "first_held": "first", "last_held": "last",
        "missing_sessions": st.column_config.NumberColumn(
            "missing sessions", help="Trading sessions without a bar between first and last",
            format="localized"),
        "rejected": st.column_config.NumberColumn(
            "rows refused", help="Rows the provider returned that failed validation",
            format="localized"),
        "last_duration_ms": st.column_config.NumberColumn("last fetch ms", format="%.0f"),
    })


def quality_section(symbol: str) -> None:
    """Each failing check with its evidence, then the restatements of stored history."""
    checks = c.read(quality_view.symbol_checks, symbol)
    failing = checks.filter(~pl.col("passed")) if not checks.is_empty() else checks
    st.subheader("Data quality")
    if checks.is_empty():
        st.caption("Not checked yet: the checks run after the next fetch.")
    elif failing.is_empty():
        st.success(f"All {checks.height} checks pass on what is stored.", icon="✅")
    else:
        st.warning(f"{failing.height} of {checks.height} checks fail.", icon="⚠️")
        c.dataframe(failing.select("dataset", "check_name", "severity", "title", "observed",
                                   "threshold", "detail", "checked_at"),
                    key="failing_checks", column_config={
                        "check_name": "check", "title": "looks for",
                        "observed": st.column_config.NumberColumn(format="%.4g"),
                        "threshold": st.column_config.NumberColumn(format="%.4g"),
                        "detail": st.column_config.TextColumn("evidence", width="large"),
                        "checked_at": "checked (UTC)"})
    if not checks.is_empty():
        with st.expander(f"Every check ({checks.height})"):
            c.dataframe(checks.select("dataset", "check_name", "severity", "passed",
                                      "observed", "threshold", "detail"),
                        key="all_checks", column_config={"check_name": "check",
                                                         "detail": "evidence"})
    rest = c.read(quality_view.symbol_restatements, symbol)
    rebases = c.read(quality_view.symbol_rebases, symbol)
    if not rest.is_empty():
        st.markdown(f"**Restatements** — {rest.height} stored values a re-fetch changed "
                    "(old on today's split basis) or *removed* (a complete re-fetch no longer "
                    "lists the row: a cancelled or re-dated event); the features were "
                    "recomputed.")
        c.dataframe(rest, key="restatements", column_config={
            "column_name": "column", "old_value": "old", "new_value": "new",
            "change": st.column_config.NumberColumn(format="percent"),
            "detected_at": "detected (UTC)"})
    if not rebases.is_empty():
        st.caption(f"Split re-bases (not restatements): {rebases.height}, the newest "
                   f"{ui.fmt_utc(rebases['started_at'][0])} ({rebases['records'][0]:,} bars "
                   "moved to the new share basis).")
    st.page_link(c.PAGES["quality"], label="Coverage and checks of every symbol →", icon="🧪")


def downloads(symbol: str, asset_class: str) -> None:
    from enrich.symbols import DATASETS_BY_CLASS

    lake = c.store().lake
    safe = ("demo_" if c.is_demo() else "") + symbol.replace(":", "-")
    for ds in (*DATASETS_BY_CLASS.get(asset_class, ("bars",)), "features"):
        cols = st.columns([2, 1, 1])
        cols[0].write(f"**{ds}**")
        cols[1].download_button(
            "CSV", lambda ds=ds: ui.to_csv_bytes(symbols_view.dataset_rows(lake, symbol, ds)),
            file_name=f"{safe}_{ds}.csv", mime="text/csv", key=f"dl_csv_{ds}",
            icon="⬇️", on_click="ignore")
        cols[2].download_button(
            "Parquet",
            lambda ds=ds: ui.to_parquet_bytes(symbols_view.dataset_rows(lake, symbol, ds)),
            file_name=f"{safe}_{ds}.parquet", mime="application/vnd.apache.parquet",
            key=f"dl_pq_{ds}", icon="⬇️", on_click="ignore")


def drilldown(symbol: str) -> None:
    info = c.read(symbols_view.symbol_info, symbol)
    if st.button("← All symbols", key="back"):
        del st.query_params["symbol"]
        st.rerun()
    if info is None:
        st.error(f"{ui.literal(symbol, limit=80)} is not in the universe. Add it under "
                 "Settings.")
        return
    symbol = info["symbol"]  # as held (a name typed in another case finds it)
    title = ui.literal(symbol) + (f" · {ui.literal(info['name'])}" if info.get("name") else "")
    c.page_header(title, f"{ui.literal(info['asset_class'])}"
                  + ("" if info["active"] else " · inactive (not enriched by runs)"))
    top = st.columns([1, 3])
    if top[0].button("Enrich now", type="primary", icon="⚡", key="enrich_now"):
        run_id = c.start_run(symbols=[symbol], kind="manual")
        if run_id:
            st.session_state[f"enrich_run_{symbol}"] = run_id
    with top[1]:
        symbol_run_progress(symbol)

    g = c.read(status_view.status_grid, c.now_minute(), symbol=symbol, active_only=False)
    causes_block(symbol, g, info.get("delisted_on"))
    st.subheader("Status per dataset")
    status_table(symbol, info["asset_class"], g)
    with st.expander("What the states mean"):
        st.markdown(ui.freshness_legend())
    quality_section(symbol)

    st.subheader("Price")
    opts = st.columns([3, 1, 1, 2])
    span = opts[0].segmented_control("Range", RANGES, default="1Y", key="price_range",
                                     label_visibility="collapsed") or "1Y"
    ma200 = opts[1].toggle("MA200", key="ma200")
    bb = opts[2].toggle("Bollinger bands", key="bb")
    ph = c.lake_read(symbols_view.price_history, symbol)
    actions = c.lake_read(symbols_view.corporate_actions, symbol)
    if ph.is_empty():
        st.info("No bars stored yet for this symbol. Press **Enrich now** to fetch them.")
    else:
        shown = in_range(ph, span)
        st.plotly_chart(price_figure(shown, actions, ma200, bb), key="price_chart",
                        config={"displaylogo": False, "scrollZoom": False})
        days = ui.CALENDAR_DATES[calendar_for(info["asset_class"])]
        st.caption(f"Daily bars by session date ({days}): showing "
                   f"{ui.fmt_session(shown['session'].min())} – "
                   f"{ui.fmt_session(shown['session'].max())} of "
                   f"{ui.fmt_session(ph['session'].min())} – "
                   f"{ui.fmt_session(ph['session'].max())} ({shown.height:,} of "
                   f"{ph.height:,} sessions; drag across the chart to zoom in time, "
                   "double-click to reset). Markers: ▲ dividend (ex date), ◆ split, "
                   "★ earnings (filing date).")

    left, right = st.columns(2)
    with left:
        st.subheader("Corporate actions")
        if actions.is_empty():
            st.caption("None stored.")
        else:
            c.dataframe(actions, height=300, column_config={
                "date": "date (session)"})
    with right:
        st.subheader("Latest news")
        news = c.lake_read(symbols_view.latest_news, symbol, 20)
        if news.is_empty():
            st.caption("None stored.")
        else:
            c.dataframe(news.with_columns(pl.col("sentiment").replace_strict(
                SENTIMENT, default=None, return_dtype=pl.String)), height=300,
                chips={"sentiment": "sentiment"}, column_config={
                    "published_utc": "published (UTC)",
                    "url": st.column_config.LinkColumn("link", display_text="open ↗"),
                    "sentiment_reasoning": "why"})

    st.subheader("Options implied volatility")
    smile = c.lake_read(symbols_view.iv_smile, symbol, 3)
    term = c.lake_read(symbols_view.atm_term_structure, symbol)
    inputs = c.lake_read(symbols_view.options_inputs, symbol)
    if smile.is_empty():
        st.caption("No option chain stored for this symbol.")
    else:
        oc = st.columns(2)
        fig = charts.series(smile.with_columns(pl.col("expiration").cast(pl.String)), "strike",
                            "iv", "expiration", kind="line", markers=True,
                            hover=["contract_type", "moneyness"],
                            labels={"iv": "implied volatility", "expiration": "expiry"})
        spot = smile["underlying_price"][0]
        fig.add_vline(x=spot, line=dict(dash="dash", color="#9e9e9e"),
                      annotation_text=f"spot {spot:.2f}")
        fig.update_layout(height=380, margin=dict(l=0, r=0, t=30, b=0),
                          title="Smile, nearest expiries (out of the money)")
        fig.update_yaxes(tickformat=".0%")
        oc[0].plotly_chart(fig, key="iv_smile")
        tfig = charts.series(term, "days", "atm_iv", kind="line", markers=True,
                             hover=["expiration", "forward"],
                             labels={"days": "days to expiry", "atm_iv": "ATM implied volatility"})
        tfig.update_layout(height=380, margin=dict(l=0, r=0, t=30, b=0),
                           title="ATM term structure (at the forward)")
        tfig.update_yaxes(tickformat=".1%")
        oc[1].plotly_chart(tfig, key="iv_term")
        when = (f"taken {ui.fmt_utc(inputs['snapshot_at'])}, before the close: partial until "
                "the next snapshot after it" if inputs["partial"] else "closing state")
        st.caption(f"Snapshot of session {ui.fmt_session(inputs['as_of'])} ({when}). "
                   + describe_inputs(inputs))
    history = c.lake_read(symbols_view.vol_history, symbol)
    if not history.is_empty():
        hc = st.columns(2)
        hfig = go.Figure()
        days = history["as_of"].to_list()
        hfig.add_trace(go.Scatter(x=days, y=history["atm_iv_30d"].to_list(),
                                  name="30-day ATM implied", mode="lines+markers"))
        hfig.add_trace(go.Scatter(x=days, y=history["volatility_20d"].to_list(),
                                  name="20-day realised", mode="lines+markers"))
        hfig.update_layout(height=320, margin=dict(l=0, r=0, t=30, b=0),
                           title="Implied vs realised volatility",
                           legend=dict(orientation="h"))
        hfig.update_yaxes(tickformat=".1%")  # ".0%" drew six "16%" ticks over 15.6-16.4 %
        c.day_axis(hfig, days)  # one session: whole days, not milliseconds
        hc[0].plotly_chart(hfig, key="iv_history")
        sfig = go.Figure()
        sfig.add_trace(go.Scatter(x=days, y=history["rr25_30d"].to_list(),
                                  name="25-delta risk reversal", mode="lines+markers"))
        sfig.add_trace(go.Scatter(x=days, y=history["bf25_30d"].to_list(),
                                  name="25-delta butterfly", mode="lines+markers"))
        sfig.update_layout(height=320, margin=dict(l=0, r=0, t=30, b=0),
                           title="Skew and wings at 30 days", legend=dict(orientation="h"))
        sfig.update_yaxes(tickformat=".1%")
        c.day_axis(sfig, days)
        hc[1].plotly_chart(sfig, key="iv_skew")
        latest = history.row(-1, named=True)
        ratios = ", ".join(f"{label} {value:.2f}" for label, value in (
            ("put/call volume", latest["put_call_volume"]),
            ("put/call open interest", latest["put_call_oi"])) if value is not None)
        st.caption("Per session, from that session's chain; sessions are exchange dates."
                   + (f" Latest {ui.fmt_session(latest['as_of'])}: {ratios}." if ratios
                      else ""))
    if not smile.is_empty() or not history.is_empty():
        st.caption(METHOD_NOTE)

    with st.expander("Downloads"):
        st.caption("Every stored row of each dataset for this symbol."
                   + (" Demo data." if c.is_demo() else ""))
        downloads(symbol, info["asset_class"])


symbol_param = (c.query_param("symbol") or "").strip()  # "?symbol=%20" is no symbol
if symbol_param:
    drilldown(symbol_param)  # tickers are case-sensitive (KIMpL)
else:
    symbol_list()
