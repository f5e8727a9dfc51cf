"""Lightning tasks: the one base :class:`Task` every domain's task builds on, and the generic supervised tasks.

A task owns the loss and the metrics; the network comes from the model registry by name
(:func:`formers.core.builder.build_model`), so a checkpoint's hyper-parameters (``model``, ``model_kwargs``, task
options) are enough to rebuild it (:func:`formers.core.domain.load_trained`).

What :class:`Task` writes once, so a domain task only states its loss and metrics:

* **the model**: ``build_model(model, checkpoint_path=..., **model_kwargs, **data_sizes)``. ``data_sizes`` are the
  sizes the data determines (``num_classes``, ``enc_in``, ...): the CLI links them from the data module
  (``LightningDataModule.model_sizes()``) so a YAML never writes them twice; a size also given in ``model_kwargs``
  must agree, else a one-sentence error names both values.
* **the attention backend**: ``attention_backend: sdpa`` (YAML) or ``--model.attention_backend sdpa`` reaches every
  attention call of the model (:func:`formers.core.attention.set_attention_backend`); ``None`` keeps ``auto``.
* **the steps**: :meth:`unpack` splits a batch into ``(inputs, target)`` (default: a pair; a PyG ``Batch`` or a
  byte sequence override it), ``forward`` calls ``model(**inputs)`` for a mapping and ``model(inputs)`` otherwise,
  and the batch size is taken from the batch itself (:func:`batch_size_of`: tensors, ``num_graphs``, mappings).
* **metrics**: training logs the loss per step and epoch plus the cheap per-batch values of :meth:`batch_metrics`;
  validation and test log torchmetrics objects from :meth:`make_metrics` (exact over the whole split, synchronised
  across DDP ranks), one collection per stage. :attr:`loss_metric` names the metric that is the val/test loss
  (default: the batch-size-weighted mean of :meth:`loss`).

Tasks deliberately do not implement ``configure_optimizers``: the optimizer and LR scheduler are part of the run
configuration (``optimizer:`` / ``lr_scheduler:`` of :class:`formers.core.cli.FormersCLI`, parameter groups of
:mod:`formers.core.optim`), so no task-level choice can shadow the YAML. Outside the CLI, attach one yourself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanMetric, MeanSquaredError, Metric

from formers.core.attention import set_attention_backend
from formers.core.builder import build_model
from formers.core.data.base import data_sizes_of

__all__ = ["Task", "ClassificationTask", "RegressionTask", "batch_size_of", "merge_data_sizes"]

Stage = Literal["train", "val", "test"]
EVAL_STAGES: tuple[Stage, ...] = ("val", "test")


def batch_size_of(batch: Any) -> int:
    """Number of samples in a batch of any shape the tasks see (tensor, PyG ``Batch``, mapping, sequence)."""
    num_graphs = getattr(batch, "num_graphs", None)
    if isinstance(num_graphs, int):
        return num_graphs
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim else 1
    size = getattr(batch, "batch_size", None)
    if isinstance(size, int):
        return size
    if isinstance(batch, Mapping):
        for value in batch.values():
            return batch_size_of(value)
    if isinstance(batch, Sequence) and not isinstance(batch, str) and batch:
        return batch_size_of(batch[0]) if isinstance(batch[0], (Tensor, Mapping)) else len(batch)
    raise TypeError(f"cannot tell the batch size of a {type(batch).__name__}; override Task.batch_size")


def merge_data_sizes(model: str, model_kwargs: Mapping[str, Any], data_sizes: Mapping[str, Any]) -> dict[str, Any]:
    """``model_kwargs`` completed with the data-derived sizes; a size given in both must be equal.

    Raises:
        ValueError: naming the argument, the configured value and the data's value.
    """
    merged = dict(model_kwargs)
    for key, value in data_sizes.items():
        if key in merged and merged[key] != value:
            raise ValueError(
                f"model_kwargs.{key}={merged[key]!r} but the data has {key}={value!r} (model {model!r}): "
                f"drop {key} from model_kwargs (the data sets it) or make them equal"
            )
        merged[key] = value
    return merged


class Task(LightningModule):
    """Base of every formers task (see the module docstring for what it provides).

    Subclasses implement :meth:`loss` and usually :meth:`make_metrics`; they override :meth:`unpack`,
    :meth:`update_metrics` or :meth:`batch_metrics` only when their batches or metrics need it.

    Args:
        model: registered model name (``formers.core.registry.list_models()``).
        model_kwargs: keyword arguments of the model factory.
        data_sizes: sizes the data determines, merged into ``model_kwargs`` (linked by the CLI from
            ``datamodule.model_sizes()``; give them in ``model_kwargs`` when building a task by hand).
        attention_backend: backend of every attention call of the model (``None``: ``auto``).
        checkpoint_path: initial weights (fine-tuning) in any format the model's registry entry loads.
    """

    #: name of the metric of :meth:`make_metrics` that is logged as ``{val,test}/loss`` (None: mean of :meth:`loss`)
    loss_metric: str | None = None

    def __init__(
        self,
        model: str,
        model_kwargs: dict[str, Any] | None = None,
        data_sizes: dict[str, Any] | None = None,
        attention_backend: str | None = None,
        checkpoint_path: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_config = merge_data_sizes(model, model_kwargs or {}, data_sizes or {})
        self.model = build_model(model, checkpoint_path=checkpoint_path, **self.model_config)
        if attention_backend is not None:
            set_attention_backend(self.model, attention_backend)
        self.eval_metrics = nn.ModuleDict({stage: nn.ModuleDict(self.make_metrics()) for stage in EVAL_STAGES})

    def setup(self, stage: str) -> None:
        """Refuse data whose sizes differ from the model's (a task built by hand, outside the CLI's link)."""
        sizes = data_sizes_of(self.trainer.datamodule) if self._trainer is not None else None
        if sizes is not None:
            merge_data_sizes(self.hparams.model, self.model_config, sizes)

    # ---------------------------------------------------------------------------------------------- to override
    def loss(self, output: Any, target: Any) -> Tensor:
        """The training objective of one batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement loss(output, target)")

    def make_metrics(self) -> dict[str, Metric]:
        """Fresh torchmetrics for one evaluation stage (called once for val and once for test)."""
        return {}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Any, target: Any) -> None:
        """Feed one batch to the stage's metrics (default: ``metric.update(output, target)``)."""
        for metric in metrics.values():
            metric.update(output, target)

    def batch_metrics(self, output: Any, target: Any, loss: Tensor) -> dict[str, Tensor]:
        """Cheap per-batch training values logged next to the loss, averaged over the epoch by Lightning."""
        return {}

    def unpack(self, batch: Any) -> tuple[Any, Any]:
        """``(inputs, target)`` of a batch; the default takes a ``(inputs, target)`` pair."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(
                f"{type(self).__name__} expects (inputs, target) batches, got {type(batch).__name__}; "
                "override Task.unpack for other batch layouts"
            )
        return batch[0], batch[1]

    def batch_size(self, batch: Any, inputs: Any, target: Any) -> int:
        """Samples in the batch (the weight of its values in epoch means)."""
        return batch_size_of(target if target is not None else inputs)

    # ---------------------------------------------------------------------------------------------- the steps
    def forward(self, inputs: Any) -> Any:
        return self.model(**inputs) if isinstance(inputs, Mapping) else self.model(inputs)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        inputs, target = self.unpack(batch)
        output = self(inputs)
        loss = self.loss(output, target)
        size = self.batch_size(batch, inputs, target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=size)
        extra = {f"train/{name}": value for name, value in self.batch_metrics(output, target, loss.detach()).items()}
        if extra:
            self.log_dict(extra, on_step=False, on_epoch=True, sync_dist=True, batch_size=size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        return self._eval_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        inputs = self.unpack(batch)[0] if isinstance(batch, (tuple, list)) and len(batch) == 2 else batch
        return self(inputs)

    def _eval_step(self, batch: Any, stage: Stage) -> Tensor | None:
        inputs, target = self.unpack(batch)
        output = self(inputs)
        size = self.batch_size(batch, inputs, target)
        metrics = self.eval_metrics[stage]
        self.update_metrics(metrics, output, target)
        shown = stage == "val"
        loss = None
        if self.loss_metric is None:
            loss = self.loss(output, target)
            self.log(f"{stage}/loss", loss, on_epoch=True, prog_bar=shown, sync_dist=True, batch_size=size)
        else:
            self.log(f"{stage}/loss", metrics[self.loss_metric], on_epoch=True, prog_bar=shown, batch_size=size)
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, on_epoch=True, batch_size=size)
        return loss


class ClassificationTask(Task):
    """Cross-entropy classification; logs ``{train,val,test}/loss`` and ``{train,val,test}/acc``.

    The model returns logits ``(batch, num_classes)``; targets are class indices ``(batch,)``. Validation and test
    accuracy are exact over the split (a mean over samples, not over batches).

    Args:
        *args, **kwargs: :class:`Task`'s (``model``, ``model_kwargs``, ``data_sizes``, ...).
        label_smoothing: cross-entropy label smoothing in ``[0, 1)``.
    """

    def __init__(self, *args: Any, label_smoothing: float = 0.0, **kwargs: Any) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(*args, **kwargs)
        self.label_smoothing = label_smoothing

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target, label_smoothing=self.label_smoothing)

    def make_metrics(self) -> dict[str, Metric]:
        return {"acc": MeanMetric()}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Tensor) -> None:
        metrics["acc"].update((output.argmax(dim=-1) == target).float())

    def batch_metrics(self, output: Tensor, target: Tensor, loss: Tensor) -> dict[str, Tensor]:
        return {"acc": (output.detach().argmax(dim=-1) == target).float().mean()}


class RegressionTask(Task):
    """Regression with an MSE or MAE loss; logs ``{stage}/loss``, ``{stage}/mse`` and ``{stage}/mae``.

    The target is reshaped to the prediction's shape when both have the same number of elements (so ``(batch,)``
    targets work with ``(batch, 1)`` predictions).

    Args:
        *args, **kwargs: :class:`Task`'s (``model``, ``model_kwargs``, ``data_sizes``, ...).
        loss: ``"mse"`` or ``"mae"`` (L1).
    """

    def __init__(self, *args: Any, loss: Literal["mse", "mae"] = "mse", **kwargs: Any) -> None:
        if loss not in ("mse", "mae"):
            raise ValueError(f"loss must be 'mse' or 'mae', got {loss!r}")
        super().__init__(*args, **kwargs)
        self.loss_metric = loss  # the val/test loss is the metric of the same name

    def _aligned(self, output: Tensor, target: Tensor) -> Tensor:
        if output.shape != target.shape:
            if output.numel() != target.numel():
                raise ValueError(f"prediction shape {tuple(output.shape)} does not match target {tuple(target.shape)}")
            target = target.reshape_as(output)
        return target.to(output.dtype)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        target = self._aligned(output, target)
        return F.mse_loss(output, target) if self.loss_metric == "mse" else F.l1_loss(output, target)

    def make_metrics(self) -> dict[str, Metric]:
        return {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Tensor) -> None:
        target = self._aligned(output, target)
        for metric in metrics.values():
            metric.update(output.detach(), target)

    def batch_metrics(self, output: Tensor, target: Tensor, loss: Tensor) -> dict[str, Tensor]:
        target = self._aligned(output, target)
        return {"mse": F.mse_loss(output.detach(), target), "mae": F.l1_loss(output.detach(), target)}
