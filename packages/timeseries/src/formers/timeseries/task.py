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
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric

from formers.core.tasks import Task
from formers.timeseries.timefeatures import num_time_features

__all__ = ["ForecastTask"]


class ForecastTask(Task):
    """Forecasting with an MSE loss on the standardized scale.

    Arguments are :class:`~formers.core.tasks.Task`'s: ``model`` (``itransformer``, ``autoformer``, ``informer``,
    ...), ``model_kwargs`` (Time-Series-Library names: d_model, n_heads, e_layers, ...), ``data_sizes`` (``seq_len``,
    ``label_len``, ``pred_len``, ``enc_in``, ``dec_in`` and, for M/S, ``c_out``, linked by the CLI from
    :meth:`formers.timeseries.data.ForecastDataModule.model_sizes`), ``attention_backend``, ``checkpoint_path``.

    ``features`` (``"M"``, ``"S"``, ``"MS"``: which channels are scored) is the data module's, read at setup (an
    argument here would be a second place to keep in sync); without a data module it is ``"M"``.
    """

    loss_metric = "mse"  # val/test loss: the exact float64 MSE over the split
    features: Literal["M", "S", "MS"] = "M"

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None or not hasattr(datamodule, "features"):
            return
        self.features = datamodule.features
        kwargs = self.hparams.model_kwargs or {}
        if kwargs.get("embed", "timeF") != "timeF":
            raise ValueError("ForecastDataModule yields timeF time features; set model_kwargs.embed: timeF")
        marks = num_time_features(datamodule.freq)
        if getattr(self.model, "num_marks", marks) != marks:
            raise ValueError(
                f"the model expects {self.model.num_marks} time features (model_kwargs.freq="
                f"{kwargs.get('freq', 'h')!r}) but the data's freq={datamodule.freq!r} gives {marks}; make them equal"
            )

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

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(*self._scored(output, target))

    def batch_metrics(self, output: Tensor, target: Tensor, loss: Tensor) -> dict[str, Tensor]:
        output, target = self._scored(output.detach(), target)
        return {"mse": loss, "mae": F.l1_loss(output, target)}

    def make_metrics(self) -> dict[str, Metric]:
        # float64 sums over the whole split: the epoch value is the exact global mean
        return {"mse": _float64(MeanSquaredError()), "mae": _float64(MeanAbsoluteError())}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Tensor) -> None:
        output, target = self._scored(output, target)
        output, target = output.double().reshape(-1), target.double().reshape(-1)
        for metric in metrics.values():
            metric.update(output, target)


def _float64(metric: Metric) -> Metric:
    """Accumulate in float64 (``Metric.double()`` is a no-op by design in torchmetrics; ``set_dtype`` is not)."""
    return metric.set_dtype(torch.float64)
