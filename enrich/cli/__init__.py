"""Command line: ``python -m enrich …``. Every dashboard action has a command here.

Exit codes: 0 success, 1 some symbols failed (or an operation failed), 2 bad usage or
configuration, or an action the state of its target refuses (``StateError``: an ended run, a
complete backfill, a resolved incident). ``--json`` where the output is data. Library code
raises; this module turns errors into messages and exit codes.

The commands live in the modules of this package (``core``, ``service``, ``backfill``,
``alerts``, ``quality``), each registering its subcommands through ``common.command`` and
``common.extend_parser``; this module builds the parser from them and maps errors to exit
codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from enrich.cli import alerts, backfill, core, quality, service  # noqa: F401  (register commands)
from enrich.cli.common import (  # noqa: F401  (EXIT_* and COMMANDS: the package's interface)
    COMMANDS,
    CREATES,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PIPE,
    EXIT_USAGE,
    EXTENDERS,
    Parser,
    PlainText,
    Terminated,
    UsageError,
)
from enrich.config import Settings, load_settings
from enrich.errors import (
    CatalogBusyError,
    ConfigError,
    EnrichError,
    InputError,
    InvalidSymbolError,
    StateError,
)

# The order of the commands in ``--help``: the core ones, the services, then the rest.
_ORDER = [m.__name__ for m in (core, service, backfill, alerts, quality)]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m enrich",
        description="enrich: market-data enrichment desk (lake + catalog under ENRICH_DATA_DIR)")
    p.add_argument("--data-dir", help="data directory (overrides ENRICH_DATA_DIR)")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    core.add_parsers(sub)
    for ext in sorted(EXTENDERS, key=lambda fn: _ORDER.index(fn.__module__)):
        ext(sub)
    return p


def _reader_gone() -> int:
    """The reader of our output closed the pipe (``enrich … | head``): stop quietly, as Unix
    tools do. Python flushes stdout once more at exit, so point it at /dev/null first (the
    recipe of the ``signal`` module's documentation)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.cmd:
        parser.print_help()
        return EXIT_USAGE
    settings = None
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PlainText(sys.stdout), PlainText(sys.stderr)
    try:
        env = None
        if args.data_dir is not None:
            if not args.data_dir.strip():  # `--data-dir "$DIR"` with DIR unset: not ./data
                raise UsageError("--data-dir is empty: name the data directory, or leave "
                                 "--data-dir out to use ENRICH_DATA_DIR")
            env = dict(os.environ, ENRICH_DATA_DIR=args.data_dir)
            if Path(args.data_dir.strip()).expanduser().exists() and \
                    not Path(args.data_dir.strip()).expanduser().is_dir():
                raise UsageError(f"--data-dir {args.data_dir!r} exists and is not a "
                                 "directory: name the data directory")
        settings = load_settings(env)
        if not CREATES[args.cmd](args):
            _need_desk(settings, "--data-dir" if env is not None else "ENRICH_DATA_DIR")
        code = COMMANDS[args.cmd](args, settings)
        sys.stdout.flush()  # here, not at exit: a reader that went away is handled below
        return code
    except BrokenPipeError:
        return _reader_gone()
    except (ConfigError, UsageError, InvalidSymbolError, InputError, StateError) as exc:
        return _fail(exc, EXIT_USAGE)
    except CatalogBusyError as exc:
        return _fail(exc, EXIT_FAILED)
    except EnrichError as exc:
        return _fail(exc, EXIT_FAILED)
    except KeyboardInterrupt as exc:
        if isinstance(exc, Terminated):
            print("terminated", file=sys.stderr)
            return 143
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
    finally:
        sys.stdout, sys.stderr = streams


def _need_desk(settings: Settings, named_by: str) -> None:
    """Refuse a data directory that holds no desk: opening it would create an empty desk there
    (a mistyped path showing "no data" instead of saying so)."""
    from enrich.store.store import desk_exists

    if not desk_exists(settings.data_dir):
        raise UsageError(
            f"no desk at {settings.data_dir.resolve()} (no catalog enrich.duckdb there); "
            f"check {named_by} for a typo, or start a desk there with `python -m enrich run` "
            "(or `symbols add`, `serve`, the dashboard)")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    from enrich.redact import redact

    text = " ".join(redact(str(exc)).split())  # scrub, then cut (enrich.redact)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _fail(exc: BaseException, code: int) -> int:
    print(f"error: {_one_line(exc, 2000)}", file=sys.stderr)
    return code
