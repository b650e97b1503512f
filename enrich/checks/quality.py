"""Data quality: checks on what the lake holds for a symbol, run after every fetch (by
``enrich.checks.quality_run``, which reads the lake and records the results; the checks here
are frames in, results out).

Validation (``enrich.checks.validate``) refuses impossible rows at the boundary. The checks here
look at what is *stored* for one symbol after a step — the history as a whole (gaps, duplicate
sessions, jumps, stuck prices) and rows that are well-formed but implausible — and record one
row per check per symbol × dataset (never one per bar):

    quality_log        every result (run, symbol, dataset, check, severity, passed, observed,
                       threshold, detail, checked_at): the history and the daily trend
    quality_status     the latest result of each check: scores and the drilldown
    session_coverage   per symbol × dataset: first and last session held, the gaps, the
                       sessions a failing check points at (the coverage heatmap,
                       ``enrich.backfill.heatmap``)

The checks (every threshold lives in ``THRESHOLDS``; ``observed`` is what the row stores)::

    dataset     check               severity  observed                         fails when
    bars        ohlc                error     bars whose high/low do not bound  > 0
                                              open and close (or low > high)
    bars        non_positive        error     bars with a price <= 0 or         > 0
                                              volume < 0
    bars        duplicate_sessions  error     sessions with more than one bar   > 0
    bars        missing_sessions    error     exchange sessions without a bar   > missing_sessions
                                              from the listing (the first
                                              stored session) to the last
                                              session fetched
    bars        jump                warning   largest |close / previous close   > jump
                                              - 1| on a session with no split
    bars        repeated_closes     warning   longest run of identical closes   >= repeated_closes
    bars        off_calendar        error     bars on days that are no session  > 0
                                              of the symbol's calendar
                                              (``enrich.conventions``)
    bars        zero_volume         warning   bars with no volume (0 or null)   > 0
                                              where the class trades volume
                                              (not indices)
    bars        bad_print           warning   largest excursion of a high or    > bad_print
                                              low beyond its bar's open–close
                                              and its neighbours' highs/lows,
                                              in median daily ranges
    bars        partial_session     warning   the last session's volume over    < partial_session
                                              the median of the 20 sessions of
                                              its kind before it (short
                                              sessions: their own kind)
    bars        ticker_reuse        error     gaps of reuse_gap+ sessions       > 0
                                              across which the price level
                                              moves by reuse_level× or more
                                              with no split (another security
                                              under the same ticker)
    dividends   dividend_size       error     dividends >= the as-traded close  > 0
                                              on their ex date
    dividends   ex_date_range       warning   ex dates outside the stored bars  > 0
    earnings    earnings_order      warning   quarters whose period end does    > 0
                                              not follow the previous one's,
                                              or filed before it ended
    news        news_duplicates     warning   items repeating another's title,  > 0
                                              publisher and time
    options_iv  iv_range            error     contracts with IV outside         > 0
                                              (0, iv_max]
    options_iv  greeks              error     contracts whose delta or gamma    > 0
                                              contradicts the type (call delta
                                              in [0, m], put in [-m, 0],
                                              gamma >= 0; m = max(1, e^(-qT)),
                                              q the contract's dividend yield,
                                              T its years to expiry: a negative
                                              q, implied by parity, lifts a
                                              delta above 1)

A ticker-reuse break accounts for its gap and its move: they are not counted again by
``missing_sessions`` and ``jump``, so each defect fails exactly one check.

Bars are checked on the daily timeframe; options on the newest stored snapshot; the other
datasets on everything stored for the symbol. A check that cannot apply (dividends with no
bars to compare) passes with ``observed`` null and says why.

The quality *score* of a symbol × dataset is the share of its checks passing, weighted by
severity (``SEVERITY_WEIGHT``: an error counts three times a warning).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from enrich import calendars, conventions

EXCHANGE = ZoneInfo(calendars.EXCHANGE_TZ)


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of the checks, in one place.

    jump              a close-to-close move larger than this (0.25 = 25 %) on a session with
                      no split recorded is unexplained; sample volatilities make a 25 % day a
                      > 6-sigma event, while a missed split moves the price by 33 % or more
    repeated_closes   this many identical closes in a row look like a stale feed
    missing_sessions  exchange sessions a symbol's bars may miss (after its listing)
    iv_max            implied volatility above this (5 = 500 %) is not a quote but an error
    bad_print         a high (low) further beyond the bar's open–close and both neighbours'
                      highs (lows) than this many median daily ranges ((high - low) / close of
                      the symbol's bars, at least ``bad_print_floor``) is a bad print: a
                      normal wick is a fraction of a range, a misprint many
    partial_session   a last session with less than this share of the median volume of the 20
                      sessions of its kind before it was stored before the day was complete
    partial_min       sessions of its kind a last session needs before it is judged
    reuse_gap         sessions without a bar that make a gap worth a ticker-reuse look
    reuse_level       a close-to-close ratio (either way) across such a gap that says the
                      price level broke
    rel_tol           relative tolerance when comparing prices (restatements)
    max_evidence      offending rows quoted in a result's ``detail``
    max_sessions      sessions kept per symbol × dataset for the heatmap (newest first)
    """

    jump: float = 0.25
    repeated_closes: int = 5
    missing_sessions: int = 0
    iv_max: float = 5.0
    bad_print: float = 8.0
    bad_print_floor: float = 0.005
    partial_session: float = 0.25
    partial_min: int = 3
    reuse_gap: int = 5
    reuse_level: float = 2.0
    rel_tol: float = 1e-6
    max_evidence: int = 5
    max_sessions: int = 500


THRESHOLDS = Thresholds()
SEVERITY_WEIGHT = {"error": 3.0, "warning": 1.0}


@dataclass(frozen=True)
class Check:
    dataset: str
    name: str
    severity: str  # error | warning
    title: str  # what it looks for, in a few words


CHECKS: tuple[Check, ...] = (
    Check("bars", "ohlc", "error", "high and low bound open and close"),
    Check("bars", "non_positive", "error", "prices > 0 and volume >= 0"),
    Check("bars", "duplicate_sessions", "error", "one bar per session"),
    Check("bars", "missing_sessions", "error", "a bar for every session since listing"),
    Check("bars", "jump", "warning", "no unexplained jump (no split that day)"),
    Check("bars", "repeated_closes", "warning", "no run of identical closes"),
    Check("bars", "off_calendar", "error", "bars only on sessions of the calendar"),
    Check("bars", "zero_volume", "warning", "volume on every bar where the class trades it"),
    Check("bars", "bad_print", "warning", "no high or low far beyond the bar and neighbours"),
    Check("bars", "partial_session", "warning", "the last session complete (its volume)"),
    Check("bars", "ticker_reuse", "error", "no price-level break across a gap"),
    Check("dividends", "dividend_size", "error", "dividend below the close"),
    Check("dividends", "ex_date_range", "warning", "ex date within the stored bars"),
    Check("earnings", "earnings_order", "warning", "quarters in order, filed after they end"),
    Check("news", "news_duplicates", "warning", "no repeated title + publisher + time"),
    Check("options_iv", "iv_range", "error", "implied volatility in (0, 5]"),
    Check("options_iv", "greeks", "error", "delta and gamma consistent with the type"),
)
CHECKS_BY_KEY: dict[tuple[str, str], Check] = {(c.dataset, c.name): c for c in CHECKS}
CHECKED_DATASETS: tuple[str, ...] = tuple(dict.fromkeys(c.dataset for c in CHECKS))


@dataclass(frozen=True)
class CheckResult:
    dataset: str
    check: str
    passed: bool
    observed: float | None
    threshold: float | None
    detail: str
    sessions: tuple[dt.date, ...] = ()  # the sessions the evidence points at

    @property
    def severity(self) -> str:
        return CHECKS_BY_KEY[(self.dataset, self.check)].severity


@dataclass
class Coverage:
    """What one symbol × dataset holds, in sessions (``session_coverage``)."""

    dataset: str
    first_session: dt.date | None = None
    last_session: dt.date | None = None
    through_session: dt.date | None = None  # fetched up to (lake coverage)
    sessions_expected: int | None = None
    sessions_held: int | None = None
    gaps: list[tuple[dt.date, dt.date]] = field(default_factory=list)
    failed_sessions: list[dt.date] = field(default_factory=list)


@dataclass
class SymbolQuality:
    symbol: str
    results: list[CheckResult] = field(default_factory=list)
    coverage: dict[str, Coverage] = field(default_factory=dict)

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.passed]


def score(results: Iterable[CheckResult]) -> float | None:
    """Share of checks passing, weighted by severity; None without checks."""
    num = den = 0.0
    for r in results:
        w = SEVERITY_WEIGHT[r.severity]
        den += w
        num += w * r.passed
    return num / den if den else None


# -- helpers ---------------------------------------------------------------------------------
def _result(dataset: str, name: str, observed: float | None, threshold: float | None,
            failed: bool, detail: str, sessions: Iterable[dt.date] = ()) -> CheckResult:
    return CheckResult(dataset, name, not failed, observed, threshold, detail,
                       tuple(sorted(set(sessions))))


def _not_applicable(dataset: str, name: str, threshold: float | None, why: str) -> CheckResult:
    return CheckResult(dataset, name, True, None, threshold, f"not applicable: {why}")


def _examples(rows: pl.DataFrame, fmt: Callable[[dict[str, Any]], str], n: int) -> str:
    shown = [fmt(r) for r in rows.head(n).iter_rows(named=True)]
    more = rows.height - len(shown)
    return "; ".join(shown) + (f"; … and {more} more" if more > 0 else "")


def _count_detail(n: int, noun: str, rows: pl.DataFrame | None,
                  fmt: Callable[[dict[str, Any]], str], th: Thresholds) -> str:
    if n == 0:
        return f"no {noun}"
    return f"{n} {noun}" + ("" if rows is None else ": " + _examples(rows, fmt, th.max_evidence))


def _g(x: float | None) -> str:
    return "null" if x is None else f"{x:.6g}"


def _ranges(days: np.ndarray, positions: np.ndarray) -> list[tuple[dt.date, dt.date]]:
    """Runs of consecutive ``positions`` (indices into the session array ``days``)."""
    if len(positions) == 0:
        return []
    breaks = np.nonzero(np.diff(positions) != 1)[0]
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(positions) - 1]))
    return [(days[positions[a]].item(), days[positions[b]].item())
            for a, b in zip(starts, ends, strict=True)]


def _fmt_range(a: dt.date, b: dt.date, n: int) -> str:
    return a.isoformat() if a == b else f"{a.isoformat()}–{b.isoformat()} ({n})"


# -- bars ------------------------------------------------------------------------------------
def _member(a: np.ndarray, sorted_b: np.ndarray) -> np.ndarray:
    """``np.isin(a, sorted_b)`` for a sorted ``sorted_b``, without hashing."""
    if len(sorted_b) == 0:
        return np.zeros(len(a), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_b, a), len(sorted_b) - 1)
    return sorted_b[pos] == a


def _dates(values: np.ndarray) -> list[dt.date]:
    return values.astype("datetime64[D]").astype(object).tolist()


@functools.lru_cache(maxsize=16)
def _sessions(calendar: str, first: dt.date, end: dt.date) -> np.ndarray:
    """``calendars.session_array``, kept: the symbols of a run share a few spans."""
    return calendars.session_array(calendar, first, end)


NO_DAYS = np.array([], dtype="datetime64[D]")


class _DailyBars:
    """One symbol's daily bars in session order (ts order within a session), with the numpy
    columns the bar and dividend checks share, each converted once."""

    @classmethod
    def of(cls, bars: pl.DataFrame) -> _DailyBars | None:
        """None when there are no bars."""
        return None if bars.is_empty() else cls(bars)

    def __init__(self, bars: pl.DataFrame):
        sess = bars["session"].to_numpy().astype("datetime64[D]", copy=False)
        self.last_of: np.ndarray | slice = slice(None)  # selects the last bar of each session
        self.repeats = NO_DAYS  # the session of every bar but the first of its session
        if not (sess[1:] > sess[:-1]).all():  # not simply one bar per session, in order
            order = np.lexsort((bars["ts"].to_numpy(), sess))
            if not np.array_equal(order, np.arange(len(order))):
                bars, sess = bars[order], sess[order]
            step = sess[1:] != sess[:-1]
            self.last_of = np.concatenate((step, [True]))
            self.repeats = sess[1:][~step]
        self.frame, self.sess = bars, sess
        self.days = sess[self.last_of]  # the sessions held, ascending
        self._columns: dict[str, np.ndarray] = {}

    def col(self, name: str) -> np.ndarray:
        """A price or volume column as float64 (nulls are NaN)."""
        if name not in self._columns:
            self._columns[name] = self.frame[name].to_numpy().astype(np.float64, copy=False)
        return self._columns[name]


@dataclass(frozen=True)
class _Splits:
    """A symbol's splits as numpy columns, in stored order."""

    days: np.ndarray  # execution dates, datetime64[D]
    ratio: np.ndarray  # split_to / split_from: new shares per old share

    @classmethod
    def of(cls, splits: pl.DataFrame | None) -> _Splits:
        if splits is None or splits.is_empty():
            return cls(NO_DAYS, np.array([], dtype=np.float64))
        return cls(splits["execution_date"].to_numpy().astype("datetime64[D]"),
                   splits["split_to"].to_numpy().astype(np.float64, copy=False)
                   / splits["split_from"].to_numpy().astype(np.float64, copy=False))


def check_bars(bars: pl.DataFrame, splits: pl.DataFrame, calendar: str,
               through: dt.date | None = None,
               th: Thresholds = THRESHOLDS,
               asset_class: str = "stocks") -> tuple[list[CheckResult], Coverage]:
    """The bar checks on one symbol's daily bars, and its session coverage.

    ``through`` is the last session fetched (the lake's coverage); sessions after the last
    bar up to it count as missing. The first stored session is the listing: nothing before
    it is expected. ``asset_class`` says whether volume is expected (``enrich.conventions``).
    Vectorised in numpy (about a hundred microseconds for ten years); the evidence is only
    formatted for a check that fails.
    """
    daily = _DailyBars.of(bars)
    return _check_bars(daily, _Splits.of(splits), calendar, through, th, asset_class)


def _check_bars(daily: _DailyBars | None, splits: _Splits, calendar: str,
                through: dt.date | None, th: Thresholds,
                asset_class: str = "stocks") -> tuple[list[CheckResult], Coverage]:
    ds = "bars"
    cov = Coverage(ds, through_session=through)
    if daily is None:
        why = "no daily bars stored"
        return [_not_applicable(ds, c.name, None, why) for c in CHECKS if c.dataset == ds], cov
    b, sess, held = daily.frame, daily.sess, daily.days
    o, h, lo, c, v = (daily.col(col) for col in ("open", "high", "low", "close", "volume"))
    out: list[CheckResult] = []

    def bar_fmt(r: dict[str, Any]) -> str:
        return (f"{r['session']} o={_g(r['open'])} h={_g(r['high'])} l={_g(r['low'])} "
                f"c={_g(r['close'])}")

    with np.errstate(invalid="ignore"):
        bad = (lo > np.minimum(o, c)) | (h < np.maximum(o, c)) | (lo > h)
        nonpos = (o <= 0) | (h <= 0) | (lo <= 0) | (c <= 0) | (v < 0)
    n = int(np.count_nonzero(bad))
    out.append(_result(ds, "ohlc", n, 0, n > 0,
                       _count_detail(n, "bars with high/low not bounding open/close",
                                     b.filter(pl.Series(bad)) if n else None, bar_fmt, th),
                       _dates(sess[bad]) if n else ()))
    n = int(np.count_nonzero(nonpos))
    out.append(_result(
        ds, "non_positive", n, 0, n > 0,
        _count_detail(n, "bars with a price <= 0 or volume < 0",
                      b.filter(pl.Series(nonpos)) if n else None,
                      lambda r: bar_fmt(r) + f" v={_g(r['volume'])}", th),
        _dates(sess[nonpos]) if n else ()))

    dup_days = np.unique(daily.repeats) if len(daily.repeats) else NO_DAYS
    n = len(dup_days)
    if n:
        dup = (b.filter(pl.col("session").is_in(pl.Series(_dates(dup_days)).implode()))
               .group_by("session", maintain_order=True)
               .agg(pl.len().alias("bars"), pl.col("ts")))
        detail = _count_detail(n, "sessions with more than one bar", dup,
                               lambda r: f"{r['session']} ×{r['bars']} ("
                               + ", ".join(t.strftime("%H:%M UTC") for t in r["ts"]) + ")",
                               th)
        out.append(_result(ds, "duplicate_sessions", n, 0, True, detail, _dates(dup_days)))
    else:
        out.append(_result(ds, "duplicate_sessions", 0, 0, False, "one bar per session"))

    first, last = held[0].item(), held[-1].item()
    end = max(last, through) if through else last
    expected = _sessions(calendar, first, end)
    # One close per session (the last bar of a duplicated one) for moves, runs and breaks.
    closes, days = c[daily.last_of], held
    usual = len(expected) == len(held) and (expected == held).all()
    if usual:
        missing_pos = np.array([], dtype=np.intp)
        breaks = np.array([], dtype=np.intp)
    else:
        missing_pos = np.nonzero(~_member(expected, held))[0]
        breaks, reused = _reuse_breaks(days, closes, expected, splits, th)
        if len(breaks):  # a reuse break accounts for its gap (ticker_reuse)
            missing_pos = missing_pos[~np.isin(missing_pos, reused)]
    out.extend(_new_bar_checks(daily, days, closes, expected, breaks, calendar, asset_class,
                               th))
    gaps = _ranges(expected, missing_pos)
    n = len(missing_pos)
    if n:
        def size(g: tuple[dt.date, dt.date]) -> int:
            return int(np.searchsorted(expected, np.datetime64(g[1]), "right")
                       - np.searchsorted(expected, np.datetime64(g[0]), "left"))
        shown = [_fmt_range(a, z, size((a, z))) for a, z in gaps[: th.max_evidence]]
        more = len(gaps) - len(shown)
        detail = (f"{n} sessions without a bar since {first.isoformat()}: "
                  + "; ".join(shown) + (f"; … and {more} more gaps" if more > 0 else ""))
    else:
        detail = f"every session from {first.isoformat()} to {end.isoformat()} held"
    out.append(_result(ds, "missing_sessions", n, th.missing_sessions,
                       n > th.missing_sessions, detail,
                       _dates(expected[missing_pos]) if n else ()))

    with np.errstate(divide="ignore", invalid="ignore"):
        moves = closes[1:] / closes[:-1] - 1
    judged = np.isfinite(moves)
    if len(splits.days):
        judged &= ~_member(days[1:], np.sort(splits.days))
    judged[breaks] = False  # a reuse break's move is ticker_reuse's
    size_ = np.where(judged, np.abs(moves), 0.0)
    worst = float(size_.max()) if len(size_) else 0.0
    jump = size_ > th.jump
    n = int(np.count_nonzero(jump))
    if n:
        ix = np.nonzero(jump)[0]
        ix = ix[np.argsort(-size_[ix])]
        jumps = pl.DataFrame({"session": _dates(days[1:][ix]), "move": moves[ix],
                              "prev_close": closes[:-1][ix], "close": closes[1:][ix]})
        detail = _count_detail(n, f"moves beyond ±{th.jump:.0%} without a split", jumps,
                               lambda r: f"{r['session']} {r['move']:+.1%} "
                               f"({_g(r['prev_close'])} → {_g(r['close'])})", th)
    else:
        detail = f"largest move {worst:.1%} (no split that day)"
    out.append(_result(ds, "jump", worst, th.jump, n > 0, detail,
                       _dates(days[1:][jump]) if n else ()))

    # Runs of identical closes: where each starts, and how long it is.
    changed = closes[1:] != closes[:-1]
    if changed.all():  # the usual case: no close repeats the previous one
        firsts, lengths = np.arange(len(closes)), np.ones(len(closes), dtype=np.intp)
    else:
        firsts = np.flatnonzero(np.concatenate(([True], changed)))
        lengths = np.diff(np.append(firsts, len(closes)))
    longest = int(lengths.max())
    stuck_runs = np.nonzero(lengths >= th.repeated_closes)[0]
    if len(stuck_runs):
        starts = firsts[stuck_runs]
        stuck = pl.DataFrame({"from": _dates(days[starts]),
                              "to": _dates(days[starts + lengths[stuck_runs] - 1]),
                              "close": closes[starts], "n": lengths[stuck_runs]})
        detail = _count_detail(len(stuck_runs),
                               f"runs of {th.repeated_closes}+ identical closes", stuck,
                               lambda r: f"{r['from']}–{r['to']} close {_g(r['close'])} "
                               f"×{r['n']}", th)
        in_stuck = np.repeat(lengths >= th.repeated_closes, lengths)
        out.append(_result(ds, "repeated_closes", longest, th.repeated_closes, True, detail,
                           _dates(days[in_stuck])))
    else:
        out.append(_result(ds, "repeated_closes", longest, th.repeated_closes, False,
                           f"longest run of identical closes: {longest}"))

    order = {c.name: i for i, c in enumerate(CHECKS)}
    out.sort(key=lambda r: order[r.check])
    cov.first_session, cov.last_session = first, last
    cov.sessions_expected = len(expected)
    cov.sessions_held = len(expected) - len(missing_pos)  # |expected ∩ held|: both unique
    cov.gaps = gaps
    return out, cov


def _reuse_breaks(days: np.ndarray, closes: np.ndarray, expected: np.ndarray,
                  splits: _Splits, th: Thresholds) -> tuple[np.ndarray, np.ndarray]:
    """(i: the held sessions i -> i + 1 that break, the positions in ``expected`` of their
    gaps): ``reuse_gap``+ sessions without a bar between them, closes ``reuse_level``× apart
    either way, and no split executed in between."""
    pos = np.searchsorted(expected, days)
    gap = np.diff(pos) - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = closes[1:] / closes[:-1]
        level = np.abs(np.log(ratio)) >= np.log(th.reuse_level)
    hit = (gap >= th.reuse_gap) & level
    for i in np.nonzero(hit)[0]:
        if len(splits.days) and ((splits.days > days[i]) & (splits.days <= days[i + 1])).any():
            hit[i] = False
    breaks = np.nonzero(hit)[0]
    reused = (np.concatenate([np.arange(pos[i] + 1, pos[i + 1]) for i in breaks])
              if len(breaks) else np.array([], dtype=np.intp))
    return breaks, reused


def _new_bar_checks(daily: _DailyBars, days: np.ndarray, closes: np.ndarray,
                    expected: np.ndarray, breaks: np.ndarray, calendar: str, asset_class: str,
                    th: Thresholds) -> list[CheckResult]:
    """off_calendar, zero_volume, bad_print, partial_session and ticker_reuse (see the module
    docstring), on one bar per session."""
    ds = "bars"
    conv = conventions.convention(asset_class)
    frame = daily.frame.filter(pl.Series(daily.last_of)) if isinstance(
        daily.last_of, np.ndarray) else daily.frame
    o, h, lo, v = (daily.col(k)[daily.last_of] for k in ("open", "high", "low", "volume"))
    out: list[CheckResult] = []

    off = ~_member(days, expected)
    n = int(off.sum())
    out.append(_result(
        ds, "off_calendar", n, 0, n > 0,
        f"{n} bars on days that are no {calendar} session: "
        + ", ".join(d.isoformat() for d in _dates(days[off][: th.max_evidence]))
        + (f"; … and {n - th.max_evidence} more" if n > th.max_evidence else "")
        if n else f"every bar on a {calendar} session", _dates(days[off])))

    if not conv.volume_expected:
        out.append(_not_applicable(ds, "zero_volume", 0,
                                   f"{asset_class} bars carry no volume"))
        out.append(_not_applicable(ds, "partial_session", th.partial_session,
                                   f"{asset_class} bars carry no volume"))
    else:
        none = (v == 0) | np.isnan(v)  # 0, or null (NaN); a negative one is non_positive's
        n = int(none.sum())
        out.append(_result(
            ds, "zero_volume", n, 0, n > 0,
            _count_detail(n, "bars without volume", frame.filter(pl.Series(none)) if n else None,
                          lambda r: f"{r['session']} v={_g(r['volume'])}", th)
            if n else "volume on every bar", _dates(days[none])))
        out.append(_partial_session(days, v, calendar, th))

    with np.errstate(divide="ignore", invalid="ignore"):
        top = np.maximum(o, closes)
        bottom = np.minimum(o, closes)
        if len(h) > 1:
            top[1:] = np.fmax(top[1:], h[:-1])
            top[:-1] = np.fmax(top[:-1], h[1:])
            bottom[1:] = np.fmin(bottom[1:], lo[:-1])
            bottom[:-1] = np.fmin(bottom[:-1], lo[1:])
        excursion = np.fmax(h / top - 1, 1 - lo / bottom)
        unit = max(float(np.nanmedian((h - lo) / closes)), th.bad_print_floor)
        size = np.nan_to_num(excursion / unit, nan=0.0, posinf=0.0)
    worst = float(size.max()) if len(size) else 0.0
    bad = size > th.bad_print
    n = int(bad.sum())
    if n:
        rows = frame.filter(pl.Series(bad)).with_columns(pl.Series("x", size[bad]))
        detail = _count_detail(n, f"bars with a high or low over {th.bad_print:g} median "
                               f"ranges ({unit:.2%}) beyond the bar and its neighbours", rows,
                               lambda r: f"{r['session']} o={_g(r['open'])} h={_g(r['high'])} "
                               f"l={_g(r['low'])} c={_g(r['close'])} ({r['x']:.0f} ranges)",
                               th)
    else:
        detail = f"largest excursion {worst:.1f} median daily ranges ({unit:.2%})"
    out.append(_result(ds, "bad_print", worst, th.bad_print, n > 0, detail, _dates(days[bad])))

    n = len(breaks)
    if n:
        shown = []
        for i in breaks[: th.max_evidence]:
            a, z = days[i].item(), days[i + 1].item()
            shown.append(f"{a.isoformat()} → {z.isoformat()}: close {_g(closes[i])} → "
                         f"{_g(closes[i + 1])} (×{closes[i + 1] / closes[i]:.3g})")
        detail = (f"{n} price-level breaks across gaps of {th.reuse_gap}+ sessions, no split: "
                  + "; ".join(shown) + " — another security's history under this ticker? "
                  "Its ticker events say when the current one started")
        evidence = _dates(np.concatenate([days[breaks], days[breaks + 1]]))
    else:
        detail, evidence = "no price-level break across a gap", []
    out.append(_result(ds, "ticker_reuse", n, 0, n > 0, detail, evidence))
    return out


def _partial_session(days: np.ndarray, v: np.ndarray, calendar: str,
                     th: Thresholds) -> CheckResult:
    """The last session's volume against the median of the (up to) 20 sessions of its kind
    before it (short by design or not: a forex Sunday against Sundays)."""
    ds = "bars"
    short = calendars.short_sessions(calendar, days)
    kind = short == short[-1]
    kind[-1] = False
    before = v[kind][-20:]
    before = before[np.isfinite(before)]
    if len(before) < th.partial_min:
        return _result(ds, "partial_session", None, th.partial_session, False,
                       f"not judged: {len(before)} earlier sessions of its kind")
    median = float(np.median(before))
    share = float(v[-1] / median) if median > 0 else 1.0
    if not np.isfinite(share):
        share = 0.0
    last = days[-1].item()
    failed = share < th.partial_session
    what = "a short session, " if short[-1] else ""
    detail = (f"{last.isoformat()} ({what}volume {_g(float(v[-1]))}) is {share:.0%} of the "
              f"median of its {len(before)} previous sessions of its kind ({_g(median)})")
    if failed:
        detail += ": stored before the session was complete? the next refresh asks it again"
    return _result(ds, "partial_session", share, th.partial_session, failed, detail,
                   [last] if failed else [])


# -- dividends -------------------------------------------------------------------------------
def check_dividends(divs: pl.DataFrame, bars: pl.DataFrame, splits: pl.DataFrame,
                    th: Thresholds = THRESHOLDS) -> list[CheckResult]:
    """Dividends against the stored daily bars.

    The close is brought back to the ex date's share basis (dividends are declared per
    then-current share): multiplied by split_to/split_from of every split executed after the
    ex date up to the bar's ``adjusted_asof``.
    """
    daily = _DailyBars.of(bars)
    return _check_dividends(divs, daily, _Splits.of(splits), th)


def _check_dividends(divs: pl.DataFrame, daily: _DailyBars | None, splits: _Splits,
                     th: Thresholds) -> list[CheckResult]:
    ds = "dividends"
    if divs.is_empty():
        return [_not_applicable(ds, "dividend_size", 0, "no dividends stored"),
                _not_applicable(ds, "ex_date_range", 0, "no dividends stored")]
    if daily is None:
        return [_not_applicable(ds, "dividend_size", 0, "no daily bars to compare"),
                _not_applicable(ds, "ex_date_range", 0, "no daily bars to compare")]
    ex = divs["ex_date"].to_numpy().astype("datetime64[D]")
    cash = divs["cash_amount"].to_numpy().astype(np.float64)
    by_day = np.argsort(ex, kind="stable")
    ex, cash = ex[by_day], cash[by_day]
    days = daily.days
    close = daily.col("close")[daily.last_of]
    pos = np.searchsorted(days, ex, "right") - 1  # the ex date's bar, or the one before
    has_bar = pos >= 0
    at = np.maximum(pos, 0)
    factor = np.ones(len(ex))
    if len(splits.days):
        asof = (daily.frame["adjusted_asof"].to_numpy().astype("datetime64[D]")
                [daily.last_of][at])
        for e64, ratio in zip(splits.days, splits.ratio, strict=True):
            hit = (e64 > ex) & (e64 <= asof)  # NaT compares False: no basis, no factor
            factor = np.where(hit, factor * ratio, factor)
    as_traded = np.where(has_bar, close[at] * factor, np.nan)
    with np.errstate(invalid="ignore"):
        big = cash >= as_traded
    n = int(big.sum())
    if n:
        rows = pl.DataFrame({"ex_date": _dates(ex[big]), "cash_amount": cash[big],
                             "as_traded": as_traded[big]})
        detail = _count_detail(n, "dividends at or above the close", rows,
                               lambda r: f"ex {r['ex_date']} {_g(r['cash_amount'])} vs "
                                         f"close {_g(r['as_traded'])}", th)
    else:
        detail = "every dividend below the close of its ex date"
    out = [_result(ds, "dividend_size", n, 0, n > 0, detail, _dates(ex[big]))]
    first, last = days[0].item(), days[-1].item()
    outside = (ex < days[0]) | (ex > days[-1])
    n = int(outside.sum())
    if n:
        rows = pl.DataFrame({"ex_date": _dates(ex[outside]), "cash_amount": cash[outside]})
        detail = _count_detail(n, f"ex dates outside the bars ({first} – {last})", rows,
                               lambda r: f"ex {r['ex_date']} {_g(r['cash_amount'])}", th)
    else:
        detail = f"every ex date within the bars ({first} – {last})"
    out.append(_result(ds, "ex_date_range", n, 0, n > 0, detail, _dates(ex[outside])))
    return out


# -- earnings, news, options -------------------------------------------------------------------
def check_earnings(earn: pl.DataFrame, th: Thresholds = THRESHOLDS) -> list[CheckResult]:
    ds = "earnings"
    if earn.is_empty():
        return [_not_applicable(ds, "earnings_order", 0, "no earnings stored")]
    fy = earn["fiscal_year"].to_numpy()
    fq = earn["fiscal_quarter"].to_numpy()
    order = np.lexsort((fq, fy))
    ends = earn["period_end"].to_numpy().astype("datetime64[D]")[order]
    filed = earn["filing_date"].to_numpy().astype("datetime64[D]")[order]
    with np.errstate(invalid="ignore"):
        bad = np.concatenate(([False], ends[1:] <= ends[:-1])) | (filed < ends)
    n = int(bad.sum())
    if not n:
        return [_result(ds, "earnings_order", 0, 0, False, "no quarters out of order")]
    rows = earn[order].with_columns(
        pl.col("period_end").shift(1).alias("prev_end")).filter(pl.Series(bad))
    return [_result(
        ds, "earnings_order", n, 0, True,
        _count_detail(n, "quarters out of order", rows,
                      lambda r: f"FY{r['fiscal_year']} Q{r['fiscal_quarter']} period end "
                                f"{r['period_end']} (previous {r['prev_end']}), filed "
                                f"{r['filing_date']}", th),
        rows.select(pl.coalesce("filing_date", "period_end")).to_series())]


def check_news(news: pl.DataFrame, th: Thresholds = THRESHOLDS) -> list[CheckResult]:
    ds = "news"
    if news.is_empty():
        return [_not_applicable(ds, "news_duplicates", 0, "no news stored")]
    # A repeated item shares its time with another: with every time distinct (the usual
    # case, and a cheap count), there is nothing to group.
    if (news["published_utc"].n_unique() == news.height
            or not news.select(pl.struct("title", "publisher", "published_utc")
                               .is_duplicated().any()).item()):
        return [_result(ds, "news_duplicates", 0, 0, False, "no repeated news items")]
    # Groups in order of first appearance, and a stable sort: items repeated at the same
    # time are quoted in the same order on every run.
    groups = (news.group_by("title", "publisher", "published_utc", maintain_order=True)
              .agg(pl.len().alias("n"), pl.col("id").alias("ids"))
              .filter(pl.col("n") > 1).sort("published_utc", maintain_order=True))
    extra = int((groups["n"] - 1).sum())
    days = groups["published_utc"].dt.convert_time_zone(calendars.EXCHANGE_TZ).dt.date()
    return [_result(
        ds, "news_duplicates", extra, 0, True,
        _count_detail(extra, "repeated news items", groups,
                      lambda r: f"{r['published_utc']:%Y-%m-%d %H:%M} UTC {r['publisher']}: "
                                f"“{r['title'][:60]}” ×{r['n']}", th), days)]


def check_options(chain: pl.DataFrame, th: Thresholds = THRESHOLDS) -> list[CheckResult]:
    """IV and greeks of an option chain snapshot (nulls are not judged here)."""
    ds = "options_iv"
    if chain.is_empty():
        return [_not_applicable(ds, "iv_range", th.iv_max, "no option chain stored"),
                _not_applicable(ds, "greeks", 0, "no option chain stored")]

    def num(col: str) -> np.ndarray:  # nulls become NaN, which compares False
        return chain[col].to_numpy().astype(np.float64, copy=False)

    iv, delta, gamma = num("iv"), num("delta"), num("gamma")
    kind = chain["contract_type"].to_numpy()
    call, put = kind == "call", kind == "put"
    with np.errstate(invalid="ignore"):
        # A null IV is a documented "not computed"; a NaN one is a defect.
        bad_iv = ~((iv > 0) & (iv <= th.iv_max))
        if chain["iv"].null_count():
            bad_iv &= ~chain["iv"].is_null().to_numpy()
        # |delta| <= e^(-qT) in the model the chain was priced with (1 for q >= 0), and
        # rounding in the last digits of it.
        q = np.nan_to_num(num("dividend_yield"))
        years = (chain["expiration"].to_numpy() - chain["as_of"].to_numpy()).astype(
            "timedelta64[D]").astype(np.float64) / 365.0
        most = np.maximum(1.0, np.exp(-q * np.nan_to_num(np.maximum(years, 0.0)))) * (1 + 1e-9)
        wrong = ((call & ((delta < 0) | (delta > most)))
                 | (put & ((delta < -most) | (delta > 0))) | (gamma < 0))
    out = []
    for name, mask, noun, fmt, limit in (
        ("iv_range", bad_iv, f"contracts with IV outside (0, {th.iv_max:g}]",
         lambda r: f"{r['as_of']} {r['contract']} iv={_g(r['iv'])}", th.iv_max),
        ("greeks", wrong, "contracts with greeks inconsistent with their type",
         lambda r: f"{r['as_of']} {r['contract']} {r['contract_type']} "
                   f"delta={_g(r['delta'])} gamma={_g(r['gamma'])}", 0),
    ):
        n = int(np.count_nonzero(mask))
        rows = chain.filter(pl.Series(mask)) if n else None
        out.append(_result(ds, name, n, limit, n > 0, _count_detail(n, noun, rows, fmt, th),
                           _dates(chain["as_of"].to_numpy()[mask]) if n else ()))
    return out
