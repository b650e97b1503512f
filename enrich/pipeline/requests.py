"""Run requests that need no running service (the CLI's): parameters checked at the boundary,
a failed run's retry, a cancel through the catalog, and a run handed over to the process that
owns the schedule (``python -m enrich run --background``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

from enrich.config import MAX_LOOKBACK_DAYS
from enrich.errors import ConfigError, EnrichError, StateError
from enrich.pipeline import scheduler as sched
from enrich.pipeline.run_model import FINAL_STATES, RunParams
from enrich.schemas import FETCHED
from enrich.store import runs
from enrich.store.catalog import Catalog, WriteBatch, transaction
from enrich.store.store import Store
from enrich.symbols import ASSET_CLASSES, validate_symbol

TIMEFRAMES = ("1d", "1h", "5m")


class UnknownRunError(EnrichError):
    error_class = "unknown_run"


class NoLiveSchedulerError(EnrichError):
    error_class = "no_scheduler"


# -- run requests, usable without a Services (the CLI) --------------------------------------
def make_params(symbols: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                asset_class: str | None = None, timeframe: str = "1d",
                lookback: int | dt.timedelta | None = None) -> RunParams:
    """Validated run parameters; raises ``InvalidSymbolError`` / ``ConfigError`` at once."""
    if isinstance(symbols, str):
        symbols = [s for s in symbols.split(",") if s.strip()]
    syms = [validate_symbol(s) for s in symbols] if symbols else None
    if datasets:
        bad = [d for d in datasets if d not in FETCHED]
        if bad:
            raise ConfigError(f"unknown dataset(s) {', '.join(bad)}; "
                              f"choose from {', '.join(FETCHED)}")
    if asset_class is not None and asset_class not in ASSET_CLASSES:
        raise ConfigError(f"unknown asset class {asset_class!r}; "
                          f"choose from {', '.join(ASSET_CLASSES)}")
    if timeframe not in TIMEFRAMES:
        raise ConfigError(f"unknown timeframe {timeframe!r}; choose from {', '.join(TIMEFRAMES)}")
    if isinstance(lookback, dt.timedelta):
        lookback = lookback.days
    if lookback is not None and not 1 <= lookback <= MAX_LOOKBACK_DAYS:
        raise ConfigError(f"lookback must be 1..{MAX_LOOKBACK_DAYS} days, got {lookback}")
    return RunParams(symbols=syms, datasets=list(datasets) if datasets else None,
                     asset_class=asset_class, timeframe=timeframe, lookback_days=lookback)


class RetryActiveError(StateError):
    """A run is retried once at a time: a second retry would fetch the same symbols again."""

    def __init__(self, run_id: str, retry_id: str):
        super().__init__(f"run {run_id} is already being retried by run {retry_id}; wait for "
                         "that run to end")
        self.retry_id = retry_id


def retry_params(catalog: Catalog, run_id: str) -> RunParams:
    """The parameters of ``run_id`` restricted to the symbols that failed in it; refused
    while a retry of it is queued or running."""
    run, failed = runs.params_and_failed(catalog, run_id)
    if run.is_empty():
        raise UnknownRunError(f"no run {run_id}; list runs with `python -m enrich runs`")
    state = run["state"][0]
    if state not in FINAL_STATES:
        raise StateError(f"run {run_id} is still {state}; retry its failures once it ends")
    if failed.is_empty():
        raise StateError(f"run {run_id} ended {state} with no failed symbols to retry")
    retrying = runs.active_retry_of(catalog, run_id)
    if retrying:
        raise RetryActiveError(run_id, retrying)
    params = RunParams.from_json(run["params"][0])
    params.symbols = failed["symbol"].to_list()
    return params


def request_cancel(catalog: Catalog, run_id: str, by: str, now: dt.datetime) -> str:
    """Ask a run to stop between symbols; returns the state the run was in.

    A ``queued`` run is cancelled outright; a ``running`` one gets ``cancel_requested_at``,
    which its owner (any process) polls. Finished runs are left alone.
    """
    with catalog.connect() as con:
        state = runs.state_in(con, run_id)
        if state is None:
            raise UnknownRunError(f"no run {run_id}; list runs with `python -m enrich runs`")
        if state not in ("queued", "running"):
            return state
        with transaction(con):
            runs.request_cancel_in(con, run_id, now, by)
            if state == "queued":
                runs.cancel_queued_in(con, run_id, now, f"cancelled by {by} before it started")
    return state


def hand_off_run(store: Store, params: RunParams, provider: str, now: dt.datetime) -> tuple[
        str, sched.SchedulerState]:
    """Queue a run for the live schedule owner (``serve``); raises if there is none.

    The row carries the owner's pid, so only that process picks it up, and a run handed to a
    process that then dies is marked interrupted like any other orphan.
    """
    run_id = str(uuid.uuid4())
    with store.catalog.connect() as con:
        owner = sched.state_from(con)
        if not owner.is_live(now):
            raise NoLiveSchedulerError(
                "no live `python -m enrich serve` for this data directory (scheduler "
                f"{owner.liveness(now)}); start one, or run without --background")
        b = WriteBatch()
        runs.add_run(b, {
            "run_id": run_id, "kind": "cli", "state": "queued", "params": params.to_json(),
            "provider": provider, "requested_at": now, "pid": owner.pid, "host": owner.host,
            "heartbeat_at": now, "handoff": True,
        })
        with transaction(con):
            b.apply(con)
    return run_id, owner
