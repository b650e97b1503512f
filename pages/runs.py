"""Runs: history with filters and pagination; ``?run=<id>`` opens a run's detail."""

from __future__ import annotations

import datetime as dt

import polars as pl
import streamlit as st

from enrich import palette, ui
from enrich.errors import EnrichError
from enrich.views import runs as runs_view
from pages import _charts as charts
from pages import _common as c

PAGE_SIZE = 25
LOG_PAGE = 50
TASK_PAGE = 100
GANTT_MAX = 300
PICK_MAX = 200  # symbols a select box offers; more are typed
ALL = "all"
TASK_COLORS = {s: palette.HEX[lv] for s, lv in palette.TASK_LEVEL.items()}


def _open(run_id: str) -> None:
    st.query_params["run"] = run_id


def _on_select() -> None:
    sel = st.session_state.get(f"runs_table_{st.session_state.get('runs_nonce', 0)}")
    rows = (sel or {}).get("selection", {}).get("rows", [])
    page = st.session_state.get("runs_page_ids", [])
    if rows and rows[0] < len(page):
        _open(page[rows[0]])
        st.session_state["runs_nonce"] = st.session_state.get("runs_nonce", 0) + 1


def _reset_page() -> None:
    st.session_state["runs_page"] = 1


# -- one run -----------------------------------------------------------------------------------
def _cancel(run_id: str) -> None:
    """The Cancel button's callback: it runs even when the click lands after the run ended
    (the next draw has no button), and then says how the run ended."""
    svc = c.services()
    try:
        ok = svc.cancel(run_id, by=c.ACTOR) if svc else False
    except EnrichError as exc:
        st.session_state["cancel_said"] = (palette.BAD, f"Could not cancel the run: "
                                           f"{ui.literal(exc)}")
        return
    c.invalidate()
    if ok:
        c.toast("Cancelling: the run stops after the symbols in flight", icon="⏹️")
        return
    p = runs_view.run_progress(c.store().catalog, run_id)
    st.session_state["cancel_said"] = (palette.WARN, ui.run_ended_already(
        run_id, p["state"] if p else None))


@st.fragment(run_every=1.5)
def live(run_id: str) -> None:
    p = c.read(runs_view.run_progress, run_id)
    if p is None:
        st.info("Queued: the run is being recorded…")
        return
    if p["state"] in runs_view.ACTIVE_RUN_STATES:
        c.progress_block(p, key=f"run-{run_id}")
        st.button("Cancel this run", icon="⏹️", key="cancel_run", on_click=_cancel,
                  args=(run_id,))
        # The counts go with the progress line: drawn once beside it, they said "Enriched
        # 2" under "117 / 341 symbols" until the run ended.
        d = c.read(runs_view.run_detail, run_id)
        if d is not None:
            _tiles(d)
        st.session_state[f"run_live_{run_id}"] = True
    elif st.session_state.pop(f"run_live_{run_id}", False):
        st.rerun()  # it just finished: refresh the whole detail


def _tiles(d: dict) -> None:
    """A run's counts (``runs_view.run_detail``)."""
    c.tiles([("Symbols", ui.fmt_int(d["symbols_total"])),
             ("Enriched", ui.fmt_int(d["symbols_ok"])),
             ("Up to date", ui.fmt_int(d["symbols_skipped"])),
             ("Failed", ui.fmt_int(d["symbols_failed"])),
             *([("Not attempted", ui.fmt_int(d["symbols_not_attempted"]))]
               if d["symbols_not_attempted"] else []),
             ("Rows written", ui.fmt_int(d["records_written"])),
             ("Requests", ui.fmt_int(d["requests"])),
             ("Retries", ui.fmt_int(d["retries"]))])


def run_detail(run_id: str) -> None:
    d = c.read(runs_view.run_detail, run_id)
    if st.button("← All runs", key="runs_back"):
        del st.query_params["run"]
        st.rerun()
    if d is None:
        if run_id == st.session_state.get("last_run_id"):
            st.info("The run is being recorded; this page refreshes in a moment.")
            live(run_id)
        else:
            st.error(f"No run {ui.literal(run_id, limit=80)}.")
        return
    who, what = ui.run_targets(d.get("params"), d.get("symbols_total"))
    c.page_header(f"Run {ui.literal(run_id[:8])} · {d['state']}",
                  f"{ui.literal(d['kind'])} run · {ui.literal(who)} · {ui.literal(what)} · "
                  f"provider {ui.literal(d.get('provider') or '?')} · id {ui.literal(run_id)}")
    if said := st.session_state.get("cancel_said"):
        c.alert(*said)
    if d["state"] in runs_view.ACTIVE_RUN_STATES:  # drawn as running: rerun when it ends
        st.session_state[f"run_live_{run_id}"] = True
    live(run_id)  # reruns the page when the run just ended: the message is shown again
    st.session_state.pop("cancel_said", None)
    if d["state"] not in runs_view.ACTIVE_RUN_STATES:
        c.alert(palette.run_level(d["state"]),
                f"{ui.run_badge(d['state'])} {ui.literal(d.get('message') or '', limit=600)}")
    times = st.columns(3)
    times[0].markdown(f"**Requested** {ui.fmt_utc(d['requested_at'], True)}  \n"
                      f"{ui.fmt_exchange(d['requested_at'])}")
    times[1].markdown(f"**Started** {ui.fmt_utc(d['started_at'], True)}  \n"
                      f"{ui.fmt_exchange(d['started_at'])}")
    times[2].markdown(f"**Finished** {ui.fmt_utc(d['finished_at'], True)}  \n"
                      f"{ui.fmt_exchange(d['finished_at'])}")
    if d["state"] not in runs_view.ACTIVE_RUN_STATES:  # a running one's: in ``live``
        _tiles(d)
    if d.get("parent_run_id"):
        c.run_link(d["parent_run_id"], f"Retry of run {ui.literal(d['parent_run_id'][:8])} →")
    with st.expander("Parameters"):
        st.json(d.get("params") or {})

    failed = c.read(runs_view.failed_symbols, run_id)
    if failed and d["state"] not in runs_view.ACTIVE_RUN_STATES:
        label = f"Retry the {len(failed)} failed symbol{'s' if len(failed) > 1 else ''}"
        if st.button(label, icon="🔁", type="primary", key="retry_failed",
                     help=ui.literal(", ".join(failed[:50]))):
            svc = c.services()
            if svc is None:
                st.error("The run service is not available.")
            else:
                try:
                    new_id = svc.retry_failed(run_id)
                except EnrichError as exc:
                    c.report_error("retry the failed symbols", exc)
                else:
                    c.invalidate()
                    st.session_state["last_run_id"] = new_id
                    c.toast(f"Retry run {ui.literal(new_id[:8])} started for {len(failed)} "
                            "symbols", icon="🔁")
                    _open(new_id)
                    st.rerun()

    tasks = c.read(runs_view.run_tasks, run_id)
    if not tasks.is_empty():
        st.subheader("Timeline")
        now = dt.datetime.now(dt.UTC)
        tl = tasks.filter(pl.col("started_at").is_not_null()).with_columns(
            pl.col("finished_at").fill_null(now))
        if tl.height > GANTT_MAX:  # a browser cannot draw thousands of bars usefully
            st.caption(f"Showing {GANTT_MAX} of {tl.height:,} tasks: failed ones first, "
                       "then the slowest.")
            tl = (tl.with_columns((pl.col("state") == "failed").alias("_failed"))
                  .sort(["_failed", "duration_s"], descending=True, nulls_last=True)
                  .head(GANTT_MAX).drop("_failed").sort("started_at"))
        if tl.height:
            fig = charts.timeline(tl, "started_at", "finished_at", "symbol", "state",
                                  TASK_COLORS, ["records", "requests", "retries",
                                                "error_class"],
                                  height=min(160 + 22 * tl.height, 900))
            st.plotly_chart(fig, key="gantt")
        errs = tasks.filter(pl.col("error_class").is_not_null())
        if errs.height:
            st.subheader(f"Errors ({ui.plural(errs.height, 'symbol')})")
            pages = max(1, -(-errs.height // TASK_PAGE))  # every symbol may have failed
            page = min(int(st.session_state.get("err_page", 1) or 1), pages)
            if pages > 1:
                st.caption(f"page {page} of {pages}")
            c.dataframe(errs.slice((page - 1) * TASK_PAGE, TASK_PAGE).select(
                "symbol", "state", "error_class", "error_message", "finished_at"),
                chips={"state": "task"},
                column_config={"finished_at": "at (UTC)", "error_class": "class",
                               "error_message": "message"})
            if pages > 1:
                st.pagination(pages, key="err_page")
        with st.expander(f"All {tasks.height:,} symbol tasks"):
            # a page at a time: an expander's content is sent even while it is closed
            pages = max(1, -(-tasks.height // TASK_PAGE))
            page = min(int(st.session_state.get("task_page", 1) or 1), pages)
            if pages > 1:
                st.caption(f"page {page} of {pages}")
            c.dataframe(tasks.slice((page - 1) * TASK_PAGE, TASK_PAGE), chips={"state": "task"},
                        column_config={"started_at": "started (UTC)",
                                       "finished_at": "finished (UTC)"})
            if pages > 1:
                st.pagination(pages, key="task_page")

    summ = c.read(runs_view.run_fetch_summary, run_id)
    if not summ.is_empty():
        st.subheader("Fetches per dataset")
        c.dataframe(summ, column_config={
            "p50_ms": st.column_config.NumberColumn("p50 ms", format="%.0f"),
            "p95_ms": st.column_config.NumberColumn("p95 ms", format="%.0f"),
            "rejected": "rows refused"})
        st.subheader("Fetch log")
        f = st.columns([2, 1])
        run_symbols = tasks["symbol"].to_list()
        if len(run_symbols) <= PICK_MAX:
            sym = f[0].selectbox("Symbol", [ALL, *run_symbols], key="log_symbol")
        else:  # a select box of thousands of options: type the symbol instead
            typed = f[0].text_input("Symbol", key="log_symbol_text",
                                    placeholder=f"all {len(run_symbols):,}; or type one")
            sym = runs_view.match_symbol(run_symbols, typed) or ALL
        errors_only = f[1].toggle("Errors and retries only", key="log_errors")
        _, n = c.read(runs_view.run_fetch_log, run_id, None if sym == ALL else sym, errors_only,
                      1, 0)
        pages = max(1, -(-n // LOG_PAGE))
        page = min(int(st.session_state.get("log_page", 1) or 1), pages)
        log, n = c.read(runs_view.run_fetch_log, run_id, None if sym == ALL else sym, errors_only,
                        LOG_PAGE, (page - 1) * LOG_PAGE)
        st.caption(f"{n:,} rows" + (f" · page {page} of {pages}" if pages > 1 else ""))
        c.dataframe(log, chips={"status": "task"}, column_config={
            "started_at": "started (UTC)",
            "duration_ms": st.column_config.NumberColumn("response ms", format="%.0f"),
            "window_start": "from session",
            "window_end": "to session"})
        if pages > 1:
            st.pagination(pages, key="log_page")


# -- the list ----------------------------------------------------------------------------------
def run_list() -> None:
    c.page_header("Runs", "Every run: scheduled, manual, retries and backfills.")
    f = st.columns([2, 2, 2, 3])
    symbol = f[0].text_input("Symbol", key="run_symbol", bind="query-params",
                             on_change=_reset_page, placeholder="e.g. AAPL")
    state = f[1].selectbox("State", [ALL, *runs_view.RUN_STATES], key="run_state",
                           bind="query-params", on_change=_reset_page)
    kind = f[2].selectbox("Trigger", [ALL, *runs_view.RUN_KINDS], key="run_kind",
                          bind="query-params", on_change=_reset_page)
    days = f[3].date_input("Requested between (UTC dates)", value=(), key="run_days",
                           on_change=_reset_page)
    since = until = None
    if isinstance(days, (tuple, list)) and days:
        since = dt.datetime.combine(days[0], dt.time(), dt.UTC)
        end = days[1] if len(days) > 1 else days[0]
        until = dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC)
    sym = (symbol or "").strip() or None
    filters = dict(state=None if state == ALL else state, symbol=sym,
                   kind=None if kind == ALL else kind, since=since, until=until)
    at = c.clock()
    page = int(st.session_state.get("runs_page", 1) or 1)
    rows, total = c.read(runs_view.runs_search, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
                         now=at, **filters)
    pages = max(1, -(-total // PAGE_SIZE))
    if page > pages:
        page = pages
        rows, total = c.read(runs_view.runs_search, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE,
                             now=at, **filters)
    st.caption(f"{ui.plural(total, 'run')} match{'es' if total == 1 else ''}"
               + (f" · page {page} of {pages}" if pages > 1 else ""))
    if rows.is_empty():
        st.info("No runs yet. Start one under Controls (or the first enrichment on the "
                "Overview)." if total == 0 and not any(filters.values())
                else "No run matches these filters.")
        if total == 0:
            st.page_link(c.PAGES["controls"], label="Controls →")
        return
    targets = [ui.run_targets(p, n) for p, n in
               zip(rows["params"].to_list(), rows["symbols_total"].to_list(), strict=True)]
    table = rows.select(
        pl.col("run_id").str.slice(0, 8).alias("run"), "state",
        pl.Series("symbols", [t[0] for t in targets], dtype=pl.String),
        pl.Series("datasets", [t[1] for t in targets], dtype=pl.String),
        pl.col("kind").alias("trigger"), "requested_at", "duration_s", "symbols_total",
        "symbols_ok", "symbols_failed", "symbols_skipped", "records_written", "requests",
        "message")
    st.session_state["runs_page_ids"] = rows["run_id"].to_list()
    nonce = st.session_state.get("runs_nonce", 0)
    c.dataframe(table, key=f"runs_table_{nonce}", on_select=_on_select,
                selection_mode="single-row", chips={"state": "run"}, column_config={
                    "symbols": st.column_config.TextColumn(
                        "symbols", help="The symbols the run was asked for"),
                    "datasets": st.column_config.TextColumn(
                        "datasets", help="The datasets it was asked for"),
                    "trigger": st.column_config.TextColumn(
                        "trigger", help="scheduled (the daily cron), manual (a page), cli, "
                                        "api, retry (of a run's failed symbols), backfill"),
                    "requested_at": "requested (UTC)",
                    "duration_s": st.column_config.NumberColumn("seconds", format="%.1f"),
                    "symbols_total": "symbol count", "symbols_ok": "enriched",
                    "symbols_failed": "failed", "symbols_skipped": "up to date",
                    "records_written": "rows"})
    if pages > 1:
        st.pagination(pages, key="runs_page")
    pick = st.selectbox("Open a run", rows["run_id"].to_list(), index=None,
                        format_func=lambda r: r[:8], placeholder="…or pick one here",
                        key=f"runs_pick_{nonce}")
    if pick:
        _open(pick)
        st.session_state["runs_nonce"] = nonce + 1
        st.rerun()


run_param = c.query_param("run")
if run_param:
    run_detail(run_param.strip())
else:
    run_list()
