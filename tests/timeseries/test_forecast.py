"""forecast(): a trained checkpoint + a CSV -> the next pred_len steps in original units with future timestamps,
CSV + PNG output, truth from later rows or a file, the test-split TSV, and clear errors for bad CSVs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from formers.timeseries import forecast
from formers.timeseries.domain import main
from formers.timeseries.forecasting import forecast_test_split, future_dates, infer_step, load_forecaster
from formers.timeseries.timefeatures import time_features

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "pipelines" / "timeseries" / "tiny.yaml"
SEQ, LABEL, PRED = 48, 24, 24  # tiny.yaml


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_csv) -> Path:
    """best.ckpt of an in-process ``formers-timeseries fit`` of tiny.yaml on the synthetic CSV."""
    run_dir = tmp_path_factory.mktemp("run")
    args = ["fit", "--config", str(TINY), "--data.init_args.path", str(synthetic_csv), "--run_dir", str(run_dir)]
    main(args + ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "5", "--trainer.limit_val_batches", "2"])
    return run_dir / "checkpoints" / "best.ckpt"


def test_checkpoint_is_self_describing_and_weights_only(trained):
    ckpt = torch.load(trained, map_location="cpu", weights_only=True)
    state = ckpt["ForecastDataModule"]
    assert state["columns"][-1] == "OT" and state["seq_len"] == SEQ and state["pred_len"] == PRED
    assert len(state["mean"]) == len(state["std"]) == 7
    assert ckpt["hyper_parameters"]["model"] == "itransformer"


def test_forecast_original_units_and_timestamps(trained, synthetic_csv):
    frame = pd.read_csv(synthetic_csv, parse_dates=["date"])
    result = forecast(trained, synthetic_csv)
    assert list(result.columns) == ["date", *frame.columns[1:]]  # M: every channel, no truth past the CSV
    expected_dates = pd.date_range(frame["date"].iloc[-1] + pd.Timedelta(hours=1), periods=PRED, freq="h")
    assert (pd.DatetimeIndex(result["date"]) == expected_dates).all()

    # the same computation by hand: train statistics, model on the scaled window, inverse scaling
    task, state = load_forecaster(trained)
    mean, std = np.asarray(state["mean"]), np.asarray(state["std"])
    history = frame.iloc[-SEQ:]
    scaled = (history.iloc[:, 1:].to_numpy() - mean) / std
    marks = time_features(pd.DatetimeIndex(history["date"]).append(expected_dates), "h")
    x_enc = torch.tensor(scaled, dtype=torch.float32)[None]
    x_dec = torch.cat([x_enc[:, -LABEL:], torch.zeros(1, PRED, 7)], dim=1)
    inputs = {"x_enc": x_enc, "x_mark_enc": torch.tensor(marks[:SEQ])[None], "x_dec": x_dec}
    inputs["x_mark_dec"] = torch.tensor(marks[SEQ - LABEL :])[None]
    with torch.no_grad():
        raw = task(inputs)[0].double().numpy()
    np.testing.assert_allclose(result.iloc[:, 1:].to_numpy(), raw * std + mean, rtol=1e-6, atol=1e-6)
    assert np.abs(result["OT"].to_numpy() - raw[:, -1]).min() > 1.0  # really un-scaled (OT is ~20, not ~0)


def test_forecast_inside_the_csv_has_truth_and_writes_files(trained, synthetic_csv, tmp_path):
    frame = pd.read_csv(synthetic_csv, parse_dates=["date"])
    out, png = tmp_path / "f.csv", tmp_path / "f.png"
    result = forecast(trained, synthetic_csv, end=600, out_csv=out, plot=png, plot_columns=["OT", "load_0"])
    assert result["date"].iloc[0] == frame["date"].iloc[600]
    np.testing.assert_allclose(result["OT_true"].to_numpy(), frame["OT"].iloc[600 : 600 + PRED].to_numpy())
    written = pd.read_csv(out)
    assert len(written) == PRED and "OT_true" in written
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_date = forecast(trained, synthetic_csv, end=str(frame["date"].iloc[599]))
    np.testing.assert_allclose(by_date["OT"].to_numpy(), result["OT"].to_numpy())


def test_truth_from_a_file(trained, synthetic_csv, tmp_path):
    frame = pd.read_csv(synthetic_csv)
    history, future = tmp_path / "history.csv", tmp_path / "future.csv"
    frame.iloc[:700].to_csv(history, index=False)
    frame.iloc[700:710].to_csv(future, index=False)
    result = forecast(trained, history, truth=future)
    np.testing.assert_allclose(result["OT_true"].to_numpy()[:10], frame["OT"].iloc[700:710].to_numpy())
    assert result["OT_true"].isna().sum() == PRED - 10


def test_test_split_tsv(trained, synthetic_csv, tmp_path):
    frame = pd.read_csv(synthetic_csv)
    table = forecast_test_split(trained, synthetic_csv, tmp_path / "t.tsv")
    # ratio split of 1000 rows: test rows [800, 1000); forecasts in non-overlapping blocks of 24
    assert len(table) == (200 // PRED) * PRED and table["step"].tolist() == list(range(len(table)))
    np.testing.assert_allclose(table["truth"].to_numpy(), frame["OT"].iloc[800 : 800 + len(table)].to_numpy())
    written = pd.read_csv(tmp_path / "t.tsv", sep="\t")
    assert list(written.columns) == ["step", "date", "truth", "forecast"]


@pytest.mark.parametrize(
    ("freq", "expected"), [("h", "h"), ("15min", "15min"), ("B", "B"), ("D", "D"), ("MS", "MS")]
)  # fmt: skip
def test_future_dates_continue_the_step(freq, expected):
    dates = pd.date_range("2021-03-01", periods=30, freq=freq)
    assert infer_step(dates) == expected
    future = future_dates(dates, 5)
    assert (future == pd.date_range(dates[-1], periods=6, freq=freq)[1:]).all()


def test_irregular_dates_use_the_common_step():
    dates = pd.DatetimeIndex(["2021-01-01 00:00", "2021-01-01 01:00", "2021-01-01 03:00", "2021-01-01 04:00"])
    assert infer_step(dates) == pd.Timedelta(hours=1)
    assert future_dates(dates, 2)[-1] == pd.Timestamp("2021-01-01 06:00")


def test_bad_csvs(trained, synthetic_csv, tmp_path):
    frame = pd.read_csv(synthetic_csv)
    frame.drop(columns=["load_3"]).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(ValueError, match=r"missing columns \['load_3'\]"):
        forecast(trained, tmp_path / "missing.csv")
    frame.iloc[:30].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(ValueError, match="history has 30 rows, the model needs seq_len = 48"):
        forecast(trained, tmp_path / "short.csv")
    nan = frame.copy()
    nan.loc[990, "load_1"] = np.nan
    nan.to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match=r"'load_1' has a missing value \(NaN\) at row 990"):
        forecast(trained, tmp_path / "nan.csv")
    text = frame.astype({"OT": object})
    text.loc[5, "OT"] = "warm"
    text.to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(ValueError, match="'OT' has a non-numeric value 'warm' at row 5"):
        forecast(trained, tmp_path / "text.csv")
    with pytest.raises(ValueError, match="checkpoint file not found"):
        forecast(tmp_path / "none.ckpt", synthetic_csv)


def test_readme_building_blocks_run():
    readme = (REPO / "packages" / "timeseries" / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "list_models()" in b]
    assert blocks, "the README lost its building-blocks example"
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    assert namespace["model"](**namespace["model"].example_inputs()).shape == (2, 96, 7)


@pytest.mark.parametrize(("features", "channels"), [("S", 1), ("MS", 7)])
def test_single_target_forecasts(features, channels, synthetic_csv, tmp_path):
    from lightning.pytorch import Trainer

    from formers.timeseries.data import ForecastDataModule
    from formers.timeseries.task import ForecastTask

    kwargs = {"seq_len": SEQ, "label_len": LABEL, "pred_len": PRED, "enc_in": channels, "c_out": channels}
    task = ForecastTask("itransformer", {**kwargs, "d_model": 16, "d_ff": 16, "n_heads": 2, "e_layers": 1})
    task.configure_optimizers = lambda: torch.optim.Adam(task.parameters(), lr=1e-3)
    data = ForecastDataModule(str(synthetic_csv), seq_len=SEQ, label_len=LABEL, pred_len=PRED, features=features)
    trainer = Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(task, datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")

    result = forecast(tmp_path / "model.ckpt", synthetic_csv, end=500)
    assert list(result.columns) == ["date", "OT", "OT_true"]
    frame = pd.read_csv(synthetic_csv)
    history = frame[data.columns].iloc[500 - SEQ : 500].to_numpy()
    scaled = (history - data.scaler.mean) / data.scaler.std
    inputs, _ = data.datasets["train"][500 - SEQ]  # the same window as the data module builds it
    assert np.allclose(inputs["x_enc"].numpy(), scaled, atol=1e-5)
    task.eval()
    with torch.no_grad():
        raw = task({k: v[None] for k, v in inputs.items()})[0, :, -1].double().numpy()
    expected = raw * data.scaler.std[-1] + data.scaler.mean[-1]
    np.testing.assert_allclose(result["OT"].to_numpy(), expected, rtol=1e-5, atol=1e-5)
