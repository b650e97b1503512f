"""The CLI's one progress display (``enrich.cli.progress``) for a run's symbols; the backfill
chunks' form is in tests/test_backfill.py (test_terminal_progress_bar_and_plain_lines)."""

from __future__ import annotations

import io

from enrich.cli.progress import TerminalProgress
from enrich.errors import ProviderError
from enrich.pipeline.run_model import StepResult, SymbolResult


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_a_runs_symbols_draw_the_bar_on_a_terminal_and_lines_elsewhere():
    ok = SymbolResult("AAPL", "ok", records=252)
    failed = SymbolResult("MSFT", "failed", steps=[
        StepResult("bars", "failed", error=ProviderError("HTTP 503 from the provider"))])
    tty, plain = Tty(), io.StringIO()
    for stream in (tty, plain):
        bar = TerminalProgress(stream)
        bar.symbol_done(1, 2, ok)
        bar.symbol_done(2, 2, failed)
    # The last step is always drawn, the bar full and the line ended.
    assert tty.getvalue().startswith("\r[##############--------------] 1/2 symbols · ")
    assert "\r[############################] 2/2 symbols · " in tty.getvalue()
    assert tty.getvalue().endswith("\n") and "MSFT" in tty.getvalue()
    assert plain.getvalue().splitlines() == [
        "1/2 AAPL ok 252 rows",
        "2/2 MSFT failed 0 rows (ProviderError: HTTP 503 from the provider)",
    ]


def test_symbols_a_cancel_left_unstarted_print_no_line_each():
    """Found by a QA pass: Ctrl-C of a 3,000-symbol run printed 1,862 lines "NNNN/3000 S11xx
    cancelled 0 rows" before the symbols in hand; the run's last line counts them."""
    plain = io.StringIO()
    bar = TerminalProgress(plain)
    bar.symbol_done(1, 4, SymbolResult("AAPL", "ok", records=252))
    for i, sym in enumerate(("MSFT", "SPY"), start=2):
        bar.symbol_done(i, 4, SymbolResult(sym, "cancelled"))
    bar.symbol_done(4, 4, SymbolResult("KO", "ok", records=10))
    assert plain.getvalue().splitlines() == ["1/4 AAPL ok 252 rows", "4/4 KO ok 10 rows"]
