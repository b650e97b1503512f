"""The state palette: one colour per level of concern, the same on every page and chart.

Every state the desk shows — a dataset's freshness, a run's outcome, a backfill, an alert's
severity, a quality score — maps to one *level*, and each level has one colour:

    ok      green   fresh, succeeded, complete, every quality check passing
    warn    amber   due, late, partial, missed, a score below ``QUALITY_OK``
    bad     red     stale, failing, failed, interrupted, a score below ``QUALITY_WARN``
    idle    grey    never fetched, not expected, not entitled, cancelled, paused
    active  blue    queued, running (work in progress, not a verdict)

A colour is never alone: wherever one is drawn, the state's words stand beside it (a chip's
text, a tile's label), so a reader without colour vision or without an emoji font reads the
same thing. Plain Python (no streamlit): the pages translate a level into ``st.success`` /
``st.warning`` / ``st.error`` / ``st.info`` (``ALERT``) or a Markdown colour (``NAME``).
"""

from __future__ import annotations

OK, WARN, BAD, IDLE, ACTIVE = "ok", "warn", "bad", "idle", "active"
LEVELS = (OK, WARN, BAD, IDLE, ACTIVE)

# Solid colours (chart marks, chip backgrounds with white text).
HEX = {OK: "#2e7d32", WARN: "#b26a00", BAD: "#c62828", IDLE: "#757575", ACTIVE: "#1565c0"}
# Streamlit's Markdown and badge colour names for the same levels.
NAME = {OK: "green", WARN: "orange", BAD: "red", IDLE: "gray", ACTIVE: "blue"}
# The Streamlit alert element that carries each level.
ALERT = {OK: "success", WARN: "warning", BAD: "error", IDLE: "info", ACTIVE: "info"}

# Freshness states (enrich.freshness) and their words.
STATE_LEVEL = {
    "fresh": OK, "due": WARN, "late": WARN, "stale": BAD, "failing": BAD,
    "never": IDLE, "not_expected": IDLE, "not_entitled": IDLE,
}
STATE_WORDS = {
    "fresh": "fresh", "due": "due", "late": "late", "stale": "stale", "failing": "failing",
    "never": "never fetched", "not_expected": "not expected", "not_entitled": "not entitled",
}
# Run states (enrich.pipeline.engine) and backfill statuses (enrich.backfill.jobs).
RUN_LEVEL = {
    "succeeded": OK, "partial": WARN, "missed": WARN, "failed": BAD, "interrupted": BAD,
    "cancelled": IDLE, "paused": IDLE, "queued": ACTIVE, "running": ACTIVE,
}
BACKFILL_LEVEL = {
    "complete": OK, "incomplete": WARN, "interrupted": WARN, "failed": BAD,
    "paused": IDLE, "cancelled": IDLE, "running": ACTIVE,
}
SEVERITY_LEVEL = {"error": BAD, "warning": WARN, "info": ACTIVE}
# Symbol tasks of a run, and fetch-log steps.
TASK_LEVEL = {"ok": OK, "up_to_date": OK, "skipped": IDLE, "failed": BAD, "retried": WARN,
              "running": ACTIVE, "cancelled": IDLE, "interrupted": WARN,
              "not_attempted": IDLE}
# Coverage heatmap cells (enrich.backfill.heatmap codes' names).
CELL_LEVEL = {"present": OK, "failed": WARN, "missing": BAD, "not expected": IDLE}

# Quality score thresholds: every check passing is ok; a score at or above QUALITY_WARN has
# failing checks (amber); below it, red. Scores weigh errors 3x a warning (enrich.checks.quality).
QUALITY_OK = 0.9995
QUALITY_WARN = 0.9


def state_level(state: str | None) -> str:
    return STATE_LEVEL.get(state or "", IDLE)


def run_level(state: str | None) -> str:
    return RUN_LEVEL.get(state or "", IDLE)


def quality_level(score: float | None) -> str:
    """The level of a quality score (0..1); None (not checked yet) is idle."""
    if score is None or score != score:  # NaN
        return IDLE
    if score >= QUALITY_OK:
        return OK
    return WARN if score >= QUALITY_WARN else BAD


def quality_words(score: float | None) -> str:
    """``100%`` / ``92.9%`` (one decimal below 100); empty when not checked."""
    if score is None or score != score:
        return ""
    if score >= QUALITY_OK:
        return "100%"
    return f"{min(score, 0.999) * 100:.1f}%"


def markdown(level: str, text: str) -> str:
    """``text`` (Markdown the caller made safe) as a coloured badge of ``level``."""
    return f":{NAME[level]}-badge[{text}]"
