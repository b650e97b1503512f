"""The core commands: ``run``, ``status``, ``runs``, ``symbols`` and ``entitlements``."""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl

from enrich.cli.common import (
    COMMANDS,
    EXIT_FAILED,
    EXIT_OK,
    MAX_LIMIT,
    UsageError,
    bounded_int,
    command,
    fmt_ts,
    held_symbols,
    not_empty,
    print_json,
    print_table,
    report_run,
    run_in_foreground,
)
from enrich.cli.progress import TerminalProgress
from enrich.config import MAX_LOOKBACK_DAYS, Settings
from enrich.schemas import FETCHED
from enrich.views.runs import RUN_STATES


def _csv_list(raw: str | None, option: str | None = None) -> list[str] | None:
    """Comma-separated items; None when the option was not given. Given but empty (``''``)
    is an error when ``option`` names it: an empty list must never mean "everything"."""
    if raw is None:
        return None
    items = [x.strip() for x in raw.split(",") if x.strip()]
    if not items and option:
        raise UsageError(f"{option} is empty: name at least one, or leave {option} out")
    return items or None


def _datasets(raw: str | None) -> list[str] | None:
    items = _csv_list(raw, "--datasets")
    if items is None:
        return None
    bad = [d for d in items if d not in FETCHED]
    if bad:
        raise UsageError(f"unknown dataset(s) {', '.join(bad)}; choose from {', '.join(FETCHED)}")
    return items


def _open(settings: Settings):
    from enrich.store.store import Store

    return Store.from_settings(settings)  # repairs made while opening are logged as warnings


def _engine(settings: Settings, store=None):
    from enrich.pipeline.engine import Engine
    from enrich.providers import make_provider
    from enrich.store.universe import ensure_demo_universe

    store = store or _open(settings)
    ensure_demo_universe(store.catalog)
    return Engine(store, make_provider(settings), settings)


# -- run ------------------------------------------------------------------------------------
@command("run", creates=lambda args: not args.background or args.dry_run)
def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.pipeline.requests import make_params

    # Everything is checked before a run is recorded: a refused argument leaves no run row.
    params = make_params(_csv_list(args.symbols, "--symbols"), _datasets(args.datasets),
                         args.asset_class, args.timeframe, args.lookback_days)
    if getattr(args, "background", False) and not getattr(args, "dry_run", False):
        handoff = COMMANDS.get("__background_run")
        if handoff is None:
            raise UsageError("--background needs a running `python -m enrich serve`")
        return handoff(argparse.Namespace(params=params), settings)
    dry_run = getattr(args, "dry_run", False)
    first = dry_run and not _desk_exists(settings)
    with _run_engine(settings, scratch=first) as engine:
        if params.symbols:
            held = held_symbols(engine.store.catalog, list(params.symbols))  # refuses unknowns
            if params.asset_class:
                _some_of_class(engine.store.catalog, held, params.asset_class)
        if dry_run:
            code = _dry_run(engine, params, settings, args.json)
            if first:
                print(f"no desk at {settings.data_dir.resolve()} yet: this is the plan of the "
                      "first run there, which would start it with the demo universe (nothing "
                      "was created)", file=sys.stderr)
            return code
        if settings.provider == "sample" and not args.json:
            print("provider: sample (offline demo data)", file=sys.stderr)
        progress = None if args.json else TerminalProgress().symbol_done
        summary = run_in_foreground(engine, params, "cli", engine.create_run(params, "cli"),
                                    progress)
        return report_run(summary, args.json)


def _desk_exists(settings: Settings) -> bool:
    from enrich.store.store import desk_exists

    return desk_exists(settings.data_dir)


@contextlib.contextmanager
def _run_engine(settings: Settings, scratch: bool) -> Iterator[Any]:
    """The run's engine; with ``scratch``, on a scratch desk deleted after (a dry run where
    there is no desk yet plans the first run there, so a preview of the cost, or a mistyped
    path, creates nothing). Its provider's connections (a Massive client's) are closed
    after, when run in-process (tests, scripts)."""
    with tempfile.TemporaryDirectory(prefix="enrich-dry-run-") if scratch \
            else contextlib.nullcontext() as where:
        engine = _engine(settings.with_(data_dir=Path(where)) if where else settings)
        try:
            yield engine
        finally:
            if (close := getattr(engine.provider, "close", None)) is not None:
                close()


def _some_of_class(catalog, symbols: list[str], asset_class: str) -> None:
    """Refuses ``--asset-class`` that keeps none of ``--symbols`` (a run of nothing)."""
    from enrich.store.universe import list_symbols

    classes = dict(list_symbols(catalog).select("symbol", "asset_class").iter_rows())
    if all(classes.get(s) != asset_class for s in symbols):
        shown = ", ".join(f"{s} is {classes.get(s)}" for s in symbols[:5])
        raise UsageError(f"{shown}, not {asset_class}: --asset-class keeps none of --symbols; "
                         "drop one of the two")


def _dry_run(engine, params, settings: Settings, as_json: bool) -> int:
    """Print what the run would fetch, by which path, and the requests it would cost."""
    plan = engine.plan(params)
    if as_json:
        print_json({"provider": settings.provider, **plan.to_json()})
        return EXIT_OK
    rate = plan.rate_limit_per_min
    pace = f"{rate:g} requests/min" if rate else "not rate limited"
    print(f"plan at {fmt_ts(engine.clock())} (provider {settings.provider}, {pace}):")
    rows = pl.DataFrame(plan.rows(), schema={
        "dataset": pl.String, "path": pl.String, "symbols": pl.Int64, "up_to_date": pl.Int64,
        "requests": pl.Int64, "universe_requests": pl.Int64, "symbol_requests": pl.Int64,
        "per_symbol_path": pl.Int64, "minutes": pl.Float64})
    if rows.height:
        print_table(rows, ["dataset", "path", "symbols", "up_to_date", "requests",
                           "per_symbol_path"] + (["minutes"] if rate else []))
    print(f"total: {plan.describe()}")
    return EXIT_OK


# -- status ---------------------------------------------------------------------------------
@command("status")
def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.symbols import validate_symbol
    from enrich.views.status import status_grid, symbol_state_counts, symbol_summary

    store = _open(settings)
    sym = None
    if not_empty(args.symbol, "--symbol") is not None:
        sym = held_symbols(store.catalog, [validate_symbol(args.symbol.strip())])[0]
    # The dashboard's and the API's read model, at the desk's instant: the same symbols
    # (active ones; any one named), the same rows (never fetched too), the same states.
    frame = status_grid(store.catalog, settings.now(), sym, active_only=sym is None)
    if args.json:
        print_json(frame)
        return EXIT_OK
    if frame.is_empty():
        print("no status yet: run `python -m enrich run` to enrich the universe")
        return EXIT_OK
    # An error a later success answered is history (`--json` keeps it): not beside "fresh".
    shown = frame.with_columns(pl.when(
        pl.col("last_error_at").is_not_null()
        & (pl.col("last_success_at").is_null()
           | (pl.col("last_error_at") > pl.col("last_success_at"))))
        .then(pl.col("last_error_class")).alias("last_error_class"))
    print_table(shown, ["symbol", "dataset", "state", "sessions_behind", "latest_session",
                        "last_success_at", "last_error_class"])
    summary = symbol_summary(frame)
    worst = {s: n for s, n in symbol_state_counts(summary).items() if n}
    pairs = frame.group_by("state").len().sort("state")
    print(f"\nsymbols by most urgent dataset ({summary.height}): "
          + ", ".join(f"{s} {n}" for s, n in worst.items()))
    print(f"symbol × dataset rows ({frame.height}): "
          + ", ".join(f"{s} {n}" for s, n in pairs.iter_rows()))
    return EXIT_OK


# -- runs -----------------------------------------------------------------------------------
@command("runs")
def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    sub = getattr(args, "runs_cmd", None)
    if sub and sub != "list":
        handler = COMMANDS.get(f"runs {sub}")
        if handler is None:
            raise UsageError(f"unknown runs command {sub!r}")
        return handler(args, settings)
    from enrich import ui
    from enrich.store import runs
    from enrich.symbols import validate_symbol
    from enrich.views.runs import runs_table

    not_empty(getattr(args, "symbol", None), "--symbol")
    not_empty(getattr(args, "since", None), "--since")
    store = _open(settings)
    runs.close_dead_runs(store)  # a killed run's process is gone: shown interrupted
    since = None
    if getattr(args, "since", None):
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise UsageError(f"--since {args.since!r}: use YYYY-MM-DD or an ISO time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
    sym, held = None, False
    if getattr(args, "symbol", None):
        from enrich.store.universe import match_symbols

        found, _ = match_symbols(store.catalog, [validate_symbol(args.symbol.strip())])
        # As the universe spells it (any case); one removed from it keeps its runs.
        sym, held = (found[0], True) if found else (validate_symbol(args.symbol.strip()), False)
    frame = runs_table(store.catalog, limit=args.limit, state=getattr(args, "state", None),
                       symbol=sym, since=since)
    if frame.is_empty() and sym is not None and not held and not runs_table(
            store.catalog, limit=1, symbol=sym).height:
        raise UsageError(f"--symbol {sym}: no run ever enriched it and it is not in the "
                         "universe (`python -m enrich symbols list`)")
    if args.json:  # as the API: a run's params and errors nested, not JSON in a string
        print_json(ui.json_rows(frame, "params", "error_summary"))
        return EXIT_OK
    if frame.is_empty():
        filtered = any(getattr(args, k, None) for k in ("state", "symbol", "since"))
        print("no run matches --state/--symbol/--since" if filtered
              else "no runs yet: start one with `python -m enrich run`")
        return EXIT_OK
    print_table(frame, ["run_id", "kind", "state", "requested_at", "symbols_total",
                        "symbols_ok", "symbols_failed", "records_written", "message"])
    return EXIT_OK


# -- symbols --------------------------------------------------------------------------------
@command("symbols", creates=lambda args: args.symbols_cmd in ("add", "import") or (
    args.symbols_cmd == "list" and args.seed_demo))
def cmd_symbols(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.store import universe

    store = _open(settings)
    if getattr(args, "symbol", None):  # `AAPL MSFT` or `AAPL,MSFT`, as run --symbols takes
        args.symbol = [s.strip() for a in args.symbol for s in a.split(",") if s.strip()]
        if not args.symbol:
            raise UsageError("no symbol given: `symbols remove AAPL MSFT` or `AAPL,MSFT`")
    if args.symbols_cmd == "list":
        universe.ensure_demo_universe(store.catalog) if args.seed_demo else None
        frame = universe.list_symbols(store.catalog)
        if args.json:
            print_json(frame)
        elif frame.is_empty():
            print("the universe is empty: `python -m enrich symbols add AAPL` or "
                  "`python -m enrich run` (seeds the demo universe)")
        else:
            print_table(frame)
        return EXIT_OK
    if args.symbols_cmd == "add":
        from enrich.providers import make_provider

        # The provider's ticker reference first: an unknown ticker is refused (exit 2); a
        # symbol already held is left exactly as it is.
        report = universe.add_verified(
            store.catalog, make_provider(settings),
            [(s, args.asset_class, args.name) for s in args.symbol])
        if args.json:
            print_json({"added": report.added, "already_present": report.present,
                        "reactivated": report.reactivated})
        else:
            for a in report.references:
                print(f"added {universe.describe_added(a)}")
            rest = universe.AddReport([], report.present, report.reactivated)
            if rest.present or rest.reactivated or not report.added:
                print(rest.describe())
            if report.added or report.reactivated:
                print("fetch them now: python -m enrich run --symbols "
                      + ",".join([*report.added, *report.reactivated]))
        return EXIT_OK
    if args.symbols_cmd == "remove":
        n = universe.remove_symbols(store.catalog, args.symbol)
        print(f"removed {n} symbol(s); their data stays in the lake")
        return EXIT_OK
    if args.symbols_cmd in ("deactivate", "activate"):
        held = universe.set_active(store.catalog, args.symbol, args.symbols_cmd == "activate")
        print(f"{args.symbols_cmd}d {', '.join(held)}")  # as held: `aapl` is AAPL
        return EXIT_OK
    if args.symbols_cmd == "import":
        try:
            if args.file == "-":
                data = sys.stdin.buffer.read()
            else:
                with open(args.file, "rb") as fh:
                    data = fh.read()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        name = "standard input" if args.file == "-" else args.file
        imported = universe.import_csv(store.catalog, universe.decode_csv(data, name))
        if not (imported.added or imported.present or imported.reactivated or imported.errors):
            raise UsageError(f"{name} holds no symbol lines (expected symbol[,asset_class"
                             "[,name]] per line); nothing was imported")
        if args.json:
            print_json({"added": imported.added, "already_present": imported.present,
                        "reactivated": imported.reactivated,
                        "errors": [{"line": n, "error": e} for n, e in imported.errors]})
        else:
            print(f"added {len(imported.added)} symbol(s)"
                  + (f": {', '.join(imported.added[:20])}" + (" …" if len(imported.added) > 20
                                                             else "") if imported.added else ""))
            if imported.reactivated:
                print(f"reactivated {len(imported.reactivated)} (name and added date kept): "
                      + ", ".join(imported.reactivated[:20]))
            if imported.present:
                print(f"already present {len(imported.present)} (unchanged): "
                      + ", ".join(imported.present[:20]) + (" …" if len(imported.present) > 20
                                                            else ""))
            print(f"refused {len(imported.errors)} line(s)")
            for n, e in imported.errors:
                print(f"line {n}: {e}", file=sys.stderr)
        return EXIT_OK if not imported.errors else EXIT_FAILED
    raise UsageError("symbols needs a command: list, add, remove, activate, deactivate, import")


# -- entitlements ---------------------------------------------------------------------------
@command("entitlements")
def cmd_entitlements(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.store import plan_limits

    store = _open(settings)
    if args.entitlements_cmd == "recheck":
        n = plan_limits.recheck(store.catalog, settings.provider)
        print(f"cleared {n} 'not entitled' mark(s) and what was learned of the "
              f"{settings.provider} plan's limits: the next run asks again")
        return EXIT_OK
    refused = plan_limits.not_entitled_table(store.catalog)
    limits = plan_limits.table(store.catalog)
    if args.json:
        print_json({"not_entitled": refused, "plan_limits": limits})
        return EXIT_OK
    if not refused and not limits:
        print("nothing refused: the plan has served every dataset asked for so far")
        return EXIT_OK
    if refused:
        print("not entitled (skipped by runs until re-checked):")
        print_table(pl.DataFrame(refused), ["dataset", "symbols", "last_refused_at",
                                            "recheck_at"])
    if limits:
        print("plan limits found:")
        print_table(pl.DataFrame(limits), ["provider", "limit_key", "history_days", "value",
                                           "found_at"])
    print("re-check now with `python -m enrich entitlements recheck`")
    return EXIT_OK


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """The core commands' parsers: first, as the others may extend them (``runs``)."""
    r = sub.add_parser("run", help="enrich the universe (or --symbols) now, in the foreground")
    r.add_argument("--symbols", help="comma-separated symbols (default: the active universe)")
    r.add_argument("--datasets", help=f"comma-separated, from {','.join(FETCHED)}")
    r.add_argument("--asset-class", choices=["stocks", "etfs", "crypto", "fx", "indices"])
    r.add_argument("--timeframe", default="1d", choices=["1d", "1h", "5m"])
    r.add_argument("--lookback-days", type=bounded_int(1, MAX_LOOKBACK_DAYS),
                   help="history to fetch for a first enrichment (days, at most "
                        f"{MAX_LOOKBACK_DAYS})")
    r.add_argument("--background", action="store_true",
                   help="hand the run to a running `python -m enrich serve`")
    r.add_argument("--dry-run", action="store_true",
                   help="print what the run would fetch and the requests it would cost")
    r.add_argument("--json", action="store_true")

    s = sub.add_parser("status", help="freshness per symbol and dataset")
    s.add_argument("--symbol")
    s.add_argument("--json", action="store_true")

    rn = sub.add_parser("runs", help="run history")
    _runs_filters(rn)
    rsub = rn.add_subparsers(dest="runs_cmd", metavar="ACTION")
    # `runs list --limit 5` as well as `runs --limit 5 list` (the README's form)
    _runs_filters(rsub.add_parser("list", help="list runs (default)"), suppress=True)

    sy = sub.add_parser("symbols", help="manage the universe")
    ssub = sy.add_subparsers(dest="symbols_cmd", metavar="ACTION")
    sl = ssub.add_parser("list", help="the universe: symbols, classes, names, active")
    sl.add_argument("--json", action="store_true")
    sl.add_argument("--seed-demo", action="store_true", help="seed the demo universe if empty")
    sa = ssub.add_parser("add", help="add symbols, checked against the provider's "
                                     "ticker reference")
    sa.add_argument("symbol", nargs="+")
    sa.add_argument("--asset-class", choices=["stocks", "etfs", "crypto", "fx", "indices"])
    sa.add_argument("--name")
    sa.add_argument("--json", action="store_true")
    for name, what in (("remove", "remove symbols from the universe (their data is kept)"),
                       ("activate", "enrich these symbols again in runs"),
                       ("deactivate", "leave these symbols out of runs (data kept)")):
        x = ssub.add_parser(name, help=what)
        x.add_argument("symbol", nargs="+")
    si = ssub.add_parser("import", help="CSV lines: symbol[,asset_class[,name]]")
    si.add_argument("file", help="path to a CSV file, or - for standard input")
    si.add_argument("--json", action="store_true")

    en = sub.add_parser("entitlements",
                        help="datasets the plan refused and its limits; re-check them")
    en.add_argument("--json", action="store_true")
    ensub = en.add_subparsers(dest="entitlements_cmd", metavar="ACTION")
    ensub.add_parser("list", help="what the plan refused and the limits found (default)"
                     ).add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    ensub.add_parser("recheck", help="clear the refusals and limits: the next run asks again")


def _runs_filters(p: argparse.ArgumentParser, suppress: bool = False) -> None:
    """The options of ``runs``; on ``runs list`` (``suppress``) an option not given there
    keeps the value given before ``list``."""
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    p.add_argument("--limit", type=bounded_int(1, MAX_LIMIT), default=default(20))
    p.add_argument("--state", choices=RUN_STATES, default=default(None))
    p.add_argument("--symbol", default=default(None))
    p.add_argument("--since", help="YYYY-MM-DD or ISO time (UTC unless it says)",
                   default=default(None))
    p.add_argument("--json", action="store_true", default=default(False))
