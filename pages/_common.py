"""Streamlit helpers shared by the pages: settings, store, services, cached reads, widgets.

Reads go through ``read``/``lake_read``, cached with ``st.cache_data`` and keyed by the
catalog's data-version counter, so a page never re-queries what has not changed and always
sees a write (a run's progress, a pause) on its next rerun. The services singleton comes
through ``st.cache_resource``; jobs never call ``st.*`` — pages poll the catalog.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import importlib
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn, TypeVar

import polars as pl
import streamlit as st

from enrich import palette, ui
from enrich.config import Settings, load_settings
from enrich.errors import ConfigError, EnrichError
from enrich.store.quarantine import despite_bad_files
from enrich.store.store import Store
from enrich.views import quality as quality_view
from enrich.views import status as status_view

T = TypeVar("T")

# The one page registry: each page's name, title and icon, in the sidebar's order (app.py);
# its script is pages/<name>.py. Links between pages name them by PAGES[name].
PAGE_TABLE = (
    ("overview", "Overview", "🏠"),
    ("symbols", "Symbols", "🔎"),
    ("runs", "Runs", "🔄"),
    ("metrics", "Metrics", "📊"),
    ("quality", "Quality", "🧪"),
    ("health", "Health", "🩺"),
    ("controls", "Controls", "🎛️"),
    ("backfill", "Backfill", "⏮️"),
    ("alerts", "Alerts", "🚨"),
    ("settings", "Settings", "⚙️"),
)
PAGES = {name: f"pages/{name}.py" for name, _, _ in PAGE_TABLE}
ACTOR = "dashboard"


# -- configuration and singletons --------------------------------------------------------------
def settings() -> Settings:
    """The effective settings (environment over ``.env``); stops the page on a bad value."""
    try:
        return load_settings()
    except ConfigError as exc:
        st.error(f"Configuration error: {ui.literal(exc)}")
        st.stop()
        raise  # unreachable: st.stop raises


@st.cache_resource(show_spinner=False)
def _store(data_dir: str, timeout_s: float) -> Store:
    return Store(data_dir, timeout_s)


def store() -> Store:
    s = settings()
    return _store(str(s.data_dir), s.catalog_timeout_s)


@st.cache_resource(show_spinner=False)
def _services(data_dir: str, _settings: Settings):
    from enrich.service import get_services

    return get_services(_settings)


# What the pages import beyond the Overview's modules: loaded once per process, in the
# background, after the first page is served, so no page's first visit waits for an import.
WARM_IMPORTS = ("plotly.graph_objects", "plotly.subplots", "numpy", "enrich.backfill.heatmap",
                "enrich.diagnosis", "enrich.checks.quality", "enrich.quant.snapshots",
                "enrich.views.alerts", "enrich.quant.options_history", "enrich.channels",
                "pages._charts")


@st.cache_resource(show_spinner=False)
def warm_imports() -> threading.Thread:
    """Start importing ``WARM_IMPORTS`` in a daemon thread (once per process), then load
    what plotly loads on a figure's first use (``pages._charts.warm``)."""
    def load() -> None:
        for name in WARM_IMPORTS:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)
        from pages import _charts

        _charts.warm()

    thread = threading.Thread(target=load, name="warm-imports", daemon=True)
    thread.start()
    return thread


def services():
    """The process-wide services (scheduler, run-now, cancel, pause), or None if unavailable."""
    s = settings()
    try:
        svc = _services(str(s.data_dir), s)
    except ModuleNotFoundError as exc:
        if exc.name != "enrich.service":
            raise
        return None
    except EnrichError as exc:  # e.g. the catalog is held by another program
        st.warning(f"The run service could not start: {ui.literal(exc)}")
        return None
    if svc.stopped:  # replaced by another data directory in this process (tests)
        _services.clear()
        svc = _services(str(s.data_dir), s)
    return svc


def now() -> dt.datetime:
    return settings().now()


def clock() -> dt.datetime:
    """The clock that stamps runs and heartbeats (the run service's, else the wall clock), to
    the second: what a running run's duration runs to (``now`` may be ENRICH_NOW's fixed
    "as of" instant)."""
    svc = services()
    at = svc.clock() if svc is not None else dt.datetime.now(dt.UTC)
    return at.replace(microsecond=0)


def now_minute() -> dt.datetime:
    """``now`` to the minute: freshness changes at session closes, so reads cache per minute."""
    return now().replace(second=0, microsecond=0)


def is_demo() -> bool:
    return settings().provider == "sample"


# -- cached reads ------------------------------------------------------------------------------
@st.cache_data(ttl=0.5, show_spinner=False)
def _version(data_dir: str) -> int:
    """The catalog's data version, read at most twice a second — after closing the runs whose
    process is gone (``runs.close_dead_runs``): a killed CLI run reads interrupted on every
    page, not running with a growing duration, even where no scheduler owner runs."""
    from enrich.store import runs

    runs.close_dead_runs(store())
    return store().catalog.data_version()


def version() -> int:
    return _version(str(settings().data_dir))


def invalidate() -> None:
    """Forget the version memo after a write made by this page."""
    _version.clear()


# The read model itself is passed as ``_fn`` (not hashed); ``name``, its dotted name, keys the
# cache.
@st.cache_data(max_entries=512, show_spinner=False)
def _read(name: str, _fn: Callable[..., Any], data_dir: str, version: int, args: tuple,
          kwargs: tuple) -> Any:
    return _fn(store().catalog, *args, **dict(kwargs))


@st.cache_data(max_entries=128, show_spinner=False)
def _lake_read(name: str, _fn: Callable[..., Any], data_dir: str, version: int, args: tuple,
               kwargs: tuple) -> Any:
    return _fn(store().lake, *args, **dict(kwargs))


def _name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


@st.cache_data(ttl=60, max_entries=16, show_spinner=False)
def _next_refresh(data_dir: str, version: int, minute: dt.datetime) -> dict[str, Any] | None:
    svc = services()
    if svc is None:
        return None
    fire, plan = svc.next_refresh_plan()
    return {"fire": fire, "text": plan.describe(), "requests": plan.requests,
            "per_symbol": plan.per_symbol_requests, "eta_s": plan.eta_s(),
            "rows": plan.rows(), "next_day": svc.engine.limits().next_day,
            "follow_up": svc.follow_up_time()}


def next_refresh() -> dict[str, Any] | None:
    """The next daily refresh's cost (its plan at the fire time), cached per data version and
    minute; None without the run service."""
    return _next_refresh(str(settings().data_dir), version(), now_minute())


def read(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(catalog, *args, **kwargs)``, a read model of ``enrich.views``, cached per data
    version."""
    return _read(_name(fn), fn, str(settings().data_dir), version(), args,
                 tuple(sorted(kwargs.items())))


def lake_read(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(lake, *args, **kwargs)``, a read model of ``enrich.views``, cached per data version.

    A lake file that cannot be read is quarantined by the read (``enrich.store.quarantine``): the
    page says so and shows what remains, as the next run re-fetches the file.
    """
    key = (_name(fn), fn, str(settings().data_dir))
    kw = tuple(sorted(kwargs.items()))
    value, set_aside = despite_bad_files(lambda: _lake_read(*key, version(), args, kw))
    for exc in set_aside:
        st.error(ui.literal(exc), icon="🩹")
    if set_aside:
        store().catalog.sync_quarantine()  # its symbol × dataset now shows failing
        invalidate()
    return value


@st.cache_data(max_entries=64, show_spinner=False)
def _alerts_read(name: str, _fn: Callable[..., Any], data_dir: str, version: int,
                 at: dt.datetime, args: tuple, kwargs: tuple) -> Any:
    return _fn(store().catalog, *args, **dict(kwargs))


def alerts_read(fn: Callable[..., T], *args, **kwargs) -> T:
    """``fn(catalog, wall clock, *args, **kwargs)``, an alert read model of
    ``enrich.views.alerts``, cached per data version and minute (snoozes end on the wall
    clock)."""
    at = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    return _alerts_read(_name(fn), fn, str(settings().data_dir), version(), at, (at, *args),
                        tuple(sorted(kwargs.items())))


@st.cache_resource(show_spinner=False)
def _channels(urls: tuple[str, ...]):
    from enrich.channels import Channels

    return Channels(urls)


def alert_channels():
    """The alert channels of ENRICH_ALERT_URLS (labels carry no credential)."""
    return _channels(settings().alert_urls)


@st.cache_data(ttl=30, max_entries=8, show_spinner=False)
def _schedule_facts(data_dir: str, version: int, minute: dt.datetime) -> dict[str, Any]:
    from enrich import diagnosis

    s = settings()
    return diagnosis.schedule_facts(store().catalog, s.schedule_utc, minute, s.scheduler,
                                    wall=dt.datetime.now(dt.UTC))


def schedule_facts() -> dict[str, Any]:
    """``enrich.diagnosis.schedule_facts``: paused, no scheduler, fires that did not run,
    last and next run (cached per data version and minute)."""
    return _schedule_facts(str(settings().data_dir), version(), now_minute())


@st.cache_data(max_entries=8, show_spinner=False)
def _quality_facts(data_dir: str, version: int) -> dict[str, Any]:
    from enrich import diagnosis

    return diagnosis.quality_facts(store().catalog)


def quality_facts() -> dict[str, Any]:
    return _quality_facts(str(settings().data_dir), version())


def grid() -> pl.DataFrame:
    return read(status_view.status_grid, now_minute())


def summary() -> pl.DataFrame:
    return _summary(str(settings().data_dir), version(), now_minute())


@st.cache_data(max_entries=8, show_spinner=False)
def _summary(data_dir: str, version: int, at: dt.datetime) -> pl.DataFrame:
    return status_view.symbol_summary(grid())


def symbols_table() -> pl.DataFrame:
    """The per-symbol summary with each symbol's quality score (``status_view.with_quality``):
    what the Symbols page filters and sorts, over every symbol."""
    return _symbols_table(str(settings().data_dir), version(), now_minute())


@st.cache_data(max_entries=8, show_spinner=False)
def _symbols_table(data_dir: str, version: int, at: dt.datetime) -> pl.DataFrame:
    return status_view.with_quality(summary(), read(quality_view.symbol_quality))


def day_axis(fig: Any, days: Iterable[Any], **axis: Any) -> None:
    """A date x axis that never shows sub-day ticks: one day or a few are padded to a range
    of whole days (plotly would otherwise zoom a single point to milliseconds)."""
    days = [d for d in days if d is not None]
    if days:
        lo, hi = min(days), max(days)
        if isinstance(lo, dt.datetime):
            lo, hi = lo.date(), hi.date()
        if (hi - lo).days < 7:
            pad = dt.timedelta(days=max(1, (7 - (hi - lo).days) // 2))
            axis.setdefault("range", [(lo - pad).isoformat(), (hi + pad).isoformat()])
            axis.setdefault("dtick", 86_400_000)
    # A bar a day, most of a day wide: plotly sizes bars by the closest pair, and one day of
    # data (a new desk's Metrics) drew them 0 px wide.
    fig.update_traces(width=86_400_000 * 0.8, selector=dict(type="bar"))
    fig.update_xaxes(type="date", tickformat="%b %d\n%Y", **axis)


def compact_axis(fig: Any, **where: Any) -> None:
    """A numeric y axis in compact units with thousands separators: 15k, 2.5M, 1.2B."""
    fig.update_yaxes(exponentformat="B", separatethousands=True, **where)


@st.cache_data(ttl=5, max_entries=4, show_spinner=False)
def _health(data_dir: str, version: int) -> dict[str, Any]:
    svc = services()
    if svc is not None:
        return svc.health(probe=False)
    from enrich.health import health as health_of

    return health_of(settings(), store(), probe=False)


def health() -> dict[str, Any]:
    """``Services.health`` without the provider probe (cached a few seconds)."""
    return _health(str(settings().data_dir), version())


def provider():
    """The run service's provider (the one whose ticker reference ``symbols add`` asks), or
    a new one from the settings when the service is unavailable."""
    svc = services()
    if svc is not None:
        return svc.provider
    from enrich.providers import make_provider

    return make_provider(settings())


def probe() -> dict[str, Any]:
    """The provider's connectivity probe: status, message, latency, when it was made (the
    service reuses an answer younger than a minute: each probe is a request of the plan)."""
    svc = services()
    if svc is not None:
        part = svc.health(probe=True)["provider"]
        return {**part, "checked_at": part.get("probed_at") or now()}
    from enrich.providers import make_provider

    res = make_provider(settings()).probe()
    return {"ok": res.ok, "status": res.status, "message": res.message,
            "latency_ms": res.latency_ms, "checked_at": now()}


# -- toasts ------------------------------------------------------------------------------------
_TOASTS = "_enrich_toasts"
_HELD = contextvars.ContextVar("enrich_toasts_held", default=False)


def toast(message: str, icon: str | None = None) -> None:
    """``st.toast`` that a rerun does not lose. Streamlit can drop a toast when a rerun follows
    it before it reached the browser (a bare script, button → toast → ``st.rerun()``: 7 and 9
    of 10 shown), and most of the pages' buttons rerun after saying what they did. Inside
    ``toasts_after`` (``app.py`` wraps each page run in it) the toast waits in the session
    until the run ends, and a rerun carries it to the end of the next run; elsewhere (a
    fragment's own run, a page run on its own) it shows at once — ``rerun_with_toast`` when a
    rerun follows."""
    if _HELD.get():
        st.session_state.setdefault(_TOASTS, []).append((message, icon))
    else:
        st.toast(message, icon=icon)


def rerun_with_toast(message: str, icon: str | None = None) -> NoReturn:
    """Rerun the whole app, whose run then shows ``message`` as a toast when it ends (from a
    fragment's own run too: the rerun is a whole one, inside ``toasts_after``)."""
    st.session_state.setdefault(_TOASTS, []).append((message, icon))
    st.rerun()


@contextlib.contextmanager
def toasts_after() -> Iterator[None]:
    """Hold the toasts the run asks for and show them when it ends — or stops (``st.stop``,
    an error) — but not when a rerun cuts it short: the next run's end shows them then."""
    from streamlit.runtime.scriptrunner_utils.exceptions import RerunException

    held = _HELD.set(True)
    try:
        yield
    except RerunException:
        raise
    except BaseException:
        _show_toasts()
        raise
    finally:
        _HELD.reset(held)
    _show_toasts()


def _show_toasts() -> None:
    for message, icon in st.session_state.pop(_TOASTS, []):
        st.toast(message, icon=icon)


# -- errors ------------------------------------------------------------------------------------
def page_failed(exc: BaseException) -> None:
    """An unexpected error in a page: a short message saying where the details are, never the
    exception's text (it may quote a path, a provider's answer or a secret)."""
    from enrich import errorlog

    try:
        data_dir = settings().data_dir
    except Exception:  # noqa: BLE001 (the settings themselves may be what failed)
        data_dir = None
    where = errorlog.record(exc, data_dir, "dashboard")
    st.error(f"This page ran into an unexpected error ({type(exc).__name__}). "
             + (f"The details are in {ui.literal(where)}." if where else
                "The details are in the log of the terminal running the dashboard.")
             + " Other pages keep working; reload to try again.", icon="⚠️")


def repairs() -> None:
    """What opening the store repaired (a catalog set aside and rebuilt, …), once per
    process, and lake files quarantined and not fetched again yet: both are shown on the
    Overview and on Health."""
    for notice in store().notices:
        st.warning(ui.literal(notice), icon="🛠️")
    lake = health().get("lake") or {}
    bad = lake.get("unreadable", []) + lake.get("quarantined_now", [])
    waiting = lake.get("awaiting_refetch", [])
    if not (bad or waiting):
        return
    n = len({f.get("path") or f.get("original") for f in bad + waiting})
    st.error(f"{n} lake file{'s' if n != 1 else ''} could not be read. Each was moved to "
             "`lake/_quarantine/`, its symbol × dataset shows *failing* with “corrupt file, "
             "re-fetch”, and the next run fetches it again (the Controls page runs one now).",
             icon="🩹")
    rows = [{"file": f["path"], "reason": f["reason"], "now in": f.get("moved_to") or
             "(not moved yet: retried on the next check)"} for f in bad]
    shown = {f.get("moved_to") for f in bad}
    rows += [{"file": f["original"], "reason": f["reason"], "now in": f["moved_to"]}
             for f in waiting if f["moved_to"] not in shown]
    dataframe(pl.DataFrame(rows), key="quarantined_files")


# -- shared widgets ----------------------------------------------------------------------------
def demo_banner() -> None:
    if is_demo():
        st.caption(f"🧪 {ui.DEMO_LABEL}.")


def page_header(title: str, help_text: str | None = None) -> None:
    st.title(title)
    if help_text:
        st.caption(help_text)
    demo_banner()


def report_error(action: str, exc: Exception) -> None:
    st.error(f"Could not {action}: {ui.literal(exc)}")


def start_run(**params) -> str | None:
    """Trigger a run through the services; toast its id; remember it for follow-up links."""
    svc = services()
    if svc is None:
        st.error("The run service is not available in this installation.")
        return None
    try:
        run_id = svc.trigger(**params)
    except (EnrichError, ValueError) as exc:
        report_error("start the run", exc)
        return None
    invalidate()
    st.session_state["last_run_id"] = run_id
    toast(f"Run {ui.literal(run_id[:8])} started", icon="🚀")
    return run_id


def run_link(run_id: str, label: str | None = None) -> None:
    """A link to a run's page; ``label`` is Markdown (pass what it quotes through
    ``ui.literal``)."""
    st.page_link(PAGES["runs"], label=label or f"Follow run {ui.literal(run_id[:8])} →",
                 icon="🔄", query_params={"run": run_id})


def progress_block(p: dict[str, Any], key: str) -> None:
    """One run's live progress: bar, done / total, symbols in flight, ETA."""
    total, done = p["total"], p["done"]
    label = (f"{ui.run_badge(p['state'])} · {ui.literal(p['kind'])} run "
             f"{ui.literal(p['run_id'][:8])}")
    if p["state"] == "queued" or not total:
        st.progress(0.0, text=f"{label}: waiting to start")
        return
    eta = f" · ETA {ui.fmt_duration(p['eta_s'])}" if p.get("eta_s") is not None else ""
    st.progress(min(p["fraction"], 1.0),
                text=f"{label}: {done} / {total} symbols{eta}")
    bits = []
    if p.get("requests_planned") is not None:
        bits.append(f"requests {ui.fmt_int(p['requests'])} / "
                    f"{ui.fmt_int(p['requests_planned'])} planned")
    if p["current"]:
        shown = ", ".join(p["current"][:8]) + (" …" if len(p["current"]) > 8 else "")
        bits.append(f"now: {ui.literal(shown)}")
    if p["failed_so_far"]:
        bits.append(f"{p['failed_so_far']} failed so far")
    bits.append(f"started {ui.fmt_utc(p['started_at'], seconds=True)}")
    st.caption(" · ".join(bits))


# A symbol picker lists every symbol up to this many; beyond, symbols are typed (a list of
# 5,000 is neither readable nor light to send on every rerun).
PICK_FROM_LIST_UP_TO = 200


def symbol_picker(container: Any, label: str, symbols: Sequence[str], key: str,
                  **kwargs: Any) -> list[str]:
    """A multiselect of ``symbols`` under ``key``: every symbol as an option up to
    ``PICK_FROM_LIST_UP_TO``; beyond, the symbols typed (several at once, separated by commas
    or spaces, in any case), each resolved against ``symbols`` — what names none is
    dropped with a warning. The same key either way: ``st.session_state[key]`` (or a test)
    sets a list of symbols. Returns the symbols picked, as the universe spells them."""
    from enrich.views import universe as universe_view

    found, unknown = universe_view.resolve_symbols(symbols, st.session_state.get(key) or [])
    if len(symbols) <= PICK_FROM_LIST_UP_TO:
        if key in st.session_state:  # a pick the options no longer hold (the list changed)
            st.session_state[key] = found
        return container.multiselect(label, list(symbols), key=key, **kwargs)
    if key in st.session_state:  # as the universe spells them, and what names none
        st.session_state[key] = found + unknown
    kwargs["placeholder"] = (f"type symbols, e.g. {symbols[0]}, {symbols[-1]} — "
                             + kwargs.get("placeholder", f"{len(symbols):,} to pick from"))
    picked = container.multiselect(
        label, found + unknown, key=key, accept_new_options=True,
        help=kwargs.pop("help", None) or f"{len(symbols):,} symbols: type them (several "
        "at once, separated by commas or spaces, in any case).", **kwargs)
    found, unknown = universe_view.resolve_symbols(symbols, picked)
    if unknown:
        st.warning("Not in the list, left out: " + ui.literal(", ".join(unknown), limit=300))
    return found


def fact(container, label: str, value: str, help_text: str | None = None) -> None:
    """A labelled value in normal text size (``st.metric`` truncates long words). ``value``
    is Markdown: pass text the page did not write through ``ui.literal``."""
    container.markdown(f"**{label}**  \n{value}", help=help_text)


def tiles(items: Iterable[tuple[str, str] | tuple[str, str, str | None]],
          per_row: int = 4, border: bool = False) -> None:
    """``st.metric`` tiles, ``per_row`` to a row: at most four on a wide page, so neither a
    label nor a value like ``15,124,332`` is cut short. Items: (label, value[, help])."""
    items = list(items)
    for i in range(0, len(items), per_row):
        cols = st.columns(per_row)
        for col, item in zip(cols, items[i:i + per_row], strict=False):
            label, value, *rest = item
            col.metric(label, value, help=rest[0] if rest else None, border=border)


def alert(level: str, body: str, **kwargs) -> None:
    """``body`` in the Streamlit alert of a palette level: success, warning, error, info."""
    getattr(st, palette.ALERT[level])(body, **kwargs)


def run_outcome(run_id: str, state: str, message: str | None) -> None:
    """A finished run in the alert its outcome deserves: a failed run is an error, a
    partial one a warning, a succeeded one a success (never a green box for a failure)."""
    alert(palette.run_level(state),
          f"Run {ui.literal(run_id[:8])} {ui.run_badge(state)}: "
          f"{ui.literal(message or '', limit=300)}")


def chip_column(values: Iterable[str | None], level_of: Callable[[str], str],
                label: str | None = None, help_text: str | None = None) -> Any:
    """A column of coloured chips, each with its words: one option per distinct value,
    coloured by ``level_of(value)`` (``enrich.palette``)."""
    options = sorted({v for v in values if v})
    return st.column_config.MultiselectColumn(
        label, options=options, color=[palette.HEX[level_of(o)] for o in options] or None,
        help=help_text)


CHIP_LEVELS: dict[str, Callable[[str], str]] = {
    "state": ui.chip_level,
    "run": palette.run_level,
    "backfill": lambda s: palette.BACKFILL_LEVEL.get(s, palette.IDLE),
    "severity": lambda s: palette.SEVERITY_LEVEL.get(s, palette.IDLE),
    "task": lambda s: palette.TASK_LEVEL.get(s, palette.IDLE),
    "sentiment": lambda s: {"positive": palette.OK, "negative": palette.BAD}.get(
        s, palette.IDLE),
}


def quality_chips(frame: pl.DataFrame, column: str = "quality") -> pl.DataFrame:
    """``column`` (a 0..1 score) as its words (``92.9%``) for a ``quality`` chip column."""
    return frame.with_columns(pl.col(column).map_elements(
        palette.quality_words, return_dtype=pl.String, skip_nulls=True).alias(column))


def _quality_level(words: str) -> str:
    return palette.quality_level(float(words.rstrip("%")) / 100)


CHIP_LEVELS["quality"] = _quality_level


def dataframe(frame: pl.DataFrame, chips: dict[str, str] | None = None, **kwargs) -> Any:
    """``st.dataframe`` as every page shows tables: instants as ``… UTC`` text, the index
    hidden, empty cells blank (never "None"), numbers with thousands separators, and the
    ``chips`` columns (name → ``CHIP_LEVELS`` kind) as chips in the state palette."""
    frame = ui.instants_as_text(frame)
    config = dict(kwargs.pop("column_config", None) or {})
    for col, kind in (chips or {}).items():
        if col not in frame.columns:
            continue
        label = config.get(col)
        help_text = None
        if isinstance(label, dict):
            help_text = label.get("help")
            label = label.get("label")
        config[col] = chip_column(frame[col].to_list(), CHIP_LEVELS[kind], label or col,
                                  help_text)
        frame = frame.with_columns(pl.when(pl.col(col).is_null()).then(None)
                                   .otherwise(pl.concat_list(pl.col(col))).alias(col))
    for col, dtype in frame.schema.items():
        if not dtype.is_numeric() or isinstance(config.get(col), dict):
            continue
        config[col] = st.column_config.NumberColumn(config.get(col) or col, format="localized")
    kwargs.setdefault("placeholder", "")
    return st.dataframe(frame, hide_index=True, column_config=config, **kwargs)


def query_param(name: str, default: str | None = None) -> str | None:
    value = st.query_params.get(name)
    return value if value not in (None, "") else default
