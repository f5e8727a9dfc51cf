"""ForecastDataModule: the TSLib / Informer protocol (ETTh1 borders, train-only scaler, windows), features M/S/MS,
loaders and clear errors for bad CSVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from formers.timeseries.data import ForecastDataModule, read_series, split_borders
from formers.timeseries.timefeatures import time_features

L, H = 96, 96


@pytest.fixture(scope="module")
def ett(etth1):
    dm = ForecastDataModule(str(etth1), seq_len=L, label_len=48, pred_len=H)
    dm.setup("fit")
    return dm


@pytest.fixture(scope="module")
def raw(etth1) -> pd.DataFrame:
    return pd.read_csv(etth1)


def test_etth1_window_counts(ett):
    assert ett.split == "ett_hour"  # detected from the file name
    assert {k: len(v) for k, v in ett.datasets.items()} == {"train": 8449, "val": 2785, "test": 2785}
    assert ett.borders == {"train": (0, 8640), "val": (8544, 11520), "test": (11424, 14400)}


def test_etth1_scaler_uses_train_rows_only(ett, raw):
    train = raw.iloc[:8640, 1:].to_numpy(np.float64)
    np.testing.assert_allclose(ett.scaler.mean, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ett.scaler.std, train.std(axis=0), rtol=1e-12)  # population std, as sklearn
    everything = raw.iloc[:, 1:].to_numpy(np.float64)
    assert not np.allclose(ett.scaler.mean, everything.mean(axis=0))


def test_etth1_first_windows(ett, raw):
    values = (raw.iloc[:, 1:].to_numpy(np.float64) - ett.scaler.mean) / ett.scaler.std
    for stage, first in (("train", 0), ("val", 8544), ("test", 11424)):
        inputs, target = ett.datasets[stage][0]
        assert ett.datasets[stage].offset == first
        np.testing.assert_allclose(inputs["x_enc"].numpy(), values[first : first + L], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(target.numpy(), values[first + L : first + L + H], rtol=1e-5, atol=1e-6)
        marks = time_features(pd.to_datetime(raw["date"].iloc[first : first + L + H]), "h")
        np.testing.assert_array_equal(inputs["x_mark_enc"].numpy(), marks[:L])
        np.testing.assert_array_equal(inputs["x_mark_dec"].numpy(), marks[L - 48 :])
    # the last test window's target ends on row 14399
    _, target = ett.datasets["test"][len(ett.datasets["test"]) - 1]
    np.testing.assert_allclose(target[-1].numpy(), values[14399], rtol=1e-5, atol=1e-6)


def test_etth1_rows_after_14400_never_used(etth1, ett, raw, tmp_path):
    poisoned = raw.copy()
    poisoned.iloc[14400:, 1:] = 1e6
    path = tmp_path / "ETTh1.csv"
    poisoned.to_csv(path, index=False)
    other = ForecastDataModule(str(path), seq_len=L, label_len=48, pred_len=H)
    other.setup("fit")
    np.testing.assert_array_equal(other.scaler.mean, ett.scaler.mean)
    for stage in ("train", "val", "test"):
        assert torch.equal(other.datasets[stage].values, ett.datasets[stage].values)


def test_decoder_input_layout(ett):
    inputs, _ = ett.datasets["val"][5]
    assert inputs["x_dec"].shape == (48 + H, 7)
    assert torch.equal(inputs["x_dec"][:48], inputs["x_enc"][-48:])  # label part: end of the input window
    assert torch.count_nonzero(inputs["x_dec"][48:]) == 0  # no future values leak


@pytest.mark.parametrize(("features", "channels"), [("M", 7), ("MS", 7), ("S", 1)])
def test_features_shapes(etth1, features, channels):
    dm = ForecastDataModule(str(etth1), seq_len=L, label_len=48, pred_len=H, features=features, batch_size=4)
    inputs, target = next(iter(dm.val_dataloader()))
    assert inputs["x_enc"].shape == (4, L, channels)
    assert inputs["x_mark_enc"].shape == (4, L, 4)
    assert inputs["x_dec"].shape == (4, 48 + H, channels)
    assert inputs["x_mark_dec"].shape == (4, 48 + H, 4)
    assert target.shape == (4, H, channels)
    assert dm.columns[-1] == "OT" and dm.num_channels == channels


def test_ratio_split_moves_target_last(tmp_path):
    n = 1000
    dates = pd.date_range("2020-01-01", periods=n, freq="h")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"OT": rng.normal(size=n), "date": dates, "a": rng.normal(size=n), "b": np.arange(n) * 1.0})
    path = tmp_path / "custom.csv"
    frame.to_csv(path, index=False)
    dm = ForecastDataModule(str(path), seq_len=24, label_len=12, pred_len=12, batch_size=16)
    dm.setup("fit")
    assert dm.split == "ratio" and dm.columns == ["a", "b", "OT"]
    assert dm.borders == {"train": (0, 700), "val": (676, 800), "test": (776, 1000)}
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [700 - 35, 124 - 35, 224 - 35]
    np.testing.assert_allclose(dm.scaler.mean[1], np.arange(700).mean())
    assert split_borders(n, 24, "ratio") == dm.borders


def test_loaders_drop_policy(synthetic_csv):
    dm = ForecastDataModule(str(synthetic_csv), seq_len=24, label_len=12, pred_len=12, batch_size=32, num_workers=0)
    dm.setup("fit")
    for stage, loader in (("val", dm.val_dataloader()), ("test", dm.test_dataloader())):
        assert sum(target.shape[0] for _, target in loader) == len(dm.datasets[stage])  # no window dropped
    assert len(dm.train_dataloader()) == len(dm.datasets["train"]) // 32
    keep = ForecastDataModule(str(synthetic_csv), seq_len=24, label_len=12, pred_len=12, drop_last_train=False)
    assert len(keep.train_dataloader()) == -(-len(keep.datasets["train"]) // 32)
    assert (
        ForecastDataModule(str(synthetic_csv), num_workers=2, seq_len=24, label_len=12, pred_len=12)
        .val_dataloader()
        .num_workers
        == 2
    )


def test_state_dict_for_forecasting(synthetic_csv):
    dm = ForecastDataModule(str(synthetic_csv), seq_len=24, label_len=12, pred_len=12, freq="t")
    state = dm.state_dict()
    assert state["columns"][-1] == "OT" and len(state["columns"]) == 7
    assert state["freq"] == "min" and state["seq_len"] == 24 and state["pred_len"] == 12
    assert state["split"] == "ratio" and state["features"] == "M"
    assert all(isinstance(v, float) for v in state["mean"] + state["std"])
    dm.load_state_dict(state)  # same data: accepted
    with pytest.raises(ValueError, match="pred_len"):
        dm.load_state_dict({**state, "pred_len": 48})


def _write(tmp_path, frame, name="bad.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return str(path)


def _frame(n=200):
    return pd.DataFrame(
        {"date": pd.date_range("2020-01-01", periods=n, freq="h"), "a": np.arange(n) * 1.0, "OT": np.ones(n)}
    )


def test_error_missing_columns(tmp_path):
    with pytest.raises(ValueError, match="no date column 'date'"):
        read_series(_write(tmp_path, _frame().rename(columns={"date": "time"})))
    with pytest.raises(ValueError, match="no target column 'OT'"):
        read_series(_write(tmp_path, _frame().rename(columns={"OT": "y"})))
    with pytest.raises(ValueError, match=r"missing columns \['b'\]"):
        read_series(_write(tmp_path, _frame()), columns=["a", "b", "OT"])
    with pytest.raises(ValueError, match="not found"):
        read_series(tmp_path / "nope.csv")


def test_error_non_numeric_and_nan(tmp_path):
    frame = _frame().astype({"a": object})
    frame.loc[17, "a"] = "n/a?"
    with pytest.raises(ValueError, match=r"column 'a' has a non-numeric value 'n/a\?' at row 17"):
        read_series(_write(tmp_path, frame))
    frame = _frame()
    frame.loc[42, "OT"] = np.nan
    with pytest.raises(ValueError, match=r"column 'OT' has a missing value \(NaN\) at row 42"):
        ForecastDataModule(_write(tmp_path, frame), seq_len=8, label_len=4, pred_len=4).setup("fit")
    frame = _frame().astype({"date": object})
    frame.loc[3, "date"] = "not a date"
    with pytest.raises(ValueError, match="not dates"):
        read_series(_write(tmp_path, frame))


def test_error_too_few_rows(tmp_path):
    with pytest.raises(ValueError, match="too few for one window"):
        ForecastDataModule(_write(tmp_path, _frame(50)), seq_len=48, label_len=24, pred_len=24).setup("fit")
    with pytest.raises(ValueError, match="the val split has .* too few"):
        ForecastDataModule(_write(tmp_path, _frame(200)), seq_len=48, label_len=24, pred_len=24).setup("fit")
    with pytest.raises(ValueError, match="needs 14400 rows"):
        ForecastDataModule(_write(tmp_path, _frame(), "ETTh1.csv"), seq_len=8, label_len=4, pred_len=4).setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": "X"}, "features must be one of"),
        ({"freq": "fortnight"}, "unknown frequency"),
        ({"split": "random"}, "split must be one of"),
        ({"label_len": 100}, "label_len"),
        ({"pred_len": 0}, "pred_len"),
    ],
)
def test_error_bad_options(synthetic_csv, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ForecastDataModule(str(synthetic_csv), **{"seq_len": 24, "label_len": 12, "pred_len": 12, **kwargs})


# ------------------------------------------------------------------ synthetic series and the ETT fetch step


def test_synthetic_series_is_seeded_and_realistic():
    from formers.timeseries.synthetic import make_synthetic_series

    a, b = make_synthetic_series(rows=24 * 7 * 8, seed=3), make_synthetic_series(rows=24 * 7 * 8, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not make_synthetic_series(rows=500, seed=4)["OT"].equals(a["OT"].iloc[:500])
    assert list(a.columns) == ["date"] + [f"load_{i}" for i in range(6)] + ["OT"]
    assert pd.to_datetime(a["date"]).diff().iloc[1:].eq(pd.Timedelta(hours=1)).all()
    ot = a["OT"].to_numpy()

    def autocorr(x, lag):
        x = x - x.mean()
        return float((x[:-lag] * x[lag:]).sum() / (x * x).sum())

    for column in ("OT", "load_0"):  # daily seasonality: hourly changes repeat after 24 h, reverse after 12 h
        steps = np.diff(a[column].to_numpy())
        assert autocorr(steps, 24) > 0.4 and autocorr(steps, 12) < -0.2
    loads = a.iloc[:, 1:-1].sum(axis=1).to_numpy()
    assert np.corrcoef(loads[:-3], ot[3:])[0, 1] > 0.5  # OT follows the lagged total load


def test_fetch_copies_and_verifies(etth1, tmp_path):
    from formers.timeseries.fetch import fetch

    out = fetch("ETTh1", tmp_path / "data" / "ETTh1.csv", source=str(etth1))
    assert out.read_bytes() == etth1.read_bytes()


def test_fetch_rejects_a_modified_copy(etth1, tmp_path):
    from formers.timeseries.fetch import fetch

    lines = etth1.read_text().splitlines(keepends=True)
    (tmp_path / "short.csv").write_text("".join(lines[:-5]))
    with pytest.raises(ValueError, match="17415 rows, the official ETTh1 has 17420"):
        fetch("ETTh1", tmp_path / "out.csv", source=str(tmp_path / "short.csv"))
    lines[10] = lines[10].replace(",", ",1", 1)  # one changed value: parses, same rows, different bytes
    (tmp_path / "edited.csv").write_text("".join(lines))
    with pytest.raises(ValueError, match="sha256"):
        fetch("ETTh1", tmp_path / "out.csv", source=str(tmp_path / "edited.csv"))
    assert not (tmp_path / "out.csv").exists()  # nothing written on failure
    assert not list(tmp_path.glob(".out.csv.*"))


def test_fetch_errors(tmp_path):
    from formers.timeseries.fetch import fetch

    with pytest.raises(ValueError, match="unknown dataset"):
        fetch("ETTh9", tmp_path / "x.csv")
    with pytest.raises(ValueError, match="source file not found"):
        fetch("ETTh1", tmp_path / "x.csv", source=str(tmp_path / "missing.csv"))


def test_ettm1_borders_times_four(etth1):
    path = etth1.parent / "ETTm1.csv"
    if not path.is_file():
        pytest.skip("ETTm1 not available")
    dm = ForecastDataModule(str(path), seq_len=L, label_len=48, pred_len=H)
    dm.setup("fit")
    assert dm.split == "ett_minute"
    assert dm.borders == {"train": (0, 34560), "val": (34464, 46080), "test": (46080 - L, 57600)}
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [34369, 11425, 11425]


def test_exchange_rate_custom_split(etth1):
    path = etth1.parent / "exchange_rate.csv"
    if not path.is_file():
        pytest.skip("exchange_rate not available")
    dm = ForecastDataModule(str(path), seq_len=L, label_len=48, pred_len=H, freq="d")
    dm.setup("fit")
    assert dm.split == "ratio" and dm.columns[-1] == "OT" and len(dm.columns) == 8
    # TSLib Dataset_Custom on exchange_rate (7588 rows) at 96 -> 96: 5120 / 665 / 1422 windows
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [5120, 665, 1422]
    assert dm.datasets["train"][0][0]["x_mark_enc"].shape == (L, 3)  # daily: weekday, day of month, day of year


def test_fetch_defaults_to_the_local_shared_copy(etth1, tmp_path, monkeypatch):
    from formers.timeseries import fetch as fetch_module

    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the repository root: the DVC stage's wdir
    source = fetch_module._resolve_source("ETTh1", None)
    if source.startswith("http"):
        pytest.skip("the checkout is not next to ../shared; the default would download")
    assert Path(source).resolve() == etth1
    assert fetch_module.fetch("ETTh1", tmp_path / "ETTh1.csv").stat().st_size == etth1.stat().st_size
