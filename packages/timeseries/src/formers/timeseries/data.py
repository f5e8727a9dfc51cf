"""Forecasting data from any CSV with a date column and numeric channels, with the TSLib / Informer protocol.

* **Splits** (chronological; val and test windows start ``seq_len`` rows before their border, so the look-back may
  reach into the previous split, as in all reference code bases):

  - ``"ett_hour"`` (ETTh1/ETTh2): 12/4/4 months of 30 days: train rows ``[0, 8640)``, val ``[8640 - L, 11520)``,
    test ``[11520 - L, 14400)``; rows >= 14400 are never used.
  - ``"ett_minute"`` (ETTm1/ETTm2): the same borders x 4.
  - ``"ratio"`` (any other CSV): ``int(0.7 n)`` train rows, ``int(0.2 n)`` test rows, val the rest.
  - ``"auto"``: ``ett_hour`` / ``ett_minute`` when the file name starts with ``ETTh`` / ``ETTm``, else ``ratio``.

* **Columns**: every non-date column is a channel; the ``target`` column is moved last (TSLib ``Dataset_Custom``).
  ``features="M"``: all channels in, all out; ``"MS"``: all in, the target (last channel) is what is scored;
  ``"S"``: only the target.
* **Scaling**: per-channel standardization with the mean and (population) std of the train rows only, as
  ``sklearn.preprocessing.StandardScaler`` (a zero std is replaced by 1).
* **Windows** (stride 1): input rows ``[i, i + L)``, target rows ``[i + L, i + L + H)``; the decoder input is the last
  ``label_len`` input rows followed by ``H`` zeros, with the time features of those ``label_len + H`` steps.
  ``len = rows - L - H + 1`` per split (ETTh1, L = H = 96: 8449 / 2785 / 2785).

A batch is ``({"x_enc", "x_mark_enc", "x_dec", "x_mark_dec"}, target)`` with ``target`` of shape ``(B, H, C)``, so the
model is called as ``model(**inputs)``.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from formers.core.data import SplitDataModule
from formers.timeseries.timefeatures import normalize_freq, time_features

__all__ = [
    "FEATURES",
    "SPLITS",
    "ForecastDataModule",
    "ForecastDataset",
    "StandardScaler",
    "read_series",
    "split_borders",
]

FEATURES = ("M", "S", "MS")
SPLITS = ("auto", "ett_hour", "ett_minute", "ratio")
Features = Literal["M", "S", "MS"]
Split = Literal["auto", "ett_hour", "ett_minute", "ratio"]
_STAGES = ("train", "val", "test")
_ETT_HOUR_ROWS = (12 * 30 * 24, 4 * 30 * 24, 4 * 30 * 24)  # 8640 / 2880 / 2880
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class StandardScaler:
    """Per-channel standardization (what TSLib uses from scikit-learn, without the dependency)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> StandardScaler:
        mean = values.mean(axis=0, dtype=np.float64)
        std = values.std(axis=0, dtype=np.float64)  # population std (ddof=0), as sklearn
        return cls(mean, np.where(std == 0.0, 1.0, std))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean


def read_series(
    path: str | os.PathLike[str],
    *,
    date_column: str = "date",
    target: str = "OT",
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Read a forecasting CSV: the date column parsed, every other column numeric, the target column last.

    Args:
        path: the CSV file.
        date_column: name of the timestamp column.
        target: name of the target column (moved last).
        columns: expected channel columns in order (e.g. from a checkpoint); ``None``: all non-date columns.

    Raises:
        ValueError: missing file, date or target column, unparseable dates, non-numeric values or NaNs (naming the
            column and the data row, 0-based, header excluded).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"CSV file not found: {path}")
    _check_header(path)  # before pandas, which renames a repeated column "a" to "a.1"
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a readable CSV: {err}") from err
    return validate_frame(frame, date_column=date_column, target=target, columns=columns, source=str(path))


def _check_header(path: Path) -> None:
    """Reject a CSV whose header names a column twice (read with the csv module: pandas would rename the copy)."""
    try:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"{path} is not a readable CSV: {err}") from err
    _reject_duplicate_names(header, str(path))


def _reject_duplicate_names(names: list[str], source: str) -> None:
    seen: set[str] = set()
    repeated = [name for name in names if name in seen or seen.add(name)]
    if repeated:
        raise ValueError(
            f"{source}: the header names column(s) {sorted(set(repeated))} more than once; every column needs a "
            "unique name (otherwise the wrong copy could become the target)"
        )


def validate_frame(
    frame: pd.DataFrame,
    *,
    date_column: str = "date",
    target: str = "OT",
    columns: list[str] | None = None,
    source: str = "data",
) -> pd.DataFrame:
    """The checks and column order of :func:`read_series` for a DataFrame already in memory.

    Besides the per-value checks: column names must be unique, the dates strictly increasing (no duplicate, no step
    back: rows are in time order) and every value within float32's range (the models compute in float32).
    """
    _reject_duplicate_names([str(name) for name in frame.columns], source)
    if date_column not in frame.columns:
        raise ValueError(f"{source}: no date column {date_column!r}; columns are {list(frame.columns)}")
    if target not in frame.columns:
        raise ValueError(f"{source}: no target column {target!r}; columns are {list(frame.columns)}")
    channels = [c for c in frame.columns if c not in (date_column, target)] + [target]
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"{source}: missing columns {missing} (expected {list(columns)})")
        channels = list(columns)
    if len(channels) < 1:
        raise ValueError(f"{source}: no data columns besides {date_column!r}")
    out = pd.DataFrame(index=frame.index)
    try:
        out[date_column] = pd.to_datetime(frame[date_column])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{source}: column {date_column!r} has values that are not dates: {err}") from err
    if out[date_column].isna().any():
        row = int(np.flatnonzero(out[date_column].isna().to_numpy())[0])
        raise ValueError(f"{source}: missing date in column {date_column!r} at row {row}")
    _check_time_order(out[date_column], date_column, source)
    for name in channels:
        column = frame[name]
        numeric = pd.to_numeric(column, errors="coerce")
        bad = numeric.isna() & column.notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"{source}: column {name!r} has a non-numeric value {column.iloc[row]!r} at row {row}")
        if numeric.isna().any():
            row = int(np.flatnonzero(numeric.isna().to_numpy())[0])
            raise ValueError(f"{source}: column {name!r} has a missing value (NaN) at row {row}")
        if not np.isfinite(numeric.to_numpy(dtype=np.float64)).all():
            row = int(np.flatnonzero(~np.isfinite(numeric.to_numpy(dtype=np.float64)))[0])
            raise ValueError(f"{source}: column {name!r} has an infinite value at row {row}")
        _check_float32_range(numeric.to_numpy(dtype=np.float64), name, source)
        out[name] = numeric.astype(np.float64)
    return out.reset_index(drop=True)


def _check_time_order(dates: pd.Series, date_column: str, source: str) -> None:
    """Dates must strictly increase: a repeated or earlier date means duplicated, shuffled or reversed rows."""
    values = dates.to_numpy()
    steps_back = np.flatnonzero(values[1:] <= values[:-1])
    if steps_back.size == 0:
        return
    row = int(steps_back[0]) + 1
    problem = "repeats" if values[row] == values[row - 1] else "is earlier than"
    raise ValueError(
        f"{source}: the time index {date_column!r} must strictly increase, but row {row} ({dates.iloc[row]}) "
        f"{problem} row {row - 1} ({dates.iloc[row - 1]}); sort the rows by time and remove duplicate dates"
    )


def _check_float32_range(values: np.ndarray, name: str, source: str) -> None:
    """Values a float32 model cannot represent would become inf (and the training loss NaN)."""
    outside = np.flatnonzero(np.abs(values) > _FLOAT32_MAX)
    if outside.size:
        row = int(outside[0])
        raise ValueError(
            f"{source}: column {name!r} has the value {values[row]:.6g} at row {row}, outside the float32 range "
            f"(+-{_FLOAT32_MAX:.4g}) the models compute in"
        )


def detect_split(path: str | os.PathLike[str], split: Split = "auto") -> str:
    """Resolve ``split="auto"`` from the file name (``ETTh*`` -> ett_hour, ``ETTm*`` -> ett_minute, else ratio)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split != "auto":
        return split
    name = Path(path).name
    return "ett_hour" if name.startswith("ETTh") else "ett_minute" if name.startswith("ETTm") else "ratio"


def split_borders(
    num_rows: int, seq_len: int, split: str, ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> dict[str, tuple[int, int]]:
    """Row ranges ``[begin, end)`` of the train / val / test splits (val and test begin ``seq_len`` rows early)."""
    if split in ("ett_hour", "ett_minute"):
        scale = 1 if split == "ett_hour" else 4
        train, val, test = (rows * scale for rows in _ETT_HOUR_ROWS)
        ends = (train, train + val, train + val + test)
        if num_rows < ends[-1]:
            raise ValueError(f"split {split!r} needs {ends[-1]} rows (12/4/4 months), the file has {num_rows}")
    elif split == "ratio":
        if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
            raise ValueError(f"ratios must be three positive fractions summing to 1, got {ratios}")
        num_train, num_test = int(num_rows * ratios[0]), int(num_rows * ratios[2])
        ends = (num_train, num_rows - num_test, num_rows)
    else:
        raise ValueError(f"split must be one of {SPLITS[1:]}, got {split!r}")
    begins = (0, ends[0] - seq_len, ends[1] - seq_len)
    return {stage: (begin, end) for stage, begin, end in zip(_STAGES, begins, ends, strict=True)}


class ForecastDataset(Dataset):
    """Stride-1 windows over scaled values ``(T, C)`` and their time features ``(T, F)``.

    Item ``i`` covers rows ``[i, i + seq_len + pred_len)`` of ``values``; ``offset`` is the file row of ``values[0]``
    (so ``offset + i`` is the first input row of window ``i`` in the file).
    """

    def __init__(
        self,
        values: np.ndarray,
        marks: np.ndarray,
        seq_len: int,
        label_len: int,
        pred_len: int,
        offset: int = 0,
    ) -> None:
        if values.ndim != 2 or marks.ndim != 2 or len(values) != len(marks):
            raise ValueError(f"values (T, C) and marks (T, F) must share T, got {values.shape} and {marks.shape}")
        if len(values) < seq_len + pred_len:
            raise ValueError(
                f"{len(values)} rows are too few for one window of seq_len {seq_len} + pred_len {pred_len}"
            )
        self.values = torch.as_tensor(values, dtype=torch.float32)
        self.marks = torch.as_tensor(marks, dtype=torch.float32)
        self.seq_len, self.label_len, self.pred_len, self.offset = seq_len, label_len, pred_len, offset

    def __len__(self) -> int:
        return len(self.values) - self.seq_len - self.pred_len + 1

    def __getitem__(self, index: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        s_end = index + self.seq_len
        r_begin, r_end = s_end - self.label_len, s_end + self.pred_len
        x_enc = self.values[index:s_end]
        zeros = x_enc.new_zeros(self.pred_len, x_enc.shape[1])
        inputs = {
            "x_enc": x_enc,
            "x_mark_enc": self.marks[index:s_end],
            "x_dec": torch.cat([self.values[r_begin:s_end], zeros]),  # label part = end of the input: no leak
            "x_mark_dec": self.marks[r_begin:r_end],
        }
        return inputs, self.values[s_end:r_end]


class ForecastDataModule(SplitDataModule):
    """Train / val / test windows of a forecasting CSV (protocol in the module docstring).

    Args:
        path: CSV with a date column and numeric channels.
        seq_len: input length L.
        label_len: decoder start-token length (the last ``label_len`` input steps); ``<= seq_len``.
        pred_len: horizon H.
        features: ``"M"``, ``"S"`` or ``"MS"``.
        target: target column (moved last; the only channel for ``"S"``, the scored one for ``"MS"``).
        freq: frequency of the time features (``"h"``, ``"min"``, ``"15min"``, old letters accepted). It selects the
            feature set only; TSLib uses ``"h"`` for ETTm too.
        date_column: name of the timestamp column.
        split: ``"auto"``, ``"ett_hour"``, ``"ett_minute"`` or ``"ratio"``.
        ratios: train / val / test fractions of the ``"ratio"`` split.
        scale: standardize with the train statistics (the benchmark protocol); ``False`` keeps raw values.
        batch_size: batch size of every loader.
        num_workers: DataLoader worker processes.
        drop_last_train: drop the last partial train batch. ``True`` as in the iTransformer, Informer2020 and
            Autoformer repos (264 steps per ETTh1 epoch at batch 32); TSLib now uses ``False`` (265). Val and test
            never drop windows.
    """

    def __init__(
        self,
        path: str,
        seq_len: int = 96,
        label_len: int = 48,
        pred_len: int = 96,
        features: Features = "M",
        target: str = "OT",
        freq: str = "h",
        date_column: str = "date",
        split: Split = "auto",
        ratios: tuple[float, float, float] = (0.7, 0.1, 0.2),
        scale: bool = True,
        batch_size: int = 32,
        num_workers: int = 0,
        drop_last_train: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers)
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        for name, value in (("seq_len", seq_len), ("pred_len", pred_len)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(label_len, int) or not 0 <= label_len <= seq_len:
            raise ValueError(f"label_len must be an integer in [0, seq_len={seq_len}], got {label_len!r}")
        self.save_hyperparameters()
        self.path, self.seq_len, self.label_len, self.pred_len = str(path), seq_len, label_len, pred_len
        self.features, self.target, self.date_column = features, target, date_column
        self.freq = normalize_freq(freq)
        self.split = detect_split(path, split)
        self.ratios, self.scale, self.drop_last_train = tuple(ratios), scale, drop_last_train
        self._windows: dict[str, ForecastDataset] = {}
        self.columns: list[str] = []
        self.scaler: StandardScaler | None = None
        self.borders: dict[str, tuple[int, int]] = {}

    def model_sizes(self) -> dict[str, int]:
        """The window lengths and channel counts of the model (``c_out`` too for M and S; MS models choose it).

        Before the CSV exists (a config checked without its data) only the window lengths are known; reading the
        data then fails with its own clear error.
        """
        sizes = {"seq_len": self.seq_len, "label_len": self.label_len, "pred_len": self.pred_len}
        if not Path(self.path).exists():
            return sizes
        channels = self.num_channels
        sizes |= {"enc_in": channels, "dec_in": channels}
        return sizes if self.features == "MS" else sizes | {"c_out": channels}

    @property
    def num_channels(self) -> int:
        """Channels the model sees (``enc_in``): 1 for ``"S"``, all columns otherwise (needs :meth:`setup`)."""
        self._load()
        return len(self.columns)

    def _load(self) -> None:
        """Read the CSV, fit the scaler on the train rows and build the three datasets (once)."""
        if self._windows:
            return
        frame = read_series(self.path, date_column=self.date_column, target=self.target)
        channels = [self.target] if self.features == "S" else [c for c in frame.columns if c != self.date_column]
        values = frame[channels].to_numpy(dtype=np.float64)
        num_rows = len(values)
        if num_rows < self.seq_len + self.pred_len:
            raise ValueError(
                f"{self.path}: {num_rows} rows are too few for one window of seq_len {self.seq_len} + pred_len "
                f"{self.pred_len}"
            )
        borders = split_borders(num_rows, self.seq_len, self.split, self.ratios)
        for stage, (begin, end) in borders.items():
            if end - begin < self.seq_len + self.pred_len:
                raise ValueError(
                    f"{self.path}: the {stage} split has {end - begin} rows (including the look-back), too few for "
                    f"one window of seq_len {self.seq_len} + pred_len {self.pred_len}; use a longer file or shorter "
                    "windows"
                )
        train_begin, train_end = borders["train"]
        self.scaler = StandardScaler.fit(values[train_begin:train_end])
        if self.scale:
            values = self.scaler.transform(values)
        marks = time_features(frame[self.date_column], self.freq)
        self.columns, self.borders = channels, borders
        self._windows = {
            stage: ForecastDataset(
                values[begin:end], marks[begin:end], self.seq_len, self.label_len, self.pred_len, offset=begin
            )
            for stage, (begin, end) in borders.items()
        }

    def build_splits(self) -> dict[str, ForecastDataset]:
        self._load()
        return self._windows

    def drop_last(self, split: str, dataset: Dataset) -> bool:
        return split == "train" and self.drop_last_train

    def state_dict(self) -> dict[str, Any]:
        """What forecasting needs after training; Lightning stores it in every checkpoint (plain types only, so the
        checkpoint loads with ``weights_only=True``)."""
        self._load()
        assert self.scaler is not None
        return {
            "columns": list(self.columns),
            "target": self.target,
            "features": self.features,
            "date_column": self.date_column,
            "freq": self.freq,
            "seq_len": self.seq_len,
            "label_len": self.label_len,
            "pred_len": self.pred_len,
            "scale": self.scale,
            "split": self.split,
            "ratios": [float(r) for r in self.ratios],
            "mean": [float(v) for v in self.scaler.mean],
            "std": [float(v) for v in self.scaler.std],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume: refuse a checkpoint made for other columns or window sizes than this data module's."""
        self._load()
        mine = self.state_dict()
        for key in ("columns", "features", "seq_len", "label_len", "pred_len", "freq"):
            if key in state_dict and state_dict[key] != mine[key]:
                raise ValueError(
                    f"the checkpoint was trained with {key}={state_dict[key]!r}, this data module has {mine[key]!r}"
                )
