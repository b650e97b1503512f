"""Streamlit entry: page config, navigation over pages/, the shared sidebar, the services."""

from __future__ import annotations

import streamlit as st

from enrich import palette, ui
from enrich.config import Settings
from enrich.service import Services
from enrich.views import health as health_view
from enrich.views import runs as runs_view
from pages import _common as c


@st.fragment(run_every=5)
def _sidebar_status(settings: Settings, svc: Services | None) -> None:
    state = c.read(health_view.scheduler_state)
    if state.get("paused"):
        st.markdown(f"**Scheduler** · {palette.markdown(palette.BAD, 'paused')} by "
                    f"{ui.literal(state.get('paused_by') or '?')}")
        if state.get("pause_reason"):
            st.caption(ui.literal(state["pause_reason"], limit=200))
    elif not settings.scheduler:
        st.markdown(f"**Scheduler** · {palette.markdown(palette.IDLE, 'off here')} "
                    "(ENRICH_SCHEDULER=off)")
    else:
        st.markdown(f"**Scheduler** · {palette.markdown(palette.OK, 'on')}")
    nxt = svc.next_fire_time() if svc is not None and settings.scheduler else None
    if nxt is not None and not state.get("paused"):
        st.caption(f"Next run {ui.fmt_both(nxt)}")
    else:
        st.caption(f"Daily at {settings.schedule_utc:%H:%M} UTC")
    active = c.read(runs_view.active_runs)
    for p in active:
        st.caption(f"{ui.run_badge(p['state'])} run {ui.literal(p['run_id'][:8])}: "
                   f"{p['done']} / {p['total']} symbols")
        c.run_link(p["run_id"], "Follow →")


def main() -> None:
    st.set_page_config(page_title="enrich", page_icon="📈", layout="wide")
    nav = st.navigation([
        st.Page(c.PAGES[name], title=title, icon=icon, default=name == "overview")
        for name, title, icon in c.PAGE_TABLE])
    settings = c.settings()
    svc = c.services()  # starts the scheduler once per process
    with st.sidebar:
        if c.is_demo():
            st.badge("Demo data · sample provider", icon="🧪", color="orange")
        else:
            st.badge(f"Provider · {settings.provider}", icon="🔌", color="blue")
        _sidebar_status(settings, svc)
        st.caption(f"Data: {ui.literal(settings.data_dir.resolve())}")
    try:
        with c.toasts_after():  # what the page's buttons said, once its run ends
            nav.run()
        c.warm_imports()  # after the page: the first one drawn is not slowed by it
    except Exception as exc:  # st.stop and st.rerun are not Exceptions: they pass through
        c.page_failed(exc)
        raise  # Streamlit logs it too; its box shows no details (client.showErrorDetails)


# Streamlit runs this file as ``__main__``. A run's worker processes (multiprocessing) run the
# parent's main script again as ``__mp_main__`` before their work: there it must start
# nothing — no services, no scheduler, no desk in the worker's working directory.
if __name__ == "__main__":
    main()
