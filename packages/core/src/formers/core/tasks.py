"""Generic LightningModules ("tasks") that train any registered formers model.

A task owns the loss and the metrics; the network comes from the model registry by name
(:func:`formers.core.registry.create_model`), so one task serves every domain and a checkpoint's hyperparameters
(``model``, ``model_kwargs``, task options) are enough to rebuild it.

Batches are ``(inputs, target)`` pairs: ``inputs`` is a tensor passed positionally to the model, or a mapping passed as
keyword arguments (``model(**inputs)``), e.g. ``{"x": tokens, "key_padding_mask": mask}``.

Tasks deliberately do not implement ``configure_optimizers``: the optimizer and LR scheduler are part of the run
configuration (``optimizer:`` / ``lr_scheduler:`` of :class:`formers.core.cli.FormersCLI`, default AdamW), so no
task-level choice can shadow the YAML. Outside the CLI, attach one yourself, e.g.
``task.configure_optimizers = lambda: torch.optim.AdamW(task.parameters(), lr=1e-3)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor

from formers.core.registry import create_model

__all__ = ["SupervisedTask", "ClassificationTask", "RegressionTask"]

Stage = Literal["train", "val", "test"]


class SupervisedTask(LightningModule):
    """Shared plumbing of the supervised tasks: model construction, forward, and the train/val/test/predict steps.

    Subclasses implement :meth:`compute_metrics` (loss first) and call ``save_hyperparameters()``.

    Args:
        model: registered model name (see :func:`formers.core.registry.list_models`).
        model_kwargs: keyword arguments of the model factory.
    """

    def __init__(self, model: str, model_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = create_model(model, **(model_kwargs or {}))

    def forward(self, inputs: Tensor | Mapping[str, Any]) -> Tensor:
        return self.model(**inputs) if isinstance(inputs, Mapping) else self.model(inputs)

    def compute_metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Metrics of one batch, ``{"loss": ..., ...}``; ``loss`` is what gets optimised."""
        raise NotImplementedError

    def training_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: tuple[Any, Tensor], batch_idx: int) -> Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(inputs)

    def _shared_step(self, batch: tuple[Any, Tensor], stage: Stage) -> Tensor:
        inputs, target = batch
        metrics = self.compute_metrics(self(inputs), target)
        self.log_dict(
            {f"{stage}/{name}": value for name, value in metrics.items()},
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=stage != "test",
            sync_dist=True,  # epoch values are averaged over DDP ranks
            batch_size=target.shape[0],
        )
        return metrics["loss"]


class ClassificationTask(SupervisedTask):
    """Cross-entropy classification; logs ``{train,val,test}/loss`` and ``{train,val,test}/acc``.

    The model returns logits ``(batch, num_classes)``; targets are class indices ``(batch,)``.

    Args:
        model: registered model name.
        model_kwargs: keyword arguments of the model factory.
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.

    Raises:
        ValueError: at fit/validate/test start when the datamodule's ``num_classes`` differs from the model's.
    """

    def __init__(self, model: str, model_kwargs: dict[str, Any] | None = None, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(model, model_kwargs)
        self.save_hyperparameters()
        self.label_smoothing = label_smoothing

    def setup(self, stage: str) -> None:
        data_classes = getattr(self.trainer.datamodule, "num_classes", None)
        model_classes = getattr(self.model, "num_classes", None)
        if data_classes is not None and model_classes is not None and data_classes != model_classes:
            raise ValueError(
                f"the data has {data_classes} classes but model {self.hparams.model!r} predicts {model_classes}; "
                f"set model_kwargs.num_classes: {data_classes}"
            )

    def compute_metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        loss = F.cross_entropy(output, target, label_smoothing=self.label_smoothing)
        acc = (output.argmax(dim=-1) == target).float().mean()
        return {"loss": loss, "acc": acc}


class RegressionTask(SupervisedTask):
    """Regression with an MSE or MAE loss; logs ``{stage}/loss``, ``{stage}/mse`` and ``{stage}/mae``.

    The target is reshaped to the prediction's shape when both have the same number of elements (so ``(batch,)``
    targets work with ``(batch, 1)`` predictions).

    Args:
        model: registered model name.
        model_kwargs: keyword arguments of the model factory.
        loss: ``"mse"`` or ``"mae"`` (L1).
    """

    def __init__(self, model: str, model_kwargs: dict[str, Any] | None = None, loss: Literal["mse", "mae"] = "mse"):
        if loss not in ("mse", "mae"):
            raise ValueError(f"loss must be 'mse' or 'mae', got {loss!r}")
        super().__init__(model, model_kwargs)
        self.save_hyperparameters()
        self.loss_name = loss

    def compute_metrics(self, output: Tensor, target: Tensor) -> dict[str, Tensor]:
        if output.shape != target.shape:
            if output.numel() != target.numel():
                raise ValueError(f"prediction shape {tuple(output.shape)} does not match target {tuple(target.shape)}")
            target = target.reshape_as(output)
        target = target.to(output.dtype)
        mse, mae = F.mse_loss(output, target), F.l1_loss(output, target)
        return {"loss": mse if self.loss_name == "mse" else mae, "mse": mse, "mae": mae}
