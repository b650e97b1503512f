"""The CLI's one progress display, on standard error: a bar redrawn in place on a terminal, one
plain line per finished item otherwise (a log, a pipe). Runs report symbols, backfills chunks;
both draw the same bar, count and ETA (``enrich.ui.fmt_duration``, compact).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from enrich.ui import fmt_duration

WIDTH = 28  # characters of the bar
REDRAW_S = 0.1  # a terminal bar is redrawn at most ten times a second, and when it ends


class TerminalProgress:
    """Call it with a backfill's progress events (``enrich.backfill`` ``Progress``); hand
    ``symbol_done`` to a run (``Engine.run(progress=...)``)."""

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.monotonic()
        self.last_draw = 0.0

    def _bar(self, done: int, total: int, text: str) -> None:
        """Redraw the bar (throttled, never the last one skipped)."""
        now = time.monotonic()
        if done < total and now - self.last_draw < REDRAW_S:
            return
        self.last_draw = now
        filled = int(WIDTH * done / max(total, 1))
        self.stream.write(f"\r[{'#' * filled}{'-' * (WIDTH - filled)}] {done}/{total} {text}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def symbol_done(self, done: int, total: int, res: Any) -> None:
        """A run's symbol finished (``res``: its ``SymbolResult``)."""
        elapsed = time.monotonic() - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = fmt_duration((total - done) / rate if rate > 0 else 0.0, compact=True)
        if self.tty:
            self._bar(done, total, f"symbols · {rate:.1f} sym/s · ETA {eta}  {res.symbol:<10}")
            return
        if res.state == "cancelled":  # never started (a cancel, an interrupt): the run's
            return                    # last line counts them, not a line each
        extra = ""
        if res.state == "failed" and res.errors:
            extra = f" ({res.errors[0].__class__.__name__}: {str(res.errors[0])[:120]})"
        state = res.state.replace("_", " ")  # not_attempted: not attempted
        self._line(f"{done}/{total} {res.symbol} {state} {res.records} rows{extra}")

    def __call__(self, p: Any) -> None:
        """A backfill's chunk finished or started (``p``: its ``Progress``)."""
        finished = p.done + p.failed
        rate = p.requests_per_min
        rate_s = f"{rate:.1f} req/min" if rate is not None else "- req/min"
        eta = fmt_duration(p.eta_s, compact=True)
        c = p.chunk
        if self.tty:
            label = c.label if c is not None else ""
            self._bar(finished, p.total,
                      f"chunks · {p.requests} req · {rate_s} · ETA {eta}  {label[:40]:<40}")
        elif c is not None:
            extra = f" ({c.last_error[:160]})" if c.state == "failed" and c.last_error else ""
            self._line(f"{finished}/{p.total} {c.label} {c.state} {c.records} rows "
                       f"{c.requests_this_run} req · {rate_s} · ETA {eta}{extra}")
