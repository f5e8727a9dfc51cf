"""A seedable, realistic multivariate hourly series: the default data of the DVC pipeline (no download needed).

The channels imitate a load / temperature system like ETT: a few shared latent drivers (a daily cycle with a second
harmonic, a weekly cycle with a weekend dip, a slow trend, and a smooth AR(1) "weather" factor) are mixed into the
load channels with channel-specific weights and phases; each channel adds its own AR(1) noise. The target ``OT``
responds to the total load with a lag and through a first-order (thermal) filter, plus its own daily cycle and noise,
so past loads help to forecast it (cross-channel coupling).

Write it from the command line (the ``ts_data`` stage of ``dvc.yaml``)::

    python -m formers.timeseries.synthetic --out data/timeseries/synthetic.csv --rows 8760 --seed 0

``--out`` may be a new file or one this generator wrote (its header ``date,load_0,...,OT``); any other file or a
folder is refused, never replaced. The file is written next to ``--out`` and renamed, so it is never partial.
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from formers.core.runsafety import OutputOverwriteError

__all__ = ["make_synthetic_series", "write_synthetic_csv", "main"]


def _ar1(rng: np.random.Generator, n: int, phi: float, scale: float, channels: int = 1) -> np.ndarray:
    """Stationary AR(1) paths ``(n, channels)``: x_t = phi x_{t-1} + scale e_t, started in the stationary law."""
    noise = rng.standard_normal((n, channels)) * scale
    out = np.empty((n, channels))
    out[0] = noise[0] / np.sqrt(1.0 - phi**2)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + noise[t]
    return out


def make_synthetic_series(
    rows: int = 8760,
    channels: int = 6,
    seed: int = 0,
    start: str = "2020-01-01 00:00:00",
    freq: str = "h",
    lag: int = 3,
) -> pd.DataFrame:
    """The series as a DataFrame: ``date``, ``load_0`` ... ``load_{channels-1}`` and the target ``OT`` (last).

    Args:
        rows: number of hourly steps (8760 = one year).
        channels: number of load channels besides ``OT``.
        seed: random seed; the same seed gives the same values.
        start: first timestamp.
        freq: step between rows (pandas alias; the seasonal periods are defined in hours).
        lag: hours by which ``OT`` follows the total load.
    """
    if rows < 2 or channels < 1 or lag < 0:
        raise ValueError(f"need rows >= 2, channels >= 1 and lag >= 0, got rows={rows}, channels={channels}, lag={lag}")
    rng = np.random.default_rng(seed)
    dates = pd.date_range(start, periods=rows, freq=freq)
    hours = (dates - dates[0]) / pd.Timedelta(hours=1)
    t = np.asarray(hours, dtype=np.float64)[:, None]  # (rows, 1) in hours
    day, week = 2 * np.pi * t / 24.0, 2 * np.pi * t / (24.0 * 7)
    weekend = (dates.day_of_week.to_numpy() >= 5).astype(np.float64)[:, None]

    phase = rng.uniform(0, 2 * np.pi, (1, channels))
    daily = rng.uniform(0.8, 2.0, (1, channels)) * np.sin(day + phase) + 0.4 * np.sin(2 * day + 2 * phase)
    weekly = (
        rng.uniform(0.2, 0.6, (1, channels)) * np.sin(week + phase) - rng.uniform(0.3, 0.9, (1, channels)) * weekend
    )
    trend = rng.uniform(-1.0, 1.0, (1, channels)) * t / max(rows, 1) + 0.3 * np.sin(2 * np.pi * t / (24.0 * 365))
    weather = _ar1(rng, rows, phi=0.995, scale=0.08)  # one slow shared driver
    mixing = rng.uniform(0.5, 1.5, (1, channels))
    noise = _ar1(rng, rows, phi=0.7, scale=0.15, channels=channels)
    level = rng.uniform(2.0, 8.0, (1, channels))
    loads = level + daily + weekly + trend + mixing * weather + noise

    # OT: first-order response (time constant ~12 h) to the lagged total load, its own daily cycle and noise
    drive = np.roll(loads.sum(axis=1), lag)
    drive[:lag] = drive[lag] if lag < rows else drive[0]
    alpha, temp = 1.0 / 12.0, np.empty(rows)
    temp[0] = drive[0]
    for i in range(1, rows):
        temp[i] = temp[i - 1] + alpha * (drive[i] - temp[i - 1])
    ot = 0.6 * temp + 1.5 * np.sin(day[:, 0] - 1.0) + 2.0 * weather[:, 0] + _ar1(rng, rows, 0.8, 0.2)[:, 0]

    frame = pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M:%S")})
    for c in range(channels):
        frame[f"load_{c}"] = np.round(loads[:, c], 4)
    frame["OT"] = np.round(ot, 4)
    return frame


_GENERATED_HEADER = re.compile(r"date(,load_\d+)+,OT")


def write_synthetic_csv(path: str | Path, **kwargs) -> Path:
    """Write :func:`make_synthetic_series` ``(**kwargs)`` to ``path`` (parent folders created); returns the path.

    Raises:
        OutputOverwriteError: ``path`` is a folder, or a file this generator did not write (judged by its header).
    """
    path = Path(path)
    _check_replaceable(path)
    frame = make_synthetic_series(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            frame.to_csv(f, index=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _check_replaceable(path: Path) -> None:
    if path.is_dir():
        raise OutputOverwriteError(f"output {path} is a folder; give a CSV file path")
    if not path.exists():
        return
    with path.open("rb") as f:
        header = f.readline(4096).decode("utf-8", errors="replace").strip()
    if not _GENERATED_HEADER.fullmatch(header):
        raise OutputOverwriteError(
            f"output {path} exists and was not written by this generator (its header is {header[:80]!r}, not "
            "'date,load_0,...,OT'): refusing to replace it; choose another --out or remove it yourself"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m formers.timeseries.synthetic",
        description="Write the synthetic hourly multivariate series (date, load_*, OT) as a CSV.",
    )
    parser.add_argument("--out", required=True, help="output CSV path")
    parser.add_argument("--rows", type=int, default=8760, help="hourly rows (default 8760: one year)")
    parser.add_argument("--channels", type=int, default=6, help="load channels besides OT (default 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default="2020-01-01 00:00:00", help="first timestamp")
    args = parser.parse_args(argv)
    try:
        path = write_synthetic_csv(args.out, rows=args.rows, channels=args.channels, seed=args.seed, start=args.start)
    except ValueError as err:  # OutputOverwriteError and bad sizes
        parser.exit(1, f"error: {err}\n")
    print(f"wrote {path} ({args.rows} rows, {args.channels + 1} channels)")


if __name__ == "__main__":
    main()
