"""Running the quality checks: what one symbol's lake files hold, checked
(``enrich.checks.quality``), and the results recorded in the catalog (``quality_log``,
``quality_status``, ``session_coverage``): after every fetch (``after_fetch``), or on request
for any symbols and datasets (``audit``: the Quality page, ``quality audit``, a heatmap fill).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from enrich import columns
from enrich.checks.quality import (
    CHECKED_DATASETS,
    EXCHANGE,
    THRESHOLDS,
    Coverage,
    SymbolQuality,
    Thresholds,
    _check_bars,
    _check_dividends,
    _DailyBars,
    _member,
    _ranges,
    _sessions,
    _Splits,
    check_earnings,
    check_news,
    check_options,
)
from enrich.store.catalog import WriteBatch, utcnow
from enrich.store.lake import Lake
from enrich.store.quarantine import despite_bad_files
from enrich.symbols import DATASETS_BY_CLASS, calendar_for

if TYPE_CHECKING:
    from enrich.store.store import Store

log = logging.getLogger(__name__)


# -- one symbol ------------------------------------------------------------------------------
def _newest_snapshot(lake: Lake, symbol: str) -> tuple[pl.DataFrame, np.ndarray]:
    """The newest option chain snapshot, and every session with one (for coverage)."""
    files = lake.files("options_iv", [symbol])
    if not files:
        return lake.read("options_iv", [symbol]), np.array([], dtype="datetime64[D]")
    newest = lake.read_one("options_iv", files[-1])
    as_of = newest["as_of"].to_numpy().astype("datetime64[D]")
    at_latest = as_of == as_of.max()
    if at_latest.all():  # the usual case: one snapshot in the file
        days = as_of[:1]
    else:
        days = np.unique(as_of)
        newest = columns.rows_where(newest, at_latest)  # a file is in as_of order: a slice
    if len(files) > 1:
        # From the older files' footers (``Lake.dates_held``), not a year of chains decoded.
        days = np.union1d(days, lake.dates_held("options_iv", files[:-1]))
    return newest, days


def _event_coverage(ds: str, frame: pl.DataFrame, col: str,
                    through: dt.date | None) -> Coverage:
    cov = Coverage(ds, through_session=through, sessions_held=frame.height)
    if not frame.is_empty():
        s = frame[col]
        first: Any = s.min()  # a date, or an instant (below)
        last: Any = s.max()
        if s.dtype != pl.Date:  # instants: the session is the date at the exchange, which
            # only ever moves forward with the instant, so the extremes convert alone
            first, last = (None if t is None else t.astimezone(EXCHANGE).date()
                           for t in (first, last))
        cov.first_session, cov.last_session = first, last
    return cov


def run_checks(lake: Lake, symbol: str, asset_class: str,
               datasets: Sequence[str] | None = None,
               through: dict[str, dt.date] | None = None,
               th: Thresholds = THRESHOLDS) -> SymbolQuality:
    """Check what the lake holds for ``symbol`` in ``datasets`` (default: every dataset of its
    asset class that has checks). ``through`` is the lake's coverage (``Lake.read_coverage``)."""
    applicable = DATASETS_BY_CLASS.get(asset_class, ("bars",))
    wanted = [d for d in (datasets or applicable) if d in applicable and d in CHECKED_DATASETS]
    through = lake.read_coverage(symbol) if through is None else through
    cal = calendar_for(asset_class)
    sq = SymbolQuality(symbol)
    if not wanted:
        return sq
    need_bars = any(d in ("bars", "dividends") for d in wanted)
    daily, splits = None, None
    if need_bars:  # read and converted once for the bar and the dividend checks
        bars = lake.read("bars", [symbol], level="1d")
        daily = _DailyBars.of(bars)
        splits = _Splits.of(lake.read("splits", [symbol]))  # most have none
    for ds in wanted:
        if ds == "bars":
            assert splits is not None  # read above whenever bars or dividends are wanted
            results, cov = _check_bars(daily, splits, cal, through.get("bars:1d"), th,
                                       asset_class)
        elif ds == "dividends":
            divs = lake.read("dividends", [symbol])
            assert splits is not None
            results = _check_dividends(divs, daily, splits, th)
            cov = _event_coverage(ds, divs, "ex_date", through.get(ds))
        elif ds == "earnings":
            earn = lake.read("earnings", [symbol])
            results = check_earnings(earn, th)
            cov = _event_coverage(ds, earn, "filing_date", through.get(ds))
        elif ds == "news":
            news = lake.read("news", [symbol])
            results = check_news(news, th)
            cov = _event_coverage(ds, news, "published_utc", through.get(ds))
        else:  # options_iv
            chain, days = _newest_snapshot(lake, symbol)
            results = check_options(chain, th)
            cov = Coverage(ds, through_session=through.get(ds))
            if len(days):
                cov.first_session, cov.last_session = days[0].item(), days[-1].item()
                expected = _sessions(cal, cov.first_session, cov.last_session)
                missing = np.nonzero(~_member(expected, days))[0]
                cov.gaps = _ranges(expected, missing)
                cov.sessions_expected, cov.sessions_held = len(expected), len(days)
        # Sessions whose rows a check faults (gaps are kept apart: they hold no row).
        failed = sorted({s for r in results if not r.passed and r.check != "missing_sessions"
                         for s in r.sessions})
        cov.failed_sessions = failed[-th.max_sessions:]
        cov.gaps = cov.gaps[-th.max_sessions:]
        sq.results.extend(results)
        sq.coverage[ds] = cov
    return sq


# -- recording -------------------------------------------------------------------------------
def record(b: WriteBatch, sq: SymbolQuality, run_id: str | None, at: dt.datetime,
           covered_from: dict[str, dt.date] | None = None) -> None:
    """Add one symbol's results to a batch: ``quality_log`` rows, the latest per check in
    ``quality_status``, and its ``session_coverage``. ``covered_from`` sets where the fetched
    window of a dataset starts (given on its first fetch; kept otherwise)."""
    row: dict[str, Any]
    for r in sq.results:
        row = {"run_id": run_id, "symbol": sq.symbol, "dataset": r.dataset,
               "check_name": r.check, "severity": r.severity, "passed": r.passed,
               "observed": None if r.observed is None else float(r.observed),
               "threshold": None if r.threshold is None else float(r.threshold),
               "detail": r.detail[:2000], "checked_at": at}
        b.insert("quality_log", row)
        b.upsert("quality_status", row)
    for ds, cov in sq.coverage.items():
        row = {"symbol": sq.symbol, "dataset": ds, "first_session": cov.first_session,
               "last_session": cov.last_session, "through_session": cov.through_session,
               "sessions_expected": cov.sessions_expected,
               "sessions_held": cov.sessions_held,
               "gaps": [[a.isoformat(), z.isoformat()] for a, z in cov.gaps],
               "failed_sessions": [d.isoformat() for d in cov.failed_sessions],
               "checked_at": at, "run_id": run_id}
        if covered_from and covered_from.get(ds) is not None:
            row["covered_from"] = covered_from[ds]
        b.upsert("session_coverage", row)


def after_fetch(lake: Lake, log_buffer: Any, run_id: str | None, symbol: str,
                asset_class: str, steps: Sequence[Any], previous: dict[str, dt.date],
                timeframe: str = "1d") -> SymbolQuality | None:
    """The engine's hook, called with the symbol's lock held after its fetch steps.

    Checks every dataset whose step fetched (status ``ok``) and adds the results to the
    engine's ``LogBuffer``. ``previous`` is the lake coverage before the steps: a dataset
    without one was fetched for the first time, from its step's window start. A failure of
    the checks themselves is recorded in ``compute_log`` (dataset ``quality``), never raised.
    """
    datasets = [s.dataset for s in steps if s.status == "ok" and s.dataset in CHECKED_DATASETS]
    if timeframe != "1d":
        datasets = [d for d in datasets if d != "bars"]
    if not datasets:
        return None
    t0 = utcnow()
    try:
        sq = run_checks(lake, symbol, asset_class, datasets)
    except Exception as exc:  # a bug in a check must never fail the symbol's enrichment
        log.exception("quality checks of %s failed", symbol)
        row = {"run_id": run_id, "symbol": symbol, "dataset": "quality",
               "timeframe": timeframe, "started_at": t0,
               "duration_ms": (utcnow() - t0).total_seconds() * 1000, "records": 0,
               "status": "failed", "error_class": type(exc).__name__,
               "error_message": str(exc)[:1000]}
        log_buffer.add(lambda b: b.insert("compute_log", row))
        return None
    first = {}
    for s in steps:
        window = getattr(s, "window", None)
        key = f"bars:{timeframe}" if s.dataset == "bars" else s.dataset
        if s.status == "ok" and window and previous.get(key) is None:
            first[s.dataset] = window[0]
    log_buffer.add(lambda b: record(b, sq, run_id, t0, first))
    return sq


# The check an audit reports for a file it found unreadable and set aside (not recorded: the
# quarantine marks its symbol × dataset failing).
READABLE = "readable"


def _checks_of_readable(lake: Lake, symbol: str, asset_class: str,
                        datasets: Sequence[str] | None, th: Thresholds,
                        rows: list[dict[str, Any]]) -> SymbolQuality:
    """``run_checks`` over what can be read: a file found unreadable is set aside by the read
    (``CorruptFileError``), reported in ``rows`` as a failed ``readable`` check, and the
    symbol checked again without it."""
    sq, set_aside = despite_bad_files(
        lambda: run_checks(lake, symbol, asset_class, datasets, th=th))
    rows.extend({"symbol": symbol, "dataset": exc.dataset, "check": READABLE,
                 "severity": "error", "passed": False, "observed": None, "detail": str(exc)}
                for exc in set_aside)
    return sq


def audit(store: Store, symbols: Sequence[str] | None = None,
          datasets: Sequence[str] | None = None, run_id: str | None = None,
          covered_from: dict[str, dt.date] | None = None,
          th: Thresholds = THRESHOLDS, batch_size: int = 200) -> pl.DataFrame:
    """Re-check what is stored, without fetching: ``symbols`` (default: the active universe)
    × ``datasets``. Writes the results like a fetch would; returns them as a frame.

    ``covered_from`` lowers where a dataset's fetched window starts (a backfill that reached
    further back), per dataset, for every symbol checked.
    """
    where, params = "active", []
    if symbols:
        where = f"symbol IN ({','.join('?' * len(symbols))})"
        params = list(symbols)
    universe = store.catalog.query(
        f"SELECT symbol, asset_class FROM symbols WHERE {where} ORDER BY symbol", params)
    lowered: dict[tuple[str, str], dt.date] = {}
    if covered_from:
        have = store.catalog.query(
            "SELECT symbol, dataset, covered_from FROM session_coverage")
        known = {(s, d): c for s, d, c in have.iter_rows()}
        for sym in universe["symbol"]:
            for ds, start in covered_from.items():
                old = known.get((sym, ds))
                lowered[(sym, ds)] = start if old is None else min(old, start)
    rows: list[dict[str, Any]] = []
    batch = WriteBatch()
    at = utcnow()
    for sym, cls in universe.iter_rows():
        sq = _checks_of_readable(store.lake, sym, cls, datasets, th, rows)
        first = {ds: d for (s, ds), d in lowered.items() if s == sym}
        record(batch, sq, run_id, at, first)
        for r in sq.results:
            rows.append({"symbol": sym, "dataset": r.dataset, "check": r.check,
                         "severity": r.severity, "passed": r.passed,
                         "observed": r.observed, "detail": r.detail})
        if batch.size() >= batch_size * 10:
            store.catalog.write(batch)
            batch = WriteBatch()
    store.catalog.write(batch)
    schema = {"symbol": pl.String, "dataset": pl.String, "check": pl.String,
              "severity": pl.String, "passed": pl.Boolean, "observed": pl.Float64,
              "detail": pl.String}
    return pl.DataFrame(rows, schema=schema)
