"""Command line: ``python -m enrich …``. Every dashboard action has a command here.

Exit codes: 0 success, 1 some symbols failed (or an operation failed), 2 bad usage or
configuration. ``--json`` where the output is data. Library code raises; this module turns
errors into messages and exit codes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import socket
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import polars as pl

from enrich.config import MAX_LOOKBACK_DAYS, Settings, load_settings
from enrich.errors import (
    CatalogBusyError,
    ConfigError,
    EnrichError,
    InputError,
    InvalidSymbolError,
)
from enrich.schemas import FETCHED

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_LIMIT = 100_000  # rows a listing prints at most

Handler = Callable[[argparse.Namespace, Settings], int]
_COMMANDS: dict[str, Handler] = {}


class UsageError(EnrichError):
    error_class = "usage"


def who() -> str:
    """Who acts from this terminal, for pause/cancel records: ``user@host (cli)``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (cli)"


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


def _json_default(o: Any) -> Any:
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    return str(o)


def print_json(data: Any) -> None:
    if isinstance(data, pl.DataFrame):
        data = data.to_dicts()
    print(json.dumps(data, default=_json_default, indent=2))


def _fmt_ts(v: Any) -> str:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if v is None else str(v)


def print_table(frame: pl.DataFrame, columns: Sequence[str] | None = None) -> None:
    cols = list(columns or frame.columns)
    rows = [[_fmt_ts(v) for v in row] for row in frame.select(cols).iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


class Progress:
    """A progress bar on a terminal, plain lines otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.t0 = time.monotonic()

    def __call__(self, done: int, total: int, res) -> None:
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        if self.tty:
            width = 30
            filled = int(width * done / max(total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(
                f"\r[{bar}] {done}/{total} {rate:.1f} sym/s ETA {eta:.0f}s  {res.symbol:<10}")
            if done == total:
                self.stream.write("\n")
        else:
            extra = ""
            if res.state == "failed" and res.errors:
                extra = f" ({res.errors[0].__class__.__name__}: {str(res.errors[0])[:120]})"
            self.stream.write(
                f"{done}/{total} {res.symbol} {res.state} {res.records} rows{extra}\n")
        self.stream.flush()


def command(name: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        _COMMANDS[name] = fn
        return fn
    return deco


def _open(settings: Settings):
    from enrich.store import Store

    return Store.from_settings(settings)  # repairs made while opening are logged as warnings


def _engine(settings: Settings, store=None):
    from enrich.engine import Engine
    from enrich.providers import make_provider
    from enrich.universe import ensure_demo_universe

    store = store or _open(settings)
    ensure_demo_universe(store.catalog)
    return Engine(store, make_provider(settings), settings)


# -- run ------------------------------------------------------------------------------------
@command("run")
def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.service import make_params

    # Everything is checked before a run is recorded: a refused argument leaves no run row.
    params = make_params(_csv_list(args.symbols, "--symbols"), _datasets(args.datasets),
                         args.asset_class, args.timeframe, args.lookback_days)
    if getattr(args, "dry_run", False):
        return _dry_run(_engine(settings), params, settings, args.json)
    if getattr(args, "background", False):
        handoff = _COMMANDS.get("__background_run")
        if handoff is None:
            raise UsageError("--background needs a running `python -m enrich serve`")
        return handoff(argparse.Namespace(params=params), settings)
    engine = _engine(settings)
    if params.symbols:
        from enrich.universe import unknown_symbols

        unknown = unknown_symbols(engine.store.catalog, params.symbols)
        if unknown:
            raise UsageError(f"{', '.join(unknown)} not in the universe; add with "
                             f"`python -m enrich symbols add {' '.join(unknown)}`")
    if settings.provider == "sample" and not args.json:
        print("provider: sample (offline demo data)", file=sys.stderr)
    summary = engine.run(params, kind="cli", progress=None if args.json else Progress())
    return report_run(summary, args.json)


def _dry_run(engine, params, settings: Settings, as_json: bool) -> int:
    """Print what the run would fetch, by which path, and the requests it would cost."""
    plan = engine.plan(params)
    if as_json:
        print_json({"provider": settings.provider, **plan.to_json()})
        return EXIT_OK
    rate = plan.rate_limit_per_min
    pace = f"{rate:g} requests/min" if rate else "not rate limited"
    print(f"plan at {_fmt_ts(engine.clock())} (provider {settings.provider}, {pace}):")
    rows = pl.DataFrame(plan.rows(), schema={
        "dataset": pl.String, "path": pl.String, "symbols": pl.Int64, "up_to_date": pl.Int64,
        "requests": pl.Int64, "universe_requests": pl.Int64, "symbol_requests": pl.Int64,
        "per_symbol_path": pl.Int64, "minutes": pl.Float64})
    if rows.height:
        print_table(rows, ["dataset", "path", "symbols", "up_to_date", "requests",
                           "per_symbol_path"] + (["minutes"] if rate else []))
    print(f"total: {plan.describe()}")
    return EXIT_OK


def report_run(summary, as_json: bool, **extra: Any) -> int:
    """Print a finished run (a line, or JSON with ``extra`` keys) and return its exit code."""
    from enrich.engine import describe

    if as_json:
        print_json({
            "run_id": summary.run_id, **extra, "state": summary.state, "total": summary.total,
            "ok": summary.ok, "failed": summary.failed, "skipped": summary.skipped,
            "records": summary.records, "requests": summary.requests,
            "retries": summary.retries, "errors_by_class": summary.errors_by_class,
            "failed_symbols": summary.failed_symbols, "message": describe(summary),
        })
    else:
        print(f"run {summary.run_id}: {summary.state} — {describe(summary)}")
    return EXIT_OK if summary.failed == 0 else EXIT_FAILED


# -- status ---------------------------------------------------------------------------------
@command("status")
def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.queries import status_table
    from enrich.symbols import validate_symbol

    store = _open(settings)
    sym = validate_symbol(args.symbol) if args.symbol else None
    frame = status_table(store.catalog, sym)
    if args.json:
        print_json(frame)
        return EXIT_OK
    if frame.is_empty():
        print("no status yet: run `python -m enrich run` to enrich the universe")
        return EXIT_OK
    print_table(frame, ["symbol", "dataset", "state", "sessions_behind", "latest_session",
                        "last_success_at", "last_error_class"])
    counts = frame.group_by("state").len().sort("state")
    print("\n" + ", ".join(f"{s}: {n}" for s, n in counts.iter_rows()))
    return EXIT_OK


# -- runs -----------------------------------------------------------------------------------
@command("runs")
def cmd_runs(args: argparse.Namespace, settings: Settings) -> int:
    sub = getattr(args, "runs_cmd", None)
    if sub and sub != "list":
        handler = _COMMANDS.get(f"runs {sub}")
        if handler is None:
            raise UsageError(f"unknown runs command {sub!r}")
        return handler(args, settings)
    from enrich.queries import runs_table
    from enrich.symbols import validate_symbol

    store = _open(settings)
    since = None
    if getattr(args, "since", None):
        try:
            since = dt.datetime.fromisoformat(args.since)
        except ValueError:
            raise UsageError(f"--since {args.since!r}: use YYYY-MM-DD or an ISO time") from None
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
    frame = runs_table(store.catalog, limit=args.limit, state=getattr(args, "state", None),
                       symbol=validate_symbol(args.symbol) if getattr(args, "symbol", None)
                       else None, since=since)
    if args.json:
        print_json(frame)
        return EXIT_OK
    if frame.is_empty():
        print("no runs yet: start one with `python -m enrich run`")
        return EXIT_OK
    print_table(frame, ["run_id", "kind", "state", "requested_at", "symbols_total",
                        "symbols_ok", "symbols_failed", "records_written", "message"])
    return EXIT_OK


# -- symbols --------------------------------------------------------------------------------
@command("symbols")
def cmd_symbols(args: argparse.Namespace, settings: Settings) -> int:
    from enrich import universe

    store = _open(settings)
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
        universe.set_active(store.catalog, args.symbol, args.symbols_cmd == "activate")
        print(f"{args.symbols_cmd}d {', '.join(args.symbol)}")
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
    from enrich import plan_limits

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


# -- parser ---------------------------------------------------------------------------------
Extender = Callable[[argparse._SubParsersAction], None]
_EXTENDERS: list[Extender] = []


def extend_parser(fn: Extender) -> Extender:
    """Other modules (scheduler, backfill) add their subcommands through this hook."""
    _EXTENDERS.append(fn)
    return fn


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong and where help is), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message} (see `{self.prog} --help`)\n")


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: a whole number in ``[lo, hi]``."""
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range; use {lo}..{hi}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m enrich",
        description="enrich: market-data enrichment desk (lake + catalog under ENRICH_DATA_DIR)")
    p.add_argument("--data-dir", help="data directory (overrides ENRICH_DATA_DIR)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

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
    rn.add_argument("--limit", type=bounded_int(1, MAX_LIMIT), default=20)
    rn.add_argument("--state")
    rn.add_argument("--symbol")
    rn.add_argument("--since", help="YYYY-MM-DD or ISO time (UTC unless it says)")
    rn.add_argument("--json", action="store_true")
    rsub = rn.add_subparsers(dest="runs_cmd", metavar="ACTION")
    rsub.add_parser("list", help="list runs (default)")

    sy = sub.add_parser("symbols", help="manage the universe")
    ssub = sy.add_subparsers(dest="symbols_cmd", metavar="ACTION")
    sl = ssub.add_parser("list")
    sl.add_argument("--json", action="store_true")
    sl.add_argument("--seed-demo", action="store_true", help="seed the demo universe if empty")
    sa = ssub.add_parser("add")
    sa.add_argument("symbol", nargs="+")
    sa.add_argument("--asset-class", choices=["stocks", "etfs", "crypto", "fx", "indices"])
    sa.add_argument("--name")
    sa.add_argument("--json", action="store_true")
    for name in ("remove", "activate", "deactivate"):
        x = ssub.add_parser(name)
        x.add_argument("symbol", nargs="+")
    si = ssub.add_parser("import", help="CSV lines: symbol[,asset_class[,name]]")
    si.add_argument("file", help="path to a CSV file, or - for standard input")
    si.add_argument("--json", action="store_true")

    en = sub.add_parser("entitlements",
                        help="datasets the plan refused and its limits; re-check them")
    en.add_argument("--json", action="store_true")
    ensub = en.add_subparsers(dest="entitlements_cmd", metavar="ACTION")
    ensub.add_parser("list", help="what the plan refused and the limits found (default)")
    ensub.add_parser("recheck", help="clear the refusals and limits: the next run asks again")

    for ext in _EXTENDERS:
        ext(sub)
    return p


def _load_plugins() -> None:
    """Import modules that register extra commands (absent ones are skipped)."""
    import importlib

    for mod in ("enrich.service_cli", "enrich.backfill_cli", "enrich.alerts_cli",
                "enrich.quality_cli"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away


def _reader_gone() -> int:
    """The reader of our output closed the pipe (``enrich … | head``): stop quietly, as Unix
    tools do. Python flushes stdout once more at exit, so point it at /dev/null first (the
    recipe of the ``signal`` module's documentation)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    _load_plugins()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.print_help()
        return EXIT_USAGE
    settings = None
    try:
        env = None
        if args.data_dir:
            import os
            env = dict(os.environ, ENRICH_DATA_DIR=args.data_dir)
        settings = load_settings(env)
        code = _COMMANDS[args.cmd](args, settings)
        sys.stdout.flush()  # here, not at exit: a reader that went away is handled below
        return code
    except BrokenPipeError:
        return _reader_gone()
    except (ConfigError, UsageError, InvalidSymbolError, InputError) as exc:
        return _fail(exc, EXIT_USAGE)
    except CatalogBusyError as exc:
        return _fail(exc, EXIT_FAILED)
    except EnrichError as exc:
        return _fail(exc, EXIT_FAILED)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a path or permission of this machine: say which, no traceback
        reason = exc.strerror or type(exc).__name__
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {reason}{where}; check ENRICH_DATA_DIR and the paths given",
              file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: one line here, the traceback in the error log
        from enrich import errorlog

        log_path = errorlog.record(exc, settings.data_dir if settings else None,
                                   f"python -m enrich {args.cmd}")
        print(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); "
              + (f"the traceback is in {log_path}" if log_path else "no log could be written"),
              file=sys.stderr)
        return EXIT_FAILED


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fail(exc: BaseException, code: int) -> int:
    print(f"error: {_one_line(exc, 2000)}", file=sys.stderr)
    return code
