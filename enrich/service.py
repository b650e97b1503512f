"""Services: the one object per process that runs enrichment in the background.

A ``Services`` owns the daily scheduler (an APScheduler ``BackgroundScheduler``), a few worker
threads that execute runs, and the registry of the runs this process executes. The dashboard
gets the process-wide instance from ``get_services`` (through ``st.cache_resource``);
``python -m enrich serve`` runs one headless. Nothing here imports streamlit or calls ``st.*``.

Actions return at once: ``trigger`` writes the run's ``queued`` row and hands it to a worker;
pages follow it in the catalog. Runs stop between symbols when cancelled, from this process
(``cancel``) or from another (``runs cancel`` sets ``runs.cancel_requested_at``; the engine
polls it). With ``ENRICH_SCHEDULER=off`` there is no cron and no heartbeat, but every action
still works.

Only one process at a time owns the schedule (``enrich.pipeline.scheduler.beat``); another one with
the scheduler on stands by and takes over when the owner's heartbeat dies. The owner also executes
runs handed to it by ``python -m enrich run --background`` (rows with ``handoff`` set and its
pid), polling for them every ``poll_s`` seconds.

Alerts (``enrich.alerts``) are evaluated on a thread of their own, every minute and after
every run; a process that takes the schedule over from a dead owner reports that once.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401  (see _register_exit: must be imported first)
import contextlib
import datetime as dt
import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from enrich import health as health_mod
from enrich.alerts import lifecycle as alert_lifecycle
from enrich.alerts import watcher as alert_watcher
from enrich.config import Settings, load_settings
from enrich.errors import EnrichError, StateError
from enrich.pipeline import scheduler as sched
from enrich.pipeline.engine import Engine
from enrich.pipeline.requests import (
    RetryActiveError,
    UnknownRunError,
    make_params,
    request_cancel,
    retry_params,
)
from enrich.pipeline.run_model import FINAL_STATES, RunParams
from enrich.providers import Provider, make_provider
from enrich.store import plan_limits, runs
from enrich.store.catalog import WriteBatch, host_and_pid, utcnow
from enrich.store.store import Store

log = logging.getLogger(__name__)

UTC = dt.UTC
RUN_WORKERS = 3  # runs executing at once; each runs up to max_concurrent_symbols symbols
POLL_S = 1.0  # how often the schedule owner looks for runs handed to it
STOP_GRACE_S = 3.0  # how long stop() lets running runs reach a symbol boundary


# -- the service ------------------------------------------------------------------------------
@dataclass
class _Job:
    run_id: str
    params: RunParams
    kind: str
    parent_run_id: str | None = None
    extra: dict[str, Any] | None = None  # further ``runs`` columns for its row
    recorded: bool = False  # its row is in the catalog
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_by: str | None = None  # who cancelled it before its row was recorded
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    state: str | None = None


class Services:
    """Scheduler, run workers and run registry of one process. Start once, stop once.

    ``clock`` is the scheduler's wall clock (fire times, missed fires, heartbeats, pause
    stamps, retention); the data's "as of" instant stays ``settings.now``. ``trigger``
    replaces the daily cron (tests use a fast one).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        provider: Provider | None = None,
        store: Store | None = None,
        heartbeat_s: float = sched.HEARTBEAT_S,
        poll_s: float = POLL_S,
        run_workers: int = RUN_WORKERS,
        misfire_grace_s: float = sched.MISFIRE_GRACE_S,
        trigger: BaseTrigger | None = None,
        alerts: alert_watcher.Watcher | bool = True,
    ):
        self.settings = settings
        self.clock = clock or utcnow
        self.store = store or Store.from_settings(settings)
        self.provider = provider or make_provider(settings)
        self.engine = Engine(self.store, self.provider, settings)
        # The provider probe's answer, reused for a minute by every process of the desk:
        # polled health (the API, the Health page, `enrich health`) spends at most one
        # request of the plan's quota a minute on it.
        self.probes = health_mod.shared_probes(settings)
        self.heartbeat_s = float(heartbeat_s)
        self.poll_s = float(poll_s)
        self.run_workers = int(run_workers)
        self.misfire_grace_s = float(misfire_grace_s)
        self._trigger = trigger or sched.daily_trigger(settings.schedule_utc)
        self._lock = threading.RLock()
        self._beat_lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._intake: queue.Queue[_Job | None] = queue.Queue()  # rows still to write
        self._queue: queue.Queue[_Job | None] = queue.Queue()  # recorded, waiting for a worker
        self._workers: list[threading.Thread] = []
        self._intake_thread: threading.Thread | None = None
        self._scheduler: BackgroundScheduler | None = None
        self._loop_thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._audit_thread: threading.Thread | None = None
        self._phase = "new"  # new | started | stopping | stopped
        self._owner = False
        self._paused = False
        self._started_at: dt.datetime | None = None
        # Alert rules and delivery; ``alerts=False`` for short-lived helpers (the CLI's fill).
        self.alerts: alert_watcher.Watcher | None = (
            alerts if isinstance(alerts, alert_watcher.Watcher) else
            alert_watcher.Watcher(settings, self.store, clock=self.clock) if alerts else None)

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def stopped(self) -> bool:
        return self._phase in ("stopping", "stopped")

    @property
    def owns_schedule(self) -> bool:
        return self._owner

    def start(self) -> Services:
        with self._lock:
            if self._phase != "new":
                return self
            self._phase = "started"
            self._started_at = self.clock()
        self._ensure_workers()
        threading.Thread(target=self._close_orphans, name="enrich-orphans", daemon=True).start()
        if not self.settings.scheduler:
            if self.alerts is not None:
                self.alerts.start().poke()
            log.info("scheduler off (ENRICH_SCHEDULER=off): runs start only on request")
            return self
        self._scheduler = BackgroundScheduler(
            daemon=True, timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int(self.misfire_grace_s)})
        self._scheduler.add_listener(self._on_job_event, EVENT_JOB_MISSED | EVENT_JOB_ERROR)
        self._scheduler.start()
        try:
            self._beat()  # claim the schedule (and account for missed fires) before returning
        except Exception as exc:  # a busy catalog: the state loop tries again
            log.warning("could not write the scheduler heartbeat yet: %s", exc)
        if self.alerts is not None:
            # Only after the claim: a watcher round that read the dead owner's row before it
            # would report "no process owns the schedule" while this process takes it over.
            self.alerts.start().poke()
        self._loop_thread = threading.Thread(target=self._loop, name="enrich-scheduler-state",
                                             daemon=True)
        self._loop_thread.start()
        return self

    def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Stop cleanly: cancel runs (they stop between symbols), wait up to ``timeout``
        seconds, mark what is left ``interrupted``, and release the schedule."""
        with self._lock:
            if self._phase in ("stopping", "stopped"):
                return
            self._phase = "stopping"
            jobs = list(self._jobs.values())
        self._halt.set()
        if self.alerts is not None:
            self.alerts.stop(timeout=2.0)
        for job in jobs:
            job.cancel.set()
        if self._scheduler is not None:
            with contextlib.suppress(SchedulerNotRunningError):
                self._scheduler.shutdown(wait=False)
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        if self._loop_thread is not None:
            self._loop_thread.join(timeout=2.0)  # no heartbeat may follow the clean stop
        now = self.clock()
        left = [j for j in jobs if not j.done.is_set()]
        try:
            b = WriteBatch()  # one write: stop() has a time budget
            runs.add_finish(b, [j.run_id for j in left if j.started], "interrupted",
                            "the service stopped before the run finished; symbols already "
                            "enriched keep their data", now)
            runs.add_finish(b, [j.run_id for j in left if not j.started], "cancelled",
                            "the service stopped before the run started", now)
            if self._scheduler is not None:
                host, pid = host_and_pid()
                runs.add_handoffs_interrupted(b, now, pid, host)
                sched.add_clean_stop(b, now)
            self.store.catalog.write(b)
            self._owner = False
        except Exception as exc:  # stopping must finish even when the catalog is unavailable
            log.warning("could not record the stop in the catalog: %s", exc)
        for _ in self._workers:
            self._queue.put(None)
        self._intake.put(None)
        if self._intake_thread is not None:  # rows of runs that never started: cancelled
            self._intake_thread.join(timeout=1.0)
        self._phase = "stopped"
        if left:
            log.info("stopped with %d run(s) unfinished: %s", len(left),
                     ", ".join(j.run_id for j in left))

    # -- actions ----------------------------------------------------------------------------
    def trigger(self, symbols: Sequence[str] | None = None,
                datasets: Sequence[str] | None = None, asset_class: str | None = None,
                timeframe: str = "1d", lookback: int | dt.timedelta | None = None,
                kind: str = "manual") -> str:
        """Queue a run and return its id at once; it executes on a worker thread."""
        params = make_params(symbols, datasets, asset_class, timeframe, lookback)
        return self._submit(params, kind)

    def plan(self, symbols: Sequence[str] | None = None,
             datasets: Sequence[str] | None = None, asset_class: str | None = None,
             timeframe: str = "1d", lookback: int | dt.timedelta | None = None,
             at: dt.datetime | None = None):
        """What such a run would fetch now (or at ``at``) and the requests it would cost
        (``enrich.pipeline.refresh.RefreshPlan``); fetches nothing."""
        params = make_params(symbols, datasets, asset_class, timeframe, lookback)
        return self.engine.plan(params, at=at)

    def next_refresh_plan(self):
        """The next daily refresh's plan, at its fire time (now when no fire is scheduled):
        (fire time or None, plan)."""
        fire = self.next_fire_time()
        return fire, self.engine.plan(at=fire)

    def retry_failed(self, run_id: str) -> str:
        """Queue a run of only the symbols that failed in ``run_id`` (same parameters);
        refused while a retry of it is queued or running (here, before its row is written)."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None and not job.recorded:  # queued: its row is being written
                raise StateError(f"run {run_id} is still queued; retry its failures once it "
                                 "ends")
        params = retry_params(self.store.catalog, run_id)
        with self._lock:
            pending = [j.run_id for j in self._jobs.values()
                       if j.parent_run_id == run_id and not j.done.is_set()]
            if pending:
                raise RetryActiveError(run_id, pending[0])
            return self._submit(params, "retry", parent_run_id=run_id)

    def cancel(self, run_id: str, by: str = "dashboard") -> bool:
        """Stop a queued or running run between symbols (in any process); False if it had
        already finished. Symbols already enriched keep their data."""
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None and not job.recorded:
                # Its row is still being written: the intake thread writes it cancelled, or
                # the worker cancels it before it starts; either way, by ``by``.
                job.cancel_by = by
                job.cancel.set()
                return True
        # A run whose process was killed is not running: it ended, interrupted.
        runs.close_dead_runs(self.store)
        # Who asked is in the catalog before the run can see the request: a run that stops
        # for it (or ends first) is never recorded cancelled without its requester.
        state = request_cancel(self.store.catalog, run_id, by, self.clock())
        if state not in ("queued", "running"):
            return False
        if job is not None:
            job.cancel.set()  # in this process: no need to wait for the catalog poll
        return True

    def audit(self, symbols: Sequence[str] | None = None,
              datasets: Sequence[str] | None = None) -> bool:
        """Re-check what is stored, without fetching (``quality_run.audit``: ``symbols``,
        default the active universe, × ``datasets``), on a thread of the services. False, and
        nothing started, while a re-check of this process is still running."""
        from enrich.checks import quality_run

        def run() -> None:
            try:
                quality_run.audit(self.store, symbols, datasets)
            except Exception:  # a background job: logged, the desk goes on
                log.exception("the re-check of stored data failed")

        with self._lock:
            if self.audit_running():
                return False
            self._audit_thread = threading.Thread(target=run, name="quality-audit",
                                                  daemon=True)
            self._audit_thread.start()
        return True

    def audit_running(self) -> bool:
        return self._audit_thread is not None and self._audit_thread.is_alive()

    def pause(self, by: str, reason: str | None = None) -> bool:
        """Pause the daily schedule (persisted: still paused after a restart); False when it
        already was (the first pause's who, when and why are kept)."""
        changed, _ = sched.set_paused(self.store.catalog, by, reason, self.clock())
        self._apply_pause(True)
        return changed

    def resume(self, by: str) -> bool:
        """Resume the daily schedule; False when it was not paused (nothing is recorded)."""
        changed, _ = sched.set_resumed(self.store.catalog, by, self.clock())
        self._apply_pause(False)
        if self._owner and not self.stopped:
            self._beat_quietly()  # publish the next fire time now
        return changed

    def next_fire_time(self) -> dt.datetime | None:
        """The next daily fire (UTC), or None while paused, stopped or with the scheduler off."""
        if not self.settings.scheduler or self._phase != "started" or self._paused:
            return None
        fire = self._trigger.get_next_fire_time(None, self.clock())
        return fire.astimezone(UTC) if fire else None

    def health(self, probe: bool = True) -> dict[str, Any]:
        """``enrich.health.health`` plus what only this process knows."""
        out = health_mod.health(self.settings, self.store, self.provider, self.clock,
                                probe=probe, probes=self.probes)
        out["service"] = {"scheduler_enabled": self.settings.scheduler,
                          "owns_schedule": self._owner, "pid": host_and_pid()[1],
                          "active_runs": self.active_runs()}
        return out

    def wait(self, run_id: str, timeout: float | None = None) -> str:
        """Block until the run ends (or ``timeout`` seconds pass); returns its state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            job = self._jobs.get(run_id)
        if job is not None:
            if not job.done.wait(timeout):
                return self._state_of(run_id) if job.recorded else "queued"
            try:
                state = self._state_of(run_id)
            except UnknownRunError:  # its row could not be written
                return job.state or "failed"
            # A run whose final write failed (busy catalog) is still reported as it ended.
            return state if state in FINAL_STATES else (job.state or state)
        while True:
            state = self._state_of(run_id)
            if state in FINAL_STATES or (deadline is not None and time.monotonic() >= deadline):
                return state
            time.sleep(0.1)

    def active_runs(self) -> list[str]:
        """Runs this process has queued or is executing."""
        with self._lock:
            return [rid for rid, j in self._jobs.items() if not j.done.is_set()]

    # -- runs -------------------------------------------------------------------------------
    def _state_of(self, run_id: str) -> str:
        state = runs.state_of(self.store.catalog, run_id)
        if state is None:
            raise UnknownRunError(f"no run {run_id}")
        return state

    def _submit(self, params: RunParams, kind: str, *, parent_run_id: str | None = None,
                extra: dict[str, Any] | None = None, run_id: str | None = None) -> str:
        """Register a run; its ``queued`` row is written by the intake thread (a catalog
        write takes ~100 ms: open, commit, checkpoint), unless ``run_id`` names an existing
        row (a hand-off)."""
        job = _Job(run_id or str(uuid.uuid4()), params, kind, parent_run_id, extra,
                   recorded=run_id is not None)
        with self._lock:
            if self.stopped:
                raise EnrichError("the service is stopping; start the run again once it is back")
            self._jobs[job.run_id] = job
            (self._queue if job.recorded else self._intake).put(job)
        self._ensure_workers()
        return job.run_id

    def _end_job(self, job: _Job) -> None:
        job.done.set()
        with self._lock:
            self._jobs.pop(job.run_id, None)
        if self.alerts is not None:
            self.alerts.poke()  # a run ended: did it fail, did it make data fresh again?

    def _intake_loop(self) -> None:
        while True:
            job = self._intake.get()
            if job is None:
                return
            extra = dict(job.extra or {})
            state = "queued"
            if job.cancel.is_set():
                state = "cancelled"
                now = self.clock()
                extra.update(finished_at=now, message="cancelled before it started")
                if job.cancel_by is not None:  # a cancel() before the row existed
                    extra.update(cancel_requested_at=now, cancel_requested_by=job.cancel_by,
                                 message=f"cancelled by {job.cancel_by} before it started")
            try:
                self.engine.create_run(job.params, job.kind, run_id=job.run_id, state=state,
                                       parent_run_id=job.parent_run_id, extra=extra)
            except Exception as exc:
                log.error("run %s could not be recorded, so it does not run: %s",
                          job.run_id, exc)
                job.state = "failed"
                self._end_job(job)
                continue
            with self._lock:  # a cancel() from now on goes through the catalog
                job.recorded = True
            if state == "cancelled":
                job.state = state
                self._end_job(job)
            else:
                self._queue.put(job)

    def _ensure_workers(self) -> None:
        with self._lock:
            if self._intake_thread is None or not self._intake_thread.is_alive():
                self._intake_thread = threading.Thread(
                    target=self._intake_loop, name="enrich-run-intake", daemon=True)
                self._intake_thread.start()
            self._workers = [w for w in self._workers if w.is_alive()]
            while len(self._workers) < self.run_workers:
                # Daemon threads: a process that exits never waits for a run; stop() has
                # already cancelled them and marked the unfinished ones.
                w = threading.Thread(target=self._work_loop, daemon=True,
                                     name=f"enrich-run-{len(self._workers)}")
                w.start()
                self._workers.append(w)

    def _work_loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                self._execute(job)
            except Exception:
                log.exception("run %s: unexpected error in the worker", job.run_id)
            finally:
                self._end_job(job)

    def _execute(self, job: _Job) -> None:
        catalog = self.store.catalog
        if job.cancel.is_set() or runs.cancel_requested(self.store, job.run_id):
            now = self.clock()
            if job.cancel_by is not None:  # a cancel() while its row was being written
                request_cancel(catalog, job.run_id, job.cancel_by, now)
            runs.finish_runs(catalog, [job.run_id], "cancelled", "cancelled before it started",
                             now)
            job.state = "cancelled"
            return
        job.started = True
        log.info("run %s (%s) started", job.run_id, job.kind)
        try:
            summary = self.engine.run(job.params, kind=job.kind, run_id=job.run_id,
                                      cancel=job.cancel)
        except Exception as exc:
            # The engine records what it can; whatever is still open is failed here, with
            # the error, so no run is ever left `running` by a crash in this process.
            log.error("run %s failed: %s: %s", job.run_id, type(exc).__name__, exc)
            runs.finish_runs(catalog, [job.run_id], "failed", f"{type(exc).__name__}: {exc}",
                             self.clock())
            job.state = "failed"
            return
        job.state = summary.state
        log.info("run %s %s: %d ok, %d failed, %d skipped", job.run_id, summary.state,
                 summary.ok, summary.failed, summary.skipped)

    # -- schedule ---------------------------------------------------------------------------
    def _daily_job(self, fire: dt.datetime | None = None) -> None:
        """The daily enrichment: the whole active universe, incrementally."""
        fire = fire or sched.last_fire_at_or_before(self.settings.schedule_utc, self.clock())
        try:
            run_id = self._submit(RunParams(), "scheduled", extra={"scheduled_for": fire})
        except Exception as exc:
            log.error("the scheduled run for %s could not start: %s", fire, exc)
            self._record_scheduled(fire, "failed", f"could not start: {exc}")
            return
        with self._lock:
            job = self._jobs.get(run_id)
        # Wait for the run, so max_instances=1 really means one scheduled run at a time.
        while job is not None and not job.done.wait(0.5):
            if self._halt.is_set():
                return

    def _follow_up_job(self) -> str | None:
        """After midnight New York time: refresh again when the plan is known to serve a
        session only after its day ends (the daily fire found it due). Nothing otherwise.
        Returns the run id queued, if any."""
        if self._paused or not self.engine.limits(reload=True).next_day:
            return None
        try:
            return self._submit(RunParams(), "follow-up")
        except Exception as exc:
            log.error("the follow-up refresh could not start: %s", exc)
            return None

    def follow_up_time(self) -> dt.datetime | None:
        """The next follow-up refresh (UTC) when the plan needs one, else None."""
        if (not self.settings.scheduler or self._phase != "started" or self._paused
                or not self.engine.limits().next_day):
            return None
        fire = sched.follow_up_trigger(plan_limits.FOLLOW_UP_ET).get_next_fire_time(
            None, self.clock())
        return fire.astimezone(UTC) if fire else None

    def _close_orphans(self) -> None:
        """Runs left open by a process that died are shown as interrupted, not running."""
        try:
            dead = runs.mark_interrupted_runs(self.store)
        except Exception as exc:
            log.warning("could not check for interrupted runs: %s", exc)
            return
        if dead:
            log.info("marked %d run(s) of stopped processes interrupted", len(dead))

    def _prune(self) -> None:
        try:
            counts = sched.prune_history(self.store.catalog, self.settings.retention_days,
                                         self.clock())
        except Exception as exc:
            log.warning("pruning run history failed: %s", exc)
            return
        if any(counts.values()):
            log.info("pruned history older than %d days: %s", self.settings.retention_days,
                     counts)
        try:
            alert_lifecycle.prune(self.store.catalog, self.settings.retention_days, self.clock())
        except Exception as exc:
            log.warning("pruning alert history failed: %s", exc)

    def _record_scheduled(self, fire: dt.datetime, state: str, message: str) -> None:
        row = sched.missed_run_row(fire, self.clock(), self.provider.name, message)
        row["state"] = state
        b = WriteBatch()
        runs.add_run(b, row)
        try:
            self.store.catalog.write(b)
        except Exception as exc:
            log.warning("could not record the %s scheduled run: %s", state, exc)

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED and event.job_id == sched.DAILY_JOB_ID:
            fire = event.scheduled_run_time.astimezone(UTC)
            self._record_scheduled(
                fire, "missed", f"missed: the scheduler woke up more than "
                f"{self.misfire_grace_s / 60:g} min after the {fire:%H:%M} UTC fire")
        elif event.code == EVENT_JOB_ERROR:
            log.error("scheduler job %s raised: %r", event.job_id, event.exception)

    def _loop(self) -> None:
        next_beat = time.monotonic() + self.heartbeat_s
        while not self._halt.wait(min(self.poll_s, self.heartbeat_s)):
            try:
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_s
                    self._beat()
                    if self._owner:  # a run (CLI, backfill) killed since: not running
                        runs.close_dead_runs(self.store)
                if self._owner:
                    self._pick_up_handoffs()
            except Exception as exc:  # a busy catalog: try again next round
                log.warning("scheduler state loop: %s", exc)

    def _beat_quietly(self) -> None:
        try:
            self._beat()
        except Exception as exc:
            log.warning("scheduler heartbeat: %s", exc)

    def _beat(self) -> None:
        with self._beat_lock:
            self._beat_locked()

    def _beat_locked(self) -> None:
        if self._halt.is_set() or self._scheduler is None:
            return
        now = self.clock()
        fire = self._trigger.get_next_fire_time(None, now)
        got = sched.beat(self.store.catalog, now, self.heartbeat_s,
                         self._started_at or now, fire)
        if got.owner and not self._owner:
            if self.alerts is not None:
                self.alerts.note_takeover(got.state, now)
            self._take_schedule(now, got.state.paused)  # raises: retried on the next beat
            self._owner = True
        elif not got.owner and self._owner:
            log.warning("pid %s on %s now owns the schedule; standing by",
                        got.state.pid, got.state.host)
            self._owner = False
            for job_id in (sched.DAILY_JOB_ID, sched.RETENTION_JOB_ID, sched.FOLLOW_UP_JOB_ID):
                if self._scheduler.get_job(job_id):
                    self._scheduler.remove_job(job_id)
        self._apply_pause(got.state.paused)

    def _take_schedule(self, now: dt.datetime, paused: bool) -> None:
        assert self._scheduler is not None
        late = sched.record_missed_fires(self.store.catalog, self.settings.schedule_utc, now,
                                         self.misfire_grace_s, self.provider.name)
        with self._lock:
            self._paused = paused
            # A paused schedule's job is added paused (no next run time).
            extra = {"next_run_time": None} if paused else {}
            self._scheduler.add_job(self._daily_job, self._trigger, id=sched.DAILY_JOB_ID,
                                    name="daily enrichment", replace_existing=True, **extra)
        # Plans that serve a session only after its New York day ends (enrich.store.plan_limits):
        # a follow-up refresh after midnight there fetches what the daily fire could not.
        self._scheduler.add_job(self._follow_up_job,
                                sched.follow_up_trigger(plan_limits.FOLLOW_UP_ET),
                                id=sched.FOLLOW_UP_JOB_ID, name="follow-up refresh",
                                replace_existing=True)
        # Housekeeping is not paused with the schedule: it runs daily regardless, and now.
        self._scheduler.add_job(self._prune, sched.daily_trigger(self.settings.schedule_utc),
                                id=sched.RETENTION_JOB_ID, name="retention",
                                replace_existing=True)
        if late is not None and not paused:
            log.info("running the %s fire late (within the grace time)", sched.fire_label(late))

        def catch_up() -> None:
            # A plain thread, not a one-off APScheduler job: such a job racing a quick
            # shutdown makes APScheduler raise in its own thread.
            self._prune()
            if late is not None and not paused:
                self._daily_job(fire=late)

        threading.Thread(target=catch_up, name="enrich-catch-up", daemon=True).start()
        log.info("scheduler owns the schedule; next fire %s",
                 sched.fire_label(self.next_fire_time()))

    def _apply_pause(self, paused: bool) -> None:
        with self._lock:
            changed, self._paused = paused != self._paused, paused
            job = (self._scheduler.get_job(sched.DAILY_JOB_ID)
                   if self._scheduler is not None and self._owner else None)
        if job is None or not changed:
            return
        if paused:
            job.pause()
            log.info("schedule paused")
        else:
            job.resume()
            log.info("schedule resumed; next fire %s", sched.fire_label(self.next_fire_time()))

    def _pick_up_handoffs(self) -> None:
        host, pid = host_and_pid()
        for run_id, kind, params in runs.handoffs(self.store.catalog, pid, host).iter_rows():
            with self._lock:
                if run_id in self._jobs:
                    continue
            log.info("run %s handed over by the command line", run_id)
            self._submit(RunParams.from_json(params), kind, run_id=run_id)


# -- the process-wide instance --------------------------------------------------------------
_services: Services | None = None
_services_lock = threading.Lock()


def get_services(settings: Settings | None = None, **kw: Any) -> Services:
    """The started, process-wide ``Services``; created on first use.

    Asking with different settings (another data directory, in tests) stops the current
    instance and starts a new one. ``kw`` goes to the constructor when one is created.
    """
    global _services
    with _services_lock:
        current = _services
        if current is not None and not current.stopped and (
                settings is None or settings == current.settings):
            return current
        if current is not None:
            current.stop()
        svc = Services(settings or load_settings(), **kw)
        svc.start()
        _register_exit(svc)
        _services = svc
        return svc


def reset_services() -> None:
    """Stop and forget the process-wide instance (tests)."""
    global _services
    with _services_lock:
        if _services is not None:
            _services.stop()
        _services = None


def _register_exit(svc: Services) -> None:
    atexit.register(svc.stop)
    # ``atexit`` runs only after the interpreter has joined non-daemon threads, and the
    # engine's symbol pool is made of those: without this earlier hook a process exiting
    # mid-run would first finish every remaining symbol. Threading exit hooks run in reverse
    # registration order, so ours (registered after concurrent.futures.thread was imported)
    # cancels the runs before that module joins its workers.
    register = getattr(threading, "_register_atexit", None)
    if register is not None:
        with contextlib.suppress(RuntimeError):  # the interpreter is already shutting down
            register(svc.stop)
