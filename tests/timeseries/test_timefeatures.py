"""timeF calendar features: exact values, TSLib feature order per frequency, pandas >= 3 aliases and old letters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pandas.tseries.frequencies import to_offset

from formers.timeseries.timefeatures import normalize_freq, num_time_features, time_feature_names, time_features


def test_hourly_exact_values():
    # 2016-07-01 00:00 (first ETTh1 row) is a Friday, day 183 of the leap year 2016
    dates = pd.to_datetime(["2016-07-01 00:00:00", "2016-07-01 13:00:00", "2017-12-31 23:00:00"])
    expected = np.array(
        [
            [0 / 23 - 0.5, 4 / 6 - 0.5, 0 / 30 - 0.5, 182 / 365 - 0.5],
            [13 / 23 - 0.5, 4 / 6 - 0.5, 0 / 30 - 0.5, 182 / 365 - 0.5],
            [23 / 23 - 0.5, 6 / 6 - 0.5, 30 / 30 - 0.5, 364 / 365 - 0.5],  # Sunday, Dec 31 = day 365
        ],
        dtype=np.float32,
    )
    out = time_features(dates, "h")
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, expected)


def test_second_minute_exact_values_and_order():
    dates = pd.to_datetime(["2018-12-31 23:59:59"])  # a Monday
    expected = [[0.5, 0.5, 0.5, -0.5, 0.5, 364 / 365 - 0.5]]
    np.testing.assert_allclose(time_features(dates, "s"), expected, rtol=0, atol=1e-7)
    minute = time_features(pd.to_datetime(["2018-12-31 23:30:00"]), "min")
    np.testing.assert_allclose(minute, [[30 / 59 - 0.5, 0.5, -0.5, 0.5, 364 / 365 - 0.5]], atol=1e-7)


def test_weekly_and_monthly():
    dates = pd.to_datetime(["2021-01-03", "2021-03-15"])  # ISO week 53 (of 2020) and week 11
    np.testing.assert_allclose(
        time_features(dates, "W"), [[2 / 30 - 0.5, 52 / 52 - 0.5], [14 / 30 - 0.5, 10 / 52 - 0.5]], atol=1e-7
    )
    np.testing.assert_allclose(time_features(dates, "ME"), [[-0.5], [2 / 11 - 0.5]], atol=1e-7)


@pytest.mark.parametrize(
    ("freq", "names"),
    [
        ("h", ["HourOfDay", "DayOfWeek", "DayOfMonth", "DayOfYear"]),
        ("min", ["MinuteOfHour", "HourOfDay", "DayOfWeek", "DayOfMonth", "DayOfYear"]),
        ("15min", ["MinuteOfHour", "HourOfDay", "DayOfWeek", "DayOfMonth", "DayOfYear"]),
        ("s", ["SecondOfMinute", "MinuteOfHour", "HourOfDay", "DayOfWeek", "DayOfMonth", "DayOfYear"]),
        ("D", ["DayOfWeek", "DayOfMonth", "DayOfYear"]),
        ("B", ["DayOfWeek", "DayOfMonth", "DayOfYear"]),
        ("W", ["DayOfMonth", "WeekOfYear"]),
        ("ME", ["MonthOfYear"]),
        ("QE", ["MonthOfYear"]),
        ("Y", []),
    ],
)
def test_feature_sets(freq, names):
    assert time_feature_names(freq) == names
    assert num_time_features(freq) == len(names)
    assert time_features(pd.date_range("2020-01-01", periods=5, freq="D"), freq).shape == (5, len(names))


@pytest.mark.parametrize(
    ("old", "new"),
    [("t", "min"), ("T", "min"), ("15T", "15min"), ("H", "h"), ("m", "ME"), ("a", "YE-DEC"), ("d", "D"), ("w", "W-SUN"),
     ("b", "B"), ("S", "s")],
)  # fmt: skip
def test_old_letters_are_mapped(old, new):
    assert normalize_freq(old) == new
    dates = pd.date_range("2016-07-01", periods=50, freq="37min")
    np.testing.assert_array_equal(time_features(dates, old), time_features(dates, new))


def test_pandas_rejects_the_old_letters_we_accept():
    with pytest.raises(ValueError):
        to_offset("t")  # the environment trap the mapping exists for
    assert num_time_features("t") == 5


def test_range_over_a_leap_year():
    dates = pd.date_range("2016-01-01", "2016-12-31 23:59:59", freq="1777s")
    out = time_features(dates, "s")
    assert out.min() >= -0.5 and out.max() <= 0.5
    assert out.min(axis=0).tolist() == [-0.5] * 6  # every feature reaches both ends except day-of-year's top
    assert out[:, :5].max(axis=0).tolist() == [0.5] * 5


@pytest.mark.parametrize("bad", ["xyz", "", "7q7"])
def test_unknown_frequency(bad):
    with pytest.raises(ValueError, match="freq|frequency"):
        time_features(pd.date_range("2020", periods=3, freq="h"), bad)


def test_bad_dates():
    with pytest.raises(ValueError, match="NaT|timestamps"):
        time_features(pd.DatetimeIndex(["2020-01-01", None]), "h")
