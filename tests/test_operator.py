"""Issue 18, the operator's moments: colour that means state, the cause before the symptom,
universe edits that never lose data.

Pages run through Streamlit's AppTest on a copy of the populated demo store (see
``tests.test_pages``); what a page shows is read from the elements it draws: their kind
(``st.error`` vs ``st.success``) and, for the tables, the colour their column config gives
each chip.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid

import polars as pl
import pytest

from enrich import cli, palette, ui
from enrich.pipeline import scheduler
from enrich.store.catalog import WriteBatch
from enrich.store.store import Store
from enrich.store.universe import add_symbols, import_csv
from enrich.views import quality as quality_view
from enrich.views import runs as runs_view
from enrich.views import status as status_view
from tests.conftest import FIXED_NOW
from tests.test_pages import (  # noqa: F401 (fixtures)
    APP,
    env,
    open_page,
    populated,
    populated_template,
    texts,
    wait_final,
)


def chip_colours(at, column: str, which: int | None = None) -> dict[str, str]:
    """The colour of each chip value of ``column`` in the page's tables (the first table
    that has the column, or table ``which``)."""
    frames = list(at.dataframe) if which is None else [at.dataframe[which]]
    for df in frames:
        config = json.loads(df.proto.columns or "{}")
        col = config.get(column)
        if col is None:
            continue
        opts = col["type_config"]["options"]
        return {o["value"]: o.get("color") for o in opts}
    raise AssertionError(f"no table has a chip column {column!r}")


def record_run(data, state: str, message: str, kind: str = "manual") -> str:
    run_id = str(uuid.uuid4())
    b = WriteBatch()
    b.insert("runs", {"run_id": run_id, "kind": kind, "state": state,
                      "params": json.dumps({"symbols": ["AAPL", "KO"]}), "provider": "sample",
                      "requested_at": FIXED_NOW, "started_at": FIXED_NOW,
                      "finished_at": FIXED_NOW, "symbols_total": 3, "symbols_failed": 3,
                      "records_written": 304, "message": message})
    Store(data).catalog.write(b)
    return run_id


def test_a_running_runs_counts_are_drawn_with_its_live_progress(populated):
    # Found by a QA pass: the tiles were drawn once, outside the refreshing fragment, so a
    # running run read "Enriched 2" under "117 / 341 symbols" until it ended. Now they are
    # drawn by the fragment while the run is active (AppTest cannot rerun a fragment alone:
    # this asserts they are there, once, with the run's counts; not the refresh itself).
    from enrich.store.catalog import host_and_pid

    data, _ = populated
    host, pid = host_and_pid()
    run_id = str(uuid.uuid4())
    now = dt.datetime.now(dt.UTC)
    b = WriteBatch()
    b.insert("runs", {"run_id": run_id, "kind": "manual", "state": "running",
                      "params": json.dumps({"symbols": None}), "provider": "sample",
                      "requested_at": now, "started_at": now, "heartbeat_at": now,
                      "pid": pid, "host": host, "symbols_total": 341, "symbols_ok": 117,
                      "symbols_skipped": 24, "symbols_failed": 1, "records_written": 5})
    Store(data).catalog.write(b)
    at = open_page("pages/runs.py", run=run_id)
    shown = [(m.label, m.value) for m in at.metric]
    assert ("Enriched", "117") in shown and ("Up to date", "24") in shown
    assert sum(label == "Enriched" for label, _ in shown) == 1  # drawn once, in the fragment


# -- colour that means state -------------------------------------------------------------------
@pytest.mark.parametrize(("state", "kind"), [("failed", "error"), ("partial", "warning"),
                                             ("succeeded", "success")])
def test_a_run_on_controls_ends_in_the_alert_its_outcome_deserves(populated, state, kind):
    data, _ = populated
    run_id = record_run(data, state, "304 rows written; 0 enriched, 0 up to date, 3 failed")
    at = open_page("pages/controls.py")
    at.session_state["controls_run"] = run_id
    at.run()
    assert not at.exception
    head = f"Run `{run_id[:8]}`"
    boxes = {k: [e.value for e in getattr(at, k) if head in e.value]
             for k in ("success", "warning", "error", "info")}
    assert [k for k, v in boxes.items() if v] == [kind]
    assert f"-badge[{state}]" in boxes[kind][0]


def test_quality_and_status_chips_are_coloured_by_value(populated):
    data, _ = populated
    cat = Store(data).catalog
    # One symbol with every check passing, one with a failing check.
    scores = quality_view.symbol_quality(cat)
    assert (scores["score"] >= palette.QUALITY_OK).any()
    b = WriteBatch()
    b.execute("UPDATE quality_status SET passed = false WHERE symbol = 'KO' "
              "AND check_name = (SELECT min(check_name) FROM quality_status "
              "WHERE symbol = 'KO' AND dataset = 'bars')")
    cat.write(b)
    at = open_page("pages/symbols.py")
    table = at.dataframe[0].value
    quality = chip_colours(at, "quality")
    assert quality["100%"] == palette.HEX[palette.OK]  # a 100 % quality chip is green
    assert palette.HEX[palette.BAD] != quality["100%"]
    ko = table[table["symbol"] == "KO"]["quality"].iloc[0][0]
    assert ko != "100%" and quality[ko] in (palette.HEX[palette.WARN], palette.HEX[palette.BAD])
    status = chip_colours(at, "status")
    assert status["fresh"] == palette.HEX[palette.OK]
    assert status["failing"] == palette.HEX[palette.BAD]
    assert status["never fetched"] == palette.HEX[palette.IDLE]
    # Every chip has its words: no state carried by colour (or an emoji) alone.
    assert all(v and not any(ord(ch) > 0x2FFF for ch in v) for v in status)

    at = open_page("pages/symbols.py", symbol="AAPL")
    assert chip_colours(at, "quality", which=0)["100%"] == palette.HEX[palette.OK]
    at = open_page("pages/metrics.py")
    assert set(chip_colours(at, "mean_score").values()) <= {
        palette.HEX[palette.OK], palette.HEX[palette.WARN], palette.HEX[palette.BAD]}


def test_a_delisted_symbol_is_not_told_to_activate(populated):
    # Found by a QA pass: an active, delisted symbol read "the symbol is deactivated:
    # activate it under Settings" on every dataset.
    data, _ = populated
    cat = Store(data).catalog
    cat.query("UPDATE symbols SET delisted_on = DATE '2026-10-30' WHERE symbol = 'AAPL'")
    cat.query("UPDATE symbols SET active = false WHERE symbol = 'MSFT'")
    said = texts(open_page("pages/symbols.py", symbol="AAPL"))
    assert "the symbol is delisted" in said and "activate it under Settings" not in said
    said = texts(open_page("pages/symbols.py", symbol="MSFT"))
    assert "activate it under Settings" in said and "the symbol is delisted" not in said


def test_the_state_palette_is_one_colour_per_level():
    assert ui.STATE_COLOR["fresh"] == palette.HEX[palette.OK]
    assert ui.STATE_COLOR["due"] == ui.STATE_COLOR["late"] == palette.HEX[palette.WARN]
    assert ui.STATE_COLOR["stale"] == ui.STATE_COLOR["failing"] == palette.HEX[palette.BAD]
    assert ui.STATE_COLOR["never"] == ui.STATE_COLOR["not_expected"] == \
        palette.HEX[palette.IDLE]
    assert palette.quality_level(1.0) == palette.OK
    assert palette.quality_level(0.9286) == palette.WARN
    assert palette.quality_level(0.6) == palette.BAD
    assert palette.quality_level(None) == palette.IDLE
    assert ui.chip("stale", 4) == "stale 4" and ui.chip_level("stale 4") == palette.BAD
    assert ui.chip(None) is None  # a blank cell, never "None"


# -- the cause before the symptom --------------------------------------------------------------
def test_paused_and_a_week_behind_the_overview_names_both_causes(populated, monkeypatch):
    data, _ = populated
    cat = Store(data).catalog
    # The last daily run fired on the morning of the store's last session; then the
    # schedule was paused, and a week went by.
    fire = FIXED_NOW.replace(hour=1, minute=30)
    rid = record_run(data, "succeeded", "daily refresh", kind="scheduled")
    cat.query("UPDATE runs SET scheduled_for = ?, requested_at = ? WHERE run_id = ?",
              [fire, fire, rid])
    scheduler.set_paused(cat, "ops@desk", "provider maintenance", FIXED_NOW)
    monkeypatch.setenv("ENRICH_NOW", (FIXED_NOW + dt.timedelta(days=7)).isoformat())
    at = open_page("pages/overview.py")
    errors = [e.value for e in at.error]
    paused = [e for e in errors if "daily schedule is paused" in e]
    assert paused and "`ops@desk`" in paused[0] and "`provider maintenance`" in paused[0]
    assert "7 daily runs did not run since the last scheduled run (2026-11-25 01:30 UTC)" \
        in paused[0]
    behind = [e for e in errors if "behind" in e]
    assert behind and "up to 7 sessions" in behind[0]  # bitcoin trades every day
    # The cause comes before the symptom: the "why" strip precedes the tiles.
    headers = [h.value for h in at.subheader]
    assert headers.index("Why") < headers.index("Symbols by their most urgent dataset")
    [run] = [b for b in at.button if b.label.startswith("Run the ")]
    grid = status_view.status_grid(cat, FIXED_NOW + dt.timedelta(days=7))
    n = len(status_view.symbol_summary(grid)
            .filter(pl.col("state").is_in(["failing", "stale", "never", "late"])))
    assert run.label == f"Run the {n} not fresh now" and n > 0
    facts = texts(at)
    assert "**Scheduler**  \n:red-badge[paused]" in facts


def test_the_overview_names_a_failing_dataset_and_a_missing_scheduler(populated):
    data, _ = populated
    at = open_page("pages/overview.py")
    # The populated store has a failing dataset and no scheduler: both said, as causes.
    assert any("failing" in e.value for e in at.error)
    assert any("No scheduler is running" in w.value for w in [*at.warning, *at.error])


def test_the_overview_names_symbols_never_fetched_and_runs_them(populated):
    # Found by a QA pass: symbols added and never fetched left "Nothing needs you" on the
    # Overview, with no cause and no button.
    data, _ = populated
    cat = Store(data).catalog
    cat.query("UPDATE symbols SET active = symbol IN ('AAPL', 'MSFT')")
    cat.query("DELETE FROM symbol_status WHERE symbol = 'MSFT'")
    add_symbols(cat, [("S0042", "stocks", None), ("NOPE", "stocks", None)])
    # A ticker the reference does not know fails every run alike: not offered (found by the
    # same QA pass: it made the run "partial" and opened an alert).
    cat.query("INSERT INTO symbol_status (symbol, dataset, consecutive_failures, "
              "last_error_class) VALUES ('NOPE', 'bars', 1, 'unknown_ticker')")
    at = open_page("pages/overview.py")
    said = [w.value for w in at.warning if "never fetched" in w.value]
    assert said and said[0].startswith("**2 symbols never fetched**"), said
    [run] = [b for b in at.button if b.label.startswith("Run the ")]
    assert run.label.endswith(" not fresh now") and "MSFT" in run.help and "S0042" in run.help
    assert "NOPE" not in run.help


# -- universe edits never lose data -------------------------------------------------------------
def _aapl(data) -> tuple:
    return Store(data).catalog.query(
        "SELECT name, added_at, asset_class, active FROM symbols WHERE symbol = 'AAPL'").row(0)


def test_cli_add_of_a_symbol_already_present_changes_nothing(populated, capsys, monkeypatch):
    data, _ = populated
    before = _aapl(data)
    assert before[0] == "Apple Inc."
    monkeypatch.setenv("ENRICH_DATA_DIR", str(data))
    assert cli.main(["symbols", "add", "AAPL", "--name", "Other"]) == 0
    out = capsys.readouterr().out
    assert "already present: AAPL (unchanged)" in out and "added" not in out
    assert _aapl(data) == before
    assert cli.main(["symbols", "add", "AAPL", "IBM", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {"added": ["IBM"], "already_present": ["AAPL"], "reactivated": []}
    assert _aapl(data) == before


def test_add_reports_each_outcome_and_reactivates_without_renaming(populated):
    data, _ = populated
    cat = Store(data).catalog
    cat.query("UPDATE symbols SET active = false WHERE symbol = 'KO'")
    ko = cat.query("SELECT name, added_at FROM symbols WHERE symbol = 'KO'").row(0)
    report = add_symbols(cat, [("AAPL", None, "x"), ("KO", None, "y"), ("ZZZQ", None, "Z"),
                               ("ZZZQ", None, "again")])
    assert (report.added, report.present, report.reactivated) == (["ZZZQ"], ["AAPL"], ["KO"])
    assert cat.query("SELECT name, added_at, active FROM symbols WHERE symbol = 'KO'").row(0) \
        == (*ko, True)
    assert cat.scalar("SELECT name FROM symbols WHERE symbol = 'ZZZQ'") == "Z"


def test_import_reports_added_present_and_refused_apart(populated):
    data, _ = populated
    before = _aapl(data)
    report = import_csv(Store(data).catalog, "symbol,asset_class,name\nAAPL,stocks,Renamed\n"
                                             "NEWX,stocks,New Co\nbad sym\n")
    assert report.added == ["NEWX"] and report.present == ["AAPL"]
    assert [n for n, _ in report.errors] == [4]
    assert _aapl(data) == before
    # Found by a QA pass: extra fields were dropped silently ("S0014,stocks,a,b,c,d" stored
    # the name "a"; an unquoted "Acme, Inc." would store "Acme"). Trailing empty ones pass.
    report = import_csv(Store(data).catalog, 'S0014,stocks,a,b,c,d\nS0015,stocks,Acme, Inc.\n'
                                             'S0016,stocks,"Acme, Inc."\nS0017,stocks,Ok,,\n')
    assert report.added == ["S0016", "S0017"]
    assert [n for n, _ in report.errors] == [1, 2]
    assert "at most 3 expected" in report.errors[0][1]
    assert Store(data).catalog.scalar("SELECT name FROM symbols WHERE symbol = 'S0016'") == \
        "Acme, Inc."


def test_settings_add_and_import_say_already_present_and_offer_fetch_these_now(populated):
    data, _ = populated
    before = _aapl(data)
    at = open_page("pages/settings.py")
    at.text_input(key="add_raw").set_value("AAPL")
    at.text_input(key="add_name").set_value("Wrong name")
    at.button(key="FormSubmitter:add_symbols-Add").click().run()
    assert not at.exception
    assert any("Already present 1" in i.value and "`AAPL`" in i.value for i in at.info)
    assert not any("Added" in s.value for s in at.success)
    assert _aapl(data) == before
    assert not [b for b in at.button if b.label.startswith("Fetch ")]

    at.text_area(key="import_text").set_value("AAPL,stocks,Renamed\nNEWX,stocks\nbad sym\n")
    at.button(key="import").click().run()
    assert not at.exception
    assert any("Added 1" in s.value and "`NEWX`" in s.value for s in at.success)
    assert any("Already present 1" in i.value for i in at.info)
    assert any("Refused 1" in e.value for e in at.error)
    assert _aapl(data) == before
    # The universe table above shows the new symbol at once.
    assert "NEWX" in set(at.dataframe[1].value["symbol"])
    [fetch] = [b for b in at.button if b.label == "Fetch it now"]
    fetch.click().run()
    assert not at.exception
    run_id = at.session_state["last_run_id"]
    wait_final(run_id)
    assert runs_view.run_detail(Store(data).catalog, run_id)["params"]["symbols"] == ["NEWX"]


def test_cli_add_runs_in_a_child_process_too(populated, tmp_path):
    """The real command line: exit 0 and "already present", nothing changed."""
    import subprocess

    from tests.conftest import REPO, subprocess_env

    data, _ = populated
    before = _aapl(data)
    p = subprocess.run([sys.executable, "-m", "enrich", "symbols", "add", "AAPL"], cwd=REPO,
                       env=subprocess_env(data), capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "already present: AAPL (unchanged)" in p.stdout
    assert _aapl(data) == before


# -- quality findable, charts and numbers ------------------------------------------------------
def test_symbols_sort_by_worst_quality_over_the_whole_universe(populated):
    data, _ = populated
    cat = Store(data).catalog
    worst = quality_view.worst_quality(cat, limit=5)
    at = open_page("pages/symbols.py", sort="worst quality")
    table = at.dataframe[0].value
    assert list(table["symbol"][:worst.height]) == worst["symbol"].to_list()
    assert worst.height > 0 and (worst["score"] < 1).all()
    # The Quality page lists them worst first, each with its score and a link to it.
    at = open_page("pages/quality.py")
    listed = next(d for d in at.dataframe if "failed_errors" in d.value.columns)
    assert [u.split("symbol=")[1] for u in listed.value["symbol"]] == worst["symbol"].to_list()
    config = json.loads(listed.proto.columns)
    assert config["symbol"]["type_config"]["type"] == "link"


def test_price_chart_opens_on_a_year_with_range_presets_and_zooms_in_time_only(populated):
    data, _ = populated
    at = open_page("pages/symbols.py", symbol="AAPL")
    seg = at.get("button_group")
    assert any("price_range" in s.proto.id for s in seg)

    def price_spec():
        [chart] = [ch for ch in at.get("plotly_chart") if ch.proto.id.endswith("price_chart")]
        return json.loads(chart.proto.spec)

    spec = price_spec()
    layout = spec["layout"]
    assert all(layout[k].get("fixedrange") for k in layout if k.startswith("yaxis"))
    assert layout["legend"]["y"] < 0  # under the chart: the toolbar cannot cover it
    assert layout["yaxis2"]["exponentformat"] == "B"  # volume: 1.2M, 3.4B
    sessions = [dt.date.fromisoformat(x[:10]) for x in spec["data"][0]["x"]]
    assert max(sessions) - min(sessions) <= dt.timedelta(days=366)
    held = len(sessions)
    at.session_state["price_range"] = "1M"
    at.run()
    month = [dt.date.fromisoformat(x[:10]) for x in price_spec()["data"][0]["x"]]
    assert 15 <= len(month) <= 23 and len(month) < held


def test_tables_show_blank_cells_and_thousands_separators(populated):
    at = open_page("pages/runs.py")
    df = at.dataframe[0]
    assert df.proto.placeholder == ""  # an empty cell is blank, never "None"
    config = json.loads(df.proto.columns)
    assert config["records_written"]["type_config"]["format"] == "localized"
    assert config["state"]["type_config"]["type"] == "multiselect"
    runs = df.value
    assert list(runs["trigger"]) == ["manual"]
    assert runs["symbols"].iloc[0].startswith("AAPL, ") and "more" in runs["symbols"].iloc[0]
    assert runs["datasets"].iloc[0] == "all that apply"
