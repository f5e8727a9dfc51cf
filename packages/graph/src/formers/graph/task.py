"""The graph tasks: what differs between graph regression, binary graph classification and node classification.

Batches are PyG ``Batch`` objects from :class:`formers.graph.data.GraphDataModule`; the model is called as
``model(batch)`` and the target is ``batch.y``. Everything else (steps, logging, checkpoints, resume, optimizer groups,
attention backend) is :class:`formers.core.tasks.Task`'s.

Metrics are exact over a split (torchmetrics accumulates over every graph or node), where the official scripts average
per-batch values (GT's ZINC MAE and SBM accuracy; benchmarking-gnns #88): the difference is small at batch 128 but this
is the number a user can recompute from the predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, MeanSquaredError, Metric
from torchmetrics.classification import BinaryAUROC, MulticlassAccuracy

from formers.core.tasks import ClassificationTask, RegressionTask, Task

__all__ = ["GraphRegressionTask", "GraphBinaryTask", "NodeClassificationTask", "unpack_graph_batch"]


def unpack_graph_batch(owner: str, batch: Any) -> tuple[Any, Tensor]:
    """``(batch, batch.y)`` of a PyG batch, with an error naming what is missing."""
    target = getattr(batch, "y", None)
    if target is None:
        raise TypeError(
            f"{owner} expects PyG Batch objects with a target `y` (formers.graph.data.GraphDataModule), "
            f"got {type(batch).__name__} without one"
        )
    return batch, target


class GraphRegressionTask(RegressionTask):
    """One value per graph (ZINC penalised logP: L1, ESOL solubility: MSE); logs ``mse``, ``mae`` and ``rmse``.

    Args:
        *args, **kwargs: :class:`~formers.core.tasks.RegressionTask`'s (``loss``: ``"mae"`` for ZINC as in both
            papers, ``"mse"`` for ESOL).
    """

    def unpack(self, batch: Any) -> tuple[Any, Tensor]:
        return unpack_graph_batch(type(self).__name__, batch)

    def make_metrics(self) -> dict[str, Metric]:
        return {**super().make_metrics(), "rmse": MeanSquaredError(squared=False)}


class GraphBinaryTask(Task):
    """One binary label per graph (MoleculeNet HIV): BCE on logits, ROC-AUC over the split (OGB's molhiv metric).

    The model returns ``(num_graphs, 1)`` logits; ``y`` holds 0/1 labels of the same number of elements.

    Args:
        *args, **kwargs: :class:`~formers.core.tasks.Task`'s.
        pos_weight: weight of the positive class in the BCE (``None``: 1; HIV has 3.5% positives).
    """

    loss_metric = "bce"  # val/test loss: the exact BCE over the split

    def __init__(self, *args: Any, pos_weight: float | None = None, **kwargs: Any) -> None:
        if pos_weight is not None and not pos_weight > 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        super().__init__(*args, **kwargs)
        self.pos_weight = pos_weight

    def unpack(self, batch: Any) -> tuple[Any, Tensor]:
        return unpack_graph_batch(type(self).__name__, batch)

    def _aligned(self, output: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        if output.numel() != target.numel():
            raise ValueError(
                f"{type(self).__name__}: {output.numel()} logits for {target.numel()} labels; the model must "
                "return one logit per graph (out_dim 1)"
            )
        return output.reshape(-1), target.reshape(-1).to(output.dtype)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        logits, labels = self._aligned(output, target)
        pos_weight = None if self.pos_weight is None else logits.new_tensor(self.pos_weight)
        return F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)

    def make_metrics(self) -> dict[str, Metric]:
        return {"rocauc": BinaryAUROC(), "bce": MeanMetric()}

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Tensor) -> None:
        logits, labels = self._aligned(output.detach().float(), target)
        metrics["rocauc"].update(torch.sigmoid(logits), labels.long())
        metrics["bce"].update(F.binary_cross_entropy_with_logits(logits, labels, reduction="none"))


class NodeClassificationTask(ClassificationTask):
    """One class per node (SBM PATTERN / CLUSTER), as the benchmarking-gnns SBM protocol.

    Loss: cross-entropy weighted per batch by ``(V - n_c) / V`` for each class ``c`` present (``V`` nodes in the
    batch, ``n_c`` of class ``c``; classes absent from the batch do not matter), the official ``loss`` of the SBM nets.
    Metric ``wacc``: the average per-class accuracy (balanced accuracy, the papers' "weighted accuracy"), exact over
    the split; ``acc`` is the plain node accuracy.

    Args:
        *args, **kwargs: :class:`~formers.core.tasks.ClassificationTask`'s; ``num_classes`` comes from the data.
    """

    def unpack(self, batch: Any) -> tuple[Any, Tensor]:
        return unpack_graph_batch(type(self).__name__, batch)

    @property
    def num_classes(self) -> int:
        return int(self.model_config["num_classes"])

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        target = target.reshape(-1)
        counts = torch.bincount(target, minlength=output.shape[-1]).to(output.dtype)
        weights = (target.numel() - counts) / target.numel()  # absent classes weigh nothing: no target has them
        return F.cross_entropy(output, target, weight=weights)

    def make_metrics(self) -> dict[str, Metric]:
        return {
            "wacc": MulticlassAccuracy(num_classes=self.num_classes, average="macro"),
            "acc": MulticlassAccuracy(num_classes=self.num_classes, average="micro"),
        }

    def update_metrics(self, metrics: Mapping[str, Metric], output: Tensor, target: Tensor) -> None:
        preds = output.detach().argmax(dim=-1)
        for metric in metrics.values():
            metric.update(preds, target.reshape(-1))
