"""The alert rules: each looks at the catalog and returns the conditions that hold now, each
with its dedupe key (``RULES``); ``Context`` is what a round of rules reads.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import polars as pl

from enrich.pipeline.run_model import STOPPED_EARLY
from enrich.pipeline.scheduler import SchedulerState, read_state
from enrich.store import runs
from enrich.store.catalog import Catalog, host_and_pid
from enrich.ui import fmt_sessions
from enrich.views import status as status_view

log = logging.getLogger(__name__)


QUOTA_WINDOW = dt.timedelta(minutes=15)


STORM_RETRIES = 20  # rate-limited attempts within QUOTA_WINDOW that make a 429 storm


NEW_RUN_WINDOW = dt.timedelta(hours=24)  # failed runs older than this open no incident


NEW_BACKFILL_WINDOW = dt.timedelta(days=7)


EXAMPLES = 5  # symbols named in an alert's text


RULE_NAMES = ("stale", "run_failed", "scheduler", "quota", "quality", "backfill")


@dataclass(frozen=True)
class Condition:
    """Something that needs a person, as a rule sees it now."""

    key: str  # the dedupe key: at most one open incident per key
    rule: str
    severity: str  # error | warning
    title: str
    detail: str


@dataclass
class Context:
    """What the rules read: the catalog, the data's instant and the wall clock."""

    catalog: Catalog
    now: dt.datetime  # the data's "as of" instant (settings.now): freshness
    wall: dt.datetime  # the real instant: runs, logs and heartbeats are stamped with it
    open_keys: frozenset[str] = frozenset()
    # A dead schedule owner this process took over from (seen before its first heartbeat).
    takeover: SchedulerState | None = None


def _names(symbols: Sequence[str]) -> str:
    shown = ", ".join(symbols[:EXAMPLES])
    return shown + (f" and {len(symbols) - EXAMPLES} more" if len(symbols) > EXAMPLES else "")


def rule_stale(ctx: Context) -> list[Condition]:
    grid = status_view.status_grid(ctx.catalog, ctx.now)
    late = grid.filter(pl.col("state").is_in(["late", "stale"])
                       | ((pl.col("state") == "failing") & (pl.col("sessions_behind") > 0)))
    if late.is_empty():
        return []
    lines = []
    for (dataset,), part in late.sort(["sessions_behind", "symbol"], descending=[True, False]) \
            .group_by("dataset", maintain_order=True):
        examples = [f"{s} ({b} behind)" for s, b in
                    part.select("symbol", "sessions_behind").iter_rows()]
        lines.append(f"{dataset}: {part.height} symbol(s), {_names(examples)}")
    worst = int(cast(int | None, late["sessions_behind"].max()) or 0)
    expected = fmt_sessions(status_view.expected_by_calendar(late))
    datasets = sorted(set(late["dataset"].to_list()))
    symbols = late["symbol"].n_unique()
    # One incident for all datasets: a missed daily run makes every dataset late at once,
    # and that is one thing to fix, not six.
    return [Condition(
        key="stale", rule="stale", severity="error" if worst >= 3 else "warning",
        title=f"data not fresh: {', '.join(datasets)} ({symbols} symbol(s))",
        detail=("Sessions behind the latest expected session, whose close plus the "
                f"provider's publication lag has passed ({expected}). "
                + "; ".join(lines) + "."))]


def rule_run_failed(ctx: Context) -> list[Condition]:
    """A failed or partial run stays an incident until each symbol that failed in it has
    succeeded in a later run (or was deactivated); a run that failed before any symbol, until
    a later run succeeds."""
    open_runs = [k.split(":", 1)[1] for k in ctx.open_keys if k.startswith("run_failed:")]
    rows = runs.failed_runs(ctx.catalog, ctx.wall - NEW_RUN_WINDOW, open_runs)
    out = []
    for r in rows.iter_rows(named=True):
        still = list(r["still_failing"] or [])
        if (r["failed_tasks"] and not still) or (not r["failed_tasks"] and r["later_success"]):
            continue
        what = (f"{len(still)} symbol(s) still failing: {_names(still)}" if still
                else (r["message"] or "no symbol finished"))
        if still and (r["message"] or "").startswith(STOPPED_EARLY):  # the reason comes first
            what = f"{r['message'].rstrip('.')}; {what}"
        out.append(Condition(
            key=f"run_failed:{r['run_id']}", rule="run_failed",
            severity="error" if r["state"] == "failed" else "warning",
            title=f"{r['kind']} run {r['run_id'][:8]} {r['state']}",
            detail=(f"{what}. {r['symbols_failed'] or 0} of {r['symbols_total'] or 0} symbols "
                    f"failed after their retries; finished {_fmt(r['finished_at'])}.")))
    return out


def rule_scheduler(ctx: Context) -> list[Condition]:
    state = read_state(ctx.catalog)
    dead = state if state.liveness(ctx.wall) == "dead" else ctx.takeover
    if dead is None:
        return []
    how = ("no process owns the daily schedule now" if dead is state
           else f"pid {host_and_pid()[1]} has taken the schedule over")
    return [Condition(
        key="scheduler:dead", rule="scheduler", severity="error",
        title="scheduler heartbeat lost",
        detail=(f"pid {dead.pid} on {dead.host} last beat at {_fmt(dead.heartbeat_at)} and "
                f"did not stop cleanly; {how}."))]


def rule_quota(ctx: Context) -> list[Condition]:
    row = ctx.catalog.query(
        "SELECT count(*) FILTER (status = 'failed') AS failed, "
        "count(*) FILTER (status = 'retried') AS retried, "
        "list(DISTINCT dataset ORDER BY dataset) AS datasets "
        "FROM fetch_log WHERE error_class = 'rate_limited' AND started_at >= ?",
        [ctx.wall - QUOTA_WINDOW]).row(0, named=True)
    failed, retried = int(row["failed"] or 0), int(row["retried"] or 0)
    if not failed and retried < STORM_RETRIES:
        return []
    minutes = int(QUOTA_WINDOW.total_seconds() // 60)
    title = ("provider quota exhausted" if failed else "429 storm: the provider is "
             "rate-limiting requests")
    return [Condition(
        key="quota:rate_limited", rule="quota", severity="error" if failed else "warning",
        title=title,
        detail=(f"In the last {minutes} min: {failed} fetch step(s) failed on HTTP 429 after "
                f"their retries, {retried} attempt(s) were rate-limited "
                f"({', '.join(row['datasets'] or [])}). Lower ENRICH_RATE_LIMIT_PER_MIN or "
                "check the plan's limits."))]


def rule_quality(ctx: Context) -> list[Condition]:
    rows = ctx.catalog.query("""
        SELECT q.dataset, q.check_name, list(q.symbol ORDER BY q.symbol) AS symbols,
               arg_max(q.symbol || ': ' || coalesce(q.detail, ''), q.checked_at) AS example
        FROM quality_status q JOIN symbols s USING (symbol)
        WHERE NOT q.passed AND q.severity = 'error' AND s.active
        GROUP BY ALL ORDER BY q.dataset, q.check_name""")
    return [Condition(
        key=f"quality:{r['dataset']}/{r['check_name']}", rule="quality", severity="error",
        title=f"quality check {r['dataset']}/{r['check_name']} fails for "
              f"{len(r['symbols'])} symbol(s)",
        detail=f"{_names(r['symbols'])}. Latest evidence: {r['example'][:300]}")
        for r in rows.iter_rows(named=True)]


def rule_backfill(ctx: Context) -> list[Condition]:
    from enrich.backfill.jobs import backfill_progress_summary

    out = []
    for r in backfill_progress_summary(ctx.catalog, now=ctx.wall, limit=500):
        key = f"backfill:{r['backfill_id']}"
        if r["status"] != "failed":
            continue
        recent = r["updated_at"] is None or r["updated_at"] >= ctx.wall - NEW_BACKFILL_WINDOW
        if not recent and key not in ctx.open_keys:
            continue
        syms = r["symbols"] if isinstance(r["symbols"], list) else []
        out.append(Condition(
            key=key, rule="backfill", severity="error",
            title=f"backfill {r['backfill_id']} ({r['dataset']}) failed",
            detail=(f"{r['chunks_failed']} of {r['chunks_total']} chunks failed for "
                    f"{_names(syms)}; last error: {(r['last_error'] or '?')[:300]}. Resume "
                    f"with `python -m enrich backfill resume {r['backfill_id']} "
                    "--retry-failed`.")))
    return out


# The rules that open one incident at most, and its dedupe key (see each rule above).
SINGLE_KEYS = {"stale": "stale", "scheduler": "scheduler:dead", "quota": "quota:rate_limited"}


def key_problem(catalog: Catalog, key: str) -> str | None:
    """Why no rule can ever open an incident with the dedupe ``key`` (a typo, a check that is
    only a warning, a run that ended well), or None when one can: the rules make it, for
    something that exists, whether or not an incident has had it yet."""
    rule, _, rest = key.partition(":")
    if rule not in RULE_NAMES:
        return f"no rule {rule}; the rules are {', '.join(RULE_NAMES)}"
    if rule in SINGLE_KEYS:
        one = SINGLE_KEYS[rule]
        return None if key == one else f"the {rule} rule opens one incident, keyed {one}"
    if rule == "quality":
        from enrich.checks.quality import CHECKS

        errors = [f"{c.dataset}/{c.name}" for c in CHECKS if c.severity == "error"]
        if rest in errors:
            return None
        if any(f"{c.dataset}/{c.name}" == rest for c in CHECKS):
            return f"the quality check {rest} is a warning, which opens no incident"
        return f"no quality check {rest}; those that alert are {', '.join(errors)}"
    if rule == "run_failed":
        state = runs.state_of(catalog, rest)
        if state is None:
            return f"no run {rest}"
        return None if state in ("queued", "running", "failed", "partial") else (
            f"run {rest} ended {state}, which opens no incident")
    from enrich.backfill.jobs import backfill_progress_summary

    return None if backfill_progress_summary(catalog, rest) else f"no backfill {rest}"


RULES: dict[str, Callable[[Context], list[Condition]]] = {
    "stale": rule_stale, "run_failed": rule_run_failed, "scheduler": rule_scheduler,
    "quota": rule_quota, "quality": rule_quality, "backfill": rule_backfill,
}


def _fmt(ts: dt.datetime | None) -> str:
    return "never" if ts is None else ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
