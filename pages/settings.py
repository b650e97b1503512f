"""Settings: the effective configuration (key masked) and the universe of symbols."""

from __future__ import annotations

import polars as pl
import streamlit as st

from enrich import ui
from enrich.errors import EnrichError
from enrich.store import universe as uv
from enrich.symbols import ASSET_CLASSES
from enrich.views import universe as universe_view
from pages import _common as c

AUTO = "detect from the symbol"
UNIVERSE_PAGE = 100

c.page_header("Settings", "Configuration comes from the environment and .env; change it there "
                          "and restart. The universe is edited here.")
settings = c.settings()

# -- configuration -----------------------------------------------------------------------------
st.subheader("Effective configuration")
public = settings.public()
c.dataframe(pl.DataFrame({"variable": list(public), "value": list(public.values())}))
st.caption("The API key is masked and only the host of the base URL is shown.")

# -- alerts ------------------------------------------------------------------------------------
st.subheader("Alert channels")
channels = c.alert_channels()
if channels:
    c.dataframe(pl.DataFrame({"channel": channels.labels}))
    st.caption("From ENRICH_ALERT_URLS, shown without their credentials.")
else:
    st.info("No alert channel: set ENRICH_ALERT_URLS (e.g. json://host/path, "
            "mailto://user:pass@host?to=you@example.com, ntfy://topic) and restart.")
if st.button("Send a test alert", icon="📣", key="test_alert"):
    from enrich.alerts import lifecycle as alert_lifecycle

    with st.spinner("Sending…"):
        outcome = alert_lifecycle.send_test(c.store().catalog, channels, c.ACTOR)
    c.invalidate()
    st.session_state["test_alert_outcome"] = outcome
outcome = st.session_state.get("test_alert_outcome")
if outcome is not None:
    if not outcome["channels"]:
        st.warning("Recorded, but there is no channel to send it to.")
    elif outcome["delivery"] == "sent":
        st.success(f"Test alert {outcome['alert_id']} sent to every channel.")
    else:
        st.error(f"Test alert {outcome['alert_id']}: {outcome['delivery']}.")
    if outcome["channels"]:
        c.dataframe(pl.DataFrame(outcome["channels"]))

# -- universe ----------------------------------------------------------------------------------
st.subheader("Universe")
table = c.read(universe_view.universe_table)
n_active = int(table["active"].sum()) if table.height else 0
st.caption(f"{table.height:,} symbols, {n_active:,} active. Inactive symbols keep their data "
           "but are left out of runs.")
search = st.text_input("Filter", key="uni_search", placeholder="symbol or name",
                       on_change=lambda: st.session_state.update(uni_page=1))
shown = universe_view.search_symbols(table, search)
# a page at a time: 5,000 rows would be ~0.5 MB sent and drawn on every visit
pages = max(1, -(-shown.height // UNIVERSE_PAGE))
page = min(int(st.session_state.get("uni_page", 1) or 1), pages)
if pages > 1:
    st.caption(f"{shown.height:,} shown · page {page} of {pages}")
shown = shown.slice((page - 1) * UNIVERSE_PAGE, UNIVERSE_PAGE)
c.dataframe(shown, height=min(38 + 35 * max(shown.height, 1), 420), column_config={
    "added_at": "added (UTC)", "last_success_at": "last enrichment (UTC)",
    "asset_class": "class"})
if pages > 1:
    st.pagination(pages, key="uni_page")


def _done(message: str) -> None:
    c.invalidate()
    c.toast(message, icon="✅")


def _names(syms: list[str], limit: int = 30) -> str:
    return ui.literal(", ".join(syms[:limit]) + (" …" if len(syms) > limit else ""))


def added_report(report: uv.AddReport | uv.ImportReport) -> None:
    """What an add or an import did, each outcome apart; then "Fetch these now" for the
    symbols that have no data yet."""
    if report.added:
        st.success(f"Added {len(report.added):,}: {_names(report.added)}")
        for added in getattr(report, "references", [])[:30]:  # what the reference said
            st.caption(ui.literal(uv.describe_added(added)))
    if report.reactivated:
        st.success(f"Reactivated {len(report.reactivated):,} (name and added date kept): "
                   f"{_names(report.reactivated)}")
    if report.present:
        st.info(f"Already present {len(report.present):,}, left unchanged (name, class and "
                f"added date kept): {_names(report.present)}")
    errors = getattr(report, "errors", [])
    if errors:
        st.error(f"Refused {len(errors):,} line(s):")
        c.dataframe(pl.DataFrame({"line": [n for n, _ in errors],
                                  "error": [e for _, e in errors]}))
    new = [*report.added, *report.reactivated]
    if not (new or report.present or errors):
        st.info("Nothing to import.")
    if new and st.button("Fetch it now" if len(new) == 1 else f"Fetch these {len(new):,} now",
                         type="primary", icon="⚡",
                         key="fetch_added",
                         help="Start a run for exactly these symbols: their history from the "
                              "configured start, then the daily refresh keeps them fresh."):
        run_id = c.start_run(symbols=new, kind="manual")
        if run_id:
            st.session_state.pop("universe_report", None)
            c.run_link(run_id)


tab_add, tab_import, tab_state, tab_remove = st.tabs(
    ["Add", "Import CSV", "Activate / deactivate", "Remove"])
with tab_add:
    with st.form("add_symbols", clear_on_submit=True):
        raw = st.text_input("Symbols", key="add_raw",
                            placeholder="AAPL, BRK.B, X:BTCUSD (comma or space separated; "
                                        "checked against the provider's ticker reference)")
        cls = st.selectbox("Asset class", [AUTO, *ASSET_CLASSES], key="add_class")
        name = st.text_input("Name (for a single symbol)", key="add_name")
        submitted = st.form_submit_button("Add", icon="➕")
    if submitted:
        # A new submission: the report of the previous one no longer stands beside it.
        st.session_state.pop("universe_report", None)
        items = [s for s in raw.replace(",", " ").split() if s]
        if not items:
            st.error("Type at least one symbol.")
        else:
            try:  # the provider's ticker reference first: an unknown ticker is refused
                report = uv.add_verified(c.store().catalog, c.provider(), [
                    (s, None if cls == AUTO else cls, name.strip() or None
                     if len(items) == 1 else None) for s in items])
            except EnrichError as exc:
                st.error(ui.literal(exc))
            else:
                st.session_state["universe_report"] = ("add", report)
                _done(report.describe())
                st.rerun()  # the table above shows them

with tab_import:
    st.caption("One symbol per line: `symbol[,asset_class[,name]]`; a header line and "
               "`#` comments are allowed. Valid lines are added, symbols already in the "
               "universe are left unchanged, invalid lines are refused and listed.")
    upload = st.file_uploader("CSV file", type=["csv", "txt"], key="import_file")
    pasted = st.text_area("…or paste lines", key="import_text", height=120)
    if st.button("Import", icon="📥", key="import"):
        st.session_state.pop("universe_report", None)
        try:
            text = uv.decode_csv(upload.getvalue(), upload.name) if upload else pasted
            if not text.strip():
                st.error("Choose a file or paste some lines first.")
            else:
                st.session_state["universe_report"] = (
                    "import", uv.import_csv(c.store().catalog, text))
                c.invalidate()
                st.rerun()  # the table above shows them
        except EnrichError as exc:  # not UTF-8, a field over 128 KiB: nothing imported
            st.session_state.pop("universe_report", None)
            st.error(ui.literal(exc))

last = st.session_state.get("universe_report")
if last is not None:
    with tab_add if last[0] == "add" else tab_import:
        added_report(last[1])

with tab_state:
    pick = c.symbol_picker(st, "Symbols", table["symbol"].to_list() if table.height else [],
                           key="state_pick")
    b = st.columns(2)
    if b[0].button("Deactivate", key="deactivate", disabled=not pick):
        uv.set_active(c.store().catalog, pick, False)
        _done(f"Deactivated {ui.literal(', '.join(pick))}")
        st.rerun()
    if b[1].button("Activate", key="activate", disabled=not pick):
        uv.set_active(c.store().catalog, pick, True)
        _done(f"Activated {ui.literal(', '.join(pick))}")
        st.rerun()

with tab_remove:
    pick_rm = c.symbol_picker(st, "Symbols",
                              table["symbol"].to_list() if table.height else [],
                              key="remove_pick")
    sure = st.checkbox("Remove them from the universe (their stored data stays in the lake)",
                       key="remove_sure")
    if st.button("Remove", icon="🗑️", key="remove", disabled=not (pick_rm and sure)):
        n = uv.remove_symbols(c.store().catalog, pick_rm)
        _done(f"Removed {n} symbol(s)")
        st.rerun()
