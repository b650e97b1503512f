"""Streamlit helpers shared by the pages: settings, store, services, cached reads, widgets.

Reads go through ``read``/``lake_read``, cached with ``st.cache_data`` and keyed by the
catalog's data-version counter, so a page never re-queries what has not changed and always
sees a write (a run's progress, a pause) on its next rerun. The services singleton comes
through ``st.cache_resource``; jobs never call ``st.*`` — pages poll the catalog.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl
import streamlit as st

from enrich import queries, ui
from enrich.config import Settings, load_settings
from enrich.errors import ConfigError, EnrichError
from enrich.store import Store

PAGES = {
    "overview": "pages/overview.py",
    "symbols": "pages/symbols.py",
    "runs": "pages/runs.py",
    "metrics": "pages/metrics.py",
    "health": "pages/health.py",
    "controls": "pages/controls.py",
    "settings": "pages/settings.py",
    "alerts": "pages/alerts.py",
}
ACTOR = "dashboard"


# -- configuration and singletons --------------------------------------------------------------
def settings() -> Settings:
    """The effective settings (environment over ``.env``); stops the page on a bad value."""
    try:
        return load_settings()
    except ConfigError as exc:
        st.error(f"Configuration error: {exc}")
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
        st.warning(f"The run service could not start: {exc}")
        return None
    if svc.stopped:  # replaced by another data directory in this process (tests)
        _services.clear()
        svc = _services(str(s.data_dir), s)
    return svc


def now() -> dt.datetime:
    return settings().now()


def now_minute() -> dt.datetime:
    """``now`` to the minute: freshness changes at session closes, so reads cache per minute."""
    return now().replace(second=0, microsecond=0)


def is_demo() -> bool:
    return settings().provider == "sample"


# -- cached reads ------------------------------------------------------------------------------
@st.cache_data(ttl=0.5, show_spinner=False)
def _version(data_dir: str) -> int:
    return store().catalog.data_version()


def version() -> int:
    return _version(str(settings().data_dir))


def invalidate() -> None:
    """Forget the version memo after a write made by this page."""
    _version.clear()


@st.cache_data(max_entries=512, show_spinner=False)
def _read(name: str, data_dir: str, version: int, args: tuple, kwargs: tuple) -> Any:
    return getattr(queries, name)(store().catalog, *args, **dict(kwargs))


@st.cache_data(max_entries=128, show_spinner=False)
def _lake_read(name: str, data_dir: str, version: int, args: tuple, kwargs: tuple) -> Any:
    return getattr(queries, name)(store().lake, *args, **dict(kwargs))


def read(name: str, *args, **kwargs) -> Any:
    """``enrich.queries.<name>(catalog, *args, **kwargs)``, cached per data version."""
    return _read(name, str(settings().data_dir), version(), args, tuple(sorted(kwargs.items())))


def lake_read(name: str, *args, **kwargs) -> Any:
    """``enrich.queries.<name>(lake, *args, **kwargs)``, cached per data version."""
    return _lake_read(name, str(settings().data_dir), version(), args,
                      tuple(sorted(kwargs.items())))


@st.cache_data(max_entries=64, show_spinner=False)
def _alerts_read(name: str, data_dir: str, version: int, at: dt.datetime, args: tuple,
                 kwargs: tuple) -> Any:
    from enrich import alerts

    return getattr(alerts, name)(store().catalog, *args, **dict(kwargs))


def alerts_read(name: str, *args, **kwargs) -> Any:
    """``enrich.alerts.<name>(catalog, wall clock, *args, **kwargs)``, cached per data
    version and minute (snoozes end on the wall clock)."""
    at = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    return _alerts_read(name, str(settings().data_dir), version(), at, (at, *args),
                        tuple(sorted(kwargs.items())))


@st.cache_resource(show_spinner=False)
def _channels(urls: tuple[str, ...]):
    from enrich.channels import Channels

    return Channels(urls)


def alert_channels():
    """The alert channels of ENRICH_ALERT_URLS (labels carry no credential)."""
    return _channels(settings().alert_urls)


def grid() -> pl.DataFrame:
    return read("status_grid", now_minute())


def summary() -> pl.DataFrame:
    return _summary(str(settings().data_dir), version(), now_minute())


@st.cache_data(max_entries=8, show_spinner=False)
def _summary(data_dir: str, version: int, at: dt.datetime) -> pl.DataFrame:
    return queries.symbol_summary(grid())


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


def probe() -> dict[str, Any]:
    """Call the provider's connectivity probe now: status, message, latency, when."""
    svc = services()
    if svc is not None:
        part = svc.health(probe=True)["provider"]
    else:
        from enrich.providers import make_provider

        res = make_provider(settings()).probe()
        part = {"ok": res.ok, "status": res.status, "message": res.message,
                "latency_ms": res.latency_ms}
    return {**part, "checked_at": now()}


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
    st.error(f"Could not {action}: {exc}")


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
    st.toast(f"Run {run_id[:8]} started", icon="🚀")
    return run_id


def run_link(run_id: str, label: str | None = None) -> None:
    st.page_link(PAGES["runs"], label=label or f"Follow run {run_id[:8]} →", icon="🔄",
                 query_params={"run": run_id})


def progress_block(p: dict[str, Any], key: str) -> None:
    """One run's live progress: bar, done / total, symbols in flight, ETA."""
    total, done = p["total"], p["done"]
    label = f"{ui.run_state_label(p['state'])} · {p['kind']} run {p['run_id'][:8]}"
    if p["state"] == "queued" or not total:
        st.progress(0.0, text=f"{label}: waiting to start")
        return
    eta = f" · ETA {ui.fmt_duration(p['eta_s'])}" if p.get("eta_s") is not None else ""
    st.progress(min(p["fraction"], 1.0),
                text=f"{label}: {done} / {total} symbols{eta}")
    bits = []
    if p["current"]:
        shown = ", ".join(p["current"][:8]) + (" …" if len(p["current"]) > 8 else "")
        bits.append(f"now: {shown}")
    if p["failed_so_far"]:
        bits.append(f"{p['failed_so_far']} failed so far")
    bits.append(f"started {ui.fmt_utc(p['started_at'], seconds=True)}")
    st.caption(" · ".join(bits))


def fact(container, label: str, value: str, help_text: str | None = None) -> None:
    """A labelled value in normal text size (``st.metric`` truncates long words)."""
    container.markdown(f"**{label}**  \n{value}", help=help_text)


def dataframe(frame: pl.DataFrame, **kwargs) -> Any:
    """``st.dataframe`` with instants shown as ``… UTC`` text and the index hidden."""
    return st.dataframe(ui.instants_as_text(frame), hide_index=True, **kwargs)


def query_param(name: str, default: str | None = None) -> str | None:
    value = st.query_params.get(name)
    return value if value not in (None, "") else default
