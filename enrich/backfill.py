"""Backfills: resumable, quota-aware history for every dataset.

A backfill fills one dataset (bars, dividends, splits, earnings, news or options) for some
symbols over a window of session dates. It is a run in ``runs`` (kind ``backfill``), so the
history and health pages show it, and its work lives in the catalog:

    backfills           one row per backfill: the request, its window, paused/cancelled
    backfill_progress   one row per chunk: pending | running | done | failed, attempts,
                        requests expected and made, records, last error
    backfill_contracts  for options: the contracts followed on each session

Identity. A backfill is named by what it fetches: ``backfill_id`` is a hash of (dataset,
symbols, window, timeframe, options choices, chunking). Running the same command again the
same day therefore continues the same backfill; ``--resume`` finds the newest unfinished one
with the same request even after its window has moved on a day.

Plan. The work is cut into chunks so that **each fetch chunk costs exactly one provider
request** (``REQUESTS_PER_CHUNK``). The planner and the executor share that model, and the
chunk sizes are what make it hold:

    step              one chunk is                            one request because
    splits            the window (bars/options: to today)     a few rows; limit 5,000
    dividends         the window                              ~4 a year; limit 5,000
    earnings          the window                              4 a year; limit 1,000
    bars (1d)         a calendar year                         <= 253 rows; limit 50,000
    bars (1h, 5m)     a calendar month                        <= ~20,000 minute aggregates
    news              a calendar month                        < 1,000 articles (the limit)
    option_contracts  one underlying × one session            one page of contracts
    option_bars       one contract, over its chosen sessions  <= 253 rows
    features          re-base bars on splits, recompute       no request
                      features (after bars or splits)

The model can only be exceeded by what no plan can know: a month with more than 1,000
articles for one ticker, a session listing more than 1,000 contracts, the first call of a
process that finds a replacement endpoint missing and falls back (Massive), or retries. The
executor records ``requests_made`` next to ``requests_expected`` for every chunk, so any
difference shows. An options backfill is planned in two phases: the listing chunks first;
the contracts' bar chunks once every listing of that underlying is in (``Plan.
awaiting_listings`` names the underlyings whose contract requests are not counted yet; a
dry run after the listings is exact).

Execution. Chunks run in order, one at a time, with backfill requests queued on the shared
per-process rate limiter at ``BACKFILL_PRIORITY``, below any scheduled or manual run. A chunk
is marked done only after its data is in the lake; lake writes are idempotent upserts, so a
process killed at any moment redoes at most the chunks whose marks were not flushed yet (at
most ``FLUSH_S`` seconds of work), and the result equals an uninterrupted backfill. A chunk
that keeps failing (after the retry policy) is marked failed with its attempts and last
error; ``retry_failed`` runs only those. Bars and splits chunks are followed by the
symbol's ``features`` chunk, which calls the engine's own derive step: bars are re-based on
every stored split (logged in ``compute_log`` with status ``rebased``) and features
recomputed. Cancellation (``pause``/``cancel``, from any process through the catalog) stops
between chunks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from enrich import calendars
from enrich.catalog import Catalog, WriteBatch, bump_version, frame, host_and_pid, utcnow
from enrich.config import Settings
from enrich.engine import (
    FINAL_STATES,
    Engine,
    LogBuffer,
    StepResult,
    SymbolResult,
    cancel_requested,
    mark_interrupted_runs,
)
from enrich.errors import ConfigError, EnrichError, error_class_of
from enrich.options_history import (
    DEFAULT_MONEYNESS,
    DEFAULT_MONTHLY,
    PAIR_SCHEMA,
    as_traded_closes,
    choose_contracts,
    history_iv,
)
from enrich.providers import Provider
from enrich.retry import RetryPolicy
from enrich.store import Store
from enrich.symbols import DATASETS_BY_CLASS, calendar_for, validate_symbol
from enrich.validate import check

DATASETS = ("bars", "dividends", "splits", "earnings", "news", "options")
TIMEFRAMES = ("1d", "1h", "5m")
BACKFILL_PRIORITY = -1  # below every run's requests (the engine's provider queues at >= 0)
SPLITS_SINCE = dt.date(2000, 1, 1)  # "all history" for splits
REQUESTS_PER_CHUNK = 1  # per fetch chunk; see the module docstring
FLUSH_S = 1.0  # buffered chunk marks and log rows reach the catalog this often
CANCEL_POLL_S = 2.0  # how often a running backfill looks for a cancel request
OPTION_BATCH = 25  # contracts whose IV rows are computed and written together
MAX_INTRADAY_CHUNK_DAYS = 31

# Steps (backfill_progress.dataset) in the order they run for one symbol.
STEP_ORDER = {"splits": 0, "dividends": 1, "earnings": 2, "news": 3, "bars": 4, "features": 5,
              "option_contracts": 6, "option_bars": 7}
FETCH_STEPS = ("splits", "dividends", "earnings", "news", "bars", "option_contracts",
               "option_bars")
# The lake dataset each step writes (fetch_log.dataset).
STEP_DATASET = {"option_contracts": "options_iv", "option_bars": "options_iv"}


class BackfillBusyError(EnrichError):
    error_class = "backfill_busy"


class UnknownBackfillError(EnrichError):
    error_class = "unknown_backfill"


# -- requests -------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackfillRequest:
    """What to backfill. Empty ``symbols`` means the active universe (``--all``).

    The window ends at ``until`` or the latest completed session; it starts ``years`` or
    ``days`` before that, or at ``since``; with none of them, the dataset's default
    (``DEFAULT_SPANS``). ``expirations``, ``moneyness`` and ``monthly`` apply to options;
    ``chunk_days`` replaces the calendar chunking of windowed steps by fixed-size windows.
    """

    dataset: str
    symbols: tuple[str, ...] = ()
    years: int | None = None
    days: int | None = None
    since: dt.date | None = None
    until: dt.date | None = None
    timeframe: str = "1d"
    expirations: tuple[dt.date, ...] = ()
    moneyness: tuple[float, float] = DEFAULT_MONEYNESS
    monthly: int = DEFAULT_MONTHLY
    chunk_days: int | None = None

    def validated(self) -> BackfillRequest:
        """This request with canonical symbols; ``ConfigError`` saying what to fix."""
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; choose from "
                              f"{', '.join(DATASETS)}")
        if sum(x is not None for x in (self.years, self.days, self.since)) > 1:
            raise ConfigError("give at most one of --years, --days and --since")
        for name in ("years", "days", "chunk_days"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {v}")
        if self.timeframe not in TIMEFRAMES:
            raise ConfigError(f"unknown timeframe {self.timeframe!r}; choose from "
                              f"{', '.join(TIMEFRAMES)}")
        if self.dataset == "bars" and self.timeframe != "1d" and self.chunk_days \
                and self.chunk_days > MAX_INTRADAY_CHUNK_DAYS:
            raise ConfigError(f"--chunk-days {self.chunk_days} is too large for "
                              f"{self.timeframe} bars: at most {MAX_INTRADAY_CHUNK_DAYS}, "
                              "so that every chunk is one request")
        lo, hi = self.moneyness
        if not 0 < lo < 1 < hi:
            raise ConfigError(f"moneyness band {lo:g}-{hi:g}: use 0 < low < 1 < high, "
                              "e.g. 0.8:1.2")
        if self.monthly < 1:
            raise ConfigError("--monthly must be at least 1")
        if (self.expirations or self.moneyness != DEFAULT_MONEYNESS
                or self.monthly != DEFAULT_MONTHLY) and self.dataset != "options":
            raise ConfigError("--expiration, --moneyness and --monthly apply to options only")
        symbols = tuple(sorted({validate_symbol(s) for s in self.symbols}))
        return BackfillRequest(**{**self.__dict__, "symbols": symbols,
                                  "expirations": tuple(sorted(set(self.expirations)))})

    @property
    def span_label(self) -> str:
        if self.years is not None:
            return f"{self.years} years"
        if self.days is not None:
            return f"{self.days} days"
        if self.since is not None:
            return f"since {self.since.isoformat()}"
        return DEFAULT_SPANS[self.dataset][0]

    def choices(self) -> dict[str, Any]:
        """What makes two requests the same work, apart from the dates."""
        out: dict[str, Any] = {"dataset": self.dataset,
                               "symbols": list(self.symbols) or ["*"]}
        if self.dataset == "bars":
            out["timeframe"] = self.timeframe
        if self.dataset == "options":
            out.update(expirations=[e.isoformat() for e in self.expirations],
                       moneyness=list(self.moneyness), monthly=self.monthly)
        if self.chunk_days:
            out["chunk_days"] = self.chunk_days
        return out

    def spec(self) -> dict[str, Any]:
        """The request as stored in ``backfills.spec`` (``from_spec`` reads it back)."""
        return {**self.choices(), "span": self.span_label,
                "until": self.until.isoformat() if self.until else None}

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | str, window: tuple[dt.date, dt.date]
                  ) -> BackfillRequest:
        """The request of a stored backfill, pinned to its window."""
        if isinstance(spec, str):
            spec = json.loads(spec)
        syms = tuple(s for s in spec.get("symbols", []) if s != "*")
        return cls(
            dataset=spec["dataset"], symbols=syms, since=window[0], until=window[1],
            timeframe=spec.get("timeframe", "1d"),
            expirations=tuple(dt.date.fromisoformat(e) for e in spec.get("expirations", [])),
            moneyness=tuple(spec.get("moneyness", DEFAULT_MONEYNESS)),  # type: ignore[arg-type]
            monthly=int(spec.get("monthly", DEFAULT_MONTHLY)),
            chunk_days=spec.get("chunk_days"),
        )


# dataset: (label, how far back by default)
DEFAULT_SPANS: dict[str, tuple[str, Callable[[dt.date], dt.date]]] = {
    "bars": ("10 years", lambda end: _years_before(end, 10)),
    "dividends": ("10 years", lambda end: _years_before(end, 10)),
    "earnings": ("10 years", lambda end: _years_before(end, 10)),
    "splits": (f"since {SPLITS_SINCE.isoformat()}", lambda end: SPLITS_SINCE),
    "news": ("1 year", lambda end: _years_before(end, 1)),
    "options": ("30 days", lambda end: end - dt.timedelta(days=30)),
}


def _years_before(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


# -- chunks and plans -----------------------------------------------------------------------
@dataclass
class Chunk:
    step: str  # backfill_progress.dataset: a STEP_ORDER key
    symbol: str  # the symbol, or the OCC ticker for option_bars
    window_start: dt.date
    window_end: dt.date
    requests_expected: int
    underlying: str
    state: str = "pending"
    attempts: int = 0
    requests_made: int = 0
    records: int = 0
    last_error: str | None = None

    @property
    def key(self) -> tuple[str, str, dt.date]:
        return (self.step, self.symbol, self.window_start)

    @property
    def label(self) -> str:
        if self.window_start == self.window_end:
            when = self.window_start.isoformat()
        else:
            when = f"{self.window_start.isoformat()}..{self.window_end.isoformat()}"
        return f"{self.symbol} {self.step} {when}"


def requests_for(step: str) -> int:
    """Requests one chunk of ``step`` costs (the model the planner and executor share)."""
    return REQUESTS_PER_CHUNK if step in FETCH_STEPS else 0


@dataclass
class Plan:
    backfill_id: str
    request: BackfillRequest
    symbols: list[str]
    window_start: dt.date
    window_end: dt.date
    chunks: list[Chunk]
    provider: str
    rate_limited: bool
    rate_limit_per_min: float
    exists: bool = False  # the backfill is already in the catalog
    notes: list[str] = field(default_factory=list)
    awaiting_listings: list[str] = field(default_factory=list)

    def todo(self, retry_failed: bool = False) -> list[Chunk]:
        """Chunks a run would execute, in execution order."""
        want = ("failed",) if retry_failed else ("pending", "running", "failed")
        return [c for c in self.chunks if c.state in want]

    def requests_expected(self, retry_failed: bool = False) -> int:
        return sum(c.requests_expected for c in self.todo(retry_failed))

    def eta_s(self, retry_failed: bool = False) -> float:
        """Seconds the expected requests take at the configured rate."""
        return self.requests_expected(retry_failed) * 60.0 / self.rate_limit_per_min

    def by_step(self, retry_failed: bool = False) -> pl.DataFrame:
        """Per symbol and step: chunks in total, done, to run, and requests to make."""
        todo = {id(c) for c in self.todo(retry_failed)}
        rows = [{"symbol": c.underlying, "step": c.step, "done": c.state == "done",
                 "todo": id(c) in todo,
                 "requests": c.requests_expected if id(c) in todo else 0}
                for c in self.chunks]
        schema = {"symbol": pl.String, "step": pl.String, "done": pl.Boolean,
                  "todo": pl.Boolean, "requests": pl.Int64}
        f = pl.DataFrame(rows, schema=schema)
        order = {s: i for i, s in enumerate(self.symbols)}
        return (f.group_by("symbol", "step", maintain_order=True).agg(
            chunks=pl.len(), done=pl.col("done").sum(), to_run=pl.col("todo").sum(),
            requests=pl.col("requests").sum())
            .with_columns(_o=pl.col("symbol").replace_strict(order, default=len(order)),
                          _s=pl.col("step").replace_strict(STEP_ORDER, default=99))
            .sort("_o", "_s").drop("_o", "_s"))

    def describe(self) -> str:
        r = self.request
        what = r.dataset + (f" {r.timeframe}" if r.dataset == "bars" else "")
        syms = ", ".join(self.symbols) if len(self.symbols) <= 8 else \
            f"{', '.join(self.symbols[:8])} and {len(self.symbols) - 8} more"
        return (f"{what} for {syms or 'no symbols'}, {self.window_start.isoformat()} to "
                f"{self.window_end.isoformat()} ({r.span_label})")

    def to_json(self, retry_failed: bool = False) -> dict[str, Any]:
        todo = self.todo(retry_failed)
        return {
            "backfill_id": self.backfill_id, "dataset": self.request.dataset,
            "symbols": self.symbols, "window_start": self.window_start,
            "window_end": self.window_end, "span": self.request.span_label,
            "provider": self.provider, "rate_limited": self.rate_limited,
            "rate_limit_per_min": self.rate_limit_per_min, "exists": self.exists,
            "chunks_total": len(self.chunks),
            "chunks_done": sum(c.state == "done" for c in self.chunks),
            "chunks_to_run": len(todo),
            "requests_expected": self.requests_expected(retry_failed),
            "eta_s": self.eta_s(retry_failed),
            "awaiting_listings": self.awaiting_listings, "notes": self.notes,
            "by_step": self.by_step(retry_failed).to_dicts(),
            "chunks": [{"step": c.step, "symbol": c.symbol, "underlying": c.underlying,
                        "window_start": c.window_start, "window_end": c.window_end,
                        "state": c.state, "requests_expected": c.requests_expected}
                       for c in todo],
        }


def backfill_id_for(request: BackfillRequest, window: tuple[dt.date, dt.date]) -> str:
    ident = {**request.choices(), "window": [window[0].isoformat(), window[1].isoformat()]}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return f"bf-{digest[:12]}"


def _resolve_symbols(catalog: Catalog, request: BackfillRequest) -> list[tuple[str, str]]:
    rows = catalog.query("SELECT symbol, asset_class, active FROM symbols ORDER BY symbol")
    known = {s: (c, a) for s, c, a in rows.iter_rows()}
    if not request.symbols:
        return [(s, c) for s, (c, a) in known.items() if a]
    missing = [s for s in request.symbols if s not in known]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not in the universe; add with "
                          f"`python -m enrich symbols add {' '.join(missing)}`")
    return [(s, known[s][0]) for s in request.symbols]


def _windows(start: dt.date, end: dt.date, unit: str, chunk_days: int | None
             ) -> list[tuple[dt.date, dt.date]]:
    """[start, end] cut into calendar years/months (or fixed ``chunk_days``), inclusive."""
    out = []
    ws = start
    while ws <= end:
        if chunk_days:
            we = ws + dt.timedelta(days=chunk_days - 1)
        elif unit == "year":
            we = dt.date(ws.year, 12, 31)
        elif unit == "month":
            nxt = dt.date(ws.year + ws.month // 12, ws.month % 12 + 1, 1)
            we = nxt - dt.timedelta(days=1)
        else:
            we = end
        we = min(we, end)
        out.append((ws, we))
        ws = we + dt.timedelta(days=1)
    return out


def _symbol_chunks(request: BackfillRequest, symbol: str, asset_class: str, start: dt.date,
                   end: dt.date, today: dt.date) -> tuple[list[Chunk], str | None]:
    ds = request.dataset
    applicable = DATASETS_BY_CLASS.get(asset_class, ("bars",))
    if (ds if ds != "options" else "options_iv") not in applicable:
        return [], f"{symbol}: {asset_class} have no {ds}; skipped"
    out: list[Chunk] = []

    def add(step: str, windows: Iterable[tuple[dt.date, dt.date]]) -> None:
        out.extend(Chunk(step, symbol, ws, we, requests_for(step), symbol) for ws, we in windows)

    cd = request.chunk_days
    if ds == "bars":
        if "splits" in applicable:  # bars are re-based on every split up to today
            add("splits", [(start, today)])
        add("bars", _windows(start, end, "year" if request.timeframe == "1d" else "month", cd))
        add("features", [(start, end)])
    elif ds == "splits":
        add("splits", _windows(start, end, "all", cd))
        add("features", [(start, end)])
    elif ds in ("dividends", "earnings"):
        add(ds, _windows(start, end, "all", cd))
    elif ds == "news":
        add("news", _windows(start, end, "month", cd))
    elif ds == "options":
        # What the IVs need from the lake: the underlying's closes on its own basis (bars and
        # every split since) and a year of dividends before the window (the trailing yield).
        add("splits", [(start, today)])
        add("dividends", [(_years_before(start, 1), end)])
        add("bars", [(start, end)])
        add("features", [(start, end)])
        add("option_contracts", [(d, d) for d in calendars.sessions("XNYS", start, end)])
    return out, None


def _contract_bar_chunks(pairs: pl.DataFrame) -> list[Chunk]:
    """One option_bars chunk per contract, over the sessions it was chosen on."""
    if pairs.is_empty():
        return []
    spans = pairs.group_by("symbol", "contract").agg(
        ws=pl.col("as_of").min(), we=pl.col("as_of").max()).sort("symbol", "contract")
    return [Chunk("option_bars", c, ws, we, requests_for("option_bars"), s)
            for s, c, ws, we in spans.iter_rows()]


def plan_backfill(store: Store, settings: Settings, request: BackfillRequest,
                  provider: Provider, now: dt.datetime | None = None) -> Plan:
    """Split ``request`` into chunks and merge in what the catalog already holds.

    Reads the catalog and nothing else: no request is made, nothing is written.
    """
    request = request.validated()
    now = now or settings.now()
    targets = _resolve_symbols(store.catalog, request)
    classes = {c for _, c in targets} or {"stocks"}
    today = max(calendars.latest_session(calendar_for(c), now) for c in classes)
    end = min(request.until, today) if request.until else today
    if request.years is not None:
        start = _years_before(end, request.years)
    elif request.days is not None:
        start = end - dt.timedelta(days=request.days)
    elif request.since is not None:
        start = request.since
    else:
        start = DEFAULT_SPANS[request.dataset][1](end)
    if start > end:
        raise ConfigError(f"the window {start.isoformat()} to {end.isoformat()} is empty: "
                          "--since/--until are the wrong way round")
    chunks: list[Chunk] = []
    notes: list[str] = []
    for sym, cls in targets:
        got, note = _symbol_chunks(request, sym, cls, start, end, today)
        chunks.extend(got)
        if note:
            notes.append(note)
    bid = backfill_id_for(request, (start, end))
    plan = Plan(bid, request, [s for s, _ in targets], start, end, chunks,
                provider=getattr(provider, "name", "?"),
                rate_limited=bool(getattr(provider, "rate_limited", False)),
                rate_limit_per_min=settings.rate_limit_per_min, notes=notes)
    _merge_stored(store.catalog, plan)
    return plan


def _merge_stored(catalog: Catalog, plan: Plan) -> None:
    """Take the stored state of known chunks; add stored and derivable contract chunks."""
    with catalog.connect() as con:
        exists = con.execute("SELECT count(*) FROM backfills WHERE backfill_id = ?",
                             [plan.backfill_id]).fetchall()[0][0]
        stored = frame(con, "SELECT * FROM backfill_progress WHERE backfill_id = ?",
                       [plan.backfill_id])
        pairs = frame(con, "SELECT symbol, contract, as_of FROM backfill_contracts "
                           "WHERE backfill_id = ?", [plan.backfill_id]) \
            if plan.request.dataset == "options" else pl.DataFrame()
    plan.exists = bool(exists)
    underlying = dict(zip(pairs["contract"], pairs["symbol"], strict=True)) \
        if not pairs.is_empty() else {}
    rows = {(r["dataset"], r["symbol"], r["window_start"]): r for r in stored.iter_rows(
        named=True)}
    planned = {c.key for c in plan.chunks}
    if plan.request.dataset == "options":
        listings: dict[str, list[Chunk]] = {}
        for c in plan.chunks:
            if c.step == "option_contracts":
                listings.setdefault(c.symbol, []).append(c)
        for c in plan.chunks:
            _apply_row(c, rows.get(c.key))
        for sym, items in listings.items():
            if all(c.state == "done" for c in items):
                for c in _contract_bar_chunks(pairs.filter(pl.col("symbol") == sym)):
                    if c.key not in planned:
                        plan.chunks.append(c)
                        planned.add(c.key)
            else:
                plan.awaiting_listings.append(sym)
    # Chunks only the catalog knows (contracts planned earlier, symbols since removed).
    for key, r in rows.items():
        if key not in planned:
            step, sym, ws = key
            plan.chunks.append(Chunk(step, sym, ws, r["window_end"],
                                     int(r["requests_expected"] or 0),
                                     underlying.get(sym, sym)))
    for c in plan.chunks:
        _apply_row(c, rows.get(c.key))
    order = {s: i for i, s in enumerate(plan.symbols)}
    plan.chunks.sort(key=lambda c: (order.get(c.underlying, len(order)), c.underlying,
                                    STEP_ORDER.get(c.step, 99), c.window_start, c.symbol))


def _apply_row(c: Chunk, row: dict[str, Any] | None) -> None:
    if row is None:
        return
    c.state = row["state"]
    c.attempts = int(row["attempts"] or 0)
    c.requests_made = int(row["requests_made"] or 0)
    c.records = int(row["records"] or 0)
    c.last_error = row["last_error"]


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


class Backfiller:
    """Plans and executes backfills against one store with one provider.

    The provider is used at ``BACKFILL_PRIORITY`` (``with_priority``) when it supports it,
    so its requests queue behind the runs' on the shared rate limiter.
    """

    def __init__(self, store: Store, provider: Provider, settings: Settings, *,
                 clock: Callable[[], dt.datetime] | None = None,
                 sleep: Callable[[float], None] = time.sleep, flush_s: float = FLUSH_S):
        lower = getattr(provider, "with_priority", None)
        self.source = provider
        self.provider = lower(BACKFILL_PRIORITY) if lower is not None else provider
        self.store = store
        self.settings = settings
        self.clock = clock or settings.now
        self.engine = Engine(store, self.provider, settings, clock=self.clock, sleep=sleep)
        self.retry = RetryPolicy(max_retries=settings.max_retries, sleep=sleep)
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
        mark_interrupted_runs(self.store, live_run_ids=[run_id])
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
                          "last_run_id = ?, provider = ? WHERE backfill_id = ?",
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
            b.insert("runs", {
                "run_id": run_id, "kind": "backfill", "state": "running",
                "params": {"backfill_id": bid, **plan.request.spec(),
                           "window_start": plan.window_start.isoformat(),
                           "window_end": plan.window_end.isoformat(),
                           "retry_failed": retry_failed},
                "provider": plan.provider, "parent_run_id": parent_run_id,
                "requested_at": now, "started_at": now, "heartbeat_at": now, "pid": pid,
                "host": host, "symbols_total": len({c.underlying for c in todo}),
                "message": f"backfill {bid}: {len(todo)} chunks to run"})
            con.execute("BEGIN TRANSACTION")
            try:
                b.apply(con)
                bump_version(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
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
        self.progress = progress
        self.lake = bf.store.lake
        self.log = LogBuffer(bf.store)
        self.queue: list[Chunk] = plan.todo(retry_failed)
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
        self._stop_intent: str | None = None

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> BackfillSummary:
        self._take_requests()
        state = None
        message = None
        try:
            while self.queue:
                if self._should_stop():
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
            state = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
            message = ("stopped by Ctrl-C" if isinstance(exc, KeyboardInterrupt)
                       else f"{type(exc).__name__}: {exc}") + \
                f"; resume with `python -m enrich backfill resume {self.bid}`"
            self._finish(state, message)
            raise
        return self._finish(state, message)

    def _should_stop(self) -> bool:
        if self.cancel.is_set():
            return True
        if time.monotonic() - self.last_poll >= CANCEL_POLL_S:
            self.last_poll = time.monotonic()
            try:
                if cancel_requested(self.bf.store, self.run_id):
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
        ok = sum(1 for t in self.tasks.values() if not t.failed)
        b.execute(
            "UPDATE runs SET requests = ?, records_written = ?, retries = ?, heartbeat_at = ?, "
            "symbols_ok = ?, symbols_failed = ?, message = ? WHERE run_id = ?",
            [self.requests, self.records, self.retries, utcnow(), ok,
             len(self.tasks) - ok, self._progress_text(), self.run_id])

    def _progress_text(self) -> str:
        text = f"backfill {self.bid}: {self.done} of {self.total} chunks done"
        if self.failed:
            text += f", {self.failed} failed"
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
        self.log.add(lambda b: b.upsert("tasks", {
            "run_id": self.run_id, "symbol": symbol, "state": "running",
            "started_at": task.started_at}))

    def _close_task(self) -> None:
        t = self.current_task
        if t is None:
            return
        self.current_task = None
        self.log.add(lambda b: b.upsert("tasks", {
            "run_id": self.run_id, "symbol": t.symbol,
            "state": "failed" if t.failed else "ok", "started_at": t.started_at,
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
        take = getattr(self.bf.provider, "take_request_count", None)
        return int(take()) if take else 0

    def _call(self, c: Chunk, fn: Callable[[], pl.DataFrame]) -> tuple[pl.DataFrame, int]:
        """``fn`` under the retry policy; counts requests and retries on the chunk."""
        retries = 0
        t0 = utcnow()

        def on_retry(attempt: int, exc: BaseException, wait: float) -> None:
            nonlocal retries
            retries += 1
            self._log_fetch(c, "retried", t0, 0, 0, 0, attempt, exc,
                            f"retrying in {wait:.1f}s: {exc}")

        try:
            result, attempts = self.bf.retry.call(fn, on_retry=on_retry)
        finally:
            n = self._take_requests()
            c.requests_made += n
            c.attempts += retries
            self.requests += n
            self.retries += retries
            if self.current_task is not None:
                self.current_task.requests += n
                self.current_task.retries += retries
        return result, attempts

    def _log_fetch(self, c: Chunk, status: str, started: dt.datetime, records: int,
                   received: int, rejected: int, attempt: int, exc: BaseException | None,
                   note: str | None = None, requests: int = 0) -> None:
        ds = STEP_DATASET.get(c.step, c.step)
        row = {
            "run_id": self.run_id, "symbol": c.underlying, "dataset": ds,
            "timeframe": self.timeframe if c.step == "bars" else None, "started_at": started,
            "duration_ms": (utcnow() - started).total_seconds() * 1000, "records": records,
            "received": received, "rejected": rejected, "requests": requests,
            "attempt": attempt, "status": status,
            "error_class": error_class_of(exc) if exc else None,
            "error_message": note or (str(exc)[:1000] if exc else None),
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
            if c.step == "option_contracts":
                records, received = self._list_contracts(c)
                rejected = 0
            else:
                records, received, rejected = self._fetch(c)
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

    def _fetch(self, c: Chunk) -> tuple[int, int, int]:
        p = self.bf.provider
        sym, a, z = c.symbol, c.window_start, c.window_end
        calls: dict[str, Callable[[], pl.DataFrame]] = {
            "bars": lambda: p.bars(sym, self.timeframe, a, z),
            "dividends": lambda: p.dividends(sym, a, z),
            "splits": lambda: p.splits(sym, a, z),
            "earnings": lambda: p.earnings(sym, a, z),
            "news": lambda: p.news(sym, a, z),
        }
        got, _ = self._call(c, calls[c.step])
        checked = check(c.step, got)
        with self.lake.symbol_lock(sym):
            self.lake.upsert(c.step, checked.good)
        if c.step in ("bars", "splits"):
            self._closes.pop(sym, None)
            self._requeue_features(sym)
        return checked.good.height, got.height, checked.rejected

    def _requeue_features(self, symbol: str) -> None:
        """Bars or splits of ``symbol`` changed: its features chunk must run (again)."""
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
                    self.bf.engine._derive_step(c.symbol, tf, True, self.run_id, self.log, res)
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
        listed, _ = self._call(c, lambda: self.bf.provider.option_contracts(sym, day))
        r = self.plan.request
        pairs = choose_contracts(listed, sym, day, closes["close"][0],
                                 expirations=r.expirations, monthly=r.monthly,
                                 moneyness=r.moneyness)
        # Same batch as the chunk's done mark: the pairs and the mark commit together.
        rows = [{"backfill_id": self.bid, **p} for p in pairs.iter_rows(named=True)]
        self.log.add(lambda b: [b.upsert("backfill_contracts", row) for row in rows])
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
        new = [c for c in _contract_bar_chunks(self._pairs_of(symbol)) if c.key not in known]
        if not new:
            return
        now = utcnow()
        rows = [_chunk_row(self.bid, self.run_id, c, now) for c in new]
        self.log.add(lambda b: [b.insert("backfill_progress", row) for row in rows])
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
                "underlying_price FROM backfill_contracts WHERE backfill_id = ? "
                "AND symbol = ? ORDER BY as_of, contract", [self.bid, symbol]
            ).cast(PAIR_SCHEMA)  # type: ignore[arg-type]
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
                bars, _ = self._call(c, lambda c=c: self.bf.provider.option_bars(
                    c.symbol, c.window_start, c.window_end))
            except Exception as exc:
                self._log_fetch(c, "failed", t0, 0, 0, 0, getattr(exc, "attempts", 1), exc,
                                requests=c.requests_made - before)
                self._fail(c, exc)
                continue
            fetched.append((c, bars, t0, c.requests_made - before))
        if not fetched:
            return
        try:
            contracts = [c.symbol for c, _, _, _ in fetched]
            pairs = self._pairs_of(und).filter(pl.col("contract").is_in(contracts))
            bars = pl.concat([b for _, b, _, _ in fetched], how="vertical")
            rows = history_iv(pairs, bars, self._closes_of(und),
                              self.lake.read("dividends", [und]),
                              self.bf.settings.risk_free_rate)
            with self.lake.symbol_lock(und):
                rows = self._without_snapshots(und, rows)
                self.lake.upsert("options_iv", rows)
        except Exception as exc:
            for c, _, t0, n in fetched:
                self._log_fetch(c, "failed", t0, 0, 0, 0, 1, exc, requests=n)
                self._fail(c, exc)
            return
        per_contract = dict(rows.group_by("contract").len().iter_rows())
        for c, bars, t0, n in fetched:
            got = int(per_contract.get(c.symbol, 0))
            self._log_fetch(c, "ok", t0, got, bars.height, 0, 1, None, requests=n)
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
        stored = pl.concat([pl.read_parquet(f, columns=["as_of", "contract", "source"])
                            for f in files])
        snaps = stored.filter(pl.col("source") != "computed").select("as_of", "contract")
        return rows.join(snaps, on=["as_of", "contract"], how="anti")

    # -- the end ---------------------------------------------------------------------------------
    def _finish(self, state: str | None, message: str | None) -> BackfillSummary:
        self._close_task()
        left = sum(1 for c in self.plan.chunks if c.state in ("pending", "running"))
        stop = None
        if self.cancel.is_set():
            stop = self._stop_reason()
        if state is None:
            if stop is not None:
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
            b.execute("UPDATE runs SET state = ?, finished_at = ?, message = ?, "
                      "error_summary = ? WHERE run_id = ?",
                      [state, finished, message,
                       json.dumps(_error_counts(self.failures)), run_id])
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


# -- read models ------------------------------------------------------------------------------
def backfill_progress_summary(catalog: Catalog, backfill_id: str | None = None,
                              now: dt.datetime | None = None, limit: int = 50
                              ) -> list[dict[str, Any]]:
    """Backfills (newest first), each with its progress and throughput.

    Per backfill: ``status`` (running | complete | paused | cancelled | failed | interrupted
    | incomplete), chunks total / done / failed / pending, requests expected / made /
    remaining, records, the last run (state, start, requests) and, for a running backfill,
    ``requests_per_min`` measured over its current run and ``eta_s`` = remaining requests at
    that rate (remaining chunks at the measured chunk rate when there were no requests).
    """
    now = now or utcnow()
    where, params = ("WHERE b.backfill_id = ?", [backfill_id]) if backfill_id else ("", [])
    sql = f"""
        WITH p AS (
            SELECT backfill_id, count(*) AS chunks_total,
                   count(*) FILTER (state = 'done') AS chunks_done,
                   count(*) FILTER (state = 'failed') AS chunks_failed,
                   count(*) FILTER (state = 'running') AS chunks_running,
                   count(*) FILTER (state = 'pending') AS chunks_pending,
                   CAST(coalesce(sum(requests_expected), 0) AS BIGINT) AS requests_expected,
                   CAST(coalesce(sum(requests_expected) FILTER (state <> 'done'), 0)
                       AS BIGINT) AS requests_remaining,
                   CAST(coalesce(sum(requests_made), 0) AS BIGINT) AS requests_made,
                   CAST(coalesce(sum(records), 0) AS BIGINT) AS records,
                   max(updated_at) AS last_chunk_at,
                   arg_max(last_error, updated_at) FILTER (state = 'failed') AS last_error,
                   count(*) FILTER (dataset = 'option_contracts') AS listings,
                   count(*) FILTER (dataset = 'option_contracts' AND state = 'done')
                       AS listings_done,
                   count(*) FILTER (dataset = 'option_bars') AS contract_chunks
            FROM backfill_progress GROUP BY backfill_id),
        rc AS (
            SELECT p.backfill_id, count(*) AS run_chunks_done
            FROM backfill_progress p JOIN backfills b USING (backfill_id)
            WHERE p.run_id = b.last_run_id AND p.state IN ('done', 'failed')
            GROUP BY p.backfill_id)
        SELECT b.backfill_id, b.dataset, b.symbols, b.window_start, b.window_end, b.spec,
               b.provider, b.status AS intent, b.created_at, b.updated_at, b.last_run_id,
               r.state AS run_state, r.started_at AS run_started_at,
               r.finished_at AS run_finished_at, r.requests AS run_requests,
               r.message AS run_message, coalesce(rc.run_chunks_done, 0) AS run_chunks_done,
               coalesce(p.chunks_total, 0) AS chunks_total,
               coalesce(p.chunks_done, 0) AS chunks_done,
               coalesce(p.chunks_failed, 0) AS chunks_failed,
               coalesce(p.chunks_running, 0) AS chunks_running,
               coalesce(p.chunks_pending, 0) AS chunks_pending,
               coalesce(p.requests_expected, 0) AS requests_expected,
               coalesce(p.requests_remaining, 0) AS requests_remaining,
               coalesce(p.requests_made, 0) AS requests_made,
               coalesce(p.records, 0) AS records, p.last_chunk_at, p.last_error,
               coalesce(p.listings, 0) AS listings, coalesce(p.listings_done, 0) AS listings_done,
               coalesce(p.contract_chunks, 0) AS contract_chunks
        FROM backfills b LEFT JOIN p USING (backfill_id) LEFT JOIN rc USING (backfill_id)
        LEFT JOIN runs r ON r.run_id = b.last_run_id
        {where} ORDER BY b.updated_at DESC NULLS LAST, b.created_at DESC LIMIT ?"""
    rows = catalog.query(sql, [*params, limit]).to_dicts()
    for r in rows:
        for k in ("symbols", "spec"):
            if isinstance(r.get(k), str):
                r[k] = json.loads(r[k])
        r.update(_throughput(r, now))
        r["status"] = _status(r)
        r["fraction"] = (r["chunks_done"] / r["chunks_total"]) if r["chunks_total"] else 0.0
        r["awaiting_listings"] = (r["dataset"] == "options"
                                  and r["listings_done"] < r["listings"])
    return rows


def _throughput(r: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    running = r["run_state"] in ("queued", "running")
    elapsed = None
    if r["run_started_at"] is not None:
        elapsed = ((r["run_finished_at"] or now) - r["run_started_at"]).total_seconds()
    rpm = eta = None
    if elapsed and elapsed > 0:
        if r["run_requests"]:
            rpm = r["run_requests"] / elapsed * 60.0
        if running:
            left = r["chunks_pending"] + r["chunks_running"]
            if rpm and r["requests_remaining"]:
                eta = r["requests_remaining"] / rpm * 60.0
            elif r["run_chunks_done"]:
                eta = left * elapsed / r["run_chunks_done"]
    return {"elapsed_s": elapsed, "requests_per_min": rpm, "eta_s": eta}


def _status(r: dict[str, Any]) -> str:
    if r["run_state"] in ("queued", "running"):
        return "running"
    if r["chunks_total"] and r["chunks_done"] == r["chunks_total"] \
            and r["listings_done"] == r["listings"]:
        return "complete"
    if r["intent"] in ("paused", "cancelled"):
        return r["intent"]
    if r["chunks_failed"] and not (r["chunks_pending"] or r["chunks_running"]):
        return "failed"
    if r["run_state"] == "interrupted":
        return "interrupted"
    return "incomplete"


def backfill_steps(catalog: Catalog, backfill_id: str) -> pl.DataFrame:
    """Per symbol (the underlying for options) and step: chunks, states, requests, records,
    the window covered and the newest error."""
    return catalog.query("""
        WITH u AS (SELECT DISTINCT contract, symbol FROM backfill_contracts
                   WHERE backfill_id = ?)
        SELECT coalesce(u.symbol, p.symbol) AS symbol, p.dataset AS step,
               count(*) AS chunks,
               count(*) FILTER (p.state = 'done') AS done,
               count(*) FILTER (p.state = 'failed') AS failed,
               count(*) FILTER (p.state IN ('pending', 'running')) AS pending,
               CAST(sum(p.requests_expected) AS BIGINT) AS requests_expected,
               CAST(sum(p.requests_made) AS BIGINT) AS requests_made,
               CAST(sum(p.records) AS BIGINT) AS records,
               min(p.window_start) AS window_start, max(p.window_end) AS window_end,
               arg_max(p.last_error, p.updated_at) FILTER (p.state = 'failed') AS last_error
        FROM backfill_progress p LEFT JOIN u ON p.dataset = 'option_bars'
             AND u.contract = p.symbol
        WHERE p.backfill_id = ?
        GROUP BY ALL ORDER BY 1, min(CASE p.dataset
            WHEN 'splits' THEN 0 WHEN 'dividends' THEN 1 WHEN 'earnings' THEN 2
            WHEN 'news' THEN 3 WHEN 'bars' THEN 4 WHEN 'features' THEN 5
            WHEN 'option_contracts' THEN 6 ELSE 7 END)""", [backfill_id, backfill_id])


def backfill_chunks(catalog: Catalog, backfill_id: str, state: str | None = None,
                    limit: int = 500) -> pl.DataFrame:
    """The chunks of a backfill (optionally in one state), in window order."""
    where, params = "backfill_id = ?", [backfill_id]
    if state:
        where += " AND state = ?"
        params.append(state)
    return catalog.query(
        f"SELECT dataset AS step, symbol, window_start, window_end, state, attempts, "
        f"requests_expected, requests_made, records, last_error, updated_at, run_id "
        f"FROM backfill_progress WHERE {where} "
        f"ORDER BY symbol, window_start, dataset LIMIT ?", [*params, limit])


def backfill_rebases(catalog: Catalog, backfill_id: str) -> pl.DataFrame:
    """When the backfill's runs re-based bars on splits (``compute_log`` status 'rebased')."""
    return catalog.query("""
        SELECT c.symbol, c.timeframe, c.started_at, c.records, c.run_id
        FROM compute_log c JOIN runs r USING (run_id)
        WHERE r.kind = 'backfill' AND json_extract_string(r.params, '$.backfill_id') = ?
          AND c.status = 'rebased' ORDER BY c.started_at""", [backfill_id])


def backfill_request(catalog: Catalog, backfill_id: str) -> BackfillRequest:
    """The request of a stored backfill, pinned to its window (to resume it)."""
    rows = catalog.query("SELECT spec, window_start, window_end FROM backfills "
                         "WHERE backfill_id = ?", [backfill_id])
    if rows.is_empty():
        raise UnknownBackfillError(f"no backfill {backfill_id}; list them with "
                                   "`python -m enrich backfill list`")
    spec, ws, we = rows.row(0)
    return BackfillRequest.from_spec(spec, (ws, we))


def find_resumable(catalog: Catalog, request: BackfillRequest) -> str | None:
    """The newest unfinished backfill made by the same request (its window may be older)."""
    want = {**request.validated().spec()}
    for r in backfill_progress_summary(catalog, limit=500):
        spec = r["spec"] or {}
        if r["status"] in ("complete", "running"):
            continue
        if {k: spec.get(k) for k in want} == want:
            return r["backfill_id"]
    return None


# -- actions (dashboard and CLI) -------------------------------------------------------------
_live: dict[str, tuple[threading.Thread, threading.Event, str]] = {}
_live_lock = threading.Lock()


def stop_backfill(catalog: Catalog, backfill_id: str, intent: str, by: str) -> str | None:
    """Pause (``intent='paused'``) or cancel a backfill: it stops between chunks, in any
    process. Returns the run asked to stop, None if none was running. Both keep every chunk
    done so far; a paused or cancelled backfill can be resumed."""
    if intent not in ("paused", "cancelled"):
        raise ValueError(f"intent must be 'paused' or 'cancelled', got {intent!r}")
    now = utcnow()
    with catalog.connect() as con:
        row = con.execute("SELECT last_run_id FROM backfills WHERE backfill_id = ?",
                          [backfill_id]).fetchall()
        if not row:
            raise UnknownBackfillError(f"no backfill {backfill_id}; list them with "
                                       "`python -m enrich backfill list`")
        run_id = row[0][0]
        running = con.execute("SELECT state FROM runs WHERE run_id = ? AND state IN "
                              "('queued', 'running')", [run_id]).fetchall()
        con.execute("BEGIN TRANSACTION")
        con.execute("UPDATE backfills SET status = ?, updated_at = ? WHERE backfill_id = ?",
                    [intent, now, backfill_id])
        if running:
            con.execute("UPDATE runs SET cancel_requested_at = ?, cancel_requested_by = ? "
                        "WHERE run_id = ?", [now, by, run_id])
        bump_version(con)
        con.execute("COMMIT")
    with _live_lock:
        live = _live.get(backfill_id)
    if live is not None:
        live[1].set()  # in this process: no need to wait for the catalog poll
    return run_id if running else None


def start_in_background(settings: Settings, request: BackfillRequest | None = None, *,
                        backfill_id: str | None = None, retry_failed: bool = False,
                        store: Store | None = None, provider: Provider | None = None,
                        on_done: Callable[[BackfillSummary | BaseException], None] | None = None
                        ) -> str:
    """Start (or resume, by ``backfill_id``) a backfill on a daemon thread; return its run id.

    The run's row is written before this returns, so pages see it at once. In a process
    with services, the provider shares the process's rate limiter (``limiter_for``).
    """
    from enrich.providers import make_provider

    store = store or Store.from_settings(settings)
    own_provider = provider is None
    provider = provider or make_provider(settings)
    if request is None:
        if backfill_id is None:
            raise ValueError("give a request or a backfill_id")
        request = backfill_request(store.catalog, backfill_id)
    bf = Backfiller(store, provider, settings)
    try:
        plan = bf.plan(request)
        run_id = bf.prepare(plan, retry_failed=retry_failed)
    except BaseException:
        if own_provider:
            bf.close()
        raise
    cancel = threading.Event()

    def work() -> None:
        try:
            result: BackfillSummary | BaseException = bf.execute(
                plan, run_id, retry_failed=retry_failed, cancel=cancel)
        except BaseException as exc:  # recorded on the run by the execution itself
            result = exc
        finally:
            with _live_lock:
                _live.pop(plan.backfill_id, None)
            if own_provider:
                bf.close()
        if on_done is not None:
            on_done(result)

    thread = threading.Thread(target=work, name=f"backfill-{plan.backfill_id}", daemon=True)
    with _live_lock:
        _live[plan.backfill_id] = (thread, cancel, run_id)
    thread.start()
    return run_id


def live_backfills() -> dict[str, str]:
    """Backfills executing in this process: backfill id -> run id."""
    with _live_lock:
        return {bid: run_id for bid, (t, _, run_id) in _live.items() if t.is_alive()}


def wait_for(backfill_id: str, timeout: float | None = None) -> bool:
    """Wait for a backfill started by this process to end; False on timeout."""
    with _live_lock:
        live = _live.get(backfill_id)
    if live is None:
        return True
    live[0].join(timeout)
    return not live[0].is_alive()


__all__ = [
    "BACKFILL_PRIORITY", "DATASETS", "FINAL_STATES", "BackfillBusyError", "BackfillRequest",
    "BackfillSummary", "Backfiller", "Chunk", "Plan", "Progress", "backfill_chunks",
    "backfill_progress_summary", "backfill_rebases", "backfill_request", "backfill_steps",
    "find_resumable", "live_backfills", "plan_backfill", "requests_for",
    "start_in_background", "stop_backfill", "wait_for",
]
