"""The enrichment engine: symbol × dataset units of work, grouped into runs.

``Engine.run`` plans the run first (``enrich.pipeline.refresh``): every symbol × dataset gets the
window it is missing, and each dataset the cheaper path, universe-wide or per symbol. The
universe-wide requests are made once, up front, in the run's process; then every symbol goes through
the **one fetch pipeline**, ``enrich_symbol``: its rows (from the universe-wide answer or its own
request) are validated, compared with what is stored (restatements), upserted, checked
(quality), the fetched-through watermark moves, features are recomputed, and a fetch/compute
log row per step and the symbol's status are recorded. Backfills and heatmap fills use the
same pipeline for an explicit window (``fetch_window``). One symbol's failure never stops the
others; every run is recorded in ``runs`` and ``tasks``, a universe-wide request in
``fetch_log`` under the symbol ``*``.

Before a symbol's first history fetch its identity is read from the provider's ticker
reference (``enrich.identity``), unless ``symbols add`` did already: no window ever reaches
before its listing or a ticker change, a renamed company's older tickers are fetched over their
own spans and stored under the symbol, a delisted one is fetched up to its last trading day
only, and a ticker the reference does not know fetches nothing (its steps fail, asked again
after a week).

Providers retry each request themselves (``enrich.providers.retry``); the engine logs what they
report. How far each dataset has been fetched lives in the lake (``Lake.read_coverage``), next to
the data, so a crash between the lake and the catalog can only cause an idempotent re-fetch.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import datetime as dt
import functools
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from enrich import calendars, columns, identity
from enrich.checks import quality_run, restatements
from enrich.checks.validate import Checked, check
from enrich.config import Settings
from enrich.errors import (
    Cancelled,
    CorruptFileError,
    EnrichError,
    HistoryLimitError,
    InputError,
    NotEntitledError,
    NotFoundError,
    NotYetAvailableError,
    UnknownTickerError,
    ValidationError,
    error_class_of,
)
from enrich.identity import Identity
from enrich.pipeline.refresh import (
    REFERENCE,
    RefreshPlan,
    Target,
    coverage_key,
    datasets_for,
    plan_rates,
    plan_references,
    plan_refresh,
    window_for,
)
from enrich.pipeline.run_model import (
    Durable,
    Fetched,
    Halt,
    LogBuffer,
    RunParams,
    RunSummary,
    StepResult,
    SymbolResult,
    describe,
    drain_as_a_cancel,
    fetched_for,
    logged_status,
    stops_symbol,
)
from enrich.pipeline.workers import MIN_SYMBOLS, Job, process_count, run_in_processes
from enrich.providers import Provider
from enrich.providers.retry import RequestStats
from enrich.quant import rates, snapshots, vol_summary
from enrich.quant.features import compute_features, dividends_on_basis
from enrich.quant.options_history import as_traded_closes
from enrich.quant.splits import apply_splits, unsplit
from enrich.store import plan_limits, runs
from enrich.store.catalog import WriteBatch, host_and_pid, utcnow
from enrich.store.lake import Lake
from enrich.store.store import Store
from enrich.symbols import asset_class_of, calendar_for, validate_symbol

# Datasets fetched per ticker as traded: a renamed company's older tickers serve their spans.
BY_TICKER = ("bars", "dividends", "splits", "earnings", "news")
_REFERENCE_COLUMNS = ("history_from", "delisted_on", "ticker_spans", "reference_checked_at",
                      "reference_error")
FLUSH_INTERVAL_S = 1.0
MARKET = "*"  # fetch_log.symbol of a universe-wide request
# Event datasets fetched by a window of this date: a complete fetch of a window replaces the
# symbol's rows dated in it (``Lake.replace_window``). A split that goes (cancelled, re-dated)
# or changes its ratio cannot be taken back from the bars re-based on it (``apply_splits``
# only goes forward): the symbol's bars are fetched again instead (``Engine._refetch_bars``).
WINDOW_COLUMN = {"dividends": "ex_date", "earnings": "filing_date",
                 "splits": "execution_date"}
# A refresh's complete answer that no longer lists a stored row of its window may mean the row
# was re-dated to before the window (a corrected ex-date, an amended filing): before anything
# is removed, the symbol's own request asks once for the WIDER_DAYS up to the window's end (at
# most ENRICH_HISTORY_YEARS), so a row re-dated inside them is kept at its new date and only a
# row that answer lacks too goes. Backfill chunks do not: the chunk of the new date brings it.
WIDER_DAYS = 400


class _MarketTally:
    """Requests and retries of a run's universe-wide fetches, and the rows written by those
    that store rows themselves (the Treasury curve); thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.records = 0

    def add(self, stats: RequestStats) -> None:
        self.add_counts(stats.requests, len(stats.retries))

    def add_counts(self, requests: int, retries: int, records: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.retries += retries
            self.records += records


class Engine:
    """Runs enrichment against one store with one provider.

    A run's symbols are enriched on threads, or, for a provider that computes its rows on the
    CPU and a run of at least ``process_min_symbols`` symbols, in worker processes
    (``enrich.pipeline.workers``).
    """

    process_min_symbols = MIN_SYMBOLS

    def __init__(
        self,
        store: Store,
        provider: Provider,
        settings: Settings,
        *,
        clock: Callable[[], dt.datetime] | None = None,
    ):
        self.store = store
        self.provider = provider
        self.settings = settings
        self.clock = clock or settings.now
        self._limits: plan_limits.Limits | None = None
        self._limits_lock = threading.Lock()
        # Each symbol's reference columns of the catalog (``enrich.identity``), as loaded by
        # ``resolve_symbols`` (or handed to a worker process); updated by identity look-ups.
        self.references: dict[str, dict[str, Any]] = {}
        self.reads_catalog = True  # False in worker processes: they never open the catalog

    # -- the plan's limits ------------------------------------------------------------------
    def limits(self, reload: bool = False) -> plan_limits.Limits:
        """What the provider's plan is known to allow (``enrich.store.plan_limits``)."""
        with self._limits_lock:
            if self._limits is None or reload:
                self._limits = plan_limits.read(self.store.catalog, self.provider.name)
            return self._limits

    def _learn_history(self, log: LogBuffer, market: str, ds: str, timeframe: str | None,
                       edge: dt.date, end: dt.date, exc: BaseException) -> None:
        days = (end - edge).days
        key = plan_limits.history_key(market, ds, timeframe)
        with self._limits_lock:
            old = self._limits or plan_limits.Limits({})
            self._limits = plan_limits.Limits({**old.history, key: days}, old.next_day)
        detail = (f"probed: served from {edge.isoformat()} ({days} days back) on "
                  f"{end.isoformat()}; refused before: {exc}")
        log.add(lambda b: plan_limits.record_history(b, self.provider.name, market, ds,
                                                     timeframe, days, detail))

    def _learn_next_day(self, log: LogBuffer, detail: str) -> None:
        with self._limits_lock:
            old = self._limits or plan_limits.Limits({})
            if old.next_day:
                return
            self._limits = plan_limits.Limits(old.history, True)
        log.add(lambda b: plan_limits.record_next_day(b, self.provider.name, detail[:1000]))

    # -- universe ---------------------------------------------------------------------------
    def resolve_symbols(self, params: RunParams) -> list[tuple[str, str]]:
        """(symbol, asset_class) of the run: the given symbols (in any case, when only one
        held symbol matches) or the active universe. Loads their ticker references."""
        rows = self.store.catalog.query(
            f"SELECT symbol, asset_class, active, {', '.join(_REFERENCE_COLUMNS)} "
            "FROM symbols ORDER BY symbol")
        known = {r[0]: (r[1], r[2]) for r in rows.iter_rows()}
        for r in rows.iter_rows(named=True):
            self.references[r["symbol"]] = {k: r[k] for k in _REFERENCE_COLUMNS}
        folded: dict[str, list[str]] = {}
        for sym in known:
            folded.setdefault(sym.lower(), []).append(sym)
        if params.symbols:
            out, seen = [], set()
            for raw in params.symbols:
                sym = validate_symbol(raw)
                if sym not in known and len(folded.get(sym.lower(), [])) == 1:
                    sym = folded[sym.lower()][0]
                if sym not in known:
                    raise EnrichError(
                        f"{sym} is not in the universe; add it with "
                        f"`python -m enrich symbols add {sym}`")
                if sym not in seen:  # named twice (or in two cases): enriched once
                    seen.add(sym)
                    out.append((sym, known[sym][0]))
        else:
            out = [(s, c) for s, (c, active) in known.items() if active]
        if params.asset_class:
            out = [(s, c) for s, c in out if c == params.asset_class]
        return out

    # -- the plan ---------------------------------------------------------------------------
    def plan(self, params: RunParams | None = None,
             targets: list[tuple[str, str]] | None = None,
             not_entitled: set[tuple[str, str]] | None = None,
             at: dt.datetime | None = None) -> RefreshPlan:
        """What a run of ``params`` would fetch now (or at instant ``at``), by which path, and
        the requests that costs. Reads each symbol's fetched-through record; fetches nothing."""
        params = params or RunParams()
        if targets is None:
            targets = self.resolve_symbols(params)
        if not_entitled is None:
            not_entitled = self._not_entitled()
        lake = self.store.lake
        now = at or self.clock()
        plan = plan_refresh(
            (Target(s, c, lake.read_coverage(s), self.known_identity(s)) for s, c in targets),
            now=now, provider=self.provider, datasets=params.datasets,
            timeframe=params.timeframe, lookback_days=params.lookback_days,
            history_years=self.settings.history_years,
            refetch_sessions=self.settings.refetch_sessions,
            event_lookback_days=self.settings.event_lookback_days,
            not_entitled=not_entitled,
            rate_limit_per_min=self.settings.rate_limit_per_min
            if self.provider.rate_limited else None,
            universe_wide=params.universe_wide,
            options_symbols=self.settings.options_symbols)
        plan_references(plan, [c for s, c in targets if self._asks_reference(s, now)],
                        self.provider)
        if targets and (rates.CURVE, "rates") not in not_entitled:
            plan_rates(plan, lake.read_coverage(rates.CURVE).get("rates"),
                       calendars.latest_session("XNYS", now),
                       wanted="rates" in (params.datasets or ()))
        return plan

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, params: RunParams, kind: str, run_id: str | None = None,
                   state: str = "queued", parent_run_id: str | None = None,
                   extra: dict[str, Any] | None = None) -> str:
        """Insert the run's row; ``extra`` sets further ``runs`` columns (e.g. scheduled_for)."""
        run_id = run_id or str(uuid.uuid4())
        host, pid = host_and_pid()
        b = WriteBatch()
        runs.add_run(b, {
            "run_id": run_id, "kind": kind, "state": state, "params": params.to_json(),
            "provider": self.provider.name, "parent_run_id": parent_run_id,
            "requested_at": utcnow(), "pid": pid, "host": host, "heartbeat_at": utcnow(),
            **(extra or {}),
        })
        self.store.catalog.write(b)
        return run_id

    def run(
        self,
        params: RunParams | None = None,
        *,
        kind: str = "cli",
        run_id: str | None = None,
        cancel: threading.Event | None = None,
        progress: Callable[[int, int, SymbolResult], None] | None = None,
        max_workers: int | None = None,
    ) -> RunSummary:
        """Run enrichment now, in this thread, and return its summary."""
        params = params or RunParams()
        cancel = cancel or threading.Event()
        halt = Halt(cancel)  # a refused key, or no provider in reach: set cancel, say why
        if run_id is None:
            run_id = self.create_run(params, kind)
        runs.mark_interrupted_runs(self.store, live_run_ids=[run_id])
        started = utcnow()
        log = LogBuffer(self.store)
        tally = _MarketTally()
        try:
            targets = self.resolve_symbols(params)
            not_entitled = self._not_entitled()
            self.limits(reload=True)
            plan = self.plan(params, targets, not_entitled)
        except BaseException as exc:
            # Written only over a run still queued or running, in one statement: a run
            # cancelled while queued (by any process, at any instant) stays cancelled.
            if isinstance(exc, KeyboardInterrupt):  # str() of it is empty; it failed nothing
                self._finish_run(log, run_id, started, [], "interrupted",
                                 "stopped (Ctrl-C or SIGTERM) before any symbol was "
                                 "fetched", tally,
                                 only_active=True)
            else:
                self._finish_run(log, run_id, started, [], "failed", str(exc), tally,
                                 only_active=True)
            raise
        log.add(lambda b: runs.add_started(
            b, run_id, started, len(targets), plan.requests,
            json.dumps(plan.to_json(), default=str)))
        state = log.flush(then=runs.state_query(run_id)) or runs.state_of(self.store.catalog,
                                                                             run_id)
        if state is None:
            raise EnrichError(f"run {run_id} has no row in the catalog; it cannot start")
        if state != "running":  # cancelled while queued (by any process): it never starts
            now = utcnow()
            return RunSummary(run_id=run_id, state=state, total=0, ok=0,
                              failed=0, skipped=0, records=0, requests=0, retries=0,
                              errors_by_class={}, started_at=now, finished_at=now)
        results: list[SymbolResult] = []
        curve_error: BaseException | None = None  # the Treasury curve's fetch failed (run-wide)
        done_lock = threading.Lock()
        stop_flusher = threading.Event()

        def flusher() -> None:
            while not stop_flusher.wait(FLUSH_INTERVAL_S):
                with done_lock:
                    snapshot = list(results)
                log.add(functools.partial(self._progress_row, run_id=run_id, results=snapshot,
                                          tally=tally))
                try:
                    # Another process (`runs cancel`, a page) asks through the catalog.
                    if log.flush(then=runs.cancel_query(run_id)):
                        cancel.set()
                except EnrichError:
                    pass  # the catalog is busy; the rows stay buffered for the next flush

        flush_thread = threading.Thread(target=flusher, name=f"flush-{run_id[:8]}", daemon=True)
        flush_thread.start()
        try:
            step = self._refresh_rates(plan.rates, run_id, log, tally)
            halt.saw([step] if step is not None else [])
            if step is not None and step.status == "failed" and step.error is not None:
                curve_error = step.error
            fetched = self._fetch_markets(plan, run_id, log, cancel, tally, halt)

            def work(sym: str, cls: str) -> SymbolResult:
                if cancel.is_set():
                    return SymbolResult(sym, "cancelled")
                res = self.enrich_symbol(sym, cls, params, run_id, log, not_entitled, cancel,
                                         fetched_for(sym, fetched))
                # Here, in the worker thread: its next symbol sees a stop at once (told in
                # the run's thread, a loaded machine let a worker run several symbols ahead).
                halt.saw(res.steps)
                return res

            def done(res: SymbolResult) -> None:  # a worker process's symbol
                halt.saw(res.steps)
                finish(res)

            def finish(res: SymbolResult) -> None:
                if res.state == "cancelled" and halt.reason is not None:
                    res.state = "not_attempted"  # stopped by the run itself, not a cancel
                    if res.started_at is not None:  # its task row said cancelled
                        self.record_task(log, run_id, res)
                with done_lock:
                    results.append(res)
                    n = len(results)
                if progress is not None:
                    progress(n, len(targets), res)

            workers = max_workers or self.settings.max_concurrent_symbols
            processes = process_count(self.provider, len(targets), workers,
                                      self.process_min_symbols)
            if processes:
                factory = self.provider.process_factory()
                assert factory is not None  # process_count() is 0 without one
                job = Job(self.settings, factory, params, run_id,
                          frozenset(not_entitled), tuple(fetched),
                          {s: self.references[s] for s, _ in targets if s in self.references},
                          engine_factory=type(self))
                run_in_processes(self, targets, job, processes, log, cancel, done,
                                 record=functools.partial(self.record_task, log, run_id))
            else:
                with cf.ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix="enrich") as pool:
                    left = {pool.submit(work, s, c) for s, c in targets}

                    def drain() -> None:
                        for fut in cf.as_completed(left):
                            left.discard(fut)
                            finish(fut.result())

                    drain_as_a_cancel(drain, cancel)
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM) or failed: the rows of the symbols already done
            # (tasks, statuses, logs) are written with them, so the catalog agrees with the
            # lake at once (not only after the next run); the caller closes the run.
            stop_flusher.set()
            flush_thread.join()
            with done_lock:
                snapshot = list(results)
            log.add(functools.partial(self._progress_row, run_id=run_id, results=snapshot,
                                      tally=tally))
            with contextlib.suppress(Exception):
                log.flush()
            raise
        finally:
            stop_flusher.set()
            flush_thread.join()
        # A cancel that came after the last symbol stopped nothing: the run ended as it ran.
        state = self._final_state(results, any(r.state == "cancelled" for r in results))
        if halt.reason is not None:  # it stopped itself: failed, with why
            state = "failed"
        summary = self._finish_run(log, run_id, started, results, state, None, tally,
                                   stopped=halt.reason, curve_error=curve_error)
        summary.requests_planned, summary.plan = plan.requests, plan
        return summary

    def _fetch_markets(self, plan: RefreshPlan, run_id: str, log: LogBuffer,
                       cancel: threading.Event, tally: _MarketTally,
                       halt: Halt) -> list[Fetched]:
        """Make the plan's universe-wide requests, in this thread, one after the other
        (``halt`` is told what each met)."""
        out: list[Fetched] = []
        for request in plan.markets:
            if cancel.is_set():
                break
            t0 = utcnow()
            perf0 = time.perf_counter()
            rows, error = None, None
            try:
                rows = self.provider.market_rows(request)
            except Exception as exc:  # every symbol it would serve fails this step
                error = exc
            stats = self.provider.take_requests()
            tally.add(stats)
            self._log_retries(log, run_id, MARKET, request.dataset, "1d", stats,
                              (request.start, request.end))
            step = StepResult(request.dataset, "failed" if error else "ok", error=error)
            halt.saw([step])
            n = len(request.symbols)
            what = (f"{len(request.sessions)} sessions" if request.dataset == "bars"
                    else f"{request.start.isoformat()}..{request.end.isoformat()}")
            self._log_fetch(log, run_id, MARKET, request.dataset, "1d", t0,
                            (time.perf_counter() - perf0) * 1000, step, 0, 0, 1,
                            request.start, request.end,
                            None if error else f"universe-wide {request.market} request "
                            f"({what}) for {n} symbols", stats.requests)
            if rows is not None and rows.not_yet:
                self._learn_next_day(log, f"{request.dataset} {request.market}: sessions "
                                     f"{', '.join(d.isoformat() for d in rows.not_yet)} "
                                     "not served yet (before the end of their day)")
            out.append(Fetched(request, rows, error, complete=not stats.notes))
        return out

    def _refresh_rates(self, window: tuple[dt.date, dt.date] | None, run_id: str | None,
                       log: LogBuffer, tally: _MarketTally | None = None) -> StepResult | None:
        """The Treasury curve for ``window`` (one request) through the one fetch pipeline,
        stored as the ``rates`` dataset of symbol ``UST``. A failure is logged and the run
        goes on: IVs then use the newest stored curve within a week, else
        ``ENRICH_RISK_FREE_RATE`` (``rate_source``); a refusal is remembered like any
        dataset's (*not entitled*, asked again a week later)."""
        if window is None:
            return None
        lake = self.store.lake
        res = SymbolResult(rates.CURVE, "ok")
        with lake.symbol_lock(rates.CURVE):
            coverage = lake.read_coverage(rates.CURVE)
            new_coverage = dict(coverage)
            step = self._fetch_step(rates.CURVE, "rates", "XNYS", window[1], "1d", window,
                                    coverage, new_coverage, run_id, log, res, None)
            lake.update_coverage(  # only what it changed (see enrich_symbol)
                rates.CURVE, {k: v for k, v in new_coverage.items() if coverage.get(k) != v})
        if tally is not None:
            tally.add_counts(res.requests, res.retries, step.records)
        return step

    @staticmethod
    def _final_state(results: list[SymbolResult], cancelled: bool) -> str:
        if cancelled:
            return "cancelled"
        failed = sum(r.state == "failed" for r in results)
        if failed == 0:
            return "succeeded"
        return "failed" if failed == len(results) else "partial"

    def _progress_row(self, b: WriteBatch, run_id: str, results: list[SymbolResult],
                      tally: _MarketTally | None = None) -> None:
        c = Counter(r.state for r in results)
        market_requests = tally.requests if tally else 0
        market_retries = tally.retries if tally else 0
        runs.add_progress(
            b, run_id, ok=c["ok"], failed=c["failed"],
            # Up to date only: symbols a cancel or a stop left unrun are counted nowhere
            # (``views.runs.run_detail``: not attempted), never as up to date.
            skipped=c["skipped"],
            records=(tally.records if tally else 0) + sum(r.records for r in results),
            requests=market_requests + sum(r.requests for r in results),
            retries=market_retries + sum(r.retries for r in results))

    def _finish_run(self, log: LogBuffer, run_id: str, started: dt.datetime,
                    results: list[SymbolResult], state: str, message: str | None,
                    tally: _MarketTally | None = None,
                    only_active: bool = False, stopped: str | None = None,
                    curve_error: BaseException | None = None) -> RunSummary:
        finished = utcnow()
        errors = Counter(error_class_of(e) for r in results for e in r.errors)
        if curve_error is not None:  # every symbol's IVs took a fallback rate: said too
            errors[error_class_of(curve_error)] += 1
        summary = RunSummary(
            run_id=run_id, state=state, total=len(results),
            ok=sum(r.state == "ok" for r in results),
            failed=sum(r.state == "failed" for r in results),
            skipped=sum(r.state in ("skipped", "cancelled") for r in results),
            records=(tally.records if tally else 0) + sum(r.records for r in results),
            requests=(tally.requests if tally else 0) + sum(r.requests for r in results),
            retries=(tally.retries if tally else 0) + sum(r.retries for r in results),
            errors_by_class=dict(errors), started_at=started, finished_at=finished,
            results=results, stopped=stopped,
            not_attempted=sum(r.state == "not_attempted" for r in results),
            curve_error=(f"{error_class_of(curve_error)}: {curve_error}"[:300]
                         if curve_error is not None else None),
        )
        if message is None:
            message = describe(summary)

        def fill(b: WriteBatch) -> None:
            self._progress_row(b, run_id, results, tally)
            runs.add_finished(b, run_id, state, finished, json.dumps(dict(errors)), message,
                              started, only_active)
            if state == "cancelled":
                runs.add_tasks_cancelled(b, run_id, finished)

        log.add(fill)
        log.flush()
        return summary

    def _not_entitled(self) -> set[tuple[str, str]]:
        """Datasets the plan refused within the last week (older refusals are re-checked:
        the run asks again, and a refusal is recorded again if it still stands)."""
        rows = self.store.catalog.query(
            "SELECT symbol, dataset FROM symbol_status WHERE not_entitled "
            "AND (last_error_at IS NULL OR last_error_at >= ?)",
            [plan_limits.not_entitled_since(utcnow())])  # refusals are stored in real time
        return {(a, b) for a, b in rows.iter_rows()}

    # -- one symbol: the one fetch pipeline -------------------------------------------------
    def enrich_symbol(
        self,
        symbol: str,
        asset_class: str,
        params: RunParams,
        run_id: str | None,
        log: LogBuffer,
        not_entitled: set[tuple[str, str]] = frozenset(),  # type: ignore[assignment]
        cancel: threading.Event | None = None,
        fetched: dict[str, Fetched] | None = None,
    ) -> SymbolResult:
        """Bring one symbol up to date: each dataset's missing window, from the universe-wide
        answer in ``fetched`` when it covers the window, else from a request of its own."""
        res = SymbolResult(symbol, "ok", started_at=utcnow())
        wanted = datasets_for(asset_class, params.datasets, symbol,
                              self.settings.options_symbols)
        cal = calendar_for(asset_class)
        expected = calendars.latest_session(cal, self.clock())
        fetched = fetched or {}
        try:
            ident = self._identity(symbol, log, res, run_id, asset_class)
        except Exception as exc:  # unknown ticker, or the reference failed: fetch nothing
            if isinstance(exc, Cancelled):
                raise
            return self._refused(symbol, wanted, cal, expected, params, run_id, log, res, exc)
        if ident is not None and ident.delisted is not None:
            expected = min(expected, _last_session(cal, ident.delisted, expected))
            wanted = [d for d in wanted if d != "options_iv"]  # no chain after delisting

        with self.store.lake.symbol_lock(symbol):
            # The task starts once the symbol is ours: waiting for another run's enrichment
            # of it is not part of this one's (so task timings never overlap per symbol).
            res.started_at = utcnow()
            log.add(lambda b: runs.add_task(b, {
                "run_id": run_id, "symbol": symbol, "state": "running",
                "started_at": res.started_at}) if run_id else None)
            if cancel is not None and cancel.is_set():
                res.state = "cancelled"
                return self.record_task(log, run_id, res)
            coverage = self.store.lake.read_coverage(symbol)
            new_coverage = dict(coverage)
            bars_changed = False
            for ds in wanted:
                if (symbol, ds) in not_entitled:
                    step = StepResult(ds, "skipped", error=None)
                    self._log_fetch(log, run_id, symbol, ds, params.timeframe, utcnow(), 0.0,
                                    step, 0, 0, 1, None, None, "not entitled on this plan")
                    res.steps.append(step)
                    continue
                window = self._window(ds, cal, expected, params, coverage, ident)
                step = self._fetch_step(symbol, ds, cal, expected, params.timeframe, window,
                                        coverage, new_coverage, run_id, log, res,
                                        fetched.get(ds), ident=ident)
                res.steps.append(step)
                if ds in ("bars", "splits", "dividends") and step.records:
                    bars_changed = True  # features (total return too) are derived again
                if stops_symbol(step.error):  # the key refused, or no provider in reach:
                    break  # its other datasets are not asked (they stay as they were)
            if "bars" in wanted:
                self.derive_step(symbol, params.timeframe, bars_changed, run_id, log, res,
                                  asset_class)
            # Only what this enrichment changed: a dataset whose file was quarantined meanwhile
            # keeps its reset coverage, so the next run fetches it again.
            self.store.lake.update_coverage(
                symbol, {k: v for k, v in new_coverage.items() if coverage.get(k) != v})
            # Data-quality checks on what is now stored (enrich.checks.quality_run), logged in
            # the batch.
            quality_run.after_fetch(self.store.lake, log, run_id, symbol, asset_class,
                                    res.steps, coverage, params.timeframe)

        res.records = sum(s.records for s in res.steps)
        if res.step_failed:  # a plan's limit is not a failure
            res.state = "failed"
        elif all(s.status in ("up_to_date", "skipped") for s in res.steps) and not res.records:
            res.state = "skipped"
        return self.record_task(log, run_id, res)

    def fetch_window(self, symbol: str, asset_class: str, ds: str, timeframe: str,
                     window: tuple[dt.date, dt.date], run_id: str | None, log: LogBuffer,
                     res: SymbolResult) -> StepResult:
        """Fetch one explicit window of one dataset through the same pipeline as a run (a
        backfill chunk or a heatmap fill): validate, record restatements, upsert, check
        quality, move the fetched-through watermark when the window reaches past it (and
        starts no later than the day after it), log. Bars and splits are not re-derived here:
        the caller re-bases and recomputes features once its bars are in. Raises
        ``UnknownTickerError`` for a ticker the reference said it does not know."""
        cal = calendar_for(asset_class)
        expected = calendars.latest_session(cal, self.clock())
        # The identity the catalog holds (``symbols add``, the symbol's first run, or the
        # backfill's own reference chunk, planned first for a symbol never identified).
        if symbol not in self.references and self.reads_catalog:
            self._load_reference(symbol)
        ident = self.known_identity(symbol)
        row = self.references.get(symbol)
        if ident is None and row and row.get("reference_error") and \
                not self._asks_reference(symbol, utcnow()):
            # The reference does not know the ticker (a run asked it within the week): a
            # backfill fetches nothing for it either, as a run does not.
            raise UnknownTickerError(row["reference_error"], provider=self.provider.name)
        span: tuple[dt.date, dt.date] | None = window
        if ident is not None:
            span = ident.clamp(*window)  # never before the listing, after the delisting
        with self.store.lake.symbol_lock(symbol):
            coverage = self.store.lake.read_coverage(symbol)
            new_coverage = dict(coverage)
            step = self._fetch_step(symbol, ds, cal, expected, timeframe, span, coverage,
                                    new_coverage, run_id, log, res, None, explicit=True,
                                    ident=ident)
            self.store.lake.update_coverage(  # only what it changed (see enrich_symbol)
                symbol, {k: v for k, v in new_coverage.items() if coverage.get(k) != v})
            quality_run.after_fetch(self.store.lake, log, run_id, symbol, asset_class, [step],
                                    coverage, timeframe)
        return step

    def record_task(self, log: LogBuffer, run_id: str | None, res: SymbolResult) -> SymbolResult:
        res.finished_at = utcnow()
        if run_id is None:
            return res
        errs = res.errors
        log.add(lambda b: runs.add_task(b, {
            "run_id": run_id, "symbol": res.symbol, "state": res.state,
            "started_at": res.started_at, "finished_at": res.finished_at,
            "records": res.records, "requests": res.requests, "retries": res.retries,
            "error_class": error_class_of(errs[0]) if errs else None,
            "error_message": str(errs[0])[:1000] if errs else None,
        }))
        return res

    def _window(self, ds: str, cal: str, expected: dt.date, params: RunParams,
                coverage: dict[str, dt.date],
                ident: Identity | None = None) -> tuple[dt.date, dt.date] | None:
        window = window_for(ds, coverage.get(coverage_key(ds, params.timeframe)), expected,
                            cal, lookback_days=params.lookback_days,
                            history_years=self.settings.history_years,
                            refetch_sessions=self.settings.refetch_sessions,
                            event_lookback_days=self.settings.event_lookback_days)
        if window is None or ident is None or ds == "options_iv":
            return window
        # Never before the listing or the first ticker change (a recycled ticker's past is
        # another security's).
        return ident.clamp(*window)

    # -- identity ---------------------------------------------------------------------------
    def known_identity(self, symbol: str) -> Identity | None:
        """The identity the catalog holds for ``symbol`` (None: not read yet, or unknown)."""
        row = self.references.get(symbol)
        return identity.from_row(symbol, row) if row else None

    def _asks_reference(self, symbol: str, at: dt.datetime) -> bool:
        """Whether ``_identity`` would request ``symbol``'s ticker reference at ``at``."""
        row = self.references.get(symbol)
        if row is None or identity.from_row(symbol, row) is not None:
            return False
        checked = row.get("reference_checked_at")
        return not (row.get("reference_error") and checked is not None
                    and at - checked < identity.RECHECK_AFTER)

    def identify(self, symbol: str, asset_class: str, log: LogBuffer, res: SymbolResult,
                 run_id: str | None = None) -> Identity | None:
        """``_identity`` for a backfill's reference chunk (its class checked as a run's)."""
        return self._identity(symbol, log, res, run_id, asset_class)

    def _identity(self, symbol: str, log: LogBuffer, res: SymbolResult,
                  run_id: str | None = None, asset_class: str | None = None
                  ) -> Identity | None:
        """``symbol``'s identity, read from the provider's reference the first time (its
        requests count as the symbol's). None: no reference is held and none can be read (a
        symbol outside the universe, a plan without the reference). Raises
        ``UnknownTickerError`` for a ticker the reference does not know, and ``InputError``
        when it is of another class than ``asset_class`` (the universe's, from a CSV import):
        the class is corrected to the reference's, and the next run fetches it as such."""
        row = self.references.get(symbol)
        if row is None and self.reads_catalog:
            row = self._load_reference(symbol)
        if row is None:
            return None
        known = identity.from_row(symbol, row)
        if known is not None:
            return known
        if not self._asks_reference(symbol, utcnow()):  # unknown, checked within the week
            raise UnknownTickerError(row["reference_error"], provider=self.provider.name)
        at = utcnow()
        perf0 = time.perf_counter()
        outcome = StepResult(REFERENCE, "ok")
        try:
            ref = self.provider.ticker_reference(symbol)
        except NotFoundError as exc:
            outcome = StepResult(REFERENCE, "failed", error=exc)
            message = (f"{symbol} is not in {self.provider.name}'s ticker reference ({exc}); "
                       "nothing is fetched for it: fix its spelling (tickers are "
                       "case-sensitive) or remove it (`python -m enrich symbols remove "
                       f"{symbol}`); asked again in a week")
            self._keep_reference(log, symbol, {"reference_checked_at": at,
                                               "reference_source": self.provider.name,
                                               "reference_error": message[:1000]})
            raise UnknownTickerError(message, provider=self.provider.name) from exc
        except NotEntitledError as exc:
            outcome = StepResult(REFERENCE, "skipped", error=exc)
            return None  # the plan has no reference: history as the provider serves it
        except Exception as exc:
            outcome = StepResult(REFERENCE, "failed", error=exc)
            raise
        finally:
            # Logged like any dataset's, so fetch_log's retried rows and requests add up to
            # the run's: the reference costs the plan's quota as a dataset's request does.
            stats = self._take_requests(log, run_id, symbol, REFERENCE, "1d", res, None)
            if stats.requests:
                self._log_fetch(log, run_id, symbol, REFERENCE, "1d", at,
                                (time.perf_counter() - perf0) * 1000, outcome, 0, 0,
                                1 + len(stats.retries), None, None, None, stats.requests)
        kept = identity.to_row(ref, at)
        if asset_class and ref.asset_class != asset_class and \
                {asset_class, ref.asset_class} != {"stocks", "etfs"}:
            # Nothing fetched yet (the reference comes first): the wrong calendar and
            # datasets (a crypto pair's "dividends", its bars on the exchange's sessions)
            # are never stored. ``symbols add`` refuses the same contradiction.
            self._keep_reference(log, symbol, {**kept, "asset_class": ref.asset_class})
            raise InputError(
                f"{symbol} is {ref.asset_class} ({ref.market} market) in "
                f"{self.provider.name}'s ticker reference, not {asset_class} as the universe "
                f"said: its class is corrected to {ref.asset_class}, and the next run fetches "
                "it as such (nothing was fetched for it now)")
        self._keep_reference(log, symbol, kept)
        return ref.identity()

    def _load_reference(self, symbol: str) -> dict[str, Any] | None:
        rows = self.store.catalog.query(
            f"SELECT {', '.join(_REFERENCE_COLUMNS)} FROM symbols WHERE symbol = ?", [symbol])
        if rows.is_empty():
            return None
        row = rows.row(0, named=True)
        self.references[symbol] = row
        return row

    def _keep_reference(self, log: LogBuffer, symbol: str, row: dict[str, Any]) -> None:
        self.references[symbol] = {**self.references.get(symbol, {}), **row}
        sets = ", ".join(f"{k} = ?" for k in row)
        log.add(lambda b: b.execute(f"UPDATE symbols SET {sets} WHERE symbol = ?",
                                    [*row.values(), symbol]))

    def _refused(self, symbol: str, wanted: list[str], cal: str, expected: dt.date,
                 params: RunParams, run_id: str | None, log: LogBuffer, res: SymbolResult,
                 exc: Exception) -> SymbolResult:
        """Every dataset of a symbol whose identity could not be established fails with
        ``exc``; nothing is fetched."""
        coverage = self.store.lake.read_coverage(symbol)
        for ds in wanted:
            step = StepResult(ds, "failed", error=exc)
            res.steps.append(step)
            self._log_fetch(log, run_id, symbol, ds, params.timeframe, utcnow(), 0.0, step, 0,
                            0, 1, None, None, None)
            self._status(log, symbol, ds, cal, expected,
                         coverage.get(coverage_key(ds, params.timeframe)), step, exc,
                         timeframe=params.timeframe)
        res.state = "failed"
        return self.record_task(log, run_id, res)

    def _fetch_step(self, symbol: str, ds: str, cal: str, expected: dt.date, timeframe: str,
                    window: tuple[dt.date, dt.date] | None, coverage: dict[str, dt.date],
                    new_coverage: dict[str, dt.date], run_id: str | None, log: LogBuffer,
                    res: SymbolResult, fetched: Fetched | None,
                    explicit: bool = False, ident: Identity | None = None) -> StepResult:
        """One dataset of one symbol: take its rows (universe-wide or its own request), then
        validate → restatements → upsert → watermark → log rows and status."""
        ckey = coverage_key(ds, timeframe)
        t0 = utcnow()
        if window is None:
            step = StepResult(ds, "up_to_date")
            self._log_fetch(log, run_id, symbol, ds, timeframe, t0, 0.0, step, 0, 0, 1,
                            None, None, None)
            self._status(log, symbol, ds, cal, expected, coverage.get(ckey), step, None,
                         timeframe=timeframe)
            return step
        start, end = window
        perf0 = time.perf_counter()
        via_market = fetched is not None and fetched.covers(window)
        n_req, attempts, notes = 0, 1, []
        try:
            if via_market:
                assert fetched is not None
                start, end = fetched.request.start, fetched.request.end
                if fetched.error is not None:
                    raise fetched.error
                assert fetched.rows is not None
                frame = fetched.rows.for_symbol(symbol)
            else:
                try:
                    frame, start, end = self._fetch_own(symbol, ds, cal, timeframe, start,
                                                        end, log, ident)
                finally:
                    stats = self._take_requests(log, run_id, symbol, ds, timeframe, res,
                                                (start, end))
                    n_req = stats.requests
                    notes = stats.notes
                    attempts = 1 + len(stats.retries)
            received = frame.height
            checked = check(ds, frame)
            # A complete answer for the window is what the provider lists for it: stored rows
            # it no longer lists (cancelled, re-dated) go. A partial one only adds.
            column = WINDOW_COLUMN.get(ds)
            span = window if via_market else (start, end)
            complete = (column is not None and not checked.rejected and not notes
                        and (not via_market or (fetched is not None and fetched.complete
                                                and not _renamed_in(ident, symbol, span))))
            # A removal is first checked over WIDER_DAYS up to the window's end (at most
            # ENRICH_HISTORY_YEARS): the write stops before removing anything (_ListedLess).
            wide = (span[1] - dt.timedelta(days=min(
                WIDER_DAYS, int(self.settings.history_years * 365.25))), span[1])
            widen = complete and not explicit and wide[0] < span[0]
            while True:
                # Stored history this fetch changes (enrich.checks.restatements), before it
                # is replaced: journaled before the write, logged once it is done (a crash
                # between the two loses nothing, and once the lake holds the new rows no
                # later run could find the change again).
                diff = restatements.detect(self.store.lake, ds, checked.good, timeframe)
                durable = log.durable(functools.partial(
                    self._file_state, ds, symbol, timeframe))
                restatements.record(durable, run_id, diff, timeframe)
                refetch, confirming = None, False
                if ds == "splits":
                    refetch = functools.partial(self._refetch_bars, symbol, cal, expected,
                                                coverage, new_coverage, notes, checked.good)
                try:
                    if refetch is not None and widen and checked.good.height and \
                            self._stored_only(ds, symbol, checked.good).height \
                            < checked.good.height:
                        # A split new to the desk may be a stored one re-dated from before
                        # the window: the wider window is asked first (it removes that one).
                        confirming = True
                        raise _ListedLess
                    if refetch is not None and diff is not None \
                            and not diff.restated.is_empty():  # a stored split's new ratio
                        refetch(diff.restated["session"].to_list())
                    if complete:
                        assert column is not None
                        result, removed = self.store.lake.replace_window(
                            ds, symbol, checked.good, column, *span,
                            before_removal=functools.partial(
                                _before_removal, durable, run_id, ds, timeframe, widen,
                                refetch))
                        written = result.changed
                        if not removed.is_empty():
                            notes = [*notes, _removed_note(removed, column, span)]
                    else:
                        written = self.store.lake.upsert(ds, checked.good).changed
                except _ListedLess:
                    durable.discard()  # the dataset's file was not written
                    widen = False
                    try:
                        frame, wide_start, wide_end = self._fetch_own(
                            symbol, ds, cal, timeframe, *wide, log, ident)
                    except Cancelled:
                        raise
                    except Exception as exc:  # the window's answer stays: it only adds
                        complete = False
                        notes = [*notes, f"removed nothing: the wider check for rows "
                                         f"re-dated before or into the window failed ({exc})"]
                    else:
                        start = wide_start
                        received += frame.height
                        checked = check(ds, frame)
                        span = (wide_start, wide_end)
                        complete = not checked.rejected
                    finally:
                        stats = self._take_requests(log, run_id, symbol, ds, timeframe, res,
                                                    wide)
                        n_req += stats.requests
                        attempts += len(stats.retries)
                        if stats.notes:  # a truncated answer: it only adds
                            complete = False
                            notes = [*notes, *stats.notes]
                    if confirming and not complete:
                        # The new split is held back until a wider answer confirms it (the
                        # next run asks again: it is still in the look-back window); stored
                        # next to an old date it may replace, the bars would be re-based twice.
                        checked = Checked(self._stored_only(ds, symbol, checked.good),
                                          checked.rejected, checked.causes)
                        notes = [*notes, "held back the splits new to the desk until a "
                                         "wider check confirms them (asked again next run)"]
                    continue
                except BaseException:
                    durable.discard()
                    raise
                durable.commit()
                break
            step = StepResult(ds, "ok", written, window=(start, end))
            if ds == "options_iv":
                self._summarize_options(symbol, checked.good, run_id, log)
            # Bars and options are held through the newest session actually received: a
            # session the provider has not published yet must be asked for again next time.
            # Event datasets (dividends, news, …) are complete for the window they covered.
            previous = coverage.get(ckey)
            covered: dt.date | None = end
            if ds in ("bars", "options_iv", "rates"):
                covered = self._latest_of(ds, checked.good, previous, end)
            if ds == "options_iv" and received == 0 and \
                    not self.store.lake.files("options_iv", [symbol]):
                # No contract listed, ever (a preferred share, a fund without options): the
                # answer is complete for the session, as an event dataset's empty window is.
                # Held through it, asked again the next session; not "never fetched" for
                # good. (A symbol with chains held that answers empty once stays behind,
                # and is asked again: that is a hiccup, not the truth.)
                covered = end
            if ds == "options_iv" and covered is not None and covered > end:
                # A snapshot of the session in progress is stored (partial) but does not
                # count as held: the next run after the close takes the session's final state.
                covered = end
            if explicit and previous is not None and self._after_a_hole(ds, cal, previous,
                                                                        start):
                covered = previous  # a window after a hole: the watermark cannot jump it
            elif explicit and ds == "bars" and timeframe == "1d" and covered is not None \
                    and (previous is None or covered > previous) and covered < expected:
                # A fill that closed the hole: the sessions held after it (a backfill of
                # later history, fetched while the hole was open) count again. (Daily bars:
                # one small file; an intraday hole's later months are asked again.)
                covered = self._held_through(symbol, cal, timeframe, covered, expected)
            if covered is not None and (previous is None or covered >= previous):
                new_coverage[ckey] = covered
            else:
                covered = previous
            note = None
            if checked.rejected:
                note = f"refused {checked.rejected} rows: " + " | ".join(checked.causes)
            elif via_market:
                note = "served by the universe-wide request"
            if notes:
                note = "; ".join([*notes, *([note] if note else [])])
            latest = covered if ds in ("bars", "options_iv", "rates") else \
                self._latest_of(ds, checked.good, previous, end)
            self._log_fetch(log, run_id, symbol, ds, timeframe, t0,
                            (time.perf_counter() - perf0) * 1000, step, received,
                            checked.rejected, attempts, start, end, note, n_req)
            if not explicit or covered != previous:  # a backfill of old history: no news
                self._status(log, symbol, ds, cal, expected, latest, step, None,
                             covered=covered, timeframe=timeframe)
        except Exception as exc:
            if isinstance(exc, Cancelled):
                raise
            step = StepResult(ds, "failed", error=exc)
            rejected = exc.rejected if isinstance(exc, ValidationError) else 0
            note = None
            if isinstance(exc, ValidationError) and exc.causes:
                note = f"{exc} — " + " | ".join(exc.causes)
            self._log_fetch(log, run_id, symbol, ds, timeframe, t0,
                            (time.perf_counter() - perf0) * 1000, step, 0, rejected,
                            getattr(exc, "attempts", attempts), start, end, note, n_req)
            if not explicit:  # a failed backfill chunk is reported by its backfill
                self._status(log, symbol, ds, cal, expected, coverage.get(ckey), step, exc,
                             not_entitled=isinstance(exc, NotEntitledError),
                             timeframe=timeframe)
        return step

    def _held_through(self, symbol: str, cal: str, timeframe: str, covered: dt.date,
                      expected: dt.date) -> dt.date:
        """The last session of the unbroken run of stored bars sessions that follows
        ``covered`` (``covered`` itself when the next session is not held, or the stored
        bars cannot be read: the next run's audit sets aside what is unreadable)."""
        try:
            held = self.store.lake.read("bars", [symbol], level=timeframe)
        except CorruptFileError:
            return covered
        if held.is_empty():
            return covered
        days = set(held.get_column("session").filter(held.get_column("session") > covered)
                   .to_list())
        for day in calendars.sessions(cal, covered + dt.timedelta(days=1), expected):
            if day not in days:
                break
            covered = day
        return covered

    @staticmethod
    def _after_a_hole(ds: str, cal: str, previous: dt.date, start: dt.date) -> bool:
        """Whether a window starting ``start`` leaves something unfetched after the watermark
        ``previous``: a day, for event datasets (news is published on a Saturday too); a
        session, for bars and chains held through a session (a year's bars ending on Friday
        30 December and the next year's from Sunday 1 January leave no hole)."""
        if start <= previous + dt.timedelta(days=1):
            return False
        if ds not in ("bars", "options_iv"):
            return True
        nxt = calendars.next_session(cal, previous)
        return nxt is not None and start > nxt

    def _refetch_bars(self, symbol: str, cal: str, expected: dt.date,
                      coverage: dict[str, dt.date], new_coverage: dict[str, dt.date],
                      notes: list[str], answer: pl.DataFrame, splits: list[dt.date]) -> None:
        """Stored splits on ``splits`` are going or changing (cancelled, re-dated, a ratio
        corrected), before the write that does it: the symbol's stored bars of every
        timeframe are taken back off the changed splits in place (``unsplit``; the features
        step applies the stored ones again), then their fetched-through marks move back on
        disk so that they are fetched again from their first session (the provider's,
        adjusted as of now), by this run for its timeframe (its bars step comes after the
        splits) and by the next run of another. Both before the splits are written: a crash
        before the fetch still fetches them, and a second take-back changes nothing."""
        lake = self.store.lake
        stored = lake.read("splits", [symbol])  # as they are before the write: the old ones
        # From the earliest split that changes: a removed or re-rated one, or one the answer
        # adds (a split re-dated earlier must be applied to the bars before its new date).
        added = answer.join(stored.select("symbol", "execution_date"),
                            on=["symbol", "execution_date"], how="anti")["execution_date"]
        since = min(d for d in [*splits, *added.to_list()] if d is not None)
        on_disk = lake.read_coverage(symbol)
        marks: dict[str, dt.date | None] = {}
        for key in [k for k in on_disk if k.startswith("bars:")]:
            bars = lake.read("bars", [symbol], level=key.split(":", 1)[1])
            first = bars["session"].min()
            marks[key] = self._refetched_from(first, cal, expected) \
                if isinstance(first, dt.date) else None
            # Bars the provider may no longer serve (a plan's history floor) are not fetched
            # again: they go back onto the basis before ``since`` here, and the stored splits
            # left after the write are applied again by the features step (apply_splits).
            back = unsplit(bars, stored, since)
            if not back.equals(bars):
                lake.upsert("bars", back)
        for held in (on_disk, coverage, new_coverage):
            for key, mark in marks.items():
                if mark is None:
                    held.pop(key, None)
                else:
                    held[key] = mark
        lake.write_coverage(symbol, on_disk)
        dates = ", ".join(sorted({d.isoformat() for d in splits if d is not None}))
        note = (f"bars re-based back off the split of {dates} and fetched again: it is no "
                "longer listed as stored (cancelled, re-dated or its ratio corrected)")
        if note not in notes:
            notes.append(note)

    def _stored_only(self, ds: str, symbol: str, frame: pl.DataFrame) -> pl.DataFrame:
        """The rows of ``frame`` whose key ``symbol``'s stored ``ds`` holds already."""
        from enrich.schemas import DATASETS

        key = list(DATASETS[ds].key)
        stored = self.store.lake.read(ds, [symbol]).select(key)
        return frame.join(stored, on=key, how="semi", nulls_equal=True)

    def _refetched_from(self, first: dt.date, cal: str, expected: dt.date) -> dt.date | None:
        """The fetched-through mark whose next window (``window_for``, which re-asks the last
        ``ENRICH_REFETCH_SESSIONS`` held sessions) starts on ``first``; None when that mark
        would not be behind ``expected`` (then the history is fetched as a first time)."""
        n = self.settings.refetch_sessions
        after = calendars.sessions(cal, first, first + dt.timedelta(days=10 * n + 10))
        mark = after[n - 1] if 0 < n <= len(after) else first - dt.timedelta(days=1)
        return mark if mark < expected else None

    def _take_requests(self, log: LogBuffer, run_id: str | None, symbol: str, ds: str,
                       timeframe: str, res: SymbolResult,
                       window: tuple[dt.date, dt.date] | None) -> RequestStats:
        """The requests the provider made for a step since the last take: counted on the
        symbol's result, their retries logged."""
        stats = self.provider.take_requests()
        res.requests += stats.requests
        res.retries += len(stats.retries)
        self._log_retries(log, run_id, symbol, ds, timeframe, stats, window)
        return stats

    def _file_state(self, ds: str, symbol: str,
                    timeframe: str) -> tuple[str | None, list[int] | None]:
        """The lake file a step of ``ds`` replaces and its identity now (a restatement's
        journal entry: ``enrich.store.journal``); none for a dataset of several files."""
        if ds not in restatements.TRACKED:
            return None, None
        return self.store.lake.file_state(ds, symbol, timeframe if ds == "bars" else None)

    def _fetch_own(self, symbol: str, ds: str, cal: str, timeframe: str, start: dt.date,
                   end: dt.date, log: LogBuffer,
                   ident: Identity | None = None) -> tuple[pl.DataFrame, dt.date, dt.date]:
        """A symbol's own request for [start, end], inside the plan's limits: a window that
        reaches past the plan's history starts where the plan does (found by probing once,
        then remembered); a session the plan does not serve yet is left for later (due).
        Returns the rows and the window actually fetched."""
        market = asset_class_of(symbol)  # the plan its data is sold under
        floor = self.limits().floor(market, ds, timeframe, end)
        if floor is not None and start < floor:
            start = min(floor, end)
        try:
            return (self._call_provider(symbol, ds, timeframe, ident, start, end, cal),
                    start, end)
        except HistoryLimitError as exc:
            key = plan_limits.history_key(market, ds, timeframe)
            with self._limits_lock:
                known = (self._limits or plan_limits.Limits({})).history.get(key)
            edge: dt.date | None
            if known is not None and end - dt.timedelta(days=known) > start:
                edge = end - dt.timedelta(days=known)  # another thread found it meanwhile
            else:
                edge = plan_limits.probe_history(
                    lambda a, z: self._call_provider(symbol, ds, timeframe, ident, a, z),
                    start, end)
                if edge is None:
                    raise
                self._learn_history(log, market, ds, timeframe, edge, end, exc)
            return self._call_provider(symbol, ds, timeframe, ident, edge, end), edge, end
        except NotYetAvailableError as exc:
            if ds != "bars":
                raise
            self._learn_next_day(log, str(exc))
            held = calendars.sessions(cal, start, end)
            before = [d for d in held if d < end]
            if not before:  # only the unserved session was asked: nothing to store yet
                return self._empty(ds), start, start - dt.timedelta(days=1)
            return self._call_provider(symbol, ds, timeframe, ident, start, before[-1]), start, \
                before[-1]

    @staticmethod
    def _empty(ds: str) -> pl.DataFrame:
        from enrich.schemas import DATASETS

        return DATASETS[ds].empty()

    def _log_retries(self, log: LogBuffer, run_id: str | None, symbol: str, ds: str,
                     timeframe: str, stats: RequestStats,
                     window: tuple[dt.date, dt.date] | None) -> None:
        """One ``retried`` fetch_log row per retried request, with its wait."""
        start, end = window or (None, None)
        for r in stats.retries:
            err = EnrichError(r.message)
            err.error_class = r.error_class
            step = StepResult(ds, "retried", error=err)
            self._log_fetch(log, run_id, symbol, ds, timeframe, utcnow(), 0.0, step, 0, 0,
                            r.attempt, start, end,
                            f"{r.endpoint}: retrying in {r.wait_s:.1f}s: {r.message}")

    def _call_provider(self, symbol: str, ds: str, timeframe: str, ident: Identity | None,
                       start: dt.date, end: dt.date, cal: str = "XNYS") -> pl.DataFrame:
        """``symbol``'s rows of ``ds`` for [start, end]: one request per ticker it traded as
        in the window (``Identity.pieces``), each stored under ``symbol``."""
        if ident is None or ds not in BY_TICKER:
            return self._call_ticker(symbol, ds, timeframe, start, end, cal)
        frames = []
        for ticker, a, z in ident.pieces(start, end):
            frame = self._call_ticker(ticker, ds, timeframe, a, z, cal)
            frames.append(frame if ticker == symbol else frame.with_columns(
                symbol=pl.lit(symbol)))
        if not frames:
            return self._empty(ds)
        return frames[0] if len(frames) == 1 else pl.concat(frames)

    def _call_ticker(self, symbol: str, ds: str, timeframe: str, start: dt.date,
                     end: dt.date, cal: str = "XNYS") -> pl.DataFrame:
        p = self.provider
        if ds == "bars":
            return p.bars(symbol, timeframe, start, end)
        if ds == "dividends":
            return p.dividends(symbol, start, end)
        if ds == "splits":
            return p.splits(symbol, start, end)
        if ds == "earnings":
            return p.earnings(symbol, start, end)
        if ds == "news":
            return p.news(symbol, start, end)
        if ds == "options_iv":
            return self._option_snapshot(symbol, cal)
        if ds == "rates":
            return p.treasury_yields(start, end)
        raise ValueError(f"unknown dataset {ds}")

    def _option_snapshot(self, symbol: str, cal: str) -> pl.DataFrame:
        """The chain as of now, priced (``enrich.quant.snapshots``): stored under the session it
        describes, the one in progress (partial) or the latest that closed."""
        now = self.clock()
        as_of, _ = calendars.snapshot_session(cal, now)
        lake = self.store.lake
        bars = lake.read("bars", [symbol], level="1d")
        # Sessions read into numpy (``enrich.columns``): a polars query on one symbol's
        # bars costs more than finding a row.
        sessions, _ = columns.values(bars.get_column("session"))
        # The newest stored close (the last bar of the newest session; without a session,
        # the last bar): the chain's strikes are asked around it.
        latest = None
        if bars.height:
            newest = np.flatnonzero(sessions == np.fmax.reduce(sessions))  # NaN: no session
            latest = float(bars.get_column("close")[int(newest[-1]) if newest.size else -1])
        chain = self.provider.option_chain(symbol, as_of, latest)
        if chain.is_empty():
            return chain
        splits = lake.read("splits", [symbol])
        # The session's close as traded that day (one row: each row's basis is its own).
        closes = as_traded_closes(columns.rows_where(bars, sessions == columns.day(as_of)),
                                  splits)["close"]
        return snapshots.price_chain(
            chain, curves=lake.read("rates", [rates.CURVE]),
            dividends=lake.read("dividends", [symbol]), splits=splits,
            fallback_rate=self.settings.risk_free_rate,
            close=float(closes[0]) if len(closes) else None,
            session_open=calendars.session_open_utc(cal, as_of),
            session_close=calendars.session_close_utc(cal, as_of), snapshot_at=now)

    def _summarize_options(self, symbol: str, rows: pl.DataFrame, run_id: str | None,
                           log: LogBuffer) -> None:
        """The volatility summary of the sessions in ``rows`` (``enrich.quant.vol_summary``), from
        everything stored for them; logged in ``compute_log`` like features."""
        if rows.is_empty():
            return
        t0, perf0 = utcnow(), time.perf_counter()
        try:
            written = store_vol_summary(self.store.lake, symbol, rows["as_of"].unique())
            status, err = "ok", None
        except Exception as exc:  # a summary failure is recorded; the chain stays stored
            written, status, err = 0, "failed", exc
        log.add(lambda b: b.insert("compute_log", {
            "run_id": run_id, "symbol": symbol, "dataset": "vol_summary", "timeframe": "1d",
            "started_at": t0, "duration_ms": (time.perf_counter() - perf0) * 1000,
            "records": written, "status": status,
            "error_class": error_class_of(err) if err else None,
            "error_message": str(err)[:1000] if err else None,
        }))

    @staticmethod
    def _latest_of(ds: str, frame: pl.DataFrame, previous: dt.date | None,
                   end: dt.date) -> dt.date | None:
        col = {"bars": "session", "options_iv": "as_of", "rates": "date"}.get(ds)
        if col is None:
            return end  # event datasets: held through the end of the fetched window
        if frame.is_empty():
            return previous
        latest: dt.date | None = frame[col].max()  # type: ignore[assignment]  # a Date column
        return max(latest, previous) if previous and latest else latest or previous

    def derive_step(self, symbol: str, timeframe: str, bars_changed: bool,
                    run_id: str | None, log: LogBuffer, res: SymbolResult,
                    asset_class: str | None = None) -> None:
        """Bring stored bars onto the newest split basis, then recompute features.

        Runs when bars or splits changed (or features are missing). Re-based bars are logged
        in ``compute_log`` as dataset ``bars``, status ``rebased``, so the drilldown can say
        when history was re-derived.
        """
        lake = self.store.lake
        has_features = bool(lake.files("features", [symbol], level=timeframe))
        if not bars_changed and has_features:
            return
        t0 = utcnow()
        perf0 = time.perf_counter()
        try:
            bars = lake.read("bars", [symbol], level=timeframe)
            if bars.is_empty():
                return
            splits = lake.read("splits", [symbol])
            adjusted = apply_splits(bars, splits)
            if not adjusted.equals(bars):
                rebased = lake.upsert("bars", adjusted).changed
                bars = adjusted
                for step in res.steps:
                    if step.dataset == "bars":
                        step.records += rebased
                log.add(lambda b: b.insert("compute_log", {
                    "run_id": run_id, "symbol": symbol, "dataset": "bars",
                    "timeframe": timeframe, "started_at": t0,
                    "duration_ms": (time.perf_counter() - perf0) * 1000, "records": rebased,
                    "status": "rebased"}))
            dividends = dividends_on_basis(lake.read("dividends", [symbol]), splits)
            feats = compute_features(bars, asset_class=asset_class, dividends=dividends)
            written = lake.replace_symbol("features", symbol, feats, level=timeframe).changed
            status, err = "ok", None
        except Exception as exc:  # a compute failure is recorded, the run goes on
            written, status, err = 0, "failed", exc
            res.steps.append(StepResult("features", "failed", error=exc))
        log.add(lambda b: b.insert("compute_log", {
            "run_id": run_id, "symbol": symbol, "dataset": "features", "timeframe": timeframe,
            "started_at": t0, "duration_ms": (time.perf_counter() - perf0) * 1000,
            "records": written, "status": status,
            "error_class": error_class_of(err) if err else None,
            "error_message": str(err)[:1000] if err else None,
        }))

    def _log_fetch(self, log, run_id, symbol, ds, timeframe, started, duration_ms,
                   step: StepResult, received, rejected, attempt, start, end, note,
                   requests: int = 0) -> None:
        err = step.error
        message = note if note else (str(err)[:1000] if err else None)
        status = logged_status(step.status, err)
        row = {
            "run_id": run_id, "symbol": symbol, "dataset": ds,
            "timeframe": timeframe if ds == "bars" else None, "started_at": started,
            "duration_ms": duration_ms, "records": step.records, "received": received,
            "rejected": rejected, "requests": requests, "attempt": attempt, "status": status,
            "error_class": error_class_of(err) if err else
            ("not_entitled" if step.status == "skipped" else None),
            "error_message": message, "window_start": start, "window_end": end,
        }
        log.add(lambda b: b.insert("fetch_log", row))

    def _status(self, log, symbol, ds, cal, expected, latest, step: StepResult, exc,
                covered: dt.date | None = None, not_entitled: bool = False,
                timeframe: str = "1d") -> None:
        if ds == "bars" and timeframe != "1d":
            # symbol_status says how fresh the daily bars are: intraday bars (a run or a
            # backfill of 1h history) have their own watermark and fetch log, not this row.
            return
        now = utcnow()
        row: dict[str, Any] = {
            "symbol": symbol, "dataset": ds, "last_attempt_at": now,
            "expected_session": expected,
        }
        if latest is not None:
            row["latest_session"] = latest
        if covered is not None:
            row["covered_through"] = covered
        held = covered or latest
        if held is not None:
            row["sessions_behind"] = calendars.sessions_behind(cal, held, expected)
        if exc is None:
            row.update(last_success_at=now, consecutive_failures=0, not_entitled=False)
            log.add(lambda b: b.upsert("symbol_status", row))
        elif isinstance(exc, NotYetAvailableError):
            # A session the plan does not serve yet: due, no failure (nor a success). The
            # attempt is recorded; what is held, and so the freshness (due, late), stays.
            row.update(consecutive_failures=0)
            log.add(lambda b: b.upsert("symbol_status", row))
        else:
            row.update(last_error_class=error_class_of(exc), last_error_message=str(exc)[:1000],
                       last_error_at=now, not_entitled=not_entitled)
            log.add(lambda b: (b.upsert("symbol_status", row), b.execute(
                "UPDATE symbol_status SET consecutive_failures = consecutive_failures + 1 "
                "WHERE symbol = ? AND dataset = ?", [symbol, ds])))


def store_vol_summary(lake: Lake, symbol: str, sessions: pl.Series) -> int:
    """Summarise the ``sessions`` of ``symbol``'s stored option chains into ``vol_summary``
    (``enrich.quant.vol_summary``); rows changed. A summary file that cannot be read is set
    aside (quarantined) and rebuilt from every stored chain, so its history is not lost."""
    # Only the month files of those sessions: a year of chains is a dozen files to decode.
    days = [d for d in sessions.to_list() if d is not None]
    stored = lake.read("options_iv", [symbol], months={d.strftime("%Y-%m") for d in days})
    # The sessions' rows (a file holds its chains in as_of order: one slice for one session).
    held, _ = columns.values(stored.get_column("as_of"))
    try:
        return lake.upsert("vol_summary", vol_summary.summarize(
            columns.rows_where(stored, np.isin(held, [columns.day(d) for d in days])))).changed
    except CorruptFileError:
        return lake.upsert("vol_summary", vol_summary.summarize(
            lake.read("options_iv", [symbol]))).changed


def _renamed_in(ident: Identity | None, symbol: str, span: tuple[dt.date, dt.date]) -> bool:
    """Whether ``symbol`` traded under another ticker in ``span``: a universe-wide listing is
    read by today's ticker, so it is no complete answer for that span."""
    return ident is not None and any(t != symbol for t, _, _ in ident.pieces(*span))


class _ListedLess(Exception):
    """A complete window answer would remove stored rows: check a wider window first."""


def _before_removal(durable: Durable, run_id: str | None, ds: str, timeframe: str,
                    widen: bool, refetch: Callable[[list[dt.date]], None] | None,
                    removed: pl.DataFrame) -> None:
    """``Lake.replace_window``'s hook, before a write that removes ``removed``: stop it to
    ask the wider window first (``widen``), or journal the removal's restatement rows (and,
    for splits, have the bars fetched again: ``refetch``)."""
    if widen:
        raise _ListedLess
    restatements.record(durable, run_id, restatements.removal(ds, removed), timeframe)
    if refetch is not None:
        refetch(removed["execution_date"].to_list())


def _removed_note(removed: pl.DataFrame, column: str, span: tuple[dt.date, dt.date]) -> str:
    dates = sorted({d.isoformat() for d in removed[column].to_list() if d is not None})
    shown = ", ".join(dates[:10]) + (f" and {len(dates) - 10} more" if len(dates) > 10 else "")
    return (f"removed {removed.height} stored rows no longer listed for "
            f"{span[0].isoformat()}..{span[1].isoformat()} ({column} {shown})")


def _last_session(cal: str, day: dt.date, fallback: dt.date) -> dt.date:
    """The last session of ``cal`` on or before ``day`` (``fallback`` if none)."""
    held = calendars.sessions(cal, day - dt.timedelta(days=14), day)
    return held[-1] if held else fallback
