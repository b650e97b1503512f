"""What one run's symbols produce and hand around, apart from the engine that runs them:
each dataset's step result, each symbol's result, a universe-wide answer as a symbol takes it,
and the buffer of catalog rows a run (or a worker process) fills.

Below both ``enrich.pipeline.engine`` and ``enrich.pipeline.workers``, so that neither imports the
other for these (the worker processes run ``Engine.enrich_symbol`` and hand back ``SymbolResult``
and the buffered rows).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from enrich.errors import (
    AuthError,
    NotEntitledError,
    NotYetAvailableError,
    ProviderUnreachableError,
    error_class_of,
)
from enrich.providers import MarketRequest, MarketRows
from enrich.store import journal
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store

if TYPE_CHECKING:
    from enrich.pipeline.refresh import RefreshPlan


@dataclass
class StepResult:
    dataset: str
    status: str  # ok | up_to_date | failed | skipped
    records: int = 0
    error: BaseException | None = None
    window: tuple[dt.date, dt.date] | None = None  # the session window fetched


@dataclass(frozen=True)
class Fetched:
    """A universe-wide answer for one dataset, as a symbol's step takes it (``rows``), or the
    error that request ended with (then every symbol it served fails that step)."""

    request: MarketRequest
    rows: MarketRows | None
    error: BaseException | None = None
    complete: bool = True  # False: the provider noted a truncation (no rows may be removed)

    def covers(self, window: tuple[dt.date, dt.date]) -> bool:
        return self.request.start <= window[0] and window[1] <= self.request.end


def fetched_for(symbol: str, fetched: Sequence[Fetched]) -> dict[str, Fetched]:
    """The universe-wide answers that serve ``symbol``, by dataset."""
    return {f.request.dataset: f for f in fetched if symbol in f.request.symbols}


@dataclass
class SymbolResult:
    symbol: str
    state: str  # ok | skipped (nothing new) | failed | cancelled | not_attempted (``Halt``)
    steps: list[StepResult] = field(default_factory=list)
    records: int = 0
    requests: int = 0
    retries: int = 0
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def errors(self) -> list[BaseException]:
        return [s.error for s in self.steps if s.error is not None]

    @property
    def step_failed(self) -> bool:
        """Whether a step failed for a reason other than the plan's limits."""
        return any(s.status == "failed" and not plan_limited(s.error) for s in self.steps)


def plan_limited(error: BaseException | None) -> bool:
    """Whether a step's error is a limit of the plan — a dataset it does not include, history
    beyond its window, a session it does not serve yet: facts shown as *not entitled* or
    *due*, not failures of the symbol or its run."""
    return isinstance(error, (NotEntitledError, NotYetAvailableError))


def logged_status(status: str, error: BaseException | None) -> str:
    """A step's status as the fetch log records it: a plan's limit (``plan_limited``) is a
    fact, not a failure — logged ``skipped``, with its class, as a dataset already known not
    entitled is."""
    return "skipped" if status == "failed" and plan_limited(error) else status


def drain_as_a_cancel(drain: Callable[[], None], cancel: threading.Event) -> None:
    """``drain()`` (wait for a run's symbols and take their results); on Ctrl-C or SIGTERM
    (``KeyboardInterrupt``) act as a cancel: set ``cancel`` so no symbol more starts, drain
    again (those in hand finish and are recorded, the queued ones end cancelled), then let
    the interrupt go on. A second interrupt stops the wait."""
    try:
        drain()
    except KeyboardInterrupt:
        cancel.set()
        drain()
        raise


class LogBuffer:
    """Catalog rows buffered in memory and flushed in batches (never across network I/O)."""

    def __init__(self, store: Store):
        self.store = store
        self._batch = WriteBatch()
        self._lock = threading.Lock()

    def add(self, fn: Callable[[WriteBatch], None]) -> None:
        with self._lock:
            fn(self._batch)

    def durable(self, lake_file: Callable[[], tuple[str | None, list[int] | None]]) -> Durable:
        """Rows about a lake write still to come (restatements), to add once it is done:
        see ``Durable``."""
        return Durable(self, lake_file)

    def take(self) -> WriteBatch:
        """The buffered rows, leaving the buffer empty (a worker process hands them back)."""
        with self._lock:
            batch, self._batch = self._batch, WriteBatch()
        return batch

    def flush(self, then: tuple[str, Sequence[Any]] | None = None) -> Any:
        """Write the buffered rows; ``then`` as in ``Catalog.write``."""
        batch = self.take()
        try:
            return self.store.catalog.write(batch, then)
        except BaseException:
            with self._lock:  # keep the rows for the next flush
                batch.extend(self._batch)
                self._batch = batch
            raise


class Durable:
    """Catalog rows about one lake write, journaled before it (``enrich.store.journal``: a
    crash between the write and the flush does not lose them) and added to the ``LogBuffer``
    only once the write is done (``commit``); a write that fails ``discard``s them (nothing
    changed). ``lake_file()`` says which file the write replaces (relative to the lake's
    root) and its identity before it (``Lake.file_state``); asked at the first rows (before
    the write), and only if there are any (most steps have none)."""

    def __init__(self, buffer: LogBuffer,
                 lake_file: Callable[[], tuple[str | None, list[int] | None]]):
        self._buffer = buffer
        self._lake_file = lake_file
        self._entry: tuple[str | None, list[int] | None] | None = None
        self._parts: list[WriteBatch] = []

    def add_durable(self, fn: Callable[[WriteBatch], None]) -> None:
        """Journal the rows ``fn`` adds (inserts only) now; add them to the buffer on
        ``commit``."""
        part = WriteBatch()
        fn(part)
        if part.empty():
            return
        if part.upserts or part.statements:
            raise ValueError("the journal holds inserts only")
        if self._entry is None:
            self._entry = self._lake_file()
        entry = journal.Entry(part.inserts, *self._entry)
        part.journals.append(journal.write(self._buffer.store.catalog.journal_dir, entry))
        self._parts.append(part)

    def commit(self) -> None:
        parts, self._parts = self._parts, []
        if not parts:
            return

        def add(batch: WriteBatch) -> None:
            for part in parts:
                batch.extend(part)

        self._buffer.add(add)

    def discard(self) -> None:
        journal.remove(path for part in self._parts for path in part.journals)
        self._parts = []


FINAL_STATES = ("succeeded", "partial", "failed", "cancelled", "paused", "interrupted",
                "missed")


@dataclass
class RunParams:
    symbols: list[str] | None = None
    datasets: list[str] | None = None
    asset_class: str | None = None
    timeframe: str = "1d"
    lookback_days: int | None = None  # first fetch window; default: settings.history_years
    universe_wide: bool = True  # False: every symbol its own requests (the reference path)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if out.get("universe_wide") is True:
            del out["universe_wide"]  # the default: stored params stay as they were
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any] | str | None) -> RunParams:
        fields: dict[str, Any] = (json.loads(data) if isinstance(data, str) else data) or {}
        return cls(**fields)


@dataclass
class RunSummary:
    run_id: str
    state: str
    total: int
    ok: int
    failed: int
    skipped: int
    records: int
    requests: int
    retries: int
    errors_by_class: dict[str, int]
    started_at: dt.datetime
    finished_at: dt.datetime
    results: list[SymbolResult] = field(default_factory=list)
    requests_planned: int = 0
    plan: RefreshPlan | None = None
    stopped: str | None = None  # why the run stopped before its last symbols (``Halt``)
    not_attempted: int = 0  # symbols it then left as they were
    curve_error: str | None = None  # the Treasury curve's fetch failed: "class: message"

    @property
    def failed_symbols(self) -> list[str]:
        return [r.symbol for r in self.results if r.state == "failed"]


# How the message of a run that stopped itself (``Halt``) begins.
STOPPED_EARLY = "stopped early:"


def describe(summary: RunSummary) -> str:
    """One plain sentence about a run's outcome (and the Treasury curve's failure, if any:
    option IVs then took the newest stored curve or ``ENRICH_RISK_FREE_RATE``)."""
    said = _describe(summary)
    if summary.curve_error:
        said += (f"; the Treasury curve was not fetched ({summary.curve_error}): option IVs "
                 "used the newest stored curve or ENRICH_RISK_FREE_RATE")
    return said


def _describe(summary: RunSummary) -> str:
    if summary.total == 0 and summary.state in FINAL_STATES and summary.state != "succeeded":
        return f"{summary.state} before it started: nothing was fetched"
    if summary.total == 0:
        return "no symbols to enrich: add some with `python -m enrich symbols add`"
    if summary.state == "cancelled":
        # Every symbol that ended counts, an up-to-date one too (the Runs page's tiles add
        # them up: "192 of 341" beside 191 enriched, 24 up to date and 1 failed was wrong).
        # (``skipped`` counts the symbols the cancel left unrun too.)
        up_to_date = sum(r.state == "skipped" for r in summary.results)
        ended = summary.ok + up_to_date + summary.failed
        parts = [f"{summary.ok} enriched", f"{up_to_date} up to date",
                 *_failed_part(summary)]
        return (f"cancelled after {ended} of {summary.total} symbols: " + ", ".join(parts)
                + f"; {summary.total - ended} not started")
    if summary.stopped:
        parts = [f"{summary.ok} enriched", *_failed_part(summary)]
        if summary.not_attempted:
            parts.append(f"{summary.not_attempted} not attempted (left as they were)")
        return (f"{STOPPED_EARLY} {summary.stopped}. {summary.records:,} rows written; "
                + ", ".join(parts))
    if summary.records == 0 and summary.failed == 0:
        return ("nothing new to fetch: the symbol is up to date" if summary.total == 1 else
                f"nothing new to fetch: all {summary.total:,} symbols are up to date")
    parts = [f"{summary.ok} enriched", f"{summary.skipped} up to date",
             *_failed_part(summary)]
    return f"{summary.records:,} rows written; " + ", ".join(parts) + _advice(summary)


def _failed_part(summary: RunSummary) -> list[str]:
    """``N failed (class: count, …)``, if any symbol failed: the failed symbols each error
    class failed (a symbol with two steps failing alike counts once; it said "4 failed
    (unknown_ticker: 7)", steps beside symbols). Without the results: the steps by class."""
    if not summary.failed:
        return []
    failed = [r for r in summary.results if r.state == "failed"]
    by_class = Counter(c for r in failed for c in {error_class_of(e) for e in r.errors})
    if not by_class:  # results without their errors (a worker's): the steps by class
        by_class = Counter(summary.errors_by_class)
    errs = ", ".join(f"{k}: {v}" for k, v in sorted(by_class.items()))
    return [f"{summary.failed} failed ({errs})"]


def _advice(summary: RunSummary) -> str:
    """What to do about the failures that say it themselves (none: '')."""
    if summary.failed and "rate_limited" in summary.errors_by_class:
        return (". The provider refused requests beyond the plan's rate (HTTP 429) after "
                "their retries: set ENRICH_RATE_LIMIT_PER_MIN to the plan's requests per "
                "minute; the next run fetches what is missing")
    return ""


# Symbols (or universe-wide requests) in a row that reached no provider before a run stops.
UNREACHABLE_STREAK = 3


class Halt:
    """Whether a run stops before its remaining symbols, and why, from what its steps met.

    Two things make every further request of the run pointless: the provider refusing the
    key (``AuthError``: it would refuse each of them, at the plan's pace — hours of refusals
    for a large universe), and the provider out of reach (``ProviderUnreachableError``, each
    request after its retries) for ``UNREACHABLE_STREAK`` symbols in a row with no answer
    between them (a network down: each symbol would spend its retries on it). The first
    reason is kept and ``cancel`` is set, so no further symbol starts; what they hold is
    left as it was, and the next run fetches what is missing. Thread-safe.
    """

    def __init__(self, cancel: threading.Event):
        self._cancel = cancel
        self._lock = threading.Lock()
        self._streak = 0
        self.reason: str | None = None

    def saw(self, steps: Sequence[StepResult]) -> None:
        """Take account of what one symbol's (or one universe-wide request's) steps met."""
        errors = [s.error for s in steps if s.error is not None]
        answered = any(s.status == "ok" for s in steps) or any(
            not isinstance(e, ProviderUnreachableError) for e in errors)
        with self._lock:
            if self.reason is not None:
                return
            refused = next((e for e in errors if isinstance(e, AuthError)), None)
            if refused is not None:
                self.reason = (f"{refused} — every request with this key would be refused, "
                               "so the run stopped at the first refusal")
            elif answered:
                self._streak = 0
            elif errors:
                self._streak += 1
                if self._streak >= UNREACHABLE_STREAK:
                    self.reason = (f"{errors[0]} — the provider could not be reached "
                                   f"{self._streak} times in a row; run again once it can "
                                   "be: what is missing is fetched then")
            if self.reason is not None:
                self._cancel.set()


def stops_symbol(error: BaseException | None) -> bool:
    """Whether a step's error makes the symbol's further requests pointless (its remaining
    datasets are not attempted): the key refused, or the provider out of reach."""
    return isinstance(error, (AuthError, ProviderUnreachableError))
