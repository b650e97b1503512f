"""What one run's symbols produce and hand around, apart from the engine that runs them:
each dataset's step result, each symbol's result, a universe-wide answer as a symbol takes it,
and the buffer of catalog rows a run (or a worker process) fills.

Below both ``enrich.pipeline.engine`` and ``enrich.pipeline.workers``, so that neither imports the
other for these (the worker processes run ``Engine.enrich_symbol`` and hand back ``SymbolResult``
and the buffered rows).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from enrich.providers import MarketRequest, MarketRows
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store


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

    def covers(self, window: tuple[dt.date, dt.date]) -> bool:
        return self.request.start <= window[0] and window[1] <= self.request.end


def fetched_for(symbol: str, fetched: Sequence[Fetched]) -> dict[str, Fetched]:
    """The universe-wide answers that serve ``symbol``, by dataset."""
    return {f.request.dataset: f for f in fetched if symbol in f.request.symbols}


@dataclass
class SymbolResult:
    symbol: str
    state: str  # ok | skipped (nothing new) | failed | cancelled
    steps: list[StepResult] = field(default_factory=list)
    records: int = 0
    requests: int = 0
    retries: int = 0
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    @property
    def errors(self) -> list[BaseException]:
        return [s.error for s in self.steps if s.error is not None]


class LogBuffer:
    """Catalog rows buffered in memory and flushed in batches (never across network I/O)."""

    def __init__(self, store: Store):
        self.store = store
        self._batch = WriteBatch()
        self._lock = threading.Lock()

    def add(self, fn: Callable[[WriteBatch], None]) -> None:
        with self._lock:
            fn(self._batch)

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
