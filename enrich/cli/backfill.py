"""``python -m enrich backfill …``: plan, run, watch, pause, cancel and resume backfills.

    backfill DATASET [--symbol S …|--all] [--years N|--days N|--since DATE] [--until DATE]
                     [--timeframe TF] [--expiration DATE …] [--moneyness LO:HI]
                     [--monthly N] [--chunk-days N] [--resume] [--retry-failed]
                     [--dry-run] [--json]
    backfill list | show ID | resume ID [--retry-failed] | pause ID | cancel ID

Imported by ``enrich.cli``. Exit codes: 0 every chunk done (or a dry run; a second pause
changes nothing), 1 some chunks failed or the run was stopped, 2 bad usage, or a pause or
cancel of a backfill that is complete or cancelled. Progress goes to standard error: a bar
with the request rate and ETA on a terminal, one line per chunk otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from enrich.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    UsageError,
    bounded_int,
    command,
    extend_parser,
    held_symbols,
    print_json,
    print_table,
    sigterm_as_interrupt,
    who,
)
from enrich.cli.progress import TerminalProgress
from enrich.config import MAX_BACKFILL_DAYS, MAX_BACKFILL_YEARS, Settings
from enrich.ui import fmt_duration

ACTIONS = ("list", "show", "resume", "pause", "cancel")


def _date(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a date; use YYYY-MM-DD") from None


def _band(raw: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in raw.replace("-", ":").split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{raw!r} is not a moneyness band; use LOW:HIGH, e.g. 0.8:1.2") from None
    return lo, hi


def _symbols(raw: list[str] | None) -> tuple[str, ...]:
    return tuple(s.strip() for item in raw or [] for s in item.split(",") if s.strip())


def _request(args: argparse.Namespace):
    from enrich.backfill.jobs import BackfillRequest
    from enrich.quant.options_history import DEFAULT_MONEYNESS, DEFAULT_MONTHLY

    symbols = _symbols(args.symbols)
    if symbols and args.all:
        raise UsageError("give --symbol … or --all, not both")
    if not symbols and not args.all:
        raise UsageError("choose the symbols: --symbol AAPL [MSFT …], or --all for the "
                         "active universe")
    return BackfillRequest(
        dataset=args.dataset, symbols=symbols, years=args.years, days=args.days,
        since=args.since, until=args.until, timeframe=args.timeframe,
        expirations=tuple(args.expiration or ()),
        moneyness=args.moneyness or DEFAULT_MONEYNESS,
        monthly=args.monthly or DEFAULT_MONTHLY, chunk_days=args.chunk_days,
    ).validated()


def _backfiller(settings: Settings):
    from enrich.backfill.jobs import Backfiller
    from enrich.providers import make_provider
    from enrich.store.store import Store
    from enrich.store.universe import ensure_demo_universe

    store = Store.from_settings(settings)
    ensure_demo_universe(store.catalog)
    return Backfiller(store, make_provider(settings), settings)


@command("backfill", creates=lambda args: args.dataset not in ACTIONS)  # a new one creates;
# a dry run plans on a scratch desk where there is none (``cmd_backfill``)
def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    if args.dataset in ACTIONS:
        return _action(args, settings)
    if args.backfill_id is not None:
        raise UsageError(f"unexpected {args.backfill_id!r}: symbols go after --symbol")

    request = _request(args)  # checked before anything is opened or written
    from enrich.store.store import desk_exists

    # A dry run where there is no desk yet plans on a scratch one, deleted after, as `run
    # --dry-run` does: a preview, or a mistyped --data-dir, creates nothing.
    scratch = args.dry_run and not desk_exists(settings.data_dir)
    with tempfile.TemporaryDirectory(prefix="enrich-dry-run-") if scratch \
            else contextlib.nullcontext() as where:
        code = _plan_and_execute(args, settings.with_(data_dir=Path(where)) if where
                                 else settings, request)
        if scratch:
            print(f"no desk at {settings.data_dir.resolve()} yet: this is the plan there, with "
                  "the demo universe (nothing was created)", file=sys.stderr)
        return code


def _plan_and_execute(args: argparse.Namespace, settings: Settings, request) -> int:
    from enrich.backfill.jobs import backfill_request, find_resumable

    bf = _backfiller(settings)
    try:
        # The held spelling (`aapl` finds AAPL), as the API and the other commands do.
        request = replace(request, symbols=tuple(sorted(set(
            held_symbols(bf.store.catalog, list(request.symbols))))))
        if args.resume:
            found = find_resumable(bf.store.catalog, request)
            if found is not None:
                request = backfill_request(bf.store.catalog, found)
        plan = bf.plan(request)
        expired = [e.isoformat() for e in request.expirations if e < plan.window_start]
        if expired:
            raise UsageError(f"--expiration {', '.join(expired)} is before the window "
                             f"({plan.window_start} to {plan.window_end}): no contract of it "
                             "trades there; give later expirations or an earlier --since")
        if args.resume and not plan.exists:
            raise UsageError("nothing to resume: no unfinished backfill of this request; "
                             "run it without --resume to start one")
        return _execute(bf, plan, args, settings)
    finally:
        bf.close()


def _execute(bf, plan, args: argparse.Namespace, settings: Settings) -> int:
    retry_failed = args.retry_failed
    if args.dry_run:
        _print_plan(plan, retry_failed, args.json)
        return EXIT_OK
    if not plan.chunks and plan.notes:  # every symbol asked for has no such dataset
        raise UsageError("nothing to backfill: " + "; ".join(plan.notes))
    if not args.json:
        for note in plan.notes:  # a symbol skipped (crypto have no dividends, …)
            print(f"note: {note}", file=sys.stderr)
    todo = plan.todo(retry_failed)
    if not todo and not plan.awaiting_listings:
        what = "no failed chunks to retry" if retry_failed else "nothing left to do"
        if args.json:
            print_json({"backfill_id": plan.backfill_id, "state": "complete",
                        "message": what})
        else:
            print(f"backfill {plan.backfill_id}: {what} — {plan.describe()}")
        return EXIT_OK
    run_id = bf.prepare(plan, retry_failed=retry_failed)
    if not args.json:
        demo = " (offline demo data)" if bf.provider.name == "sample" else ""
        print(f"backfill {plan.backfill_id} (run {run_id[:8]}): {plan.describe()}; provider "
              f"{bf.provider.name}{demo}; {len(todo)} chunks, "
              f"{plan.requests_expected(retry_failed)} requests"
              + (f", about {fmt_duration(plan.eta_s(retry_failed), compact=True)} at "
                 f"{settings.rate_limit_per_min:g} requests/min" if plan.rate_limited else "")
              + f"; Ctrl-C stops it, `python -m enrich backfill resume {plan.backfill_id}` "
              "resumes it (the same command does so the same day; with --resume, any day)",
              file=sys.stderr, flush=True)
    with sigterm_as_interrupt():  # SIGTERM stops it as Ctrl-C does: closed, resumable
        summary = bf.execute(plan, run_id, retry_failed=retry_failed,
                             progress=None if args.json else TerminalProgress())
    if args.json:
        print_json(summary.to_json())
    else:
        print(f"backfill {summary.backfill_id} ({summary.run_id}): {summary.state} — "
              f"{summary.message}")
        for label, err in summary.failures[:10]:
            print(f"  failed: {label}: {err}", file=sys.stderr)
    return EXIT_OK if summary.state == "succeeded" else EXIT_FAILED


def _print_plan(plan, retry_failed: bool, as_json: bool) -> None:
    data = plan.to_json(retry_failed)
    if as_json:
        print_json(data)
        return
    state = "continues" if plan.exists else "new"
    print(f"backfill {plan.backfill_id} ({state}): {plan.describe()}")
    print(f"provider {plan.provider}; chunks {data['chunks_total']} "
          f"({data['chunks_done']} done, {data['chunks_to_run']} to run)")
    print(f"requests expected: {data['requests_expected']} (one per fetch chunk)")
    eta = fmt_duration(data["eta_s"], compact=True)
    note = "" if plan.rate_limited else \
        " — the sample provider is not rate-limited, so it will be much faster"
    print(f"ETA at {plan.rate_limit_per_min:g} requests/min: {eta}{note}")
    if plan.awaiting_listings:
        print(f"not counted yet: the option contracts' bars of "
              f"{', '.join(plan.awaiting_listings)} (one request per contract), planned once "
              "their listings are fetched")
    for n in plan.notes:
        print(f"note: {n}")
    by_step = plan.by_step(retry_failed)
    if not by_step.is_empty():
        print()
        print_table(by_step.with_columns(pl.all().cast(pl.String)))


def _action(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.backfill.jobs import UnknownBackfillError

    try:
        return _do_action(args, settings)
    except UnknownBackfillError as exc:
        raise UsageError(str(exc)) from None


def _do_action(args: argparse.Namespace, settings: Settings) -> int:
    from enrich.backfill.jobs import (
        backfill_progress_summary,
        backfill_request,
        backfill_steps,
        request_stop,
    )
    from enrich.store import runs
    from enrich.store.store import Store

    action = args.dataset
    # A backfill whose process was killed is not running: its run is closed first, so that
    # list and show say so, and pause or cancel take effect at once.
    store = Store.from_settings(settings)
    runs.close_dead_runs(store)
    if action == "list":
        rows = backfill_progress_summary(store.catalog)
        if args.json:
            print_json(rows)
            return EXIT_OK
        if not rows:
            print("no backfills yet: start one with `python -m enrich backfill bars "
                  "--symbol AAPL`")
            return EXIT_OK
        print_table(pl.DataFrame([_list_row(r) for r in rows]))
        return EXIT_OK
    if args.backfill_id is None:
        raise UsageError(f"`backfill {action}` needs a backfill id (see `backfill list`)")
    bid = args.backfill_id
    if action == "show":
        rows = backfill_progress_summary(store.catalog, bid)
        if not rows:
            raise UsageError(f"no backfill {bid}; see `python -m enrich backfill list`")
        steps = backfill_steps(store.catalog, bid)
        if args.json:
            print_json({**rows[0], "steps": steps.to_dicts()})
            return EXIT_OK
        print_table(pl.DataFrame([_list_row(rows[0])]))
        print()
        print_table(steps.with_columns(pl.all().cast(pl.String)),
                    ["symbol", "step", "chunks", "done", "failed", "pending",
                     "requests_expected", "requests_made", "records", "last_error"])
        return EXIT_OK
    if action in ("pause", "cancel"):  # complete or cancelled: BackfillStateError, exit 2
        intent = "paused" if action == "pause" else "cancelled"
        out = request_stop(store.catalog, bid, intent, who())
        if not out.changed:
            by = (f" by {out.paused_by} at "
                  f"{out.paused_at.astimezone(dt.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}"
                  if out.paused_by and out.paused_at else "")
            print(f"backfill {bid}: already {intent}{by}"
                  + (f"; run {out.run_id[:8]} stops after its current chunk" if out.run_id
                     else "") + "; nothing changed")
        elif out.run_id:
            print(f"backfill {bid}: {intent}; run {out.run_id[:8]} stops after its current "
                  f"chunk; resume with `python -m enrich backfill resume {bid}`")
        else:
            print(f"backfill {bid}: {intent} (it was not running)")
        return EXIT_OK
    # resume
    bf = _backfiller(settings)
    try:
        return _execute(bf, bf.plan(backfill_request(bf.store.catalog, bid)), args, settings)
    finally:
        bf.close()


def _list_row(r: dict[str, Any]) -> dict[str, str]:
    syms = r["symbols"] if isinstance(r["symbols"], list) else []
    eta = fmt_duration(r["eta_s"], compact=True) if r["eta_s"] is not None else ""
    rpm = f"{r['requests_per_min']:.1f}" if r["requests_per_min"] is not None else ""
    return {
        "backfill_id": r["backfill_id"], "dataset": r["dataset"],
        "symbols": ",".join(syms)[:30], "window": f"{r['window_start']}..{r['window_end']}",
        "status": r["status"], "chunks": f"{r['chunks_done']}/{r['chunks_total']}",
        "failed": str(r["chunks_failed"]),
        "requests": f"{r['requests_made']}/{r['requests_expected']}",
        "req/min": rpm, "eta": eta,
    }


@extend_parser
def _parser(sub: argparse._SubParsersAction) -> None:
    from enrich.backfill.jobs import DATASETS

    b = sub.add_parser(
        "backfill", help="fill history for a dataset, resumably, within the rate limit",
        description="Backfill DATASET (bars, dividends, splits, earnings, news, options) for "
                    "some symbols, or manage backfills: list, show ID, resume ID, pause ID, "
                    "cancel ID. Defaults: bars, dividends, earnings 10 years; splits since "
                    "2000; news 1 year; options 30 days.")
    b.add_argument("dataset", choices=[*DATASETS, *ACTIONS], metavar="DATASET",
                   help=f"one of {', '.join(DATASETS)}; or {', '.join(ACTIONS)}")
    b.add_argument("backfill_id", nargs="?", metavar="ID", help="for show/resume/pause/cancel")
    b.add_argument("--symbol", "--symbols", dest="symbols", action="extend", nargs="+",
                   metavar="S", help="symbols (space- or comma-separated)")
    b.add_argument("--all", action="store_true", help="every active symbol of the universe")
    span = b.add_mutually_exclusive_group()
    span.add_argument("--years", type=bounded_int(1, MAX_BACKFILL_YEARS))
    span.add_argument("--days", type=bounded_int(1, MAX_BACKFILL_DAYS))
    span.add_argument("--since", type=_date, metavar="DATE")
    b.add_argument("--until", type=_date, metavar="DATE",
                   help="last session (default: the latest completed one)")
    b.add_argument("--timeframe", default="1d", choices=["1d", "1h", "5m"], help="bars only")
    b.add_argument("--expiration", type=_date, action="extend", nargs="+", metavar="DATE",
                   help="options: these expirations (default: the next monthly ones)")
    b.add_argument("--moneyness", type=_band, metavar="LO:HI",
                   help="options: strikes within LO..HI of the underlying close "
                        "(default 0.8:1.2)")
    b.add_argument("--monthly", type=bounded_int(1, 12), metavar="N",
                   help="options: how many monthly expirations to follow (default 3)")
    b.add_argument("--chunk-days", type=bounded_int(1, MAX_BACKFILL_DAYS), metavar="N",
                   help="fixed windows of N days instead of calendar years/months")
    b.add_argument("--resume", action="store_true",
                   help="continue the newest unfinished backfill of this request")
    b.add_argument("--retry-failed", action="store_true", help="run only the failed chunks")
    b.add_argument("--dry-run", action="store_true",
                   help="print the plan (chunks, requests, ETA) and fetch nothing")
    b.add_argument("--json", action="store_true")
