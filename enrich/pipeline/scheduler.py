"""The daily schedule and its persisted state (``scheduler_state``), apart from any thread.

Three things live here, all plain functions over the catalog so that a process that does not
run the scheduler (the dashboard with ``ENRICH_SCHEDULER=off``, the CLI) can read and change
them:

* schedule arithmetic: the daily cron at ``ENRICH_SCHEDULE_UTC``, always in UTC (a DST change
  in New York moves the fire's exchange time, never its UTC time);
* the scheduler row: pause/resume (who, when, why — survives restarts), the heartbeat of the
  process that owns the schedule, and its liveness (running / paused / stopped / dead);
* bookkeeping run rows: fires missed beyond the grace time become runs in state ``missed``;
  run history older than the retention is pruned.

Only one process owns the schedule at a time: the heartbeat row names it, and another process
takes over only once that heartbeat is dead or cleanly stopped (``beat``).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from enrich.calendars import EXCHANGE_TZ
from enrich.store import runs
from enrich.store.catalog import (
    Catalog,
    WriteBatch,
    bump_version,
    frame,
    host_and_pid,
    pid_alive,
    transaction,
)

UTC = dt.UTC
HEARTBEAT_S = 5.0
DEAD_AFTER_BEATS = 3  # a heartbeat older than this many intervals, with no clean stop: dead
# A fire the process wakes up to within this long still runs (late); later, it is a `missed`
# run. One hour covers a laptop waking from sleep or a slow start, but never lets yesterday's
# enrichment start in the middle of today's trading day.
MISFIRE_GRACE_S = 3600
MAX_MISSED_RECORDED = 31  # a process down for months records its last month of fires
DAILY_JOB_ID = "daily-enrichment"
RETENTION_JOB_ID = "retention"
FOLLOW_UP_JOB_ID = "follow-up"


def follow_up_trigger(at_exchange: dt.time) -> CronTrigger:
    """Daily at ``at_exchange`` New York time (the follow-up refresh for plans that serve a
    session only after its day ends)."""
    return CronTrigger(hour=at_exchange.hour, minute=at_exchange.minute,
                       timezone=ZoneInfo(EXCHANGE_TZ))


# -- schedule arithmetic --------------------------------------------------------------------
def daily_trigger(at_utc: dt.time) -> CronTrigger:
    """The daily cron trigger; the time zone is explicit so the host's zone never leaks in."""
    return CronTrigger(hour=at_utc.hour, minute=at_utc.minute, timezone=UTC)


def next_fire_after(at_utc: dt.time, now: dt.datetime) -> dt.datetime:
    """The first fire strictly after ``now`` (UTC-aware)."""
    fire = daily_trigger(at_utc).get_next_fire_time(None, now + dt.timedelta(microseconds=1))
    return fire.astimezone(UTC)


def last_fire_at_or_before(at_utc: dt.time, now: dt.datetime) -> dt.datetime:
    """The latest fire time ``<= now``."""
    now = now.astimezone(UTC)
    fire = dt.datetime.combine(now.date(), at_utc, tzinfo=UTC)
    return fire if fire <= now else fire - dt.timedelta(days=1)


def fires_between(at_utc: dt.time, after: dt.datetime, until: dt.datetime) -> list[dt.datetime]:
    """Fire times in ``(after, until]``, ascending."""
    out: list[dt.datetime] = []
    fire = last_fire_at_or_before(at_utc, until)
    while fire > after:
        out.append(fire)
        fire -= dt.timedelta(days=1)
    return out[::-1]


def in_exchange_time(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(ZoneInfo(EXCHANGE_TZ))


def fire_label(ts: dt.datetime | None) -> str:
    """``2026-11-27 01:30 UTC (Thu 20:30 EST, New York)``; the exchange zone is labelled."""
    if ts is None:
        return "none"
    local = in_exchange_time(ts)
    return (f"{ts.astimezone(UTC):%Y-%m-%d %H:%M} UTC "
            f"({local:%a %H:%M} {local.tzname()}, New York)")


# -- the scheduler row ----------------------------------------------------------------------
@dataclass(frozen=True)
class SchedulerState:
    paused: bool = False
    paused_by: str | None = None
    paused_at: dt.datetime | None = None
    pause_reason: str | None = None
    resumed_by: str | None = None
    resumed_at: dt.datetime | None = None
    heartbeat_at: dt.datetime | None = None
    heartbeat_interval_s: float | None = None
    pid: int | None = None
    host: str | None = None
    started_at: dt.datetime | None = None
    stopped_at: dt.datetime | None = None
    next_fire_at: dt.datetime | None = None
    schedule_since: dt.datetime | None = None

    def liveness(self, now: dt.datetime) -> str:
        """running | paused | stopped | dead, as seen from any process at instant ``now``.

        ``stopped``: no process owns the schedule (never started, or stopped cleanly).
        ``dead``: the owner stopped beating for ``DEAD_AFTER_BEATS`` intervals without a
        clean stop, or (same host) its process is gone.
        """
        if self.pid is None or self.heartbeat_at is None:
            return "stopped"
        interval = self.heartbeat_interval_s or HEARTBEAT_S
        age = (now - self.heartbeat_at).total_seconds()
        gone = self.host == host_and_pid()[0] and not pid_alive(self.pid)
        if gone or age > DEAD_AFTER_BEATS * interval:
            return "dead"
        return "paused" if self.paused else "running"

    def is_live(self, now: dt.datetime) -> bool:
        return self.liveness(now) in ("running", "paused")


_STATE_COLUMNS = [f for f in SchedulerState.__dataclass_fields__]


def state_from(con) -> SchedulerState:
    rows = frame(con, f"SELECT {', '.join(_STATE_COLUMNS)} FROM scheduler_state WHERE id = 1")
    if rows.is_empty():
        return SchedulerState()
    row = rows.row(0, named=True)
    row["paused"] = bool(row["paused"])
    return SchedulerState(**row)


def read_state(catalog: Catalog) -> SchedulerState:
    with catalog.connect() as con:
        return state_from(con)


def set_paused(catalog: Catalog, by: str, reason: str | None,
               now: dt.datetime) -> tuple[bool, SchedulerState]:
    """Pause the schedule; returns whether this call paused it, and the row as it is now.

    A schedule already paused stays as it was: who paused it first, when and why are kept
    (read and write under the catalog's lock, so two pauses at once record one).
    """
    with catalog.connect() as con:
        state = state_from(con)
        if state.paused:
            return False, state
        with transaction(con):
            con.execute("UPDATE scheduler_state SET paused = true, paused_by = ?, "
                        "paused_at = ?, pause_reason = ?, next_fire_at = NULL "
                        "WHERE id = 1 AND NOT paused", [by, now, reason])
        return True, state_from(con)


def set_resumed(catalog: Catalog, by: str, now: dt.datetime) -> tuple[bool, SchedulerState]:
    """Resume a paused schedule; returns whether this call resumed it, and the row as it is
    now. A schedule that is not paused is left as it is: its ``resumed_at`` is where the
    missed-fire accounting starts, so moving it would hide the fires missed before."""
    with catalog.connect() as con:
        state = state_from(con)
        if not state.paused:
            return False, state
        with transaction(con):
            con.execute("UPDATE scheduler_state SET paused = false, resumed_by = ?, "
                        "resumed_at = ? WHERE id = 1 AND paused", [by, now])
        return True, state_from(con)


@dataclass(frozen=True)
class Beat:
    owner: bool  # this process owns the schedule (it wrote the heartbeat)
    state: SchedulerState  # the row as read before this beat


def beat(catalog: Catalog, now: dt.datetime, interval_s: float, started_at: dt.datetime,
         next_fire: dt.datetime | None) -> Beat:
    """Write this process's heartbeat unless another live process owns the schedule.

    Read and write happen in one catalog connection, under the cross-process lock, so two
    processes can never both believe they own the schedule. ``next_fire`` is stored only
    while not paused.
    """
    host, pid = host_and_pid()
    with catalog.connect() as con:
        state = state_from(con)
        theirs = state.pid is not None and (state.pid, state.host) != (pid, host)
        if theirs and state.is_live(now):
            return Beat(False, state)
        con.execute(
            "UPDATE scheduler_state SET heartbeat_at = ?, heartbeat_interval_s = ?, pid = ?, "
            "host = ?, started_at = ?, stopped_at = NULL, next_fire_at = ?, "
            "schedule_since = coalesce(schedule_since, ?) WHERE id = 1",
            [now, interval_s, pid, host, started_at, None if state.paused else next_fire, now])
    return Beat(True, state)


def clean_stop(catalog: Catalog, now: dt.datetime) -> None:
    """Release ownership: a clean stop clears the pid, so health says stopped, not dead."""
    b = WriteBatch()
    add_clean_stop(b, now)
    catalog.write(b)


def add_clean_stop(b: WriteBatch, now: dt.datetime) -> None:
    host, pid = host_and_pid()
    b.execute("UPDATE scheduler_state SET pid = NULL, stopped_at = ?, next_fire_at = NULL "
              "WHERE id = 1 AND pid = ? AND host = ?", [now, pid, host])


# -- bookkeeping runs -----------------------------------------------------------------------
def missed_run_row(fire: dt.datetime, now: dt.datetime, provider: str | None,
                   message: str) -> dict:
    host, pid = host_and_pid()
    return {
        "run_id": str(uuid.uuid4()), "kind": "scheduled", "state": "missed",
        "params": json.dumps({}), "provider": provider, "requested_at": fire,
        "finished_at": now, "scheduled_for": fire, "pid": pid, "host": host,
        "message": message,
    }


def record_missed_fires(catalog: Catalog, at_utc: dt.time, now: dt.datetime,
                        grace_s: float, provider: str | None) -> dt.datetime | None:
    """Account for fires that happened while no scheduler ran; call when taking ownership.

    Fires after the last one accounted for (the newest scheduled or missed run, the first start
    of any scheduler, or the last resume) and older than the grace time are recorded as
    ``missed`` runs. Returns the newest unaccounted fire still within the grace time, which the
    caller runs late, or None. Nothing is recorded while paused: those fires were skipped on
    purpose.
    """
    with catalog.connect() as con:
        state = state_from(con)
        last = runs.last_scheduled_for(con)
    if state.paused:
        return None
    anchors = [t for t in (last, state.schedule_since, state.resumed_at) if t is not None]
    if not anchors:
        return None  # the first scheduler ever: nothing could have been missed
    fires = fires_between(at_utc, max(anchors), now)
    late = [f for f in fires if (now - f).total_seconds() <= grace_s]
    missed = [f for f in fires if f not in late][-MAX_MISSED_RECORDED:]
    if missed:
        b = WriteBatch()
        for f in missed:
            runs.add_run(b, missed_run_row(
                f, now, provider,
                f"missed: no scheduler was running at {f:%Y-%m-%d %H:%M} UTC "
                f"(started {_ago(now - f)} later, beyond the {grace_s / 60:g} min grace)"))
        catalog.write(b)
    return late[-1] if late else None


def _ago(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} days"


def prune_history(catalog: Catalog, retention_days: int, now: dt.datetime) -> dict[str, int]:
    """Delete finished runs (and their tasks) and log rows older than the retention."""
    cutoff = now - dt.timedelta(days=retention_days)
    final = "('succeeded', 'partial', 'failed', 'cancelled', 'paused', 'interrupted', 'missed')"
    old_runs = (f"SELECT run_id FROM runs WHERE state IN {final} "
                f"AND coalesce(finished_at, requested_at) < $cutoff")
    counts: dict[str, int] = {}
    with catalog.connect() as con, transaction(con, bump=False):
        for table, where in (
            ("tasks", f"run_id IN ({old_runs})"),
            ("fetch_log", "started_at < $cutoff"),
            ("compute_log", "started_at < $cutoff"),
            ("quality_log", "checked_at < $cutoff"),
            ("restatements", "detected_at < $cutoff"),
            ("runs", f"run_id IN ({old_runs})"),
        ):
            n = con.execute(f"SELECT count(*) FROM {table} WHERE {where}",
                            {"cutoff": cutoff}).fetchall()[0][0]
            if n:
                con.execute(f"DELETE FROM {table} WHERE {where}", {"cutoff": cutoff})
            counts[table] = int(n)
        if any(counts.values()):
            bump_version(con)
    return counts
