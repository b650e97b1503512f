"""Display formatting for the dashboard: instants with their zone, durations, sizes, chips.

Plain Python (no streamlit), so the formatting is tested without a browser. Three kinds of
time are never mixed: an instant is shown in UTC (and, where it helps, in exchange time,
America/New_York) with its zone written out; a session date is shown as a bare date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import math
import re
from zoneinfo import ZoneInfo

import polars as pl

from enrich import palette
from enrich.calendars import EXCHANGE_TZ

UTC = dt.UTC
EXCHANGE = ZoneInfo(EXCHANGE_TZ)

# Freshness states (enrich.freshness), most urgent first, with the words each is shown as
# and its colour (enrich.palette: by level, the same everywhere).
STATE_ORDER = ("failing", "stale", "never", "late", "due", "fresh", "not_expected",
               "not_entitled")
STATE_CHIP = dict(palette.STATE_WORDS)
STATE_COLOR = {s: palette.HEX[palette.state_level(s)] for s in STATE_ORDER}
STATE_HELP = {
    "failing": "the last attempt failed",
    "stale": "3 or more expected sessions missing",
    "never": "nothing held yet",
    "late": "1–2 expected sessions missing",
    "due": "a session has closed, within the provider's publication lag",
    "fresh": "holds the latest closed session",
    "not_expected": "deactivated (halted or delisted): nothing expected",
    "not_entitled": "not in the provider plan",
}


def state_badge(state: str, text: str | None = None) -> str:
    """Markdown: the state's words (or ``text``, which the page wrote) as a badge in the
    state's colour."""
    return palette.markdown(palette.state_level(state), text or STATE_CHIP.get(state, state))


def run_badge(state: str | None) -> str:
    """Markdown: a run state as a badge in its colour (``—`` without one)."""
    if state is None:
        return "—"
    return palette.markdown(palette.run_level(state), state)


def freshness_legend() -> str:
    """One line per state, for the pages' legends."""
    return "  \n".join(f"{state_badge(s)} — {STATE_HELP[s]}" for s in STATE_ORDER) + (
        "  \nSessions follow the instrument's calendar (XNYS for US listings; every UTC day "
        "for crypto; UTC days Sunday to Friday for forex): weekends and holidays are never "
        "late, and a half day closes at 13:00 ET.")


DEMO_LABEL = "Demo data — the offline sample provider generates every number shown"


_BACKTICKS = re.compile(r"`+")


def json_rows(frame: pl.DataFrame, *cols: str) -> list[dict]:
    """``frame``'s rows with the JSON text of ``cols`` (a catalog JSON column: a run's
    params, an alert's deliveries) decoded, so JSON output nests it instead of a string."""
    rows = frame.to_dicts()
    for r in rows:
        for c in cols:
            if isinstance(r.get(c), str):
                with contextlib.suppress(ValueError):
                    r[c] = json.loads(r[c])
    return rows


def plural(n: int, word: str) -> str:
    """``n`` (thousands separated) and ``word``, with an ``s`` unless one: "1 run", "2 runs"."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def literal(text: object, limit: int | None = None) -> str:
    """Markdown that shows ``text`` exactly as written: an inline code span.

    For every string a page did not write itself — from a URL, a provider, a user, a file or
    the catalog (symbols, run ids, names, reasons, messages). Inside a code span Markdown
    makes no link, image, emphasis, math, HTML or autolinked URL; escaping punctuation
    instead would still let a bare ``https://…`` become a link. Whitespace runs (newlines
    too, which would end the span) become one space; ``limit`` cuts to that many characters.
    """
    s = " ".join(str(text).split())
    if limit is not None and len(s) > limit:
        s = s[:limit - 1] + "…"
    if not s:
        return ""
    fence = "`" * (max(map(len, _BACKTICKS.findall(s)), default=0) + 1)
    pad = " " if s[0] == "`" or s[-1] == "`" else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def fmt_utc(ts: dt.datetime | None, seconds: bool = False) -> str:
    """``2026-11-25 22:00 UTC`` (empty for None)."""
    if ts is None:
        return "—"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return _aware(ts).astimezone(UTC).strftime(fmt) + " UTC"


def fmt_exchange(ts: dt.datetime | None) -> str:
    """``2026-11-25 17:00 ET`` — the instant in New York time, EST/EDT named."""
    if ts is None:
        return "—"
    local = _aware(ts).astimezone(EXCHANGE)
    return local.strftime("%Y-%m-%d %H:%M ") + (local.tzname() or "ET")


def fmt_both(ts: dt.datetime | None) -> str:
    """``2026-11-25 22:00 UTC (17:00 EST)``."""
    if ts is None:
        return "—"
    local = _aware(ts).astimezone(EXCHANGE)
    return f"{fmt_utc(ts)} ({local.strftime('%H:%M')} {local.tzname()})"


def fmt_session(day: dt.date | None) -> str:
    """A session date: a bare date, no time, no zone."""
    if day is None:
        return "—"
    if isinstance(day, dt.datetime):
        day = day.date()
    return day.isoformat()


# Whose dates session dates are, where symbols of several calendars are shown together.
SESSION_DATES = ("session dates: the exchange date for US listings, the UTC day for crypto "
                 "and forex")
# How a calendar's session dates are named where they are shown (``enrich.calendars``).
CALENDAR_DATES = {"XNYS": "XNYS, exchange date", "24/7": "crypto, UTC day",
                  "FX": "forex, UTC day"}


def fmt_sessions(by_calendar: dict[str, dt.date]) -> str:
    """Session dates of several calendars, each named: ``2026-03-06 (XNYS, exchange date),
    2026-03-08 (forex, UTC day)`` ("—" for none)."""
    return ", ".join(f"{fmt_session(day)} ({CALENDAR_DATES.get(cal, cal)})"
                     for cal, day in by_calendar.items()) or "—"


def fmt_ago(ts: dt.datetime | None, now: dt.datetime) -> str:
    """``3 min ago`` / ``in 2 h`` — relative to ``now``."""
    if ts is None:
        return "—"
    secs = (now - _aware(ts)).total_seconds()
    if -1 < secs < 0:  # ``now`` read to the second (a page's clock): an instant just past
        secs = 0.0
    future = secs < 0
    secs = abs(secs)
    if secs < 60:
        text = f"{secs:.0f} s"
    elif secs < 3600:
        text = f"{secs / 60:.0f} min"
    elif secs < 86400 * 2:
        text = f"{secs / 3600:.1f} h"
    else:
        text = f"{secs / 86400:.0f} days"
    return f"in {text}" if future else f"{text} ago"


def fmt_duration(seconds: float | None, *, compact: bool = False) -> str:
    """A duration for people: "350 ms", "12.5 s", "2.1 min", "1.5 h"; ``compact`` for a
    terminal line, a clock's fields: "45s", "2m05s", "1h05m". "—" if unknown."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    if compact:
        s = int(round(seconds))
        if s < 60:
            return f"{s}s"
        if s < 3600:
            return f"{s // 60}m{s % 60:02d}s"
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 90:
        return f"{seconds:.1f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def fmt_ms(ms: float | None) -> str:
    return "—" if ms is None else fmt_duration(ms / 1000)


def fmt_pct(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"


def fmt_int(n: int | float | None) -> str:
    return "—" if n is None else f"{int(n):,}"


def fmt_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def chip(state: str | None, sessions_behind: int | None = None) -> str | None:
    """One status chip's words: ``late 2``; None when the dataset does not apply (a blank
    cell). Its colour comes from the state (``chip_level``)."""
    if state is None:
        return None
    text = STATE_CHIP.get(state, state)
    if state in ("late", "stale") and sessions_behind:
        text += f" {sessions_behind}"
    return text


def chip_level(text: str | None) -> str:
    """The palette level of a chip's words (``late 2`` → warn)."""
    if not text:
        return palette.IDLE
    for state, words in STATE_CHIP.items():
        if text == words or text.startswith(words + " "):
            return palette.state_level(state)
    return palette.IDLE


def schedule_unchanged(action: str, state: dict) -> str:
    """Markdown: why a pause (``action`` "pause") or resume changed nothing, from the
    scheduler row as it is now — someone else acted first (who, when, why)."""
    if action == "pause":
        return (f"The schedule was already paused by {literal(state.get('paused_by') or '?')} "
                f"at {fmt_utc(state.get('paused_at'))}"
                + (f": {literal(state['pause_reason'], limit=200)}"
                   if state.get("pause_reason") else "")
                + "; their pause (and its reason) is kept.")
    if state.get("resumed_at") is None:
        return "The schedule was not paused: nothing to resume."
    return (f"The schedule was already resumed by {literal(state.get('resumed_by') or '?')} "
            f"at {fmt_utc(state.get('resumed_at'))}.")


def run_ended_already(run_id: str, state: str | None) -> str:
    """Markdown: a cancel that came too late — the run had already ended (and how)."""
    how = f" {run_badge(state)}" if state else ""
    return f"Run {literal(run_id[:8])} had already ended{how}: nothing to cancel."


def backfill_not_stopped(backfill_id: str, intent: str, status: str,
                         paused_by: str | None = None,
                         paused_at: dt.datetime | None = None) -> str:
    """Markdown: why a pause (``intent`` "paused") or cancel of a backfill changed nothing,
    from its ``status`` now — someone else paused or cancelled it first (who, when), or it
    ended meanwhile."""
    bid = literal(backfill_id)
    if intent == "paused" and status not in ("complete", "cancelled"):
        return (f"Backfill {bid} was already paused by {literal(paused_by or '?')} at "
                f"{fmt_utc(paused_at)}; their pause is kept.")
    if status in ("complete", "cancelled"):
        verb = "pause" if intent == "paused" else "cancel"
        return (f"Backfill {bid} is {status}: nothing to {verb}"
                + ("." if status == "complete" else "; Resume runs the chunks left."))
    return f"Backfill {bid} was already being cancelled: it stops after its current chunk."


def backfill_not_started(backfill_id: str, retry_failed: bool, status: str,
                         run_id: str | None = None) -> str:
    """Markdown: why a resume (or a retry of the failed chunks) of a backfill started
    nothing, from its ``status`` now — someone else resumed it first, or it ended."""
    bid = literal(backfill_id)
    if status == "running":
        return (f"Backfill {bid} is already running: someone else resumed it"
                + (f" (run {literal(run_id[:8])})" if run_id else "") + ".")
    what = "no failed chunks to retry" if retry_failed else "nothing left to do"
    return f"Backfill {bid} is {status}: {what}."


def run_state_label(state: str | None) -> str:
    """A run state in words (its colour is ``palette.run_level``)."""
    return "—" if state is None else state


def to_csv_bytes(frame: pl.DataFrame) -> bytes:
    return frame.write_csv().encode()


def to_parquet_bytes(frame: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd")
    return buf.getvalue()


def utc_columns(frame: pl.DataFrame) -> list[str]:
    """Names of the instant (tz-aware datetime) columns of ``frame``."""
    return [c for c, t in frame.schema.items()
            if isinstance(t, pl.Datetime) and t.time_zone is not None]


def instants_as_text(frame: pl.DataFrame, seconds: bool = False) -> pl.DataFrame:
    """For display: every instant column as ``YYYY-MM-DD HH:MM[:SS] UTC`` text and every date
    column (a session date) as ``YYYY-MM-DD``; both sort like the values they show."""
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    instants = utc_columns(frame)
    dates = [c for c, t in frame.schema.items() if t == pl.Date]
    if not instants and not dates:
        return frame
    return frame.with_columns(
        *[(pl.col(c).dt.convert_time_zone("UTC").dt.strftime(fmt) + " UTC").alias(c)
          for c in instants],
        *[pl.col(c).dt.strftime("%Y-%m-%d").alias(c) for c in dates],
    )


def run_targets(params: dict | str | None, symbols_total: int | None = None) -> tuple[str, str]:
    """What a run covered, from its stored parameters: (symbols, datasets) as short text —
    ``AAPL, MSFT`` or ``the active universe (26)``; ``bars, news`` or ``all that apply``."""
    import json

    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError:
            params = {}
    params = params if isinstance(params, dict) else {}
    syms = [s for s in (params.get("symbols") or []) if s != "*"]
    n = f" ({symbols_total:,})" if symbols_total else ""
    if syms:
        who = ", ".join(syms[:4]) + (f" +{len(syms) - 4} more" if len(syms) > 4 else "")
    elif params.get("asset_class"):
        who = f"every active {params['asset_class']}{n}"
    else:
        who = f"the active universe{n}"
    datasets = params.get("datasets") or ([params["dataset"]] if params.get("dataset")
                                          else None)
    what = ", ".join(datasets) if datasets else "all that apply"
    if params.get("timeframe") and params["timeframe"] != "1d":
        what += f" ({params['timeframe']})"
    return who, what
