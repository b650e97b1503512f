"""The daily refresh's shortcuts give what the general paths give.

A daily refresh re-asks its last sessions and adds the next one. The lake then appends without
the general merge (anti-join, unique, sort), and restatement detection compares the re-asked
rows without a join. Each case here runs both ways — the shortcut, and the general path forced
by making ``tail_overlap`` find nothing usable — and compares the file bytes, the
``UpsertResult`` and the ``Diff``.
"""

import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from enrich.checks import restatements
from enrich.schemas import DATASETS, conform
from enrich.store import lake as lake_module
from enrich.store.lake import Lake, tail_overlap

DAY0 = dt.date(2026, 11, 2)


def _bars(days: list[int], close: float = 100.0, asof: int = 20, **values) -> pl.DataFrame:
    """Daily bars of AAPL on DAY0 + each of ``days``, close ``close + day``."""
    sessions = [DAY0 + dt.timedelta(days=d) for d in days]
    frame = pl.DataFrame({
        "symbol": "AAPL", "timeframe": "1d",
        "ts": [dt.datetime.combine(s, dt.time(5), tzinfo=dt.UTC) for s in sessions],
        "session": sessions,
        "open": [close + d for d in days], "high": [close + d + 1 for d in days],
        "low": [close + d - 1 for d in days], "close": [close + d for d in days],
        "volume": [1e6] * len(days), "vwap": [close + d for d in days],
        "trades": [1000] * len(days),
        "adjusted_asof": [DAY0 + dt.timedelta(days=asof)] * len(days),
    })
    return frame.with_columns(**{k: pl.Series(v) for k, v in values.items()})


def _upsert_both(tmp_path, monkeypatch, dataset, stored, incoming):
    """Upsert ``incoming`` over ``stored`` by the shortcuts and by the general path; returns
    (shortcut result, general result, file bytes of each, the shortcut taken: "append",
    "insert" or None)."""
    taken = []

    def spy(name):
        real = getattr(lake_module, name)

        def call(*args):
            result = real(*args)
            if result is not None:
                taken.append(name.strip("_").removesuffix("s"))
            return result
        return call

    out = []
    for name in ("fast", "general"):
        lake = Lake(tmp_path / name / "lake")
        lake.upsert(dataset, stored)
        for shortcut in ("_appends", "_inserts"):
            monkeypatch.setattr(lake_module, shortcut,
                                spy(shortcut) if name == "fast" else lambda *a: None)
        result = lake.upsert(dataset, incoming)
        monkeypatch.undo()
        [path] = lake.files(dataset)
        # A fresh Lake reads the file itself, not the cached frame.
        assert_frame_equal(Lake(lake.root).read(dataset), lake.read(dataset))
        out.append((result, path.read_bytes()))
    (fast, fast_bytes), (general, general_bytes) = out
    assert len(taken) <= 1
    return fast, general, fast_bytes, general_bytes, (taken or [None])[0]


@pytest.mark.parametrize(("name", "incoming", "shortcut", "expected"), [
    ("a new session after the stored ones", _bars([20]), "append", (1, 0, 1)),
    ("re-asked sessions as stored, and a new one", _bars([18, 19, 20]), "append", (1, 0, 1)),
    ("re-asked sessions only, as stored", _bars([18, 19]), "append", (0, 0, 0)),
    ("several new sessions", _bars([20, 21, 22]), "append", (3, 0, 1)),
    ("a restated session", _bars([18, 19, 20]).with_columns(
        close=pl.Series([118.0, 120.5, 120.0])), None, (1, 1, 1)),
    ("re-asked on a newer split basis", _bars([18, 19, 20], asof=23), None, (1, 2, 1)),
    ("a session inside the history, as stored", _bars([5]), "insert", (0, 0, 0)),
    ("a changed session inside the history", _bars([5], close=90.0), None, (0, 1, 1)),
    ("a session missing from the re-asked ones", _bars([17, 19, 20]), "insert", (1, 0, 1)),
    ("a session before the history", _bars([-3]), "insert", (1, 0, 1)),
])
def test_daily_bars_upsert_matches_the_general_merge(tmp_path, monkeypatch, name, incoming,
                                                     shortcut, expected):
    stored = _bars(list(range(20)))
    fast, general, fast_bytes, general_bytes, taken = _upsert_both(
        tmp_path, monkeypatch, "bars", stored, incoming)
    assert taken == shortcut, name
    assert fast == general, name
    assert (fast.inserted, fast.updated, fast.files_written) == expected, name
    assert fast_bytes == general_bytes, name


def test_nan_null_and_negative_zero_count_as_the_general_merge_counts(tmp_path, monkeypatch):
    # The shortcut's equality (DataFrame.equals) and the general anti-join agree on NaN,
    # null and -0.0, so a re-asked row holding them is unchanged either way.
    stored = _bars(list(range(5))).with_columns(
        vwap=pl.Series([1.0, 2.0, 3.0, float("nan"), None]),
        volume=pl.Series([1e6, 1e6, 1e6, 1e6, 0.0]))
    incoming = _bars([3, 4, 5]).with_columns(
        vwap=pl.Series([float("nan"), None, 7.0]), volume=pl.Series([1e6, -0.0, 1e6]))
    fast, general, fast_bytes, general_bytes, taken = _upsert_both(
        tmp_path, monkeypatch, "bars", stored, incoming)
    assert taken == "append" and fast == general and (fast.inserted, fast.updated) == (1, 0)
    assert fast_bytes == general_bytes


def _news(ids: list[str], title: str = "t") -> pl.DataFrame:
    return pl.DataFrame({"symbol": "AAPL", "id": ids, "title": [f"{title} {i}" for i in ids],
                         "published_utc": dt.datetime(2026, 11, 20, 14, tzinfo=dt.UTC)})


@pytest.mark.parametrize(("name", "incoming", "shortcut", "expected"), [
    ("re-asked news as stored, two new among them", _news(["b2", "c3", "zz"]), "insert",
     (2, 0, 1)),
    ("re-asked news as stored", _news(["a1", "e5"]), "insert", (0, 0, 0)),
    ("a re-asked item changed", _news(["b2", "c3"], title="new"), None, (1, 1, 1)),
])
def test_news_among_the_stored_matches_the_general_merge(tmp_path, monkeypatch, name,
                                                         incoming, shortcut, expected):
    # News ids are in no time order: a day's items land anywhere among the stored ones.
    fast, general, fast_bytes, general_bytes, taken = _upsert_both(
        tmp_path, monkeypatch, "news", _news(["a1", "c3", "e5", "g7"]), incoming)
    assert taken == shortcut, name
    assert fast == general, name
    assert (fast.inserted, fast.updated, fast.files_written) == expected, name
    assert fast_bytes == general_bytes, name


def test_a_new_option_snapshot_in_any_order_appends_like_the_general_merge(tmp_path,
                                                                          monkeypatch):
    def chain(day: int, contracts: list[str]) -> pl.DataFrame:
        return conform(pl.DataFrame({
            "symbol": "AAPL", "as_of": DAY0 + dt.timedelta(days=day), "contract": contracts,
            "iv": [0.2 + i / 100 for i in range(len(contracts))]}), DATASETS["options_iv"])

    stored = chain(1, ["C100", "C110", "P100"])
    incoming = chain(4, ["P100", "C110", "C100", "P90"])  # as a provider lists it
    fast, general, fast_bytes, general_bytes, taken = _upsert_both(
        tmp_path, monkeypatch, "options_iv", stored, incoming)
    assert taken == "append" and fast == general and (fast.inserted, fast.updated) == (4, 0)
    assert fast_bytes == general_bytes


settings_ = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])


@settings_
@given(stored=st.sets(st.integers(0, 30), min_size=1, max_size=20),
       incoming=st.sets(st.integers(0, 34), min_size=1, max_size=8),
       restated=st.sets(st.integers(0, 34), max_size=2))
def test_any_upsert_matches_the_general_merge(tmp_path_factory, stored, incoming, restated):
    # Whatever the shapes, the shortcut (when it applies) and the general merge agree.
    old = _bars(sorted(stored))
    new = _bars(sorted(incoming)).with_columns(
        pl.when(pl.col("session").is_in([DAY0 + dt.timedelta(days=d) for d in restated]))
        .then(pl.col("close") + 0.5).otherwise(pl.col("close")).alias("close"))
    with pytest.MonkeyPatch.context() as mp:
        fast, general, fast_bytes, general_bytes, _ = _upsert_both(
            tmp_path_factory.mktemp("x"), mp, "bars", old, new)
    assert fast == general
    assert fast_bytes == general_bytes


@pytest.mark.parametrize(("stored_days", "new_days", "expected"), [
    ([1, 2, 3], [4, 5], 0),
    ([1, 2, 3], [2, 3, 4], 2),
    ([1, 2, 3], [3], 1),
    ([1, 2, 3], [1, 2, 3], 3),
    ([1, 2, 3], [2, 4], None),      # skips the stored 3: not the tail
    ([1, 3, 5], [2, 3, 5, 6], None),  # 2 goes between stored rows
    ([1, 2, 3], [0, 1, 2, 3], None),  # reaches before the history
    ([], [1], 0),
])
def test_tail_overlap(stored_days, new_days, expected):
    key = list(DATASETS["bars"].key)
    assert tail_overlap(_bars(stored_days), _bars(new_days), key) == expected


def test_tail_overlap_looks_only_a_few_rows_back():
    key = list(DATASETS["bars"].key)
    n = lake_module.APPEND_OVERLAP
    assert tail_overlap(_bars(list(range(100))), _bars(list(range(100 - n, 101))), key) == n
    assert tail_overlap(_bars(list(range(100))), _bars(list(range(99 - n, 101))), key) is None


def _detect_both(tmp_path, monkeypatch, stored, incoming, splits=None):
    diffs = []
    for name, overlap in (("fast", tail_overlap), ("general", lambda *a: None)):
        lake = Lake(tmp_path / name / "lake")
        lake.upsert("bars", stored)
        if splits is not None:
            lake.upsert("splits", splits)
        monkeypatch.setattr(restatements, "tail_overlap", overlap)
        diffs.append(restatements.detect(lake, "bars", incoming))
        monkeypatch.undo()
    return diffs


@pytest.mark.parametrize(("name", "incoming", "empty"), [
    ("no overlap", _bars([20]), None),
    ("re-asked as stored", _bars([18, 19, 20]), True),
    ("re-asked on a newer basis, same values", _bars([18, 19, 20], asof=23), True),
    ("a restated close", _bars([18, 19, 20]).with_columns(
        close=pl.Series([118.0, 125.0, 120.0])), False),
    ("restated inside the history", _bars([5], close=90.0), False),
    ("volume as integers", _bars([18, 19]).with_columns(pl.col("volume").cast(pl.Int64)),
     True),
])
def test_daily_restatement_detection_matches_the_join(tmp_path, monkeypatch, name, incoming,
                                                      empty):
    fast, general = _detect_both(tmp_path, monkeypatch, _bars(list(range(20))), incoming)
    if empty is None:
        assert fast is None and general is None, name
        return
    assert fast is not None and general is not None, name
    assert fast.empty is empty, name
    assert (fast.rebased, fast.compared) == (general.rebased, general.compared), name
    assert_frame_equal(fast.restated, general.restated)


def test_a_split_rebase_is_still_told_from_a_restatement(tmp_path, monkeypatch):
    # Stored before a 2:1 split; re-fetched on the new basis: prices halve, nothing restated.
    stored = _bars(list(range(20)), close=200.0)
    incoming = _bars([18, 19, 20], close=200.0, asof=23).with_columns(
        pl.col("open", "high", "low", "close", "vwap") / 2, volume=pl.lit(2e6))
    splits = pl.DataFrame({"symbol": "AAPL", "execution_date": DAY0 + dt.timedelta(days=21),
                           "split_from": 1.0, "split_to": 2.0})
    fast, general = _detect_both(tmp_path, monkeypatch, stored, incoming, splits)
    assert fast is not None and general is not None
    assert (fast.rebased, fast.compared) == (general.rebased, general.compared) == (2, 2)
    assert fast.restated.is_empty() and general.restated.is_empty()


def test_named_symbol_files_are_the_listed_ones(tmp_path):
    lake = Lake(tmp_path / "lake")
    for sym in ("AAPL", "brk.b"):
        for day in (3, 40):
            lake.upsert("options_iv", pl.DataFrame({
                "symbol": sym, "as_of": DAY0 + dt.timedelta(days=day), "contract": ["C1"],
                "iv": [0.2]}))
        lake.upsert("bars", _bars([1, 2]).with_columns(symbol=pl.lit(sym)))
    # A killed writer's temp file is never a lake file.
    (lake.files("options_iv")[0].parent / ".tmp-month=2026-11.parquet").write_bytes(b"")
    for dataset, level in (("options_iv", None), ("bars", "1d")):
        listed = lake.files(dataset, level=level)
        for sym in ("AAPL", "brk.b", "NONE"):
            named = lake.files(dataset, [sym], level=level)
            assert named == [p for p in listed
                             if p.parent.name == lake_module.symbol_dir_name(sym)]
        assert len(listed) == (4 if dataset == "options_iv" else 2)


@pytest.mark.parametrize("cached", [True, False])
def test_replace_symbol_counts_by_the_stored_height(tmp_path, cached):
    # The stored height comes from the cache or the file's footer; the old rows are decoded
    # only to tell an equal frame from a changed one of the same height.
    lake = Lake(tmp_path / "lake")
    rows = pl.DataFrame({"symbol": "AAPL", "timeframe": "1d",
                         "ts": [dt.datetime(2026, 11, d, 5, tzinfo=dt.UTC) for d in (2, 3, 4)],
                         "ma20": [1.0, 2.0, 3.0]})
    steps = [(rows, (3, 0, 1)), (rows, (0, 0, 0)), (rows.head(2), (0, 2, 1)),
             (rows.with_columns(ma20=pl.lit(9.0)), (1, 2, 1)),
             (rows.with_columns(ma20=pl.lit(8.0)), (0, 3, 1))]
    for frame, expected in steps:
        writer = lake if cached else Lake(tmp_path / "lake")
        r = writer.replace_symbol("features", "AAPL", frame, level="1d")
        assert (r.inserted, r.updated, r.files_written) == expected
        assert_frame_equal(Lake(tmp_path / "lake").read("features").select(frame.columns),
                           frame)


def test_coverage_is_read_again_once_another_writer_changed_it(tmp_path):
    lake, other = Lake(tmp_path / "lake"), Lake(tmp_path / "lake")
    day = dt.date(2026, 11, 20)
    lake.write_coverage("AAPL", {"bars:1d": day})
    got = lake.read_coverage("AAPL")
    got["news"] = day  # a caller's change to what it got is not the lake's
    assert lake.read_coverage("AAPL") == {"bars:1d": day}
    other.update_coverage("AAPL", {"news": day + dt.timedelta(days=3)})
    assert lake.read_coverage("AAPL") == {"bars:1d": day, "news": day + dt.timedelta(days=3)}
    other.drop_coverage("AAPL", "bars:1d")
    assert lake.read_coverage("AAPL") == {"news": day + dt.timedelta(days=3)}


def test_a_write_removes_only_its_own_files_stale_temps(tmp_path):
    lake = Lake(tmp_path / "lake")
    lake.upsert("bars", _bars([1]))
    [path] = lake.files("bars")
    folder = path.parent
    mine = [folder / ".tmp-data.parquet-123-456.part", folder / ".tmp-data.parquet-9-9.part"]
    others = [folder / ".tmp-other.parquet-1-1.part", folder / ".tmp-data.parquet-1-1.json",
              folder / "notes.part"]
    for p in mine + others:
        p.write_bytes(b"half a file")
    lake.upsert("bars", _bars([2]))
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others)
    assert lake_module.remove_stale_temps(tmp_path / "nowhere" / "data.parquet") == 0
