"""``ForecastTask``: trains any registered forecaster with the TSLib protocol (MSE loss, standardized-scale metrics).

The batch is ``(inputs, target)`` from :class:`formers.timeseries.data.ForecastDataModule`; the model is called as
``model(**inputs)`` and returns ``(B, pred_len, c_out)``. For ``features="MS"`` only the last channel (the target) is
scored, as TSLib's ``f_dim = -1``.

Logged metrics: ``train/loss`` (per step and epoch), ``{train,val,test}/{loss,mse,mae}``. The val and test values are
the exact means over all windows x horizon x channels of the split (sums accumulated in float64 by torchmetrics, so a
partial last batch is weighted correctly; TSLib's ``vali()`` averages per-batch means instead, ``test()`` is exact).

Like the core tasks, no ``configure_optimizers``: the run config sets the optimizer and the scheduler (the papers:
``Adam(lr=1e-4)`` and TSLib's ``lradj=type1``: lr0 for two epochs, then halved every epoch, which is
``MultiStepLR(milestones=[2, 3, ..., 9], gamma=0.5)``; ``StepLR(1, 0.5)`` would halve one epoch early).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric

from formers.core.registry import create_model
from formers.timeseries.timefeatures import num_time_features

__all__ = ["ForecastTask"]

_MODEL_DATA_KEYS = ("seq_len", "pred_len")  # label_len: iTransformer ignores it


class ForecastTask(LightningModule):
    """Forecasting with an MSE loss on the standardized scale.

    Args:
        model: registered model name (``itransformer``, ``autoformer``, ``informer``, ...).
        model_kwargs: the model's hyper-parameters (Time-Series-Library names: seq_len, pred_len, enc_in, ...).

    ``features`` (``"M"``, ``"S"``, ``"MS"``: which channels are scored) is the data module's, read at setup (an
    argument here would be a second place to keep in sync); without a data module it is ``"M"``.
    """

    def __init__(
        self,
        model: str,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = create_model(model, **(model_kwargs or {}))
        self.features: Literal["M", "S", "MS"] = "M"
        # float64 sums over the whole split: the epoch value is the exact global mean
        self.val_mse, self.val_mae = _float64(MeanSquaredError()), _float64(MeanAbsoluteError())
        self.test_mse, self.test_mae = _float64(MeanSquaredError()), _float64(MeanAbsoluteError())

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "features"):
            return
        self.features = datamodule.features
        kwargs = self.hparams.model_kwargs or {}
        expected = {"enc_in": datamodule.num_channels, **{k: getattr(datamodule, k) for k in _MODEL_DATA_KEYS}}
        if kwargs.get("embed", "timeF") != "timeF":
            raise ValueError("ForecastDataModule yields timeF time features; set model_kwargs.embed: timeF")
        marks = num_time_features(datamodule.freq)
        if getattr(self.model, "num_marks", marks) != marks:
            raise ValueError(
                f"the model expects {self.model.num_marks} time features (model_kwargs.freq="
                f"{kwargs.get('freq', 'h')!r}) but the data's freq={datamodule.freq!r} gives {marks}; make them equal"
            )
        for key, value in expected.items():
            if key in kwargs and kwargs[key] != value:
                raise ValueError(
                    f"model_kwargs.{key}={kwargs[key]} but the data has {key}={value} ({datamodule.path}); "
                    "make them equal in the config"
                )

    def forward(self, inputs: Mapping[str, Tensor]) -> Tensor:
        return self.model(**inputs)

    def _scored(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if output.shape[:2] != target.shape[:2]:
            raise ValueError(f"prediction {tuple(output.shape)} and target {tuple(target.shape)} differ in (B, H)")
        if self.features == "MS":  # TSLib f_dim = -1: only the target channel (last) counts
            output, target = output[..., -1:], target[..., -1:]
        if output.shape != target.shape:
            raise ValueError(
                f"prediction {tuple(output.shape)} does not match target {tuple(target.shape)}: check c_out"
            )
        return output, target.to(output.dtype)

    def training_step(self, batch: tuple[Mapping[str, Tensor], Tensor], batch_idx: int) -> Tensor:
        inputs, target = batch
        output, target = self._scored(self(inputs), target)
        loss = F.mse_loss(output, target)
        size = target.shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        self.log_dict(
            {"train/mse": loss.detach(), "train/mae": F.l1_loss(output.detach(), target)},
            on_step=False,
            on_epoch=True,
            batch_size=size,
        )
        return loss

    def _eval_step(self, batch: tuple[Mapping[str, Tensor], Tensor], stage: str) -> None:
        inputs, target = batch
        output, target = self._scored(self(inputs), target)
        mse, mae = getattr(self, f"{stage}_mse"), getattr(self, f"{stage}_mae")
        output, target = output.double().reshape(-1), target.double().reshape(-1)
        mse.update(output, target)
        mae.update(output, target)
        size = target.shape[0]
        self.log(f"{stage}/loss", mse, on_step=False, on_epoch=True, prog_bar=stage == "val", batch_size=size)
        self.log(f"{stage}/mse", mse, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{stage}/mae", mae, on_step=False, on_epoch=True, batch_size=size)

    def validation_step(self, batch: tuple[Mapping[str, Tensor], Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: tuple[Mapping[str, Tensor], Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        """The forecast ``(B, pred_len, c_out)`` on the standardized scale."""
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(inputs)


def _float64(metric: Metric) -> Metric:
    """Accumulate in float64 (``Metric.double()`` is a no-op by design in torchmetrics; ``set_dtype`` is not)."""
    return metric.set_dtype(torch.float64)
