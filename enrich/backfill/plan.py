"""Backfill plans: what to fetch, cut into chunks of exactly one provider request each.

A backfill is named by what it fetches: ``backfill_id`` is a hash of (dataset, symbols,
window, timeframe, options choices, chunking). Running the same command again the same day
therefore continues the same backfill; ``enrich.backfill.jobs.find_resumable`` finds the newest
unfinished one with the same request even after its window has moved on a day.

The request-count model, shared by the planner and the executor: **each fetch chunk costs
one request** (``requests_for``). The chunk sizes are what make it hold:

    step              one chunk is                            one request because
    reference         the ticker (a symbol never identified)  details (+ events: Massive)
    splits            the window (bars/options: to today)     a few rows; limit 5,000
    dividends         the window (bars 1d too: tr_close)      ~4 a year; limit 5,000
    earnings          the window                              4 a year; limit 1,000
    bars (1d)         a calendar year                         <= 253 rows; limit 50,000
    bars (1h, 5m)     a calendar month                        <= ~20,000 minute aggregates
    news              a calendar month                        < 1,000 articles (the limit)
    rates             options: the Treasury curve, once           <= 50,000 dates a page
    option_contracts  one underlying × one session            one page of contracts
    option_bars       one contract, over its chosen sessions  <= 253 rows
    features          re-base bars on splits, recompute       no request
                      features (after bars or splits)

The model can only be exceeded by what no plan can know: a month with more than 1,000
articles for one ticker, a session listing more than 1,000 contracts, the first call of a
process that finds a replacement endpoint missing and falls back (Massive), a past session's
listing while Massive's ``expired`` is not yet known to be judged against ``as_of`` (a second
request, ``MassiveProvider.option_contracts``), or retries. The
executor records ``requests_made`` next to ``requests_expected`` for every chunk, so any
difference shows. An options backfill is planned in two phases: the listing chunks first;
the contracts' bar chunks once every listing of that underlying is in (``Plan.
awaiting_listings`` names the underlyings whose contract requests are not counted yet; a
dry run after the listings is exact).

Planning reads the catalog (the universe, and what a backfill of the same id already holds)
and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from enrich import calendars
from enrich.config import MAX_BACKFILL_DAYS, MAX_BACKFILL_YEARS, Settings
from enrich.errors import ConfigError
from enrich.providers import Provider
from enrich.quant import rates
from enrich.quant.options_history import DEFAULT_MONEYNESS, DEFAULT_MONTHLY
from enrich.store.catalog import Catalog, frame
from enrich.store.store import Store
from enrich.symbols import DATASETS_BY_CLASS, calendar_for, validate_symbol

DATASETS = ("bars", "dividends", "splits", "earnings", "news", "options")
TIMEFRAMES = ("1d", "1h", "5m")
SPLITS_SINCE = dt.date(2000, 1, 1)  # "all history" for splits
REQUESTS_PER_CHUNK = 1  # per fetch chunk; see the module docstring
MAX_INTRADAY_CHUNK_DAYS = 31

# Steps (backfill_progress.dataset) in the order they run for one symbol.
STEP_ORDER = {"reference": -1, "splits": 0, "dividends": 1, "earnings": 2, "news": 3, "bars": 4,
              "features": 5, "rates": 5, "option_contracts": 6, "option_bars": 7}
FETCH_STEPS = ("reference", "splits", "dividends", "earnings", "news", "bars", "rates",
               "option_contracts", "option_bars")


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
        for name, most in (("years", MAX_BACKFILL_YEARS), ("days", MAX_BACKFILL_DAYS)):
            v = getattr(self, name)
            if v is not None and v > most:
                raise ConfigError(f"{v:,} {name} back is out of range: use 1 to {most:,}")
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
        spec = json.loads(spec) if isinstance(spec, str) else spec
        low, high = spec.get("moneyness", DEFAULT_MONEYNESS)
        syms = tuple(s for s in spec.get("symbols", []) if s != "*")
        return cls(
            dataset=spec["dataset"], symbols=syms, since=window[0], until=window[1],
            timeframe=spec.get("timeframe", "1d"),
            expirations=tuple(dt.date.fromisoformat(e) for e in spec.get("expirations", [])),
            moneyness=(float(low), float(high)),
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
    requests_made: int = 0  # over every run of the backfill (stored)
    records: int = 0
    last_error: str | None = None
    requests_this_run: int = 0  # by the run executing it now (not stored)

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
                   end: dt.date, today: dt.date, dividends_held: bool = False
                   ) -> tuple[list[Chunk], str | None]:
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
        if request.timeframe == "1d" and "dividends" in applicable and not dividends_held:
            # The daily features' tr_close reinvests the window's dividends: without them
            # the backfilled years' total return read as price return.
            add("dividends", [(start, end)])
        add("bars", _windows(start, end, "year" if request.timeframe == "1d" else "month", cd))
        add("features", [(start, end)])
    elif ds == "splits":
        add("splits", _windows(start, end, "all", cd))
        add("features", [(start, end)])
    elif ds == "dividends":
        add(ds, _windows(start, end, "all", cd))
        add("features", [(start, end)])  # tr_close reinvests every stored dividend
    elif ds == "earnings":
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


def contract_bar_chunks(pairs: pl.DataFrame) -> list[Chunk]:
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
    held = _dividends_held(store.catalog, start, end) \
        if request.dataset == "bars" and request.timeframe == "1d" else set()
    unidentified = _never_identified(store.catalog)
    for sym, cls in targets:
        got, note = _symbol_chunks(request, sym, cls, start, end, today, sym in held)
        if got and sym in unidentified:
            # Its ticker reference first, as a run's first enrichment asks it: history is
            # fetched from the listing or the first ticker change, never an earlier
            # security's that used the ticker (META before 2022 was another company).
            got.insert(0, Chunk("reference", sym, start, end,
                                provider.reference_requests(cls), sym))
        chunks.extend(got)
        if note:
            notes.append(note)
    if request.dataset == "options" and chunks:
        # The Treasury curve of the window (enrich.quant.rates), once for every underlying, first.
        chunks.append(Chunk("rates", rates.CURVE, start, end, requests_for("rates"),
                            rates.CURVE))
    bid = backfill_id_for(request, (start, end))
    plan = Plan(bid, request, [s for s, _ in targets], start, end, chunks,
                provider=getattr(provider, "name", "?"),
                rate_limited=bool(getattr(provider, "rate_limited", False)),
                rate_limit_per_min=settings.rate_limit_per_min, notes=notes)
    _merge_stored(store.catalog, plan)
    return plan


def _never_identified(catalog: Catalog) -> set[str]:
    """The symbols whose ticker reference was never asked (``symbols import``, the demo
    universe): their first chunk asks it."""
    return set(catalog.query("SELECT symbol FROM symbols WHERE reference_checked_at IS NULL")
               ["symbol"].to_list())


def _dividends_held(catalog: Catalog, start: dt.date, end: dt.date) -> set[str]:
    """The symbols whose dividends were fetched over all of [start, end] (their coverage
    watermark): a bars backfill or fill of those sessions need not ask for them again."""
    return set(catalog.query(
        "SELECT symbol FROM session_coverage WHERE dataset = 'dividends' "
        "AND covered_from <= ? AND through_session >= ?", [start, end])["symbol"].to_list())


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
                for c in contract_bar_chunks(pairs.filter(pl.col("symbol") == sym)):
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
    order[rates.CURVE] = -1  # the curve before any IV is solved
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
