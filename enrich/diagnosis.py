"""Diagnosis: why the desk is not fresh — the causes before the symptoms.

The Overview lists symbols that are late, stale or failing; these read models say *why*:
the schedule (paused, by whom and why; no scheduler running; daily fires that did not run),
the last and next run, how far behind the store is, what is failing and with which error,
failing quality checks and open alerts. ``overview_causes`` is the Overview's "why" strip;
``dataset_causes`` leads a symbol's drilldown with the cause of each dataset that is not
fresh (its last error, since when, and the action that fixes it).

Read models only (catalog reads, no lake file): they return plain data, never Markdown — the
pages quote the text users wrote (a pause reason, who paused) with ``ui.literal``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import polars as pl

from enrich import palette
from enrich.pipeline.scheduler import fires_between, next_fire_after, state_from
from enrich.store import runs
from enrich.store.catalog import Catalog
from enrich.symbols import calendar_for

# Worst freshness states a run can fix (not_entitled needs the plan, not a run).
BEHIND = ("late", "stale")
RUNNABLE = ("failing", "stale", "never", "late")
MISSED_SHOWN = 30  # days of daily fires looked back on


def _row(con, sql: str, params: list | None = None) -> dict[str, Any] | None:
    cur = con.execute(sql, params or [])
    row = cur.fetchone()
    return dict(zip([d[0] for d in cur.description], row, strict=True)) if row else None


def schedule_facts(catalog: Catalog, schedule_utc: dt.time, now: dt.datetime,
                   scheduler_here: bool = True,
                   wall: dt.datetime | None = None) -> dict[str, Any]:
    """The schedule as the Overview tells it.

    ``state``: running | paused | stopped | dead (from the heartbeat, seen from any process),
    pause details, ``next_fire`` (None unless a live, unpaused scheduler will fire),
    ``last_run`` and ``last_scheduled`` (newest run of any kind / of the schedule),
    ``unrun_fires``: daily fire times since the newest scheduled run (or the first run ever)
    with no run, and ``missed_runs``: fires recorded as ``missed`` since the last scheduled
    run that ran — both within ``MISSED_SHOWN`` days. ``scheduler_here`` is
    ``ENRICH_SCHEDULER`` of the asking process (off: it will not start one). ``now`` is the
    desk's instant (``ENRICH_NOW`` when replaying); heartbeats are judged on the wall clock
    ``wall`` (default ``now``).
    """
    with catalog.connect() as con:
        state = state_from(con)
        history = runs.schedule_history(con, now - dt.timedelta(days=MISSED_SHOWN))
    last, last_sched = history["last"], history["last_scheduled"]
    first_run, missed, newest_sched = (history["first_requested"], history["missed"],
                                       history["newest_fire"])
    liveness = state.liveness(wall or now)
    anchor = newest_sched or first_run
    unrun: list[dt.datetime] = []
    if anchor is not None:
        unrun = fires_between(schedule_utc, max(anchor, now - dt.timedelta(days=MISSED_SHOWN)),
                              now)
    next_fire = None
    if liveness == "running":
        next_fire = state.next_fire_at or next_fire_after(schedule_utc, now)
    elif liveness == "stopped" and scheduler_here and not state.paused:
        next_fire = next_fire_after(schedule_utc, now)  # this process starts one
    return {
        "state": liveness, "scheduler_here": scheduler_here, "paused": state.paused,
        "paused_by": state.paused_by, "paused_at": state.paused_at,
        "pause_reason": state.pause_reason, "heartbeat_at": state.heartbeat_at,
        "next_fire": next_fire, "last_run": last, "last_scheduled": last_sched,
        "unrun_fires": unrun, "missed_runs": [r[0] for r in missed],
    }


def behind_facts(summary: pl.DataFrame, grid: pl.DataFrame) -> dict[str, Any]:
    """How far behind the store is, from the status grid and its per-symbol summary.

    ``runnable``: symbols whose worst state a run fixes (failing, stale, never fetched,
    late; not a ticker the reference does not know), most urgent first; ``behind``: of
    them, those late or stale; ``max_behind`` (sessions), ``newest_held`` (a session date)
    and ``expected`` (the latest expected session per calendar, over the datasets behind);
    ``failing``: symbol × dataset rows failing with their error classes (most frequent
    first); ``never``: symbols never fetched.
    """
    from enrich.views.status import expected_by_calendar

    empty = {"runnable": [], "behind": 0, "max_behind": 0, "newest_held": None,
             "oldest_held": None, "expected": {}, "failing": 0, "failing_symbols": 0,
             "error_classes": [], "never": 0, "not_entitled": 0}
    if summary.is_empty():
        return empty
    # A ticker the provider's reference does not know fails every run the same way: no run
    # fixes it (its page says to fix the spelling or remove it).
    unknown = grid.filter((pl.col("state") == "failing")
                          & (pl.col("last_error_class") == "unknown_ticker"))["symbol"]
    runnable = summary.filter(pl.col("state").is_in(RUNNABLE)
                              & ~pl.col("symbol").is_in(unknown.implode())).sort(
        ["urgency", "sessions_behind", "symbol"], descending=[False, True, False],
        nulls_last=True)
    behind_rows = grid.filter(pl.col("state").is_in(BEHIND))
    failing = grid.filter(pl.col("state") == "failing")
    classes = (failing.group_by(pl.col("last_error_class").fill_null("unknown"))
               .len().sort(["len", "last_error_class"], descending=[True, False]))
    out = dict(empty)
    out.update(
        runnable=runnable["symbol"].to_list(),
        behind=int(summary.filter(pl.col("state").is_in(BEHIND)).height),
        max_behind=(int(cast(int | None, behind_rows["sessions_behind"].max()) or 0)
                    if behind_rows.height else 0),
        newest_held=behind_rows["latest_session"].max() if behind_rows.height else None,
        oldest_held=behind_rows["latest_session"].min() if behind_rows.height else None,
        expected=expected_by_calendar(behind_rows),
        failing=failing.height, failing_symbols=failing["symbol"].n_unique(),
        error_classes=[(c, int(n)) for c, n in classes.iter_rows()],
        never=int((summary["state"] == "never").sum()),
        not_entitled=int((summary["state"] == "not_entitled").sum()),
    )
    return out


def quality_facts(catalog: Catalog) -> dict[str, Any]:
    """Checks failing now on active symbols: how many, on how many symbols, how many at
    error level."""
    with catalog.connect() as con:
        # Of active symbols, as the grid, the Quality page and the quality alert count them.
        row = _row(con, "SELECT count(*) AS checks, count(DISTINCT symbol) AS symbols, "
                        "count(*) FILTER (severity = 'error') AS errors "
                        "FROM quality_status WHERE NOT passed AND symbol IN "
                        "(SELECT symbol FROM symbols WHERE active)")
    return {k: int(v or 0) for k, v in (row or {}).items()}


def overview_causes(schedule: dict[str, Any], behind: dict[str, Any],
                    quality: dict[str, Any], open_alerts: int,
                    alert_errors: int = 0) -> list[dict[str, Any]]:
    """The Overview's "why" strip: causes, most fundamental first, each
    ``{kind, level, facts}`` (``level`` from ``enrich.palette``). Empty when all is well."""
    causes: list[dict[str, Any]] = []
    unrun, missed = schedule["unrun_fires"], schedule["missed_runs"]
    behind_n = behind["behind"] + behind["failing_symbols"]
    if schedule["paused"]:
        causes.append({"kind": "paused", "level": palette.BAD if behind_n else palette.WARN,
                       "skipped": len(unrun)})
    elif schedule["state"] in ("stopped", "dead") and schedule["next_fire"] is None:
        causes.append({"kind": "no_scheduler",
                       "level": palette.BAD if behind_n else palette.WARN,
                       "dead": schedule["state"] == "dead",
                       "skipped": len(unrun) + len(missed)})
    elif missed or (unrun and schedule["state"] != "running"):
        causes.append({"kind": "missed", "level": palette.WARN,
                       "skipped": len(missed) + len(unrun)})
    last = schedule["last_run"]
    if last and last["state"] in ("failed", "partial", "interrupted"):
        causes.append({"kind": "last_run", "level": palette.run_level(last["state"])})
    if behind["behind"]:
        causes.append({"kind": "behind", "level": palette.BAD if behind["max_behind"] >= 3
                       else palette.WARN})
    if behind["failing"]:
        causes.append({"kind": "failing", "level": palette.BAD})
    if behind["never"]:
        causes.append({"kind": "never", "level": palette.WARN})
    if open_alerts:
        causes.append({"kind": "alerts", "level": palette.BAD if alert_errors
                       else palette.WARN, "open": open_alerts, "errors": alert_errors})
    if quality.get("checks"):
        causes.append({"kind": "quality", "level": palette.BAD if quality.get("errors")
                       else palette.WARN})
    return causes


def dataset_causes(grid: pl.DataFrame, schedule: dict[str, Any] | None = None,
                   delisted: dt.date | None = None) -> list[dict[str, Any]]:
    """For one symbol's status rows (``queries.status_grid``): each dataset that is not
    fresh, worst first, with its cause and the action that fixes it.

    ``{dataset, state, level, sessions_behind, latest_session, expected_session, calendar
    (whose dates those are), error_class, error_message, error_at, failing_since, failures,
    action}``;
    ``failing_since`` is the last success (the failures began after it). ``action`` is one of
    ``enrich`` (Enrich now), ``recheck`` (the plan refused it: re-check entitlements),
    ``resume`` (behind while the schedule is paused), ``wait`` (due: publication lag),
    ``activate`` (not expected: deactivated), ``delisted`` (not expected: the symbol stopped
    trading on ``delisted``, its history is kept and nothing more is fetched).
    """
    from enrich.views.status import GRID_STATES

    order = {s: i for i, s in enumerate(GRID_STATES)}
    rows = [r for r in grid.to_dicts() if r["state"] != "fresh"]
    rows.sort(key=lambda r: (order.get(r["state"], 99), r["dataset"]))
    paused = bool(schedule and schedule.get("paused"))
    out = []
    for r in rows:
        state = r["state"]
        if state == "not_entitled":
            action = "recheck"
        elif state == "due":
            action = "wait"
        elif state == "not_expected":
            action = "delisted" if delisted is not None else "activate"
        elif state in BEHIND and paused:
            action = "resume"
        else:
            action = "enrich"
        out.append({
            "dataset": r["dataset"], "state": state, "level": palette.state_level(state),
            "sessions_behind": r.get("sessions_behind"),
            "latest_session": r.get("latest_session"),
            "expected_session": r.get("expected_session"),
            "calendar": calendar_for(r.get("asset_class") or ""),
            "due_at": r.get("due_at"),
            "error_class": r.get("last_error_class") if state == "failing" else None,
            "error_message": r.get("last_error_message") if state == "failing" else None,
            "error_at": r.get("last_error_at") if state == "failing" else None,
            "failing_since": r.get("last_success_at"),
            "failures": r.get("consecutive_failures") or 0,
            "action": action,
        })
    return out
