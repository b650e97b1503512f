"""Coverage: per dataset, symbols × sessions coloured present / missing / failed / not
expected, and the gaps a selection of cells asks to fill.

The read model (``heatmap``) is built from the catalog only — ``session_coverage`` (what each
symbol × dataset holds: first and last session, gaps, sessions a check failed on; written by
``enrich.checks.quality`` after every fetch), ``symbol_status`` for datasets not checked yet, and
the universe — so it costs the same for 5,000 symbols as for 5: no lake file is opened.

A cell is one day for the symbol, coded:

    NOT_EXPECTED  no session that day on the symbol's calendar (weekend, holiday), before
                  its listing or after its delisting, a dataset the provider plan does not
                  include, or one with nothing to hold (an option chain fetched with no
                  contract listed). The listing
                  is a real date only: ``symbols.listed_since``, or the first stored bar
                  when the provider was asked for earlier sessions and had none (the bars'
                  fetched window starts before it). History before a fetched window that
                  no listing explains was never fetched: it is MISSING, not "not expected"
    PRESENT       held (bars, option snapshots: a row that session; event datasets: inside
                  the fetched window)
    MISSING       expected but not held
    FAILED        held, but a quality check points at it

Columns are the calendar days covering the last ``sessions`` XNYS sessions up to the latest
expected one (``enrich.freshness``), weekend days dropped unless a symbol shown trades them
(crypto every day, forex on Sundays: ``enrich.conventions``).
Long windows aggregate to weeks or months: a bucket is failed if any of its cells failed,
else missing if any is missing, else present if any is present.

``plan_fill`` turns a selection (symbols × a date range) into the work that fills exactly
its missing cells: a backfill per window (``enrich.backfill.jobs``) for symbols that hold data,
a first run (``Services.trigger`` with a lookback) for symbols never fetched.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from enrich import calendars, freshness
from enrich.schemas import SYMBOL_DATASETS, ColumnType
from enrich.store import runs
from enrich.store.catalog import Catalog, frame
from enrich.symbols import DATASETS_BY_CLASS, calendar_for

NOT_EXPECTED, PRESENT, MISSING, FAILED = 0, 1, 2, 3
CODES = {NOT_EXPECTED: "not expected", PRESENT: "present", MISSING: "missing",
         FAILED: "failed"}
COLORS = {NOT_EXPECTED: "#eceff1", PRESENT: "#66bb6a", MISSING: "#ef5350",
          FAILED: "#ffa726"}
DATASETS = SYMBOL_DATASETS
SESSION_DATASETS = ("bars", "options_iv")  # a row per session; the others are events
DAY_MAX_SESSIONS = 130  # daily columns up to about half a year
WEEK_MAX_SESSIONS = 520  # then weekly up to about two years, then monthly
# The backfill dataset that fills a heatmap dataset.
BACKFILL_DATASET = {"bars": "bars", "dividends": "dividends", "splits": "splits",
                    "earnings": "earnings", "news": "news", "options_iv": "options"}


@dataclass
class Heatmap:
    """symbols × buckets of one dataset. ``codes`` is the bucket state; ``counts`` holds,
    per code, how many of a bucket's days have it (so hover text can say "3 of 5 missing").
    ``day_codes`` keeps the daily cells, to turn a selection into exact gaps."""

    dataset: str
    granularity: str  # day | week | month
    days: np.ndarray  # datetime64[D], the daily columns
    bucket_start: list[dt.date]
    bucket_end: list[dt.date]
    symbols: list[str]
    asset_classes: list[str]
    codes: np.ndarray  # int8, symbols × buckets
    counts: dict[int, np.ndarray]  # code -> int16 symbols × buckets
    day_codes: np.ndarray  # int8, symbols × days
    listing: list[dt.date | None]
    never_fetched: list[bool]
    end: dt.date | None = None

    @property
    def empty(self) -> bool:
        return not self.symbols or not len(self.days)

    def summary(self) -> pl.DataFrame:
        """Per symbol over the window: cells present, missing, failed, and the first and
        last missing day (the gap a fill would cover)."""
        dc = self.day_codes
        days = self.days
        miss = dc == MISSING
        any_miss = miss.any(axis=1)
        first = np.where(any_miss, miss.argmax(axis=1), 0)
        last = np.where(any_miss, dc.shape[1] - 1 - miss[:, ::-1].argmax(axis=1), 0)

        def pick(ix: np.ndarray) -> list[dt.date | None]:
            if not len(days):
                return [None] * len(ix)
            vals = days[ix].astype(object).tolist()
            return [v if m else None for v, m in zip(vals, any_miss, strict=True)]

        return pl.DataFrame({
            "symbol": self.symbols, "asset_class": self.asset_classes,
            "present": (dc == PRESENT).sum(axis=1).astype(np.int64),
            "missing": miss.sum(axis=1).astype(np.int64),
            "failed": (dc == FAILED).sum(axis=1).astype(np.int64),
            "first_missing": pick(first), "last_missing": pick(last),
            "listing": self.listing, "never_fetched": self.never_fetched,
        }, schema={"symbol": pl.String, "asset_class": pl.String, "present": pl.Int64,
                   "missing": pl.Int64, "failed": pl.Int64, "first_missing": pl.Date,
                   "last_missing": pl.Date, "listing": pl.Date, "never_fetched": pl.Boolean})

    def subset(self, symbols: Sequence[str]) -> Heatmap:
        """The same heatmap for ``symbols`` (in that order; unknown ones dropped)."""
        pos = {s: i for i, s in enumerate(self.symbols)}
        ix = np.array([pos[s] for s in symbols if s in pos], dtype=np.int64)
        return Heatmap(
            self.dataset, self.granularity, self.days, self.bucket_start, self.bucket_end,
            [self.symbols[i] for i in ix], [self.asset_classes[i] for i in ix],
            self.codes[ix], {k: v[ix] for k, v in self.counts.items()}, self.day_codes[ix],
            [self.listing[i] for i in ix], [self.never_fetched[i] for i in ix], self.end)

    def totals(self) -> dict[str, int]:
        return {CODES[k]: int((self.day_codes == k).sum()) for k in CODES}

    def gaps(self) -> pl.DataFrame:
        """The missing and failed cells as rows: per symbol, each run of consecutive
        expected sessions in one state (days with no session in between do not break it):
        symbol, state (missing | failed), first and last session, sessions, never_fetched."""
        rows: list[tuple] = []
        for i, sym in enumerate(self.symbols):
            codes = self.day_codes[i]
            start = prev = None
            state = None
            n = 0
            for j in np.nonzero(codes != NOT_EXPECTED)[0]:
                code = int(codes[j])
                st = CODES[code] if code in (MISSING, FAILED) else None
                if st != state and state is not None:
                    rows.append((sym, state, start, prev, n, self.never_fetched[i]))
                if st is None:
                    state = None
                    continue
                if st != state:
                    start, n = self.days[j].item(), 0
                state, prev, n = st, self.days[j].item(), n + 1
            if state is not None:
                rows.append((sym, state, start, prev, n, self.never_fetched[i]))
        return pl.DataFrame(rows, schema={
            "symbol": pl.String, "state": pl.String, "first_session": pl.Date,
            "last_session": pl.Date, "sessions": pl.Int64, "never_fetched": pl.Boolean},
            orient="row")


# -- building -----------------------------------------------------------------------------------
def _granularity(sessions: int, granularity: str) -> str:
    if granularity != "auto":
        if granularity not in ("day", "week", "month"):
            raise ValueError(f"granularity must be auto, day, week or month: {granularity!r}")
        return granularity
    if sessions <= DAY_MAX_SESSIONS:
        return "day"
    return "week" if sessions <= WEEK_MAX_SESSIONS else "month"


def _bucket_index(days: np.ndarray, granularity: str) -> np.ndarray:
    """Per day, the first day of its bucket (Monday of the week, first of the month)."""
    if granularity == "day":
        return days
    if granularity == "week":
        # 1970-01-01 was a Thursday: shift so weeks start on Monday.
        d = days.astype(np.int64)
        return (d - (d + 3) % 7).astype("datetime64[D]")
    return days.astype("datetime64[M]").astype("datetime64[D]")


def _date_list(col: pl.Series) -> np.ndarray:
    return col.to_numpy().astype("datetime64[D]")


def _explode_json(df: pl.DataFrame, col: str, inner: ColumnType) -> pl.DataFrame:
    """(row, value) pairs of a JSON list column, for the rows whose list is not empty."""
    part = df.with_row_index("row").filter(pl.col(col).is_not_null()
                                           & (pl.col(col) != "[]"))
    if part.is_empty():
        return pl.DataFrame(schema={"row": pl.UInt32, col: inner})
    return (part.select("row", pl.col(col).str.json_decode(pl.List(inner)))
            .explode(col).drop_nulls(col))


def heatmap(catalog: Catalog, dataset: str, now: dt.datetime, sessions: int = 60,
            granularity: str = "auto", lag: dt.timedelta | None = None,
            symbols: Sequence[str] | None = None) -> Heatmap:
    """The coverage heatmap of ``dataset`` over the last ``sessions`` XNYS sessions expected
    at ``now`` (``lag``: the provider's publication lag; default that of the newest run's
    provider), for the active symbols the dataset applies to (or ``symbols``)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    classes = [c for c, ds in DATASETS_BY_CLASS.items() if dataset in ds]
    where = ["s.active", f"s.asset_class IN ({','.join('?' * len(classes))})"]
    params: list[Any] = [*classes]
    if symbols:
        where.append(f"s.symbol IN ({','.join('?' * len(symbols))})")
        params.extend(symbols)
    with catalog.connect() as con:
        rows = frame(con, f"""
            SELECT s.symbol, s.asset_class, s.listed_since, s.delisted_on,
                   b.first_session AS bars_first, b.covered_from AS bars_from,
                   c.first_session, c.last_session, c.through_session, c.covered_from,
                   c.symbol IS NOT NULL AS has_coverage,
                   CAST(c.gaps AS VARCHAR) AS gaps,
                   CAST(c.failed_sessions AS VARCHAR) AS failed,
                   st.covered_through AS status_through, st.latest_session AS status_latest,
                   coalesce(st.not_entitled, false) AS not_entitled
            FROM symbols s
            LEFT JOIN session_coverage b ON b.symbol = s.symbol AND b.dataset = 'bars'
            LEFT JOIN session_coverage c ON c.symbol = s.symbol AND c.dataset = ?
            LEFT JOIN symbol_status st ON st.symbol = s.symbol AND st.dataset = ?
            WHERE {' AND '.join(where)} ORDER BY s.symbol""", [dataset, dataset, *params])
        if lag is None:
            lag = freshness.publication_lag(runs.last_provider(con))
    return build(rows, dataset, now, sessions, granularity, lag)


def build(rows: pl.DataFrame, dataset: str, now: dt.datetime, sessions: int = 60,
          granularity: str = "auto", lag: dt.timedelta = freshness.DEFAULT_LAG) -> Heatmap:
    """The heatmap from the catalog rows ``heatmap`` reads (pure: testable on hand-made
    frames)."""
    gran = _granularity(sessions, granularity)
    n = rows.height
    cal = [calendar_for(c) for c in rows["asset_class"].to_list()] if n else []
    cals = set(cal) or {"XNYS"}
    ends = {c: freshness.expected_session(c, now, lag) for c in cals}
    end = max(ends.values())
    # A session not expected yet on a symbol's calendar (crypto's day runs to UTC midnight).
    sym_end = np.array([ends[c] for c in cal], dtype="datetime64[D]")
    if n and "delisted_on" in rows.columns:  # nothing trades after its last trading day
        delisted = _date_list(rows["delisted_on"])
        sym_end = np.where(np.isnat(delisted), sym_end, np.minimum(sym_end, delisted))
    xnys_end = freshness.expected_session("XNYS", now, lag)
    xnys = calendars.session_array("XNYS", xnys_end - dt.timedelta(days=sessions * 2 + 30),
                                   xnys_end)
    start = xnys[-sessions] if len(xnys) >= sessions else xnys[0]
    days = np.arange(start, np.datetime64(end) + 1, dtype="datetime64[D]")
    # Each calendar's sessions among the days (enrich.conventions: XNYS, crypto's every UTC
    # day, forex's Sunday to Friday); weekends are columns only when some calendar trades them.
    is_session = {c: np.isin(days, calendars.session_array(c, start.item(), end))
                  for c in cals | {"XNYS"}}
    weekday = ((days.astype(np.int64) + 3) % 7) < 5
    keep = weekday | np.logical_or.reduce([is_session[c] for c in cals])
    days = days[keep]
    is_session = {c: m[keep] for c, m in is_session.items()}
    n_days = len(days)

    def col(name: str) -> np.ndarray:
        return _date_list(rows[name]) if n else np.array([], dtype="datetime64[D]")

    first, last = col("first_session"), col("last_session")
    bars_first, listed = col("bars_first"), col("listed_since")
    bars_from = col("bars_from") if "bars_from" in rows.columns else \
        np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    through, covered_from = col("through_session"), col("covered_from")
    st_held = (_date_list(rows.select(pl.coalesce("status_latest", "status_through")
                                      if dataset in SESSION_DATASETS else
                                      pl.coalesce("status_through", "status_latest"))
                          .to_series()) if n else np.array([], dtype="datetime64[D]"))
    not_entitled = rows["not_entitled"].to_numpy().astype(bool) if n else np.zeros(0, bool)
    # Listing: the universe's listing date, else the first stored bar when it is evidence of
    # one — the provider was asked for sessions before it and returned none (the bars'
    # fetched window starts at least one session earlier; a window not recorded is from
    # before the window was recorded, when a first fetch always asked the whole history).
    listing = np.where(np.isnat(listed), _evidenced(bars_first, bars_from, cal),
                       np.where(np.isnat(bars_first), listed, np.minimum(listed, bars_first)))
    # Checked: the quality checks recorded what the symbol holds (a row in session_coverage,
    # empty when nothing is held, e.g. a file quarantined): that is the truth, whatever
    # symbol_status last saw.
    checked = (rows["has_coverage"].to_numpy().astype(bool)
               if n and "has_coverage" in rows.columns else ~np.isnat(first) | ~np.isnat(through))
    never = ~checked & np.isnat(st_held)  # this dataset was never fetched for the symbol
    # Fetched through a session without a row ever held (an option chain with no contract
    # listed): nothing exists to hold, so nothing is expected.
    none_exist = (checked & np.isnat(first) & ~np.isnat(through)
                  if dataset == "options_iv" else np.zeros(n, dtype=bool))
    # Data fetched before the checks existed has no coverage row: held from the listing
    # (or as far back as we know nothing) to what ``symbol_status`` says.
    early = np.where(np.isnat(listing), np.datetime64("1900-01-01"), listing)
    if dataset in SESSION_DATASETS:
        lo = np.where(checked, first, early)
        hi = np.where(checked, last, st_held)
    else:
        lo = np.where(np.isnat(covered_from), early, covered_from)
        hi = np.where(checked, through, st_held)
        hi = np.where(np.isnat(hi), last, hi)

    day = days[None, :]
    session = (np.stack([is_session[c] for c in cal]) if n
               else np.zeros((0, n_days), dtype=bool))
    with np.errstate(invalid="ignore"):
        after_listing = np.isnat(listing)[:, None] | (day >= listing[:, None])
        expected = (session & after_listing & ~(not_entitled | none_exist)[:, None]
                    & (day <= sym_end[:, None]))
        present = expected & (day >= lo[:, None]) & (day <= hi[:, None])
    day_codes = np.zeros((n, n_days), dtype=np.int8)
    day_codes[expected] = MISSING
    if n and n_days:
        gaps = _explode_json(rows.select("gaps"), "gaps", pl.List(pl.String))
        if gaps.height:
            g = gaps.select("row", pl.col("gaps").list.get(0).str.to_date().alias("a"),
                            pl.col("gaps").list.get(1).str.to_date().alias("b"))
            r = g["row"].to_numpy().astype(np.int64)
            ai = np.searchsorted(days, _date_list(g["a"]), "left")
            bi = np.searchsorted(days, _date_list(g["b"]), "right")
            diff = np.zeros((n, n_days + 1), dtype=np.int32)
            np.add.at(diff, (r, ai), 1)
            np.add.at(diff, (r, bi), -1)
            present &= np.cumsum(diff[:, :-1], axis=1) == 0
        day_codes[present] = PRESENT
        failed = _explode_json(rows.select("failed"), "failed", pl.String)
        if failed.height:
            f_days = _date_list(failed["failed"].str.to_date())
            r = failed["row"].to_numpy().astype(np.int64)
            ix = np.searchsorted(days, f_days)
            ok = (ix < n_days) & (days[np.minimum(ix, n_days - 1)] == f_days)
            hit = np.zeros((n, n_days), dtype=bool)
            hit[r[ok], ix[ok]] = True
            day_codes[hit & present] = FAILED
    # Buckets.
    keys = _bucket_index(days, gran)
    new = np.r_[True, keys[1:] != keys[:-1]] if n_days else np.zeros(0, bool)
    starts = np.nonzero(new)[0]
    last = np.r_[starts[1:] - 1, n_days - 1] if n_days else starts
    counts: dict[int, np.ndarray] = {}
    for k in CODES:
        m = (day_codes == k).astype(np.int16)
        counts[k] = (np.add.reduceat(m, starts, axis=1) if n and n_days
                     else np.zeros((n, len(starts)), dtype=np.int16))
    codes = np.full((n, len(starts)), NOT_EXPECTED, dtype=np.int8)
    for k in (PRESENT, MISSING, FAILED):  # later codes win
        codes[counts[k] > 0] = k
    return Heatmap(
        dataset=dataset, granularity=gran, days=days,
        bucket_start=days[starts].astype(object).tolist(),
        bucket_end=days[last].astype(object).tolist(),
        symbols=rows["symbol"].to_list() if n else [],
        asset_classes=rows["asset_class"].to_list() if n else [],
        codes=codes, counts=counts, day_codes=day_codes,
        listing=listing.astype(object).tolist(), never_fetched=never.tolist(), end=end)


def _evidenced(first: np.ndarray, fetched_from: np.ndarray, cal: list[str]) -> np.ndarray:
    """``first`` (the first stored bar) where it is a listing date: the fetch that stored it
    started at least one session (of the row's calendar ``cal``) earlier, or its window was
    not recorded; NaT elsewhere."""
    out = first.copy()
    known = ~np.isnat(first) & ~np.isnat(fetched_from)
    if not known.any():
        return out
    cals = np.array(cal, dtype=object)
    skipped = np.zeros(len(first), dtype=np.int64)
    for c in set(cals[known]):
        k = np.nonzero(known & (cals == c))[0]
        lo, hi = fetched_from[k].min(), first[k].max()
        sessions = calendars.session_array(c, lo.item(), hi.item()) if hi >= lo else \
            np.array([], dtype="datetime64[D]")
        skipped[k] = np.searchsorted(sessions, first[k]) - np.searchsorted(sessions,
                                                                           fetched_from[k])
    out[known & (skipped <= 0)] = np.datetime64("NaT")
    return out


# -- filling ------------------------------------------------------------------------------------
@dataclass
class FillPlan:
    """The work that fills the missing cells of a selection.

    ``backfills``: (symbols, first, last) windows for symbols that hold data (one backfill
    per distinct window); ``first_runs``: symbols never fetched. A first run fetches the
    symbol's whole configured history (``lookback_days`` None: ``ENRICH_HISTORY_YEARS``, news
    a year), or further back when the selection starts earlier — never just the selection,
    which would leave the history before it unfetched and looking "before listing".
    ``history_from`` is where the configured history starts; ``unfetched_before`` says, when
    the heatmap reaches further back than the first runs fetch, the day before which their
    history stays unfetched (it shows as missing).
    """

    dataset: str
    backfills: list[tuple[tuple[str, ...], dt.date, dt.date]] = field(default_factory=list)
    first_runs: list[str] = field(default_factory=list)
    lookback_days: int | None = None
    cells: int = 0  # missing cells the plan covers
    history_from: dt.date | None = None
    unfetched_before: dt.date | None = None

    @property
    def empty(self) -> bool:
        return not self.backfills and not self.first_runs

    def describe(self) -> str:
        if self.empty:
            return "nothing to fill: the selection has no missing cell"
        parts = []
        for syms, a, z in self.backfills:
            who = ", ".join(syms[:6]) + (f" … (+{len(syms) - 6})" if len(syms) > 6 else "")
            parts.append(f"backfill {self.dataset} {a.isoformat()} – {z.isoformat()} for {who}")
        if self.first_runs:
            reach = (f"{self.lookback_days} days back" if self.lookback_days is not None
                     else "the configured history"
                     + (f" from {self.history_from.isoformat()}" if self.history_from
                        else ""))
            parts.append(f"first run ({reach}) for " + ", ".join(self.first_runs[:6])
                         + (" …" if len(self.first_runs) > 6 else ""))
        text = f"{self.cells} missing cells: " + "; ".join(parts)
        if self.unfetched_before is not None:
            text += (f"; their history before {self.unfetched_before.isoformat()} stays "
                     "unfetched (a backfill fetches it) and shows as missing")
        return text


def first_fetch_days(dataset: str, history_years: int) -> int:
    """How far back a first fetch of ``dataset`` reaches by default
    (``enrich.pipeline.refresh``)."""
    from enrich.pipeline.refresh import NEWS_FIRST_DAYS

    return NEWS_FIRST_DAYS if dataset == "news" else int(history_years * 365.25)


MAX_STRETCHES = 4  # an options fill's windows for one symbol; more: one window over them


def _stretches(ix: np.ndarray, codes: np.ndarray) -> list[np.ndarray]:
    """The wanted cell indices ``ix`` cut where a held cell (present, or failed but not
    wanted) lies between two of them; days with nothing expected do not cut."""
    out: list[np.ndarray] = []
    start = 0
    for k in range(1, len(ix)):
        between = codes[ix[k - 1] + 1:ix[k]]
        if ((between != NOT_EXPECTED) & (between != MISSING)).any():
            out.append(ix[start:k])
            start = k
    out.append(ix[start:])
    return out


def plan_fill(hm: Heatmap, symbols: Sequence[str], start: dt.date, end: dt.date,
              today: dt.date | None = None, include_failed: bool = False,
              history_years: int | None = None) -> FillPlan:
    """What fills exactly the missing cells of ``symbols`` × [``start``, ``end``]: a
    backfill of exactly those sessions for symbols holding data; for symbols never fetched,
    a first run of their whole history (``history_years``, the configured
    ``ENRICH_HISTORY_YEARS``; further back if the selection starts earlier)."""
    plan = FillPlan(hm.dataset)
    if hm.empty:
        return plan
    sub = hm.subset(list(symbols))
    in_range = (sub.days >= np.datetime64(start)) & (sub.days <= np.datetime64(end))
    want = (sub.day_codes == MISSING) | ((sub.day_codes == FAILED) if include_failed else False)
    want = want & in_range[None, :]
    windows: dict[tuple[dt.date, dt.date], list[str]] = {}
    first_from: list[dt.date] = []
    for i, sym in enumerate(sub.symbols):
        ix = np.nonzero(want[i])[0]
        if not len(ix):
            continue
        plan.cells += len(ix)
        a, z = sub.days[ix[0]].item(), sub.days[ix[-1]].item()
        if sub.never_fetched[i]:
            plan.first_runs.append(sym)
            first_from.append(a)
        elif hm.dataset == "options_iv" and \
                len(stretches := _stretches(ix, sub.day_codes[i])) <= MAX_STRETCHES:
            # An options backfill pays per session (its listing, its contracts' bars): one
            # window per stretch of missing sessions, never over the sessions held between
            # (up to a few: each is a backfill of its own, with its own Treasury curve).
            for seg in stretches:
                windows.setdefault((sub.days[seg[0]].item(), sub.days[seg[-1]].item()),
                                   []).append(sym)
        else:
            windows.setdefault((a, z), []).append(sym)
    plan.backfills = [(tuple(syms), a, z) for (a, z), syms in sorted(windows.items())]
    if first_from:
        ref = today or (hm.end or max(first_from))
        reach = max(1, (ref - min(first_from)).days + 1)
        if history_years is None:
            plan.lookback_days = None  # the engine's default: the configured history
            return plan
        days = first_fetch_days(hm.dataset, history_years)
        plan.history_from = ref - dt.timedelta(days=days)
        if reach > days:
            plan.lookback_days = reach
            plan.history_from = ref - dt.timedelta(days=reach)
        elif len(hm.days) and hm.days[0].item() < plan.history_from:
            plan.unfetched_before = plan.history_from
    return plan


def sessions_since(start: dt.date, now: dt.datetime) -> int:
    """How many XNYS sessions a heatmap needs to reach back to ``start`` (at least one)."""
    return max(1, len(calendars.session_array("XNYS", start, now.date())) + 1)


def gaps_report(catalog: Catalog, dataset: str, now: dt.datetime,
                sessions: int = 60) -> dict[str, Any]:
    """The heatmap's gaps as rows, with its window and totals (the CLI's and API's view)."""
    hm = heatmap(catalog, dataset, now, sessions)
    return {"dataset": dataset, "sessions": sessions,
            "first_session": hm.days[0].item() if len(hm.days) else None,
            "last_session": hm.days[-1].item() if len(hm.days) else None,
            "symbols": len(hm.symbols), "totals": hm.totals(), "gaps": hm.gaps()}


def plan_range(catalog: Catalog, dataset: str, symbols: Sequence[str], start: dt.date,
               end: dt.date, now: dt.datetime, include_failed: bool = False,
               history_years: int | None = None) -> FillPlan:
    """What fills the missing cells of ``symbols`` × [``start``, ``end``] (sessions), read
    from a heatmap reaching back to ``start``: the heatmap's drag-to-fill, without the drag."""
    if end < start:
        raise ValueError(f"the range ends ({end}) before it starts ({start})")
    hm = heatmap(catalog, dataset, now, sessions_since(start, now), symbols=list(symbols))
    unknown = sorted(set(symbols) - set(hm.symbols))
    if unknown:
        raise ValueError(f"{', '.join(unknown)}: not active symbols that have {dataset}")
    return plan_fill(hm, symbols, start, end, include_failed=include_failed,
                     history_years=history_years)


def start_fill(plan: FillPlan, *, settings: Any, store: Any,
               trigger: Callable[..., str] | None = None,
               on_done: Callable[[str], None] | None = None) -> list[str]:
    """Start the plan's work in the background; returns the run ids.

    Backfills go through ``enrich.backfill.jobs.start_in_background``; when one ends, what it
    filled is re-checked (``enrich.checks.quality_run.audit``), so the heatmap and scores see it.
    First runs go through ``trigger`` (``Services.trigger``), whose engine checks after fetching.
    Without the backfill module, every symbol goes through ``trigger`` with a lookback to the
    window's start (which fills gaps at the end of history, and first fetches).
    """
    from enrich.checks import quality_run

    run_ids: list[str] = []
    try:
        from enrich.backfill import jobs as backfill
    except ImportError:  # pragma: no cover - the backfill module ships with the app
        backfill = None  # type: ignore[assignment]  # a module, or None when absent
    if plan.backfills and backfill is None:
        if trigger is None:
            raise RuntimeError("no backfill module and no run service to fill gaps with")
        syms = [s for group, _, _ in plan.backfills for s in group]
        start = min(a for _, a, _ in plan.backfills)
        days = max(1, (dt.date.today() - start).days + 1)
        run_ids.append(trigger(symbols=syms, datasets=[plan.dataset], lookback=days))
    for syms, a, z in plan.backfills if backfill is not None else ():
        request = backfill.BackfillRequest(dataset=BACKFILL_DATASET[plan.dataset],
                                           symbols=syms, since=a, until=z)

        def done(result: Any, syms: tuple[str, ...] = syms, a: dt.date = a) -> None:
            try:
                quality_run.audit(store, list(syms), [plan.dataset], covered_from={plan.dataset: a})
            finally:
                if on_done is not None:
                    on_done(json.dumps({"symbols": list(syms), "result": str(result)[:200]}))

        try:
            run_ids.append(backfill.start_in_background(settings, request, store=store,
                                                        on_done=done))
        except backfill.NothingToDoError:  # the same fill ran meanwhile: no run to record
            continue
    if plan.first_runs:
        if trigger is None:
            raise RuntimeError("a first run needs the run service")
        run_ids.append(trigger(symbols=plan.first_runs, datasets=[plan.dataset],
                               lookback=plan.lookback_days))
    return run_ids
