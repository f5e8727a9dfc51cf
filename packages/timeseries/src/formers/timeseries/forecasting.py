"""Forecast the future of a CSV with a trained checkpoint, in the CSV's own units.

The checkpoint (a ``best.ckpt`` / ``last.ckpt`` of ``formers-timeseries fit``, loaded with ``weights_only=True``)
holds everything: the task's hyper-parameters (model name and kwargs) and the data module's state (columns, scaler
mean/std, time-feature frequency, seq_len/label_len/pred_len, features, target). :func:`forecast` takes the last
``seq_len`` rows of the history, standardizes them with the *training* statistics, runs the model and maps the
``pred_len`` predicted steps back to the original units, with future timestamps continuing the CSV's own step
(inferred from its dates). Python::

    from formers.timeseries import forecast
    frame = forecast("runs/timeseries/default/checkpoints/best.ckpt", "my.csv", out_csv="f.csv", plot="f.png")

Command line: ``formers-timeseries predict --ckpt best.ckpt my.csv --out f.csv --plot f.png``
(``formers-timeseries predict --help``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from formers.core.domain import TrainedRun, load_trained
from formers.core.runsafety import check_finite
from formers.timeseries.data import read_series, split_borders, validate_frame
from formers.timeseries.task import ForecastTask
from formers.timeseries.timefeatures import time_features

__all__ = ["load_forecaster", "forecast", "forecast_test_split", "infer_step", "future_dates", "plot_forecast"]

PathLike = str | os.PathLike[str]


def load_forecaster(
    checkpoint: PathLike | TrainedRun, map_location: str = "cpu"
) -> tuple[ForecastTask, dict[str, Any]]:
    """The task (in eval mode) and the data state stored in a checkpoint, loaded with ``weights_only=True``; a run
    already rebuilt by :func:`formers.core.domain.load_trained` (``predict``) is used as it is."""
    if isinstance(checkpoint, TrainedRun):
        run = checkpoint
    else:
        run = load_trained(checkpoint, task_class=ForecastTask, map_location=map_location)
    if "columns" not in run.data_state or "mean" not in run.data_state:
        raise ValueError(f"{run.path}: no ForecastDataModule state; it was not trained with formers.timeseries.data")
    task = run.task
    assert isinstance(task, ForecastTask)
    task.features = run.data_state["features"]
    return task, run.data_state


def infer_step(dates: pd.Series | pd.DatetimeIndex) -> str | pd.Timedelta:
    """The step of a date sequence: a pandas frequency alias when pandas can infer one (``'h'``, ``'15min'``,
    ``'B'``, ``'MS'``), else the most common difference."""
    index = pd.DatetimeIndex(dates)
    if len(index) < 2:
        raise ValueError("need at least two dates to infer the step of the series")
    tail = index[-min(len(index), 200) :]
    if len(tail) >= 3:
        with pd.option_context("future.infer_freq_returns_offset", True):  # pandas 3: offsets, not strings
            offset = pd.infer_freq(tail)
        if offset is not None:
            return offset.freqstr
    diffs = pd.Series(tail[1:] - tail[:-1])
    step = diffs.mode().iloc[0]
    if step <= pd.Timedelta(0):
        raise ValueError("dates must be increasing to infer the step of the series")
    return step


def future_dates(dates: pd.Series | pd.DatetimeIndex, steps: int) -> pd.DatetimeIndex:
    """``steps`` timestamps after the last of ``dates``, continuing its inferred step."""
    index = pd.DatetimeIndex(dates)
    step = infer_step(index)
    if isinstance(step, str):
        return pd.date_range(index[-1], periods=steps + 1, freq=step)[1:]
    return pd.DatetimeIndex([index[-1] + step * (i + 1) for i in range(steps)])


def _output_columns(state: dict[str, Any]) -> tuple[list[str], list[int]]:
    """Forecast columns and their channel indices: every channel for M, the target for S and MS."""
    columns = list(state["columns"])
    if state["features"] == "M":
        return columns, list(range(len(columns)))
    return [state["target"]], [len(columns) - 1]


def _model_inputs(values: np.ndarray, dates: pd.DatetimeIndex, future: pd.DatetimeIndex, state: dict[str, Any]):
    """Batch of one window (scaled history ``(seq_len, C)``) as the data module builds it."""
    label_len, pred_len = state["label_len"], state["pred_len"]
    marks = time_features(dates.append(future), state["freq"])
    x_enc = torch.as_tensor(values, dtype=torch.float32)[None]
    zeros = x_enc.new_zeros(1, pred_len, x_enc.shape[-1])
    start = len(dates) - label_len
    return {
        "x_enc": x_enc,
        "x_mark_enc": torch.as_tensor(marks[: len(dates)])[None],
        "x_dec": torch.cat([x_enc[:, start:], zeros], dim=1),
        "x_mark_dec": torch.as_tensor(marks[start:])[None],
    }


def _resolve_end(frame: pd.DataFrame, date_column: str, end: int | str | None) -> int:
    if end is None:
        return len(frame)
    if isinstance(end, str) and not end.lstrip("-").isdigit():
        matches = np.flatnonzero(frame[date_column].to_numpy() == np.datetime64(pd.Timestamp(end)))
        if not len(matches):
            raise ValueError(f"end date {end!r} is not in the CSV")
        return int(matches[0]) + 1  # the history ends with (includes) that date
    end = int(end)
    end = end + len(frame) if end < 0 else end
    if not 0 < end <= len(frame):
        raise ValueError(f"end row {end} is outside the CSV's {len(frame)} rows")
    return end


def forecast(
    checkpoint: PathLike | TrainedRun,
    data: PathLike | pd.DataFrame,
    *,
    end: int | str | None = None,
    truth: PathLike | pd.DataFrame | None = None,
    out_csv: PathLike | None = None,
    plot: PathLike | None = None,
    plot_columns: list[str] | None = None,
) -> pd.DataFrame:
    """The next ``pred_len`` steps after a history, in the data's original units.

    Args:
        checkpoint: a ``formers-timeseries fit`` checkpoint (or the run ``load_trained`` rebuilt from one).
        data: CSV (or DataFrame) with the training columns and date column.
        end: where the history ends: a row count (the history is rows ``[end - seq_len, end)``; negative counts
            from the end) or a date (included). Default: the end of the data. Rows after ``end`` are the truth.
        truth: a CSV / DataFrame with the actual future values (used when ``data`` has no rows after ``end``).
        out_csv: write the result as a CSV.
        plot: write a PNG of the history, the forecast and the truth (when known).
        plot_columns: columns to plot (default: the target).

    Returns:
        ``date`` + one column per forecast channel (all channels for ``features="M"``, the target for S/MS), and
        ``<column>_true`` columns when truth is known (NaN past its end).
    """
    task, state = load_forecaster(checkpoint)
    date_column, seq_len, pred_len = state["date_column"], state["seq_len"], state["pred_len"]
    source = str(data) if not isinstance(data, pd.DataFrame) else "data"
    if isinstance(data, pd.DataFrame):
        frame = validate_frame(data, date_column=date_column, target=state["target"], columns=state["columns"])
    else:
        frame = read_series(data, date_column=date_column, target=state["target"], columns=state["columns"])
    stop = _resolve_end(frame, date_column, end)
    if stop < seq_len:
        raise ValueError(f"{source}: the history has {stop} rows, the model needs seq_len = {seq_len}")
    history = frame.iloc[stop - seq_len : stop]
    dates = pd.DatetimeIndex(history[date_column])
    future = future_dates(dates, pred_len)
    columns, channels = _output_columns(state)
    mean, std = np.asarray(state["mean"]), np.asarray(state["std"])
    values = history[state["columns"]].to_numpy(dtype=np.float64)
    if state.get("scale", True):
        values = (values - mean) / std
    with torch.no_grad():
        output = task(_model_inputs(values, dates, future, state))[0].double().numpy()  # (pred_len, c_out)
    output = output[:, -1:] if state["features"] == "MS" else output
    check_finite(output, "forecast", source=source)
    if output.shape[1] != len(channels):
        raise ValueError(f"the model predicts {output.shape[1]} channels, the checkpoint's data has {len(channels)}")
    if state.get("scale", True):
        output = output * std[channels] + mean[channels]
    result = pd.DataFrame({date_column: future})
    for i, column in enumerate(columns):
        result[column] = output[:, i]

    actual = _truth(frame, stop, truth, state)
    if actual is not None:
        aligned = actual.set_index(date_column).reindex(future)
        for column in columns:
            result[f"{column}_true"] = aligned[column].to_numpy()
    if out_csv is not None:
        Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out_csv, index=False)
    if plot is not None:
        plot_forecast(history, result, plot, date_column=date_column, columns=plot_columns or [state["target"]])
    return result


def _truth(frame: pd.DataFrame, stop: int, truth: PathLike | pd.DataFrame | None, state: dict[str, Any]):
    """The actual rows after the history: from ``truth`` when given, else the data's own later rows (or None)."""
    kwargs = {"date_column": state["date_column"], "target": state["target"], "columns": state["columns"]}
    if truth is not None:
        if isinstance(truth, pd.DataFrame):
            return validate_frame(truth, **kwargs, source="truth")
        return read_series(truth, **kwargs)
    later = frame.iloc[stop : stop + state["pred_len"]]
    return later if len(later) else None


def plot_forecast(
    history: pd.DataFrame, result: pd.DataFrame, path: PathLike, *, date_column: str, columns: list[str]
) -> None:
    """PNG of history (the model's input window), forecast and, when present in ``result``, truth; one panel per
    column."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    missing = [c for c in columns if c not in result.columns]
    if missing:
        raise ValueError(f"cannot plot {missing}: the forecast has columns {list(result.columns[1:])}")
    fig, axes = plt.subplots(len(columns), 1, figsize=(10, 3 * len(columns)), squeeze=False, sharex=True)
    for ax, column in zip(axes[:, 0], columns, strict=True):
        ax.plot(history[date_column], history[column], color="0.3", label="history")
        if f"{column}_true" in result:
            ax.plot(result[date_column], result[f"{column}_true"], color="tab:green", label="truth")
        ax.plot(result[date_column], result[column], color="tab:orange", label="forecast")
        ax.set_ylabel(column)
        ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def forecast_test_split(
    checkpoint: PathLike | TrainedRun,
    data: PathLike,
    out_tsv: PathLike,
    *,
    column: str | None = None,
    batch_size: int = 64,
) -> pd.DataFrame:
    """Forecast the whole test split in consecutive, non-overlapping ``pred_len`` blocks and write a TSV for a DVC
    plot: ``step`` (row in the test split after the look-back), ``date``, ``truth``, ``forecast`` of one column
    (default the target) in original units.
    """
    task, state = load_forecaster(checkpoint)
    column = column or state["target"]
    columns, channels = _output_columns(state)
    if column not in columns:
        raise ValueError(f"column {column!r} is not forecast by this model (it forecasts {columns})")
    channel = channels[columns.index(column)]
    frame = read_series(data, date_column=state["date_column"], target=state["target"], columns=state["columns"])
    seq_len, pred_len = state["seq_len"], state["pred_len"]
    begin, stop = split_borders(len(frame), seq_len, state["split"], tuple(state["ratios"]))["test"]
    values = frame[state["columns"]].to_numpy(dtype=np.float64)
    mean, std = np.asarray(state["mean"]), np.asarray(state["std"])
    scaled = (values - mean) / std if state.get("scale", True) else values
    dates = pd.DatetimeIndex(frame[state["date_column"]])
    starts = list(range(begin, stop - seq_len - pred_len + 1, pred_len))
    forecasts = []
    with torch.no_grad():
        for i in range(0, len(starts), batch_size):
            chunk = starts[i : i + batch_size]
            batch = [
                _model_inputs(
                    scaled[s : s + seq_len], dates[s : s + seq_len], dates[s + seq_len : s + seq_len + pred_len], state
                )
                for s in chunk
            ]
            inputs = {k: torch.cat([b[k] for b in batch]) for k in batch[0]}
            out = task(inputs).double().numpy()
            out = out[..., -1:] if state["features"] == "MS" else out
            forecasts.append(out[..., columns.index(column)])
    pred = np.concatenate(forecasts).reshape(-1)
    check_finite(pred, "test-split forecast", source=data)
    if state.get("scale", True):
        pred = pred * std[channel] + mean[channel]
    rows = np.concatenate([np.arange(s + seq_len, s + seq_len + pred_len) for s in starts])
    table = pd.DataFrame(
        {
            "step": rows - (begin + seq_len),
            "date": dates[rows].strftime("%Y-%m-%d %H:%M:%S"),
            "truth": values[rows, channel],
            "forecast": pred,
        }
    )
    Path(out_tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    return table
