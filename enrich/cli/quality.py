"""``python -m enrich quality|coverage|fill``: the Quality page's views and actions.

    quality [--symbol S] [--failing] [--dataset D] [--json]   checks and scores
    quality audit [--symbol S …] [--dataset D …] [--json]     re-check what is stored
    coverage --dataset D [--sessions N] [--json]              the heatmap's gaps as rows
    fill --dataset D --symbols S,… --from DATE --to DATE [--include-failed] [--json]
                                                              fill exactly those gaps

Imported by ``enrich.cli``. The same read models as the page and
``GET /api/v1/quality`` / ``/api/v1/coverage`` (``enrich.views.quality.quality_report``,
``enrich.backfill.heatmap.gaps_report``), the same action as the heatmap's drag-to-fill and
``POST /api/v1/fills`` (``enrich.backfill.heatmap.plan_range`` + ``start_fill``). Exit codes: 0
done, 1 a fill whose runs did not all succeed (``quality --failing``: some check fails), 2 bad
usage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time

import polars as pl

from enrich.backfill.heatmap import DATASETS
from enrich.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    bounded_int,
    command,
    extend_parser,
    held_symbols,
    not_empty,
    print_json,
    print_table,
)
from enrich.config import Settings
from enrich.store import runs
from enrich.ui import SESSION_DATES

FINAL = ("succeeded", "partial", "failed", "cancelled", "paused", "interrupted",
         "missed")


def _store(settings: Settings):
    from enrich.store.store import Store

    return Store.from_settings(settings)


def _symbols(raw: list[str] | None) -> list[str]:
    from enrich.symbols import validate_symbol

    return [validate_symbol(s.strip()) for item in raw or [] for s in item.split(",")
            if s.strip()]


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a date; use YYYY-MM-DD") from None


# -- quality --------------------------------------------------------------------------------
@command("quality")
def cmd_quality(args: argparse.Namespace, settings: Settings) -> int:
    if args.quality_cmd == "audit":
        return _audit(args, settings)
    from enrich.views.quality import quality_report

    store = _store(settings)
    given = _symbols([not_empty(args.symbol, "--symbol")]) if args.symbol is not None else []
    symbol = held_symbols(store.catalog, given[:1])[0] if given else None
    report = quality_report(store.catalog, symbol, args.failing, args.dataset)
    if args.json:
        print_json({"symbol": symbol, "failing": args.failing,
                    **{k: v.to_dicts() for k, v in report.items()}})
        return EXIT_FAILED if args.failing and _any_rows(report) else EXIT_OK
    if symbol:
        print(f"{symbol}: quality per dataset")
        _table(report["scores"], ["dataset", "score", "checks", "failed", "failed_errors",
                                  "checked_at"], "no check has run on it yet")
        print()
        print("failing checks" if args.failing else "checks (failing first)")
        _table(report["checks"], ["dataset", "check_name", "severity", "passed", "observed",
                                  "threshold", "detail"], "none")
    elif args.failing:
        _table(report["failing"], ["symbol", "dataset", "check_name", "severity", "observed",
                                   "threshold", "detail"], "every check passes")
    else:
        _table(report["symbols"], ["symbol", "score", "checks", "failed", "failing"],
               "no check has run yet: `python -m enrich run` or `quality audit`")
        if not report["by_check"].is_empty():
            print()
            _table(report["by_check"], ["dataset", "check_name", "severity", "symbols",
                                        "failing"], "")
    return EXIT_FAILED if args.failing and _any_rows(report) else EXIT_OK


def _any_rows(report: dict[str, pl.DataFrame]) -> bool:
    return any(not v.is_empty() for k, v in report.items() if k in ("failing", "checks"))


def _table(frame: pl.DataFrame, cols: list[str], empty: str) -> None:
    if frame.is_empty():
        if empty:
            print(empty)
        return
    shown = frame.select([c for c in cols if c in frame.columns])
    shown = shown.with_columns(
        pl.col(c).round(4) for c, t in shown.schema.items() if t.is_float())
    if "detail" in shown.columns:
        shown = shown.with_columns(pl.col("detail").str.slice(0, 80))
    print_table(shown)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.checks import quality_run

    store = _store(settings)
    symbols = _symbols(not_empty(args.symbols, "--symbol")) or None
    if symbols:
        symbols = held_symbols(store.catalog, symbols)
    t0 = time.monotonic()
    results = quality_run.audit(store, symbols, args.datasets or None)
    failing = results.filter(~pl.col("passed"))
    if args.json:
        print_json({"checks": results.height, "failing": failing.to_dicts()})
        return EXIT_OK
    n_sym = results["symbol"].n_unique() if results.height else 0
    print(f"re-checked {n_sym} symbol(s), {results.height} checks in "
          f"{time.monotonic() - t0:.1f}s: {failing.height} failing")
    for detail in failing.filter(pl.col("check") == quality_run.READABLE)["detail"]:
        print(detail)  # a file set aside: where it went and what happens next, in full
    if failing.height:
        _table(failing, ["symbol", "dataset", "check", "severity", "observed", "detail"], "")
    return EXIT_OK


# -- coverage -------------------------------------------------------------------------------
@command("coverage")
def cmd_coverage(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.backfill.heatmap import gaps_report

    if args.sessions < 1:
        raise UsageError("--sessions must be at least 1")
    report = gaps_report(_store(settings).catalog, args.dataset, settings.now(),
                         args.sessions)
    if args.json:
        print_json({**report, "gaps": report["gaps"].to_dicts()})
        return EXIT_OK
    print(f"{args.dataset}: {report['symbols']} symbol(s), sessions "
          f"{report['first_session']} – {report['last_session']} ({SESSION_DATES}); "
          "symbol × day cells: " + ", ".join(f"{k} {v}" for k, v in report["totals"].items()))
    _table(report["gaps"], ["symbol", "state", "first_session", "last_session", "sessions",
                            "never_fetched"], "no gap: every expected session is held")
    return EXIT_OK


# -- fill -----------------------------------------------------------------------------------
@command("fill")
def cmd_fill(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.backfill import jobs as backfill
    from enrich.backfill.heatmap import plan_range, start_fill
    from enrich.service import Services

    symbols = _symbols(args.symbols)
    if not symbols:
        raise UsageError("--symbols needs at least one symbol")
    start, end = args.start, args.end
    if end < start:
        raise UsageError(f"--to {end} is before --from {start}")
    today = settings.now().date()  # UTC: never before the exchange's date
    if start > today:
        raise UsageError(f"--from {start} is in the future (today is {today} UTC): no "
                         "session there can be filled yet")
    store = _store(settings)
    symbols = held_symbols(store.catalog, symbols)
    try:
        plan = plan_range(store.catalog, args.dataset, symbols, start, end, settings.now(),
                          args.include_failed, history_years=settings.history_years)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if plan.empty:
        if args.json:
            print_json({"cells": 0, "run_ids": [], "plan": plan.describe(), "states": {}})
        else:
            print(plan.describe())
        return EXIT_OK
    if not args.json:
        print(plan.describe(), file=sys.stderr, flush=True)
    svc = Services(settings.with_(scheduler=False), store=store, alerts=False).start()
    try:
        ids = start_fill(plan, settings=settings, store=store,
                         trigger=lambda **kw: svc.trigger(kind="cli", **kw))
        if not args.json:
            print(f"started {len(ids)} run(s): {', '.join(ids)}", file=sys.stderr, flush=True)
        for bid in list(backfill.live_backfills()):
            backfill.wait_for(bid)  # its run, then the re-check of what it filled
        states = {rid: _wait(svc, store.catalog, rid) for rid in ids}
    finally:
        svc.stop()
    if args.json:
        print_json({"cells": plan.cells, "run_ids": ids, "plan": plan.describe(),
                    "states": states})
    else:
        for rid, state in states.items():
            print(f"run {rid}: {state}")
    return EXIT_OK if all(s == "succeeded" for s in states.values()) else EXIT_FAILED


def _wait(svc, catalog, run_id: str) -> str:
    if run_id in svc.active_runs():
        return svc.wait(run_id)
    while True:
        state = runs.state_of(catalog, run_id)
        if state in FINAL:
            return state
        time.sleep(0.2)


# -- parser ---------------------------------------------------------------------------------
@extend_parser
def _parser(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("quality", help="data-quality checks and scores; `quality audit` "
                                       "re-checks what is stored")
    q.add_argument("--symbol", help="one symbol's checks")
    q.add_argument("--failing", action="store_true", help="only checks failing now")
    q.add_argument("--dataset", choices=DATASETS)
    q.add_argument("--json", action="store_true")
    qsub = q.add_subparsers(dest="quality_cmd", metavar="ACTION")
    a = qsub.add_parser("audit", help="run every check again on the lake, without fetching")
    a.add_argument("--symbol", "--symbols", dest="symbols", action="extend", nargs="+",
                   metavar="S", help="default: the active universe")
    a.add_argument("--dataset", "--datasets", dest="datasets", action="extend", nargs="+",
                   choices=DATASETS, metavar="D")
    a.add_argument("--json", action="store_true", default=argparse.SUPPRESS)

    c = sub.add_parser("coverage", help="the coverage heatmap's gaps as rows")
    c.add_argument("--dataset", required=True, choices=DATASETS)
    c.add_argument("--sessions", type=bounded_int(1, 5000), default=60,  # as the API
                   help="XNYS sessions back from the latest expected one (default 60)")
    c.add_argument("--json", action="store_true")

    f = sub.add_parser("fill", help="fill exactly the missing sessions of symbols × dates "
                                    "(what the heatmap's drag-to-fill does)")
    f.add_argument("--dataset", required=True, choices=DATASETS)
    f.add_argument("--symbol", "--symbols", dest="symbols", action="extend", nargs="+",
                   required=True, metavar="S", help="space- or comma-separated")
    f.add_argument("--from", dest="start", type=_date, required=True, metavar="DATE")
    f.add_argument("--to", dest="end", type=_date, required=True, metavar="DATE")
    f.add_argument("--include-failed", action="store_true",
                   help="also re-fetch sessions a quality check failed on")
    f.add_argument("--json", action="store_true")
