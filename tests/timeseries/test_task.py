"""ForecastTask: exact test metrics over all windows x horizon x channels, MS scoring, a short fit that learns,
and clear errors when the model and the data disagree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer

from formers.timeseries.data import ForecastDataModule
from formers.timeseries.task import ForecastTask

TINY = {"seq_len": 24, "label_len": 12, "pred_len": 12, "enc_in": 7, "c_out": 7, "d_model": 16, "d_ff": 16}
TINY.update(n_heads=2, e_layers=1, dropout=0.0)


def _trainer(**kwargs) -> Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    return Trainer(**{**defaults, "enable_model_summary": False, **kwargs})


def _data(csv, features="M", batch_size=8) -> ForecastDataModule:
    return ForecastDataModule(str(csv), seq_len=24, label_len=12, pred_len=12, features=features, batch_size=batch_size)


def _direct_metrics(task: ForecastTask, dm: ForecastDataModule, last_only: bool) -> tuple[float, float, list[float]]:
    """numpy MSE/MAE over the concatenated (N, H, C) test arrays, and the per-batch MSEs."""
    preds, trues, batch_mse = [], [], []
    task.eval()
    with torch.no_grad():
        for inputs, target in dm.test_dataloader():
            out = task(inputs).double().numpy()
            true = target.double().numpy()
            if last_only:
                out, true = out[..., -1:], true[..., -1:]
            preds.append(out)
            trues.append(true)
            batch_mse.append(float(np.mean((out - true) ** 2)))
    pred, true = np.concatenate(preds), np.concatenate(trues)
    assert pred.shape[0] == len(dm.datasets["test"])  # every window
    return float(np.mean((pred - true) ** 2)), float(np.mean(np.abs(pred - true))), batch_mse


@pytest.mark.parametrize("features", ["M", "MS"])
def test_test_metrics_are_exact_global_means(synthetic_csv, features):
    dm = _data(synthetic_csv, features)
    task = ForecastTask("itransformer", TINY)
    (result,) = _trainer().test(task, datamodule=dm, verbose=False)
    assert task.features == features
    mse, mae, batch_mse = _direct_metrics(task, dm, last_only=features == "MS")
    assert len(dm.datasets["test"]) % 8 != 0  # a partial last batch: a mean of batch means would be biased
    assert abs(result["test/mse"] - mse) <= 1e-12 * mse
    assert abs(result["test/mae"] - mae) <= 1e-12 * mae
    assert result["test/loss"] == result["test/mse"]
    assert abs(np.mean(batch_mse) - mse) > 1e-5 * mse  # the check above can tell the two apart
    if features == "MS":
        all_channels, _, _ = _direct_metrics(task, dm, last_only=False)
        assert abs(all_channels - mse) > 1e-3 * mse


def test_exact_metric_in_float64(synthetic_csv):
    task = ForecastTask("itransformer", TINY)
    assert task.eval_metrics["test"]["mse"].sum_squared_error.dtype == torch.float64
    assert task.eval_metrics["val"]["mae"].sum_abs_error.dtype == torch.float64


class _EpochLoss(Callback):
    def __init__(self):
        self.losses = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.losses.append(float(trainer.callback_metrics["train/loss_epoch"]))


def test_short_fit_loss_falls(synthetic_csv):
    torch.manual_seed(0)
    task = ForecastTask("itransformer", TINY)
    task.configure_optimizers = lambda: torch.optim.Adam(task.parameters(), lr=3e-3)
    recorder = _EpochLoss()
    _trainer(max_epochs=3, callbacks=[recorder], limit_val_batches=2).fit(task, datamodule=_data(synthetic_csv))
    assert len(recorder.losses) == 3
    assert recorder.losses[-1] < 0.8 * recorder.losses[0], recorder.losses


def test_model_and_data_must_agree(synthetic_csv):
    with pytest.raises(ValueError, match="enc_in=5 but the data has enc_in=7"):
        _trainer().test(
            ForecastTask("itransformer", {**TINY, "enc_in": 5, "c_out": 5}), datamodule=_data(synthetic_csv)
        )
    with pytest.raises(ValueError, match="pred_len=24 but the data has pred_len=12"):
        _trainer().test(ForecastTask("itransformer", {**TINY, "pred_len": 24}), datamodule=_data(synthetic_csv))


def test_target_shape_mismatch_is_clear(synthetic_csv):
    task = ForecastTask("itransformer", {**TINY, "c_out": 1})  # S-style output on M data
    inputs, target = next(iter(_data(synthetic_csv).test_dataloader()))
    with pytest.raises(ValueError, match="check c_out"):
        task.training_step((inputs, target), 0)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        ForecastTask("no_such_forecaster", {})


def test_time_features_must_agree(synthetic_csv):
    data = ForecastDataModule(str(synthetic_csv), seq_len=24, label_len=12, pred_len=12, freq="min")
    with pytest.raises(ValueError, match="expects 4 time features .* freq='min' gives 5"):
        _trainer().test(ForecastTask("itransformer", {**TINY, "freq": "h"}), datamodule=data)
    fixed = {**TINY, "dec_in": 7, "d_layers": 1, "embed": "fixed"}
    with pytest.raises(ValueError, match="embed: timeF"):
        _trainer().test(ForecastTask("autoformer", fixed), datamodule=_data(synthetic_csv))


def test_domain_create_model_and_list():
    from formers.timeseries import create_model, list_models

    assert {"itransformer", "autoformer", "informer"} <= set(list_models())
    assert create_model("itransformer", **TINY).pred_len == 12
    with pytest.raises(
        ValueError,
        match="unknown timeseries model 'transformer_classifier'; available: .*itransformer.*is a core model",
    ):
        create_model("transformer_classifier")
