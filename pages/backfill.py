"""Backfill: plan and start backfills; watch, pause, cancel, resume and retry them.

A pause stops the backfill between chunks and keeps every chunk done; resuming runs only what
is left. Everything shown comes from ``enrich.backfill.jobs``'s read models, polled from the
catalog; backfills started here run on a thread of this process, below the daily run's
priority on the shared rate limiter.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import polars as pl
import streamlit as st

from enrich import palette, ui
from enrich.backfill import jobs as bfm
from enrich.config import MAX_BACKFILL_DAYS
from enrich.errors import EnrichError, StateError
from enrich.quant.options_history import DEFAULT_MONEYNESS, DEFAULT_MONTHLY
from enrich.views import universe as universe_view
from pages import _common as c

SPANS = ("default", "years", "days", "since")


def status_badge(status: str) -> str:
    """A backfill's status in words, as a badge in its palette colour."""
    return palette.markdown(palette.BACKFILL_LEVEL.get(status, palette.IDLE), status)

DEFAULT_LABEL = {"bars": "10 years", "dividends": "10 years", "earnings": "10 years",
                 "splits": "since 2000", "news": "1 year", "options": "30 days"}
SHOWN = 10
SAID_S = 30.0  # how long a card says what its button did


@st.cache_data(ttl=2, max_entries=64, show_spinner=False)
def _summary(data_dir: str, version: int) -> list[dict[str, Any]]:
    # Throughput is measured on the wall clock (runs record real instants).
    return bfm.backfill_progress_summary(c.store().catalog)


@st.cache_data(max_entries=64, show_spinner=False)
def _steps(data_dir: str, version: int, backfill_id: str) -> pl.DataFrame:
    return bfm.backfill_steps(c.store().catalog, backfill_id)


@st.cache_data(max_entries=64, show_spinner=False)
def _rebases(data_dir: str, version: int, backfill_id: str) -> pl.DataFrame:
    return bfm.backfill_rebases(c.store().catalog, backfill_id)


@st.cache_data(max_entries=64, show_spinner=False)
def _failed(data_dir: str, version: int, backfill_id: str) -> pl.DataFrame:
    return bfm.backfill_chunks(c.store().catalog, backfill_id, state="failed", limit=50)


def _key() -> tuple[str, int]:
    return str(c.settings().data_dir), c.version()


def _start(request: bfm.BackfillRequest | None = None, backfill_id: str | None = None,
           retry_failed: bool = False) -> None:
    try:
        run_id = bfm.start_in_background(c.settings(), request, backfill_id=backfill_id,
                                         retry_failed=retry_failed, store=c.store())
    except bfm.NothingToDoError as exc:  # complete (or no failed chunk): no run recorded
        st.info(ui.literal(str(exc)))
        return
    except (EnrichError, ValueError) as exc:
        c.report_error("start the backfill", exc)
        return
    c.invalidate()
    c.toast(f"Backfill started (run {run_id[:8]})", icon="⏮️")


def _said(backfill_id: str, level: str, text: str, while_running: bool = False) -> None:
    """What a card's button did, shown on its card (drawn again every 2 s) for a while
    (``while_running``: only while the backfill still runs — "Pausing …" is over once it
    stopped)."""
    st.session_state[f"bf_said_{backfill_id}"] = (level, text, time.monotonic() + SAID_S,
                                                  while_running)


def _stop(backfill_id: str, intent: str) -> None:
    """Pause or Cancel (a callback: it runs even when the click lands on a card drawn again
    without the button, because someone else acted first or the backfill ended) and say what
    happened."""
    catalog = c.store().catalog
    try:
        out = bfm.request_stop(catalog, backfill_id, intent, c.ACTOR)
    except bfm.BackfillStateError as exc:  # complete or cancelled meanwhile
        _said(backfill_id, palette.WARN, ui.backfill_not_stopped(backfill_id, intent,
                                                                 exc.status))
        return
    except StateError as exc:  # being cancelled: no pause on top
        _said(backfill_id, palette.WARN, ui.literal(exc))
        return
    except EnrichError as exc:
        verb = "pause" if intent == "paused" else "cancel"
        _said(backfill_id, palette.BAD, f"Could not {verb} the backfill: {ui.literal(exc)}")
        return
    c.invalidate()
    if not out.changed:
        _said(backfill_id, palette.WARN, ui.backfill_not_stopped(
            backfill_id, intent, out.status, out.paused_by, out.paused_at))
        return
    verb = "Pausing" if intent == "paused" else "Cancelling"
    _said(backfill_id, palette.OK, f"{verb}: the backfill stops after its current chunk"
          if out.run_id else f"Backfill {intent}.", while_running=bool(out.run_id))


def _resume(backfill_id: str, retry_failed: bool = False) -> None:
    """Resume or Retry failed (a callback, as ``_stop``) and say what happened: started, or
    already running (someone else resumed it), or nothing left to run."""
    try:
        run_id = bfm.start_in_background(c.settings(), backfill_id=backfill_id,
                                         retry_failed=retry_failed, store=c.store())
    except bfm.NothingToDoError as exc:  # it ended meanwhile, or someone retried them
        _said(backfill_id, palette.WARN, ui.backfill_not_started(backfill_id, retry_failed,
                                                                 exc.status))
        return
    except bfm.BackfillBusyError:  # someone else resumed it first
        rows = bfm.backfill_progress_summary(c.store().catalog, backfill_id)
        _said(backfill_id, palette.WARN, ui.backfill_not_started(
            backfill_id, retry_failed, "running", rows[0]["last_run_id"] if rows else None))
        return
    except (EnrichError, ValueError) as exc:
        _said(backfill_id, palette.BAD, f"Could not resume the backfill: {ui.literal(exc)}")
        return
    c.invalidate()
    _said(backfill_id, palette.OK, f"Backfill resumed (run {ui.literal(run_id[:8])})"
          + (": only its failed chunks." if retry_failed else "."))


# -- new backfill ------------------------------------------------------------------------------
c.page_header("Backfill", "Fill years of history for one dataset, resumably, within the "
              "provider's rate limit. The daily run keeps priority over backfill requests.")
settings = c.settings()
universe = c.read(universe_view.universe_table)
active = universe.filter(universe["active"])["symbol"].to_list() if universe.height else []

st.subheader("New backfill")
with st.form("backfill_new"):
    top = st.columns([1, 3])
    dataset = top[0].selectbox("Dataset", bfm.DATASETS, key="bf_dataset",
                               format_func=lambda d: f"{d} ({DEFAULT_LABEL[d]} by default)")
    symbols = c.symbol_picker(top[1], "Symbols", active, key="bf_symbols",
                              placeholder=f"all {len(active):,} active symbols")
    span_cols = st.columns(4)
    span = span_cols[0].selectbox("History", SPANS, key="bf_span",
                                  format_func=lambda s: {"default": "dataset default",
                                                         "years": "years back",
                                                         "days": "days back",
                                                         "since": "since a date"}[s])
    amount = span_cols[1].number_input("Years / days back", min_value=1,
                                       max_value=MAX_BACKFILL_DAYS, value=1, key="bf_amount")
    since = span_cols[2].date_input("Since", value=dt.date(2020, 1, 1), key="bf_since",
                                    min_value=dt.date(2000, 1, 1))
    timeframe = span_cols[3].selectbox("Bars timeframe", ["1d", "1h", "5m"], key="bf_tf")
    with st.expander("Options: expirations and strikes"):
        o = st.columns(3)
        expirations = o[0].text_input("Expirations (YYYY-MM-DD, comma-separated)",
                                      key="bf_exp", placeholder="the next monthly ones")
        monthly = o[1].number_input("Monthly expirations", min_value=1, max_value=12,
                                    value=DEFAULT_MONTHLY, key="bf_monthly")
        band = o[2].slider("Moneyness (strike / underlying close)", 0.5, 1.5,
                           DEFAULT_MONEYNESS, step=0.05, key="bf_band")
    b = st.columns([1, 1, 4])
    preview = b[0].form_submit_button("Preview plan", icon="🧮")
    start = b[1].form_submit_button("Start backfill", type="primary", icon="⏮️",
                                    disabled=not active)

request = None
if preview or start:
    try:
        exps = tuple(dt.date.fromisoformat(x.strip()) for x in expirations.split(",")
                     if x.strip()) if dataset == "options" else ()
        options = dataset == "options"
        request = bfm.BackfillRequest(
            dataset=dataset, symbols=tuple(symbols),
            years=int(amount) if span == "years" else None,
            days=int(amount) if span == "days" else None,
            since=since if span == "since" else None,
            timeframe=timeframe if dataset == "bars" else "1d", expirations=exps,
            moneyness=tuple(band) if options else DEFAULT_MONEYNESS,  # type: ignore[arg-type]
            monthly=int(monthly) if options else DEFAULT_MONTHLY,
        ).validated()
    except (EnrichError, ValueError) as exc:
        c.report_error("plan the backfill", exc)
        request = None

if request is not None and preview:
    from enrich.providers import make_provider

    try:
        plan = bfm.plan_backfill(c.store(), settings, request, make_provider(settings))
    except EnrichError as exc:
        c.report_error("plan the backfill", exc)
    else:
        todo = plan.todo()
        eta = ui.fmt_duration(plan.eta_s())
        st.info(f"**{ui.literal(plan.describe())}** — {len(plan.chunks)} chunks "
                f"({len(plan.chunks) - len(todo)} done), **{plan.requests_expected()} "
                f"requests** to make: about {eta} at {settings.rate_limit_per_min:g} "
                "requests/min" + ("" if plan.rate_limited else
                                  " (the sample provider is not rate-limited: much faster)"))
        if plan.awaiting_listings:
            st.caption("Not counted yet: one request per option contract chosen, planned "
                       "once the listings of " + ui.literal(", ".join(plan.awaiting_listings))
                       + " are fetched.")
        for note in plan.notes:
            st.caption(ui.literal(note))
        c.dataframe(plan.by_step(), width="stretch")
if request is not None and start:
    _start(request)


# -- backfills ---------------------------------------------------------------------------------
def _card(r: dict[str, Any]) -> None:
    bid = r["backfill_id"]
    syms = r["symbols"] if isinstance(r["symbols"], list) else []
    who = "the active universe" if syms == ["*"] else ", ".join(syms[:8]) + (
        f" and {len(syms) - 8} more" if len(syms) > 8 else "")
    spec = r["spec"] if isinstance(r.get("spec"), dict) else {}
    timeframe = spec.get("timeframe") if r["dataset"] == "bars" else None
    with st.container(border=True):
        head = st.columns([4, 1])
        head[0].markdown(f"**{ui.literal(r['dataset'])}**"
                         + (f" · {ui.literal(timeframe)} bars" if timeframe else "")
                         + f" for {ui.literal(who)} · "
                         f"{ui.fmt_session(r['window_start'])} → "
                         f"{ui.fmt_session(r['window_end'])} · {ui.literal(bid)}")
        head[1].markdown(status_badge(r["status"]))
        # One source for the chunk counts: the backfill's progress rows (every chunk, done
        # in any of its runs); the run's message below counts the same way.
        bits = [f"{r['chunks_done']:,} / {r['chunks_total']:,} chunks"]
        if r["requests_per_min"] is not None:
            bits.append(f"{r['requests_per_min']:.1f} requests/min")
        if r["eta_s"] is not None:
            bits.append(f"ETA {ui.fmt_duration(r['eta_s'])}")
        st.progress(min(r["fraction"], 1.0), text=" · ".join(bits))
        c.tiles([
            ("Chunks done", f"{r['chunks_done']:,} / {r['chunks_total']:,}"),
            ("Requests", f"{r['requests_made']:,} / {r['requests_expected']:,}",
             "Made so far / expected by the plan (one per fetch chunk)."),
            ("Failed chunks", ui.fmt_int(r["chunks_failed"])),
            ("Rows stored", ui.fmt_int(r["records"])),
        ])
        if r["status"] == "paused" and r["paused_by"]:
            st.caption(f"Paused by {ui.literal(r['paused_by'])} at "
                       f"{ui.fmt_utc(r['paused_at'])}: Resume runs the chunks left.")
        if r["awaiting_listings"]:
            st.caption("Option contracts' bars are planned once every listing is fetched.")
        if r["last_error"]:
            st.caption(f"Last error: {ui.literal(r['last_error'], limit=300)}")
        if r["run_message"] and r["status"] != "running":
            st.caption(ui.literal(r["run_message"], limit=300))
        acts = st.columns(6)
        if r["status"] == "running":
            acts[0].button("Pause", icon="⏸️", key=f"pause_{bid}", on_click=_stop,
                           args=(bid, "paused"),
                           help="Stop after the current chunk; resume later.")
            acts[1].button("Cancel", icon="⏹️", key=f"cancel_{bid}", on_click=_stop,
                           args=(bid, "cancelled"),
                           help="Stop after the current chunk; chunks done are kept.")
        elif r["status"] != "complete":
            acts[0].button("Resume", icon="▶️", key=f"resume_{bid}", on_click=_resume,
                           args=(bid,))
            if r["chunks_failed"]:
                acts[1].button("Retry failed", icon="🔁", key=f"retry_{bid}",
                               on_click=_resume, args=(bid, True))
        said = st.session_state.get(f"bf_said_{bid}")
        if said and said[2] > time.monotonic() and not (said[3] and r["status"] != "running"):
            c.alert(said[0], said[1])
        if r["last_run_id"]:
            with acts[2]:
                c.run_link(r["last_run_id"], "Run →")
        with st.expander("Details"):
            key = _key()
            steps = _steps(*key, bid)
            if not steps.is_empty():
                c.dataframe(steps, width="stretch")
            failed = _failed(*key, bid)
            if not failed.is_empty():
                st.markdown("**Failed chunks**")
                c.dataframe(failed.select("step", "symbol", "window_start", "window_end",
                                          "attempts", "last_error"), width="stretch")
            rebased = _rebases(*key, bid)
            if not rebased.is_empty():
                st.markdown("**Bars re-based on splits** (history changed by a split)")
                c.dataframe(rebased, width="stretch")


@st.fragment(run_every=2)
def backfills() -> None:
    rows = _summary(*_key())
    st.subheader("Backfills")
    if not rows:
        st.info("No backfills yet: plan one above. `python -m enrich backfill DATASET "
                "--symbol …` does the same from a terminal.")
        return
    for r in rows[:SHOWN]:
        _card(r)
    if len(rows) > SHOWN:
        st.caption(f"{len(rows) - SHOWN} older backfills: `python -m enrich backfill list`")


backfills()
