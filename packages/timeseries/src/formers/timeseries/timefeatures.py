"""Calendar ("timeF") features of timestamps, as in Time-Series-Library ``utils/timefeatures.py`` (from gluonts).

Each feature is a calendar position scaled to ``[-0.5, 0.5]``; the frequency picks the set (TSLib order):

=============  =====================================================================================
frequency      features
=============  =====================================================================================
``Y``          (none)
``QE``, ``ME`` MonthOfYear
``W``          DayOfMonth, WeekOfYear
``D``, ``B``   DayOfWeek, DayOfMonth, DayOfYear
``h``          HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
``min``        MinuteOfHour, HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
``s``          SecondOfMinute, MinuteOfHour, HourOfDay, DayOfWeek, DayOfMonth, DayOfYear
=============  =====================================================================================

Frequencies use the current pandas names (pandas >= 3 rejects ``'t'``, ``'H'``, ``'m'``, ``'a'``); the old TSLib letters
are accepted and mapped (:data:`LEGACY_FREQ`). Multiples (``"15min"``) pick the set of their base unit. Note that the
ETTm scripts of TSLib and the iTransformer repo pass no ``--freq``, so their published ETTm numbers use ``'h'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from pandas.tseries import offsets
from pandas.tseries.frequencies import to_offset

__all__ = ["LEGACY_FREQ", "normalize_freq", "time_feature_names", "num_time_features", "time_features"]

# TSLib / Informer letters -> pandas >= 3 aliases ('m' is monthly in TSLib, 't' minutely, 'a' yearly)
LEGACY_FREQ = {
    "t": "min",
    "T": "min",
    "H": "h",
    "S": "s",
    "m": "ME",
    "M": "ME",
    "a": "YE",
    "A": "YE",
    "y": "YE",
    "Y": "YE",
    "q": "QE",
    "Q": "QE",
    "d": "D",
    "w": "W",
    "b": "B",
}

Feature = Callable[[pd.DatetimeIndex], np.ndarray]

FEATURES: dict[str, Feature] = {
    "SecondOfMinute": lambda idx: idx.second.to_numpy() / 59.0 - 0.5,
    "MinuteOfHour": lambda idx: idx.minute.to_numpy() / 59.0 - 0.5,
    "HourOfDay": lambda idx: idx.hour.to_numpy() / 23.0 - 0.5,
    "DayOfWeek": lambda idx: idx.day_of_week.to_numpy() / 6.0 - 0.5,
    "DayOfMonth": lambda idx: (idx.day.to_numpy() - 1) / 30.0 - 0.5,
    "DayOfYear": lambda idx: (idx.day_of_year.to_numpy() - 1) / 365.0 - 0.5,
    "MonthOfYear": lambda idx: (idx.month.to_numpy() - 1) / 11.0 - 0.5,
    "WeekOfYear": lambda idx: (idx.isocalendar().week.to_numpy().astype(np.float64) - 1) / 52.0 - 0.5,
}

# checked in this order; BusinessDay before Day is irrelevant (no subclassing) but Tick subclasses must be exact
_BY_OFFSET: list[tuple[type, list[str]]] = [
    (offsets.YearEnd, []),
    (offsets.YearBegin, []),
    (offsets.QuarterEnd, ["MonthOfYear"]),
    (offsets.QuarterBegin, ["MonthOfYear"]),
    (offsets.MonthEnd, ["MonthOfYear"]),
    (offsets.MonthBegin, ["MonthOfYear"]),
    (offsets.Week, ["DayOfMonth", "WeekOfYear"]),
    (offsets.Day, ["DayOfWeek", "DayOfMonth", "DayOfYear"]),
    (offsets.BusinessDay, ["DayOfWeek", "DayOfMonth", "DayOfYear"]),
    (offsets.Hour, ["HourOfDay", "DayOfWeek", "DayOfMonth", "DayOfYear"]),
    (offsets.Minute, ["MinuteOfHour", "HourOfDay", "DayOfWeek", "DayOfMonth", "DayOfYear"]),
    (offsets.Second, ["SecondOfMinute", "MinuteOfHour", "HourOfDay", "DayOfWeek", "DayOfMonth", "DayOfYear"]),
]

SUPPORTED = "Y, QE, ME, W, D, B, h, min, s (with multiples such as 15min; old letters t, m, a, ... are mapped)"


def normalize_freq(freq: str) -> str:
    """The pandas >= 3 alias of ``freq`` (``'t'`` -> ``'min'``, ``'15T'`` -> ``'15min'``, ``'h'`` -> ``'h'``).

    Raises:
        ValueError: when pandas cannot parse the (mapped) frequency.
    """
    if not isinstance(freq, str) or not freq.strip():
        raise ValueError(f"freq must be a non-empty string such as 'h' or '15min', got {freq!r}")
    freq = freq.strip()
    digits = len(freq) - len(freq.lstrip("0123456789"))
    multiple, unit = freq[:digits], freq[digits:]
    unit = LEGACY_FREQ.get(unit, unit)
    try:
        return to_offset(multiple + unit).freqstr
    except ValueError as err:
        raise ValueError(f"unknown frequency {freq!r}; supported: {SUPPORTED}") from err


def time_feature_names(freq: str) -> list[str]:
    """Names of the timeF features of ``freq``, in column order."""
    offset = to_offset(normalize_freq(freq))
    for offset_type, names in _BY_OFFSET:
        if type(offset) is offset_type:
            return list(names)
    raise ValueError(f"frequency {freq!r} ({type(offset).__name__}) has no timeF feature set; supported: {SUPPORTED}")


def num_time_features(freq: str) -> int:
    """Number of timeF columns for ``freq`` (4 for ``'h'``, 5 for ``'min'``/``'t'``)."""
    return len(time_feature_names(freq))


def time_features(dates: pd.DatetimeIndex | pd.Series | Sequence, freq: str = "h") -> np.ndarray:
    """The ``(len(dates), num_time_features(freq))`` float32 array of timeF features (TSLib's ``time_features(...).T``).

    Args:
        dates: timestamps (anything :class:`pandas.DatetimeIndex` accepts).
        freq: frequency of the feature set (see the module docstring).
    """
    names = time_feature_names(freq)
    try:
        index = pd.DatetimeIndex(dates)
    except (TypeError, ValueError) as err:
        raise ValueError(f"dates must be timestamps: {err}") from err
    if len(index) and index.hasnans:
        raise ValueError("dates contain missing values (NaT)")
    if not names:
        return np.zeros((len(index), 0), dtype=np.float32)
    return np.stack([FEATURES[name](index) for name in names], axis=1).astype(np.float32)
