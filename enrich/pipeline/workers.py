"""Worker processes for large runs of a provider that computes its rows on the CPU.

Threads suit the network-bound provider: they wait on HTTP (and the shared rate limiter)
together. The offline sample provider instead *computes* every row in Python and numpy, so a
run's threads queue on the GIL (measured: 2 threads enrich only ~1.3× as fast as 1). For such
a provider, a run of many symbols enriches them in a pool of worker processes instead (one
more than the cores), one symbol per task, with the very same ``Engine.enrich_symbol``:

- the lake is shared through the file system: a worker takes the same cross-process symbol
  lock as a thread would, so another run (thread or process) never enriches a symbol at once;
- workers never open the catalog: each returns its log rows (a ``WriteBatch``) with the
  symbol's result, and the run's process buffers and flushes them like its threads' rows;
- a cancel stops handing out symbols; those never started end ``cancelled``, as with threads;
- a worker that dies fails only the symbols then in the workers' hands; a new pool goes on;
- a worker whose run's process is gone (killed, even by SIGKILL) exits at once: nothing is
  left running for a run that no longer exists (its lake writes are atomic, and it writes
  no catalog row).

Workers are forked from a forkserver that imported the engine once (spawned where forkserver
is missing), never from the run's process: it has threads, and polars must not be forked
from a process whose thread pool is running.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import datetime as dt
import multiprocessing as mp
import os
import pickle
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from enrich.config import Settings
from enrich.errors import EnrichError
from enrich.pipeline.run_model import (
    LogBuffer,
    StepResult,
    SymbolResult,
    drain_as_a_cancel,
    fetched_for,
)
from enrich.providers import Provider
from enrich.store.catalog import WriteBatch, pid_alive
from enrich.store.store import Store

# Below this many symbols, starting processes (~1 s) costs more than threads lose.
MIN_SYMBOLS = 64
MAX_POOL_STARTS = 3
PRELOAD = ["enrich.pipeline.worker_boot"]  # loads and warms what a worker needs, before any fork


@dataclass(frozen=True)
class Job:
    """What every task of one run shares, sent once to each worker."""

    settings: Settings
    provider_factory: Callable[..., Provider]
    params: Any  # run_model.RunParams
    run_id: str | None
    not_entitled: frozenset[tuple[str, str]]
    fetched: tuple[Any, ...] = ()  # engine.Fetched: the run's universe-wide answers
    references: dict[str, dict[str, Any]] = field(default_factory=dict)  # Engine.references
    # The engine class a worker builds (``enrich.pipeline.engine.Engine``), passed rather than
    # imported so that this module stays below the engine.
    engine_factory: Callable[..., Any] = field(kw_only=True)
    run_pid: int = field(default_factory=os.getpid)  # the run's process, which built the job


def usable_cpus() -> int:
    """The cores this process may run on (its affinity, as ``nproc`` reports), not the
    machine's: a container or ``taskset`` may allow fewer."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def process_count(provider: Provider, n_symbols: int, workers: int,
                  min_symbols: int = MIN_SYMBOLS) -> int:
    """How many worker processes a run should use: 0 means threads."""
    if provider.rate_limited or provider.process_factory() is None:
        return 0
    cpus = usable_cpus()
    if n_symbols < min_symbols or cpus < 2 or workers < 2:
        return 0
    # One more than the cores: a worker waiting on the disk (creating and fsyncing a symbol's
    # files) leaves its core to the spare one, and the run's process takes a share too
    # (bench/run.py on 2 cores, interleaved runs: 3 processes 48.5-54.2 symbols/s, 2: 43.2-49.8).
    return min(workers, cpus + 1)


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


# -- the worker side -------------------------------------------------------------------------
_worker: dict[str, Any] = {}


def _init(job: Job) -> None:
    # Ctrl-C reaches every process of the terminal's group: the run's process decides (it
    # lets the symbols in hand finish), and a worker ends with it (``_exit_with``).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with(job.run_pid)
    now: dict[str, dt.datetime] = {}

    def clock() -> dt.datetime:
        return now["t"]  # set per task to the run's instant (``_enrich``)

    store = Store(job.settings.data_dir, job.settings.catalog_timeout_s, migrate=False)
    engine = job.engine_factory(store, job.provider_factory(clock=clock), job.settings,
                                clock=clock)
    engine.reads_catalog = False
    engine.references.update(job.references)
    _worker.update(job=job, engine=engine, now=now)


def _exit_with(pid: int) -> None:
    """End this worker as soon as process ``pid`` (the run's) ends, however it ends: a
    worker is a child of the forkserver, not of the run, so no signal tells it."""
    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)  # Linux: readable once the process has ended
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while pid_alive(pid):
                time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-run", daemon=True).start()


def _enrich(symbol: str, asset_class: str, now: dt.datetime) -> tuple[Any, WriteBatch]:
    job: Job = _worker["job"]
    _worker["now"]["t"] = now
    engine = _worker["engine"]
    log = LogBuffer(engine.store)
    res = engine.enrich_symbol(symbol, asset_class, job.params, job.run_id, log,
                               job.not_entitled, fetched=fetched_for(symbol, job.fetched))
    for step in res.steps:  # an error the run's process could not unpickle becomes plain
        if step.error is not None and not _picklable(step.error):
            step.error = EnrichError(f"{type(step.error).__name__}: {step.error}")
    return res, log.take()


def _picklable(exc: BaseException) -> bool:
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return False
    return True


# -- the run's side --------------------------------------------------------------------------
def run_in_processes(
    engine: Any,  # engine.Engine: its clock stamps each task
    targets: list[tuple[str, str]],
    job: Job,
    processes: int,
    log: LogBuffer,
    cancel: threading.Event,
    on_done: Callable[[SymbolResult], None],
    record: Callable[[SymbolResult], SymbolResult],
) -> None:
    """Enrich ``targets`` in ``processes`` workers; ``on_done`` gets each ``SymbolResult``.

    A worker that dies breaks its pool: the symbols then in the workers' hands fail (which
    one killed it cannot be told), and a new pool takes the rest, up to ``MAX_POOL_STARTS``.
    ``record`` writes a lost symbol's task row (``Engine.record_task`` for this run).
    """

    def lost(sym: str, exc: BaseException) -> SymbolResult:
        err = EnrichError(f"enriching {sym} in a worker process failed: "
                          f"{type(exc).__name__}: {exc}")
        res = SymbolResult(sym, "failed", steps=[StepResult("worker", "failed", error=err)])
        return record(res)

    # Workers open the run's own store, never the data directory the settings name (the
    # store may be elsewhere, and a default one is ./data), and by its absolute path.
    job = replace(job, settings=job.settings.with_(data_dir=engine.store.data_dir.resolve()))
    pending = collections.deque(targets)
    broken: BaseException = RuntimeError("no worker pool was started")
    for _ in range(MAX_POOL_STARTS):
        if not pending:
            return
        failure = _drive_pool(engine, pending, job, processes, log, cancel, on_done, lost)
        if failure is None:
            return
        broken = failure
    while pending:  # the pool kept breaking: fail the rest rather than loop
        on_done(lost(pending.popleft()[0], broken))


def _drive_pool(engine: Any, pending: collections.deque, job: Job, processes: int, log: Any,
                cancel: threading.Event, on_done: Callable[[Any], None],
                lost: Callable[[str, BaseException], Any]) -> BaseException | None:
    """Run ``pending`` symbols in one pool until done, or return the error that broke it."""
    running: dict[cf.Future, str] = {}
    broken: BaseException | None = None
    with cf.ProcessPoolExecutor(processes, mp_context=_context(), initializer=_init,
                                initargs=(job,)) as pool:

        def submit_next() -> None:
            while pending and broken is None:
                sym, cls = pending[0]
                if cancel.is_set():
                    pending.popleft()
                    on_done(SymbolResult(sym, "cancelled"))
                    continue
                try:
                    running[pool.submit(_enrich, sym, cls, engine.clock())] = sym
                except cf.process.BrokenProcessPool:
                    return  # the symbol stays pending for the next pool
                pending.popleft()
                return

        def drain() -> None:
            nonlocal broken
            while running:
                done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    sym = running.pop(fut)
                    try:
                        res, batch = fut.result()
                    except cf.process.BrokenProcessPool as exc:  # killed, out of memory
                        broken = exc
                        res = lost(sym, exc)
                    except Exception as exc:  # e.g. a result that would not pickle
                        res = lost(sym, exc)
                    else:
                        log.add(lambda b, batch=batch: b.extend(batch))
                    on_done(res)
                    submit_next()

        for _ in range(2 * processes):  # a little queued work keeps every worker busy
            submit_next()
        # Ctrl-C or SIGTERM: the symbols in the workers' hands finish (workers ignore
        # Ctrl-C) and are recorded, the rest end cancelled.
        drain_as_a_cancel(drain, cancel)
    return broken
