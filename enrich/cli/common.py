"""What every command module shares: exit codes, the command registry and parser hooks,
output helpers (tables, JSON) and the usage error; the progress bar is ``cli.progress``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import getpass
import json
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import polars as pl

from enrich.config import Settings
from enrich.errors import EnrichError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_LIMIT = 100_000  # rows a listing prints at most

Handler = Callable[[argparse.Namespace, Settings], int]
Creates = Callable[[argparse.Namespace], bool]
COMMANDS: dict[str, Handler] = {}
# Whether a command (as parsed) may start a desk in a data directory that holds none; the
# others only read or act on what a desk holds, so they refuse such a directory (``main``).
CREATES: dict[str, Creates] = {}


class UsageError(EnrichError):
    error_class = "usage"


def who() -> str:
    """Who acts from this terminal, for pause/cancel records: ``user@host (cli)``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (cli)"


def _json_default(o: Any) -> Any:
    if isinstance(o, (dt.date, dt.datetime)):
        return o.isoformat()
    return str(o)


def print_json(data: Any) -> None:
    if isinstance(data, pl.DataFrame):
        data = data.to_dicts()
    print(json.dumps(data, default=_json_default, indent=2))


def fmt_ts(v: Any) -> str:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if v is None else str(v)


def print_table(frame: pl.DataFrame, columns: Sequence[str] | None = None) -> None:
    cols = list(columns or frame.columns)
    rows = [[fmt_ts(v) for v in row] for row in frame.select(cols).iter_rows()]
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def not_empty(value: Any, option: str) -> Any:
    """``value`` as given; refuses one given empty (``--symbol ''``): an empty filter must
    never mean "everything"."""
    text = ",".join(value) if isinstance(value, list) else value
    if text is not None and not text.replace(",", "").strip():
        raise UsageError(f"{option} is empty: name one, or leave {option} out")
    return value


def held_symbols(catalog, symbols: list[str]) -> list[str]:
    """The held spelling of each of ``symbols`` (``enrich.store.universe.match_symbols``: any
    case when only one held symbol matches); refuses those not in the universe."""
    from enrich.store.universe import match_symbols

    held, unknown = match_symbols(catalog, symbols)
    if unknown:
        raise UsageError(f"{', '.join(unknown)} not in the universe; add with "
                         f"`python -m enrich symbols add {' '.join(unknown)}`")
    return held


def never(args: argparse.Namespace) -> bool:
    return False


def command(name: str, creates: Creates = never) -> Callable[[Handler], Handler]:
    """Register ``name``'s handler; ``creates`` says which of its forms may start a desk
    where there is none (``run``, ``symbols add``): every other form needs one."""
    def deco(fn: Handler) -> Handler:
        COMMANDS[name] = fn
        CREATES[name] = creates
        return fn
    return deco


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a service manager) during a foreground run: handled as Ctrl-C is,
    exit 143."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside: SIGTERM raises ``Terminated`` (a ``KeyboardInterrupt``) in the main
    thread, so a foreground run or backfill stops as on Ctrl-C (exit 143)."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main else None
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def run_in_foreground(engine, params, kind: str, run_id: str, progress) -> Any:
    """``engine.run`` of the run ``run_id`` (already recorded). On Ctrl-C or SIGTERM the run
    is closed ``interrupted`` before the interrupt goes on (to exit 130, or 143), and its
    workers stop: left ``running``, it would show as going until a later run noticed its
    process gone."""
    with sigterm_as_interrupt():
        try:
            return engine.run(params, kind=kind, run_id=run_id, progress=progress)
        except KeyboardInterrupt as exc:
            from enrich.store import runs
            from enrich.store.catalog import utcnow

            how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
            with contextlib.suppress(Exception):  # a busy catalog: the next run closes it
                runs.finish_runs(engine.store.catalog, [run_id], "interrupted",
                                 f"stopped by {how}; symbols already enriched keep their "
                                 "data", utcnow())
            raise


def report_run(summary, as_json: bool, **extra: Any) -> int:
    """Print a finished run (a line, or JSON with ``extra`` keys) and return its exit code."""
    from enrich.pipeline.run_model import describe

    if as_json:
        print_json({
            "run_id": summary.run_id, **extra, "state": summary.state, "total": summary.total,
            "ok": summary.ok, "failed": summary.failed, "skipped": summary.skipped,
            "records": summary.records, "requests": summary.requests,
            "retries": summary.retries, "errors_by_class": summary.errors_by_class,
            "failed_symbols": summary.failed_symbols, "message": describe(summary),
            "stopped": summary.stopped, "not_attempted": summary.not_attempted,
        })
    else:
        print(f"run {summary.run_id}: {summary.state} — {describe(summary)}")
    return EXIT_OK if summary.failed == 0 and not summary.stopped else EXIT_FAILED


# -- parser ---------------------------------------------------------------------------------
Extender = Callable[[argparse._SubParsersAction], None]
EXTENDERS: list[Extender] = []


def extend_parser(fn: Extender) -> Extender:
    """Other modules (scheduler, backfill) add their subcommands through this hook."""
    EXTENDERS.append(fn)
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


def bounded_float(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a number in ``[lo, hi]`` (never nan or inf)."""
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a number") from None
        if not lo <= value <= hi:  # False for nan too
            raise argparse.ArgumentTypeError(f"{raw} is out of range; use {lo:g}..{hi:g}")
        return value
    return parse


# Control characters (C0 but tab, newline and the progress bar's carriage return; DEL; C1)
# shown as escapes: text from users and providers never drives the terminal.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7f, 0xa0))
             if c not in (0x09, 0x0a, 0x0d)}


class PlainText:
    """A text stream that writes through to ``stream`` with control characters escaped
    (``ESC`` as ``\\x1b``): a name, pause reason or provider message holding terminal
    sequences is shown as those characters, never obeyed. Everything else is the stream's."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(text.translate(_CONTROLS))
        return len(text)

    def __getattr__(self, name: str) -> Any:  # flush, fileno, isatty, encoding, …
        return getattr(self.stream, name)


EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a tool whose reader went away
