"""Backfill execution: a plan's chunks, run in order, resumably, at low priority.

Backfill requests queue on the shared rate limiter at ``BACKFILL_PRIORITY``, below any
scheduled or manual run. Every fetched chunk goes through the engine's one fetch pipeline
(``Engine.fetch_window``: validation, restatements, upsert, quality checks, the
fetched-through watermark, log rows), exactly as a run's step does. A chunk is marked done
only after its data is in the lake; lake writes are idempotent upserts, so a process killed
at any moment redoes at most the chunks whose marks were not flushed yet (at most
``FLUSH_S`` seconds of work), and the result equals an uninterrupted backfill. A chunk that
keeps failing (after the provider's retries) is marked failed with its attempts and last
error; ``retry_failed`` runs only those. Bars, splits and dividends chunks are followed by
the symbol's ``features`` chunk (dividends: ``tr_close`` reinvests them), which calls the
engine's own derive step: bars are re-based on every stored split (logged in
``compute_log`` with status ``rebased``) and features recomputed.
Options chunks list contracts per session, then fetch each chosen contract's bars and write
IV rows (``enrich.quant.options_history``). Cancellation (pause or cancel, from any process
through the catalog) stops between chunks.

Bookkeeping (chunk marks, ``fetch_log``, ``tasks``, the run's counters) is buffered and
flushed at most every ``FLUSH_S`` seconds, never across a request.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from enrich.backfill.plan import (
    STEP_ORDER,
    TIMEFRAMES,
    BackfillRequest,
    Chunk,
    Plan,
    contract_bar_chunks,
    plan_backfill,
)
from enrich.checks import quality_run
from enrich.config import Settings
from enrich.errors import Cancelled, EnrichError, StateError, error_class_of
from enrich.pipeline.engine import (
    Engine,
    LogBuffer,
    StepResult,
    SymbolResult,
    store_vol_summary,
)
from enrich.pipeline.run_model import Halt, logged_status
from enrich.providers import Provider
from enrich.quant import rates
from enrich.quant.options_history import (
    PAIR_SCHEMA,
    as_traded_closes,
    choose_contracts,
    history_iv,
    monthly_horizon,
)
from enrich.store import runs
from enrich.store.catalog import WriteBatch, host_and_pid, transaction, utcnow
from enrich.store.store import Store
from enrich.symbols import asset_class_of

BACKFILL_PRIORITY = -1  # below every run's requests (the engine's provider queues at >= 0)
log = logging.getLogger(__name__)

FLUSH_S = 1.0  # buffered chunk marks and log rows reach the catalog this often
CANCEL_POLL_S = 2.0  # how often a running backfill looks for a cancel request
OPTION_BATCH = 25  # contracts whose IV rows are computed and written together
# The lake dataset each step writes (fetch_log.dataset).
STEP_DATASET = {"option_contracts": "options_iv", "option_bars": "options_iv"}


class BackfillBusyError(StateError):
    error_class = "backfill_busy"




# -- execution --------------------------------------------------------------------------------
@dataclass
class Progress:
    """Where a running backfill is: passed to the ``progress`` callback after each chunk."""

    backfill_id: str
    run_id: str
    chunk: Chunk | None
    done: int
    failed: int
    total: int
    requests: int  # made by this run
    requests_left: int  # expected for the chunks still to run
    elapsed_s: float

    @property
    def requests_per_min(self) -> float | None:
        return self.requests / self.elapsed_s * 60.0 if self.elapsed_s > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Time left at the throughput measured so far (None before any measure)."""
        if self.requests and self.elapsed_s > 0:
            return self.requests_left / (self.requests / self.elapsed_s)
        finished = self.done + self.failed
        if finished and self.elapsed_s > 0:
            return (self.total - finished) * self.elapsed_s / finished
        return None


@dataclass
class BackfillSummary:
    backfill_id: str
    run_id: str
    state: str  # succeeded | partial | failed | cancelled
    total: int
    done: int
    failed: int
    left: int
    requests: int
    records: int
    retries: int
    message: str
    failures: list[tuple[str, str]] = field(default_factory=list)  # (chunk, error)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__, failures=[{"chunk": c, "error": e}
                                             for c, e in self.failures])


@dataclass
class _Task:
    """One symbol's share of a run (a ``tasks`` row)."""

    symbol: str
    started_at: dt.datetime
    records: int = 0
    requests: int = 0
    retries: int = 0
    failed: int = 0
    error: str | None = None
    error_class: str | None = None
    unfinished: bool = False  # the run stopped with chunks of it still to do


class Backfiller:
    """Plans and executes backfills against one store with one provider.

    The provider is used at ``BACKFILL_PRIORITY`` (``with_priority``), so its requests queue
    behind the runs' on the shared rate limiter.
    """

    def __init__(self, store: Store, provider: Provider, settings: Settings, *,
                 clock: Callable[[], dt.datetime] | None = None, flush_s: float = FLUSH_S):
        self.source = provider
        self.provider = provider.with_priority(BACKFILL_PRIORITY)
        self.store = store
        self.settings = settings
        self.clock = clock or settings.now
        self.engine = Engine(store, self.provider, settings, clock=self.clock)
        self.flush_s = flush_s

    def close(self) -> None:
        """Close the provider given (its HTTP client, when it owns one)."""
        close = getattr(self.source, "close", None)
        if close is not None:
            close()

    # -- planning and bookkeeping -------------------------------------------------------------
    def plan(self, request: BackfillRequest) -> Plan:
        return plan_backfill(self.store, self.settings, request, self.provider, self.clock())

    def prepare(self, plan: Plan, *, run_id: str | None = None,
                parent_run_id: str | None = None, retry_failed: bool = False) -> str:
        """Record the backfill, its chunks and a new ``running`` run; return the run id.

        Raises ``BackfillBusyError`` when another live run is executing this backfill.
        Chunks left ``running`` by a dead run become ``pending`` again.
        """
        run_id = run_id or str(uuid.uuid4())
        runs.mark_interrupted_runs(self.store, live_run_ids=[run_id])
        now = utcnow()
        host, pid = host_and_pid()
        bid = plan.backfill_id
        todo = plan.todo(retry_failed)
        with self.store.catalog.connect() as con:
            busy = con.execute(
                "SELECT r.run_id, r.pid, r.host FROM backfills b JOIN runs r "
                "ON r.run_id = b.last_run_id WHERE b.backfill_id = ? "
                "AND r.state IN ('queued', 'running')", [bid]).fetchall()
            if busy:
                rid, rpid, rhost = busy[0]
                raise BackfillBusyError(
                    f"backfill {bid} is already running (run {rid[:8]}, pid {rpid} on "
                    f"{rhost}); pause it first or wait for it")
            exists = con.execute("SELECT count(*) FROM backfills WHERE backfill_id = ?",
                                 [bid]).fetchall()[0][0]
            have = {(d, s, w) for d, s, w in con.execute(
                "SELECT dataset, symbol, window_start FROM backfill_progress "
                "WHERE backfill_id = ?", [bid]).fetchall()}
            b = WriteBatch()
            if exists:
                b.execute("UPDATE backfills SET status = 'active', updated_at = ?, "
                          "last_run_id = ?, provider = ?, paused_by = NULL, "
                          "paused_at = NULL WHERE backfill_id = ?",
                          [now, run_id, plan.provider, bid])
            else:
                b.insert("backfills", {
                    "backfill_id": bid, "dataset": plan.request.dataset,
                    "symbols": list(plan.request.symbols) or ["*"],
                    "window_start": plan.window_start, "window_end": plan.window_end,
                    "spec": plan.request.spec(), "provider": plan.provider,
                    "status": "active", "created_at": now, "updated_at": now,
                    "last_run_id": run_id})
            for c in plan.chunks:
                if c.key not in have:
                    b.insert("backfill_progress", _chunk_row(bid, None, c, now))
            b.execute("UPDATE backfill_progress SET state = 'pending', updated_at = ? "
                      "WHERE backfill_id = ? AND state = 'running'", [now, bid])
            runs.add_run(b, {
                "run_id": run_id, "kind": "backfill", "state": "running",
                "params": {"backfill_id": bid, **plan.request.spec(),
                           "window_start": plan.window_start.isoformat(),
                           "window_end": plan.window_end.isoformat(),
                           "retry_failed": retry_failed},
                "provider": plan.provider, "parent_run_id": parent_run_id,
                "requested_at": now, "started_at": now, "heartbeat_at": now, "pid": pid,
                "host": host, "symbols_total": len({c.underlying for c in todo}),
                "message": f"backfill {bid}: {len(todo)} chunks to run"})
            with transaction(con):
                b.apply(con)
        for c in plan.chunks:
            if c.state == "running":
                c.state = "pending"
        plan.exists = True
        return run_id

    def run(self, plan: Plan, *, retry_failed: bool = False,
            cancel: threading.Event | None = None,
            progress: Callable[[Progress], None] | None = None,
            parent_run_id: str | None = None) -> BackfillSummary:
        """``prepare`` then ``execute``, in this thread."""
        run_id = self.prepare(plan, parent_run_id=parent_run_id, retry_failed=retry_failed)
        return self.execute(plan, run_id, retry_failed=retry_failed, cancel=cancel,
                            progress=progress)

    def execute(self, plan: Plan, run_id: str, *, retry_failed: bool = False,
                cancel: threading.Event | None = None,
                progress: Callable[[Progress], None] | None = None) -> BackfillSummary:
        """Run the plan's remaining chunks (only failed ones with ``retry_failed``)."""
        return _Execution(self, plan, run_id, retry_failed, cancel or threading.Event(),
                          progress).run()


def _chunk_row(backfill_id: str, run_id: str | None, c: Chunk, now: dt.datetime
               ) -> dict[str, Any]:
    return {"backfill_id": backfill_id, "run_id": run_id, "dataset": c.step,
            "symbol": c.symbol, "window_start": c.window_start, "window_end": c.window_end,
            "state": c.state, "attempts": c.attempts, "requests_expected": c.requests_expected,
            "requests_made": c.requests_made, "records": c.records,
            "last_error": c.last_error, "updated_at": now}


class _Execution:
    """One run of a backfill: the chunk loop and its buffered bookkeeping."""

    def __init__(self, bf: Backfiller, plan: Plan, run_id: str, retry_failed: bool,
                 cancel: threading.Event, progress: Callable[[Progress], None] | None):
        self.bf = bf
        self.plan = plan
        self.bid = plan.backfill_id
        self.run_id = run_id
        self.cancel = cancel
        self.halt = Halt(cancel)  # a refused key, or no provider in reach: stop, say why
        self.progress = progress
        self.lake = bf.store.lake
        self.log = LogBuffer(bf.store)
        self.queue: list[Chunk] = plan.todo(retry_failed)
        for c in plan.chunks:  # a plan executed again: its chunks' counts are this run's
            c.requests_this_run = 0
        self.total = len(self.queue)
        self.done = 0
        self.failed = 0
        self.requests = 0
        self.retries = 0
        self.records = 0
        self.failures: list[tuple[str, str]] = []
        self.tasks: dict[str, _Task] = {}
        self.current_task: _Task | None = None
        self.timeframe = plan.request.timeframe if plan.request.dataset == "bars" else "1d"
        self.started = self.last_poll = time.monotonic()
        self.last_flush = self.started - bf.flush_s  # the first chunk's mark shows at once
        self._closes: dict[str, pl.DataFrame] = {}
        self._pairs: dict[str, pl.DataFrame] = {}
        self._notes: dict[tuple, list[str]] = {}  # a chunk's provider notes, for its log row
        self._classes: dict[str, str] | None = None
        self._priced: dict[str, tuple[dt.date, dt.date]] = {}  # underlying: IV sessions written
        self._unidentified: dict[str, BaseException] = {}  # whose reference chunk failed
        self._changed: set[str] = set()  # whose bars, splits or dividends this run fetched

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> BackfillSummary:
        self._take_requests()
        state = None
        message = None
        try:
            while self.queue:
                if self._should_stop():
                    self._derive_before_stopping()
                    break
                head = self.queue.pop(0)
                self._enter_task(head.underlying)
                if head.step == "option_bars":
                    batch = [head]
                    while (self.queue and len(batch) < OPTION_BATCH
                           and self.queue[0].step == "option_bars"
                           and self.queue[0].underlying == head.underlying):
                        batch.append(self.queue.pop(0))
                    self._run_contract_bars(batch)
                else:
                    self._run_chunk(head)
                self._maybe_flush()
        except BaseException as exc:  # Ctrl-C, or a bug: leave a consistent, resumable record
            for c in self.plan.chunks:
                if c.state == "running":
                    c.state = "pending"
                    self._mark(c)
            # An interrupt (Ctrl-C, or SIGTERM from the CLI) closes it "interrupted", as a
            # run; its chunks left pending are resumable.
            state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            how = "SIGTERM" if type(exc).__name__ == "Terminated" else "Ctrl-C"
            message = (f"stopped by {how}" if isinstance(exc, KeyboardInterrupt)
                       else f"{type(exc).__name__}: {exc}") + \
                f"; resume with `python -m enrich backfill resume {self.bid}`"
            self._finish(state, message, interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        return self._finish(state, message)

    def _should_stop(self) -> bool:
        if self.cancel.is_set():
            return True
        if time.monotonic() - self.last_poll >= CANCEL_POLL_S:
            self.last_poll = time.monotonic()
            try:
                if runs.cancel_requested(self.bf.store, self.run_id):
                    self.cancel.set()
            except EnrichError:
                pass  # a busy catalog: ask again at the next chunk
        return self.cancel.is_set()

    def _maybe_flush(self, force: bool = False) -> None:
        if not force and time.monotonic() - self.last_flush < self.bf.flush_s:
            return
        self.last_flush = time.monotonic()
        self.log.add(self._run_row)
        try:
            self.log.flush()
        except EnrichError:
            if force:
                raise  # the rows stay buffered; the caller decides

    def _run_row(self, b: WriteBatch) -> None:
        ok = sum(1 for t in self.tasks.values() if not t.failed and not t.unfinished)
        runs.add_backfill_progress(
            b, self.run_id, requests=self.requests, records=self.records, retries=self.retries,
            ok=ok, failed=sum(1 for t in self.tasks.values() if t.failed),
            message=self._progress_text())

    def _progress_text(self) -> str:
        """The backfill's chunks as its card counts them (every chunk of the backfill, done
        in this run or before), then what this run did."""
        chunks = self.plan.chunks
        done = sum(1 for c in chunks if c.state == "done")
        failed = sum(1 for c in chunks if c.state == "failed")
        text = f"backfill {self.bid}: {done} of {len(chunks)} chunks done"
        if failed:
            text += f", {failed} failed"
        if done != self.done or len(chunks) != self.total:
            text += f" ({self.done} of {self.total} in this run)"
        return text

    def _report(self, chunk: Chunk | None) -> None:
        if self.progress is None:
            return
        left = sum(c.requests_expected for c in self.queue)
        self.progress(Progress(self.bid, self.run_id, chunk, self.done, self.failed,
                               self.total, self.requests, left,
                               time.monotonic() - self.started))

    # -- tasks (one per symbol, for the runs pages) -------------------------------------------
    def _enter_task(self, symbol: str) -> None:
        if self.current_task is not None and self.current_task.symbol == symbol:
            return
        self._close_task()
        task = self.tasks.get(symbol) or _Task(symbol, utcnow())
        self.tasks[symbol] = task
        self.current_task = task
        self.log.add(lambda b: runs.add_task(b, {
            "run_id": self.run_id, "symbol": symbol, "state": "running",
            "started_at": task.started_at}))

    def _close_task(self, final: bool = False) -> None:
        t = self.current_task
        if t is None:
            return
        self.current_task = None
        # The run's end (stopped: Ctrl-C, SIGTERM, pause, cancel) with chunks of the symbol
        # still to do: not "ok" (a QA pass: an interrupted backfill counted it enriched).
        t.unfinished = final and any(c.underlying == t.symbol and c.state in ("pending",
                                                                             "running")
                                     for c in self.plan.chunks)
        state = "failed" if t.failed else "interrupted" if t.unfinished else "ok"
        self.log.add(lambda b: runs.add_task(b, {
            "run_id": self.run_id, "symbol": t.symbol,
            "state": state, "started_at": t.started_at,
            "finished_at": utcnow(), "records": t.records, "requests": t.requests,
            "retries": t.retries, "error_class": t.error_class,
            "error_message": t.error}))

    # -- chunk bookkeeping ----------------------------------------------------------------------
    def _mark(self, c: Chunk) -> None:
        row = _chunk_row(self.bid, self.run_id, c, utcnow())
        self.log.add(lambda b: b.upsert("backfill_progress", row))

    def _start(self, c: Chunk) -> None:
        c.state = "running"
        c.attempts += 1
        self._mark(c)

    def _done(self, c: Chunk, records: int) -> None:
        if c.step != "features":  # a features chunk asks no provider
            self.halt.saw([StepResult(c.step, "ok")])
        c.state = "done"
        c.records = records
        c.last_error = None
        self.done += 1
        self.records += records
        if self.current_task is not None:
            self.current_task.records += records
        self._mark(c)
        self._report(c)

    def _fail(self, c: Chunk, exc: BaseException) -> None:
        if c.step != "features":
            self.halt.saw([StepResult(c.step, "failed", error=exc)])
        c.state = "failed"
        c.last_error = f"{error_class_of(exc)}: {str(exc)[:900]}"
        self.failed += 1
        self.failures.append((c.label, c.last_error))
        if self.current_task is not None:
            self.current_task.failed += 1
            self.current_task.error = str(exc)[:1000]
            self.current_task.error_class = error_class_of(exc)
        self._mark(c)
        self._report(c)

    def _take_requests(self) -> int:
        return self.bf.provider.take_requests().requests

    def _count(self, c: Chunk, requests: int, retries: int) -> None:
        c.requests_made += requests
        c.requests_this_run += requests
        c.attempts += retries
        self.requests += requests
        self.retries += retries
        if self.current_task is not None:
            self.current_task.requests += requests
            self.current_task.retries += retries

    def _call(self, c: Chunk, fn: Callable[[], pl.DataFrame]) -> tuple[pl.DataFrame, int]:
        """``fn`` (the provider retries each request); counts requests and retries on the
        chunk and logs each retry."""
        t0 = utcnow()
        try:
            result = fn()
        finally:
            stats = self.bf.provider.take_requests()
            if stats.notes:  # e.g. contracts left out, a listing cut short: on its log row
                self._notes.setdefault(c.key, []).extend(stats.notes)
            for r in stats.retries:
                err = EnrichError(r.message)
                err.error_class = r.error_class
                self._log_fetch(c, "retried", t0, 0, 0, 0, r.attempt, err,
                                f"{r.endpoint}: retrying in {r.wait_s:.1f}s: {r.message}")
            self._count(c, stats.requests, len(stats.retries))
        return result, 1 + len(stats.retries)

    def _log_fetch(self, c: Chunk, status: str, started: dt.datetime, records: int,
                   received: int, rejected: int, attempt: int, exc: BaseException | None,
                   note: str | None = None, requests: int = 0) -> None:
        ds = STEP_DATASET.get(c.step, c.step)
        message = note or (str(exc)[:1000] if exc else None)
        if status != "retried" and (notes := self._notes.pop(c.key, None)):
            message = "; ".join([*notes, *([message] if message else [])])
        row = {
            "run_id": self.run_id, "symbol": c.underlying, "dataset": ds,
            "timeframe": self.timeframe if c.step == "bars" else None, "started_at": started,
            "duration_ms": (utcnow() - started).total_seconds() * 1000, "records": records,
            "received": received, "rejected": rejected, "requests": requests,
            "attempt": attempt, "status": logged_status(status, exc),
            "error_class": error_class_of(exc) if exc else None,
            "error_message": message,
            "window_start": c.window_start, "window_end": c.window_end,
        }
        self.log.add(lambda b: b.insert("fetch_log", row))

    # -- steps ----------------------------------------------------------------------------------
    def _run_chunk(self, c: Chunk) -> None:
        self._start(c)
        t0 = utcnow()
        made_before = c.requests_made
        try:
            if c.step == "features":
                records = self._derive(c)
                self._done(c, records)
                return
            if c.step == "reference":
                self._identify(c)
                return
            why = self._unidentified.get(c.underlying)
            if why is not None:
                raise EnrichError(f"{c.underlying}: its ticker reference was not read "
                                  f"({str(why)[:300]}), so nothing of it is fetched; resume "
                                  f"with `python -m enrich backfill resume {self.bid} "
                                  "--retry-failed` once it can be")
            if c.step != "option_contracts":
                step = self._fetch(c)  # the engine logs the fetch
                if step.error is not None:
                    self._fail(c, step.error)
                else:
                    self._done(c, step.records)
                return
            records, received = self._list_contracts(c)
            rejected = 0
        except Exception as exc:
            if c.step != "features":
                self._log_fetch(c, "failed", t0, 0, 0, getattr(exc, "rejected", 0),
                                getattr(exc, "attempts", 1), exc,
                                requests=c.requests_made - made_before)
            self._fail(c, exc)
            return
        self._log_fetch(c, "ok", t0, records, received, rejected, 1, None,
                        requests=c.requests_made - made_before)
        self._done(c, records)
        if c.step == "option_contracts":
            self._maybe_plan_contract_bars(c.underlying)

    def _identify(self, c: Chunk) -> None:
        """The symbol's ticker reference, asked and kept as a run's first enrichment does
        (``Engine.identify``, which logs the request and corrects a class the reference
        contradicts); its later chunks are clamped to the identity (listing, first ticker
        change, delisting). If it cannot be read — an unknown ticker, a corrected class, a
        failed request — this chunk fails, and so does each later chunk of the symbol without
        a request: fetched unclamped, a recycled ticker's history would be another
        security's (retry with --retry-failed)."""
        res = SymbolResult(c.symbol, "ok")
        try:
            self.bf.engine.identify(c.symbol, self._asset_class(c.symbol), self.log, res,
                                    self.run_id)
        except Exception as exc:
            if isinstance(exc, Cancelled):
                raise
            self._count(c, res.requests, res.retries)
            self._unidentified[c.symbol] = exc
            self._fail(c, exc)
            return
        self._count(c, res.requests, res.retries)
        self._done(c, 0)

    def _fetch(self, c: Chunk) -> StepResult:
        """One chunk through the engine's fetch pipeline (``Engine.fetch_window``)."""
        sym = c.symbol
        res = SymbolResult(sym, "ok")
        step = self.bf.engine.fetch_window(
            sym, self._asset_class(sym), c.step, self.timeframe,
            (c.window_start, c.window_end), self.run_id, self.log, res)
        self._count(c, res.requests, res.retries)
        if c.step in ("bars", "splits", "dividends") and step.error is None:  # tr_close too
            self._closes.pop(sym, None)
            self._changed.add(sym)
            self._requeue_features(sym)
        return step

    def _asset_class(self, symbol: str) -> str:
        if self._classes is None:
            self._classes = dict(self.bf.store.catalog.query(
                "SELECT symbol, asset_class FROM symbols").iter_rows())
        return self._classes.get(symbol) or asset_class_of(symbol)

    def _derive_before_stopping(self) -> None:
        """A pause or a cancel between chunks: the symbols whose bars, splits or dividends
        this run fetched are re-based and their features recomputed now (no request). Left
        for a resume, NVDA's history read ×31 across its splits until then — for good after
        a cancel, which never comes back to it."""
        for c in [q for q in self.queue if q.step == "features" and q.underlying in
                  self._changed]:
            self.queue.remove(c)
            self._enter_task(c.underlying)
            self._run_chunk(c)

    def _requeue_features(self, symbol: str) -> None:
        """Bars, splits or dividends of ``symbol`` changed: its features chunk must run
        (again)."""
        chunk = next((c for c in self.plan.chunks
                      if c.step == "features" and c.underlying == symbol), None)
        if chunk is None or chunk in self.queue:
            return
        chunk.state = "pending"
        self._mark(chunk)
        at = 0
        for i, q in enumerate(self.queue):
            if q.underlying == symbol and STEP_ORDER[q.step] < STEP_ORDER["features"]:
                at = i + 1
        self.queue.insert(at, chunk)
        self.total += 1

    def _derive(self, c: Chunk) -> int:
        """Re-base the symbol's bars on its stored splits and recompute features (the
        engine's derive step, per stored timeframe); returns the bars re-based."""
        res = SymbolResult(c.symbol, "ok")
        rebased = StepResult("bars", "ok")
        res.steps.append(rebased)
        with self.lake.symbol_lock(c.symbol):
            for tf in TIMEFRAMES:
                if self.lake.files("bars", [c.symbol], level=tf):
                    self.bf.engine.derive_step(c.symbol, tf, True, self.run_id, self.log, res,
                                               self._asset_class(c.symbol))
            if rebased.records:
                # The bars checks ran on the chunks as fetched, before this re-basing: a split
                # read as a -75 % jump until the next audit. Checked again as they now stand.
                quality_run.after_fetch(self.lake, self.log, self.run_id, c.symbol,
                                        self._asset_class(c.symbol), [rebased],
                                        self.lake.read_coverage(c.symbol))
        self._closes.pop(c.symbol, None)
        for step in res.steps:
            if step.status == "failed" and step.error is not None:
                raise step.error
        return rebased.records

    # -- options --------------------------------------------------------------------------------
    def _closes_of(self, symbol: str) -> pl.DataFrame:
        if symbol not in self._closes:
            bars = self.lake.read("bars", [symbol], level="1d")
            self._closes[symbol] = as_traded_closes(bars, self.lake.read("splits", [symbol]))
        return self._closes[symbol]

    def _list_contracts(self, c: Chunk) -> tuple[int, int]:
        sym, day = c.symbol, c.window_start
        closes = self._closes_of(sym).filter(pl.col("session") == day)
        if closes.is_empty():
            raise EnrichError(f"no stored close of {sym} on {day.isoformat()}; its bars "
                              "chunk must succeed first (retry with --retry-failed)")
        r = self.plan.request
        close = float(closes["close"][0])
        # Only what can be chosen is listed: the moneyness band, and the expirations asked
        # for or else those up to the last monthly followed.
        window = (day, max(r.expirations) if r.expirations else monthly_horizon(day, r.monthly))
        listed, _ = self._call(c, lambda: self.bf.provider.option_contracts(
            sym, day, strikes=(r.moneyness[0] * close, r.moneyness[1] * close),
            expirations=window))
        pairs = choose_contracts(listed, sym, day, close,
                                 expirations=r.expirations, monthly=r.monthly,
                                 moneyness=r.moneyness)
        # Same batch as the chunk's done mark: the pairs and the mark commit together.
        rows = [{"backfill_id": self.bid, **p} for p in pairs.iter_rows(named=True)]

        def upsert(b: WriteBatch) -> None:
            for row in rows:
                b.upsert("backfill_contracts", row)

        self.log.add(upsert)
        self._pairs.pop(sym, None)
        return pairs.height, listed.height

    def _maybe_plan_contract_bars(self, symbol: str) -> None:
        """Once every listing of ``symbol`` is done, add its contracts' bar chunks."""
        listings = [c for c in self.plan.chunks
                    if c.step == "option_contracts" and c.underlying == symbol]
        if not listings or any(c.state != "done" for c in listings):
            return
        self._maybe_flush(force=True)  # the pairs are in the catalog from here on
        if symbol in self.plan.awaiting_listings:
            self.plan.awaiting_listings.remove(symbol)
        known = {c.key for c in self.plan.chunks}
        new = [c for c in contract_bar_chunks(self._pairs_of(symbol)) if c.key not in known]
        if not new:
            return
        now = utcnow()
        rows = [_chunk_row(self.bid, self.run_id, c, now) for c in new]

        def insert(b: WriteBatch) -> None:
            for row in rows:
                b.insert("backfill_progress", row)

        self.log.add(insert)
        self.plan.chunks.extend(new)
        at = 0
        for i, q in enumerate(self.queue):
            if q.underlying == symbol:
                at = i + 1
        self.queue[at:at] = new
        self.total += len(new)

    def _pairs_of(self, symbol: str) -> pl.DataFrame:
        if symbol not in self._pairs:
            self._pairs[symbol] = self.bf.store.catalog.query(
                "SELECT symbol, as_of, contract, expiration, strike, contract_type, "
                "underlying_price, exercise_style FROM backfill_contracts WHERE backfill_id = ? "
                "AND symbol = ? ORDER BY as_of, contract", [self.bid, symbol]
            ).cast(pl.Schema(PAIR_SCHEMA))
        return self._pairs[symbol]

    def _run_contract_bars(self, batch: list[Chunk]) -> None:
        """Fetch each contract's bars, then compute and write the batch's IV rows at once."""
        und = batch[0].underlying
        fetched: list[tuple[Chunk, pl.DataFrame, dt.datetime, int]] = []
        for i, c in enumerate(batch):
            if i and self._should_stop():
                self.queue[0:0] = batch[i:]  # not started: they stay pending
                break
            self._start(c)
            t0 = utcnow()
            before = c.requests_made
            try:
                bars, _ = self._call(c, functools.partial(
                    self.bf.provider.option_bars, c.symbol, c.window_start, c.window_end))
            except Exception as exc:
                self._log_fetch(c, "failed", t0, 0, 0, 0, getattr(exc, "attempts", 1), exc,
                                requests=c.requests_made - before)
                self._fail(c, exc)
                continue
            fetched.append((c, bars, t0, c.requests_made - before))
        if fetched:
            self._store_contracts(und, fetched)

    def _store_contracts(self, und: str,
                         fetched: list[tuple[Chunk, pl.DataFrame, dt.datetime, int]]) -> None:
        """Compute and write the IV rows of contracts whose bars are fetched; mark each done.

        What the underlying's contracts share (its listed pairs, closes, dividends, splits and
        the rates) is read first: if that fails, every contract fails with the reason."""
        try:
            shared = (self._pairs_of(und), self._closes_of(und),
                      self.lake.read("dividends", [und]), self.lake.read("splits", [und]),
                      self.lake.read("rates", [rates.CURVE]))
        except Exception as exc:
            self._fail_fetched(fetched, exc)
            return
        self._price_contracts(und, fetched, shared)

    def _fail_fetched(self, fetched: list[tuple[Chunk, pl.DataFrame, dt.datetime, int]],
                      exc: BaseException) -> None:
        for c, _, t0, n in fetched:
            self._log_fetch(c, "failed", t0, 0, 0, 0, 1, exc, requests=n)
            self._fail(c, exc)

    def _price_contracts(self, und: str,
                         fetched: list[tuple[Chunk, pl.DataFrame, dt.datetime, int]],
                         shared: tuple[pl.DataFrame, ...],
                         batch_error: BaseException | None = None) -> None:
        """Price ``fetched`` together and write their rows. If that fails for a batch, each
        contract is priced alone from the bars already fetched: one contract's bad bars fail
        that contract only, never the others of its batch, whose requests are spent (each
        one's fetch log then says the batch failed, and why)."""
        pairs, closes, dividends, splits, curves = shared
        try:
            contracts = [c.symbol for c, _, _, _ in fetched]
            bars = pl.concat([b for _, b, _, _ in fetched], how="vertical")
            rows = history_iv(pairs.filter(pl.col("contract").is_in(contracts)), bars, closes,
                              dividends, splits, curves, self.bf.settings.risk_free_rate)
            with self.lake.symbol_lock(und):
                rows = self._without_snapshots(und, rows)
                self.lake.upsert("options_iv", rows)
                store_vol_summary(self.lake, und, rows["as_of"].unique())
            if not rows.is_empty():
                days: list[dt.date] = rows["as_of"].unique().to_list()
                seen = self._priced.get(und)
                if seen is not None:
                    days += list(seen)
                self._priced[und] = (min(days), max(days))
        except Exception as exc:
            if len(fetched) > 1:
                for one in fetched:
                    self._price_contracts(und, [one], shared, exc)
            else:
                self._fail_fetched(fetched, exc)
            return
        note = None if batch_error is None else (
            f"priced alone: its batch of contracts failed ({str(batch_error)[:500]})")
        per_contract = dict(rows.group_by("contract").len().iter_rows())
        for c, bars, t0, n in fetched:
            got = int(per_contract.get(c.symbol, 0))
            self._log_fetch(c, "ok", t0, got, bars.height, 0, 1, None, note=note, requests=n)
            self._done(c, got)

    def _without_snapshots(self, underlying: str, rows: pl.DataFrame) -> pl.DataFrame:
        """Drop computed rows where a chain snapshot (provider or sample greeks) is stored."""
        if rows.is_empty():
            return rows
        months = set(rows["as_of"].dt.strftime("%Y-%m").unique().to_list())
        files = [f for f in self.lake.files("options_iv", [underlying])
                 if f.stem.removeprefix("month=") in months]
        if not files:
            return rows
        stored = self.lake.read_columns("options_iv", files, ["as_of", "contract", "source"])
        snaps = stored.filter(pl.col("source") != "computed").select("as_of", "contract")
        return rows.join(snaps, on=["as_of", "contract"], how="anti")

    # -- the end ---------------------------------------------------------------------------------
    def _check_priced(self) -> None:
        """The options checks of each underlying whose IV rows this run wrote, once, as a
        run's fetch runs them: what it holds (``session_coverage``) is what the coverage
        heatmap and a fill read — before, a backfilled history showed "never fetched" and a
        fill of it took today's snapshot instead."""
        for und, window in self._priced.items():
            try:  # never in the way of the run's final record
                with self.lake.symbol_lock(und):
                    quality_run.after_fetch(self.lake, self.log, self.run_id, und,
                                            self._asset_class(und),
                                            [StepResult("options_iv", "ok", window=window)],
                                            self.lake.read_coverage(und))
            except Exception as exc:  # noqa: BLE001 - an audit repairs what is not checked
                log.warning("backfill %s: the options checks of %s failed: %s", self.bid, und,
                            exc)
        self._priced.clear()

    def _finish(self, state: str | None, message: str | None,
                interrupted: bool = False) -> BackfillSummary:
        if not interrupted:  # Ctrl-C or SIGTERM: close the run first and at once
            self._check_priced()
        self._close_task(final=True)
        left = sum(1 for c in self.plan.chunks if c.state in ("pending", "running"))
        stop = None
        if self.halt.reason is not None:  # it stopped itself: failed, with why, resumable
            state = "failed"
            message = message or (
                f"stopped early: {self.halt.reason}. {self._progress_text()}; "
                f"{self.requests} requests; {left} chunks left as they were — resume with "
                f"`python -m enrich backfill resume {self.bid}` (add --retry-failed for the "
                "failed ones) once that is fixed")
        elif self.cancel.is_set():
            stop = self._stop_reason()
        if state is None:
            if stop == "paused":
                state = "paused"  # resumable on request: neither a failure nor a cancel
            elif stop is not None:
                state = "cancelled"
            elif self.failed == 0:
                state = "succeeded"
            else:
                state = "failed" if self.done == 0 else "partial"
        if message is None:
            message = self._progress_text() + f"; {self.requests} requests"
            if stop == "paused":
                message += f"; paused — resume with `python -m enrich backfill resume " \
                           f"{self.bid}`"
            elif stop is not None:
                message += f"; {stop}"
            elif self.failed:
                message += f"; retry the failed chunks with `python -m enrich backfill " \
                           f"resume {self.bid} --retry-failed`"
        finished = utcnow()
        bid, run_id = self.bid, self.run_id

        def final(b: WriteBatch) -> None:
            self._run_row(b)
            runs.add_backfill_finished(b, run_id, state, finished, message,
                                       json.dumps(_error_counts(self.failures)))
            b.execute("UPDATE backfills SET updated_at = ? WHERE backfill_id = ?",
                      [finished, bid])

        self.log.add(final)
        for attempt in range(3):
            try:
                self.log.flush()
                break
            except EnrichError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
        return BackfillSummary(
            backfill_id=bid, run_id=run_id, state=state, total=self.total, done=self.done,
            failed=self.failed, left=left, requests=self.requests, records=self.records,
            retries=self.retries, message=message, failures=self.failures)

    def _stop_reason(self) -> str:
        status = self.bf.store.catalog.scalar(
            "SELECT status FROM backfills WHERE backfill_id = ?", [self.bid])
        return "paused" if status == "paused" else (
            "cancelled" if status == "cancelled" else "stopped on request")


def _error_counts(failures: Sequence[tuple[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, err in failures:
        cls = err.split(":", 1)[0]
        out[cls] = out.get(cls, 0) + 1
    return out
