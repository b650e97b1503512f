import datetime as dt

import polars as pl
from polars.testing import assert_frame_equal

from enrich.checks.validate import check
from enrich.quant.splits import apply_splits, unsplit
from enrich.schemas import BARS, conform

D = dt.date


def _bars(rows):
    return conform(pl.DataFrame(rows, orient="row", schema=[
        "symbol", "timeframe", "ts", "session", "open", "high", "low", "close", "volume",
        "adjusted_asof"]), BARS)


def _row(day, o, h, low, c, v, asof):
    ts = dt.datetime.combine(day, dt.time(5), tzinfo=dt.UTC)
    return ("A", "1d", ts, day, o, h, low, c, v, asof)


def test_check_refuses_impossible_bars_and_counts_them():
    good = _row(D(2024, 1, 2), 10, 11, 9, 10.5, 100, D(2024, 1, 2))
    bad_ohlc = _row(D(2024, 1, 3), 10, 9.5, 9, 10.5, 100, D(2024, 1, 3))  # high < close
    bad_px = _row(D(2024, 1, 4), 0, 11, 0, 10, 100, D(2024, 1, 4))
    bad_vol = _row(D(2024, 1, 5), 10, 11, 9, 10, -1, D(2024, 1, 5))
    out = check("bars", _bars([good, bad_ohlc, bad_px, bad_vol]))
    assert out.good.height == 1 and out.good["session"][0] == D(2024, 1, 2)
    assert out.rejected == 3
    joined = " | ".join(out.causes)
    assert "high < open/close" in joined and "price not > 0" in joined and "volume < 0" in joined


def test_check_passes_clean_frames_untouched():
    f = _bars([_row(D(2024, 1, 2), 10, 11, 9, 10.5, 100, D(2024, 1, 2))])
    out = check("bars", f)
    assert out.rejected == 0 and out.good.equals(f)


def test_apply_splits_adjusts_only_old_basis_and_is_idempotent():
    bars = _bars([
        _row(D(2024, 6, 6), 100, 110, 90, 100, 1000, D(2024, 6, 7)),
        _row(D(2024, 6, 7), 100, 110, 90, 100, 1000, D(2024, 6, 7)),
        _row(D(2024, 6, 10), 10, 11, 9, 10, 10000, D(2024, 6, 10)),
    ])
    splits = pl.DataFrame({"execution_date": [D(2024, 6, 10)], "split_from": [1.0],
                           "split_to": [10.0]})
    once = apply_splits(bars, splits)
    assert once["close"].to_list() == [10.0, 10.0, 10.0]
    assert once["volume"].to_list() == [10000.0, 10000.0, 10000.0]
    assert once["adjusted_asof"].to_list() == [D(2024, 6, 10)] * 3
    assert_frame_equal(apply_splits(once, splits), once)  # never double-adjusts


def test_apply_splits_two_splits_in_order():
    bars = _bars([_row(D(2020, 1, 2), 80, 80, 80, 80, 1, D(2020, 1, 2))])
    splits = pl.DataFrame({"execution_date": [D(2022, 1, 3), D(2021, 1, 4)],
                           "split_from": [1.0, 1.0], "split_to": [2.0, 4.0]})
    out = apply_splits(bars, splits)
    assert out["close"][0] == 10.0 and out["adjusted_asof"][0] == D(2022, 1, 3)


def test_unsplit_takes_bars_back_off_the_splits_from_a_date_and_apply_brings_them_on_again():
    # A bar of 2020 on the basis of a 1:4 split (2021) and a 1:2 split (2022); a bar of 2021
    # after the first; a bar of 2023 after both.
    bars = _bars([_row(D(2020, 1, 2), 10, 10, 10, 10, 8, D(2022, 1, 3)),
                  _row(D(2021, 6, 1), 20, 20, 20, 20, 2, D(2022, 1, 3)),
                  _row(D(2023, 1, 3), 30, 30, 30, 30, 1, D(2023, 1, 3))])
    splits = pl.DataFrame({"execution_date": [D(2021, 1, 4), D(2022, 1, 3)],
                           "split_from": [1.0, 1.0], "split_to": [4.0, 2.0]})
    back = unsplit(bars, splits, D(2021, 1, 4))
    # 2020 off both, 2021 off the 2022 split only (it came after the first), 2023 untouched.
    assert back["close"].to_list() == [80.0, 40.0, 30.0]
    assert back["volume"].to_list() == [1.0, 1.0, 1.0]
    assert back["adjusted_asof"].to_list() == [D(2021, 1, 3)] * 2 + [D(2023, 1, 3)]
    assert_frame_equal(unsplit(back, splits, D(2021, 1, 4)), back)  # never twice
    # The 2021 split cancelled: only the 2022 one is applied again.
    kept = splits.filter(pl.col("execution_date") == D(2022, 1, 3))
    again = apply_splits(back, kept)
    assert again["close"].to_list() == [40.0, 20.0, 30.0]
    assert again["adjusted_asof"].to_list() == [D(2022, 1, 3)] * 2 + [D(2023, 1, 3)]
    # Re-dated earlier instead (2021 → 2020-06-01): the 2020 bar takes it, the 2021 one not.
    moved = pl.DataFrame({"execution_date": [D(2020, 6, 1), D(2022, 1, 3)],
                          "split_from": [1.0, 1.0], "split_to": [4.0, 2.0]})
    earlier = apply_splits(unsplit(bars, splits, D(2020, 6, 1)), moved)
    assert earlier["close"].to_list() == [10.0, 20.0, 30.0]
